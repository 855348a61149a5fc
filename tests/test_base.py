"""What every estimator shares: all-or-nothing fits, input checks, versioned pickles."""

import pickle
import warnings

import numpy as np
import pytest
import sklearn
import torch
from sklearn.exceptions import NotFittedError

import skvae
from skvae import PPCA, BernoulliVAE, FactorAnalysisEM, GaussianVAE, InconsistentVersionWarning

TINY_VAE = {
    "n_components": 2, "hidden_layer_sizes": (8,), "max_iter": 2, "batch_size": 32,
    "n_importance_samples": 4, "device": "cpu", "random_state": 0,
}


def _estimators():
    return [
        PPCA(device="cpu"),
        PPCA(solver="em", device="cpu", random_state=0),
        FactorAnalysisEM(device="cpu", max_iter=50),
        GaussianVAE(**TINY_VAE),
        BernoulliVAE(**TINY_VAE),
    ]


def _data(estimator, n=60, d=6, seed=0):
    X = np.random.RandomState(seed).normal(size=(n, d))
    if isinstance(estimator, BernoulliVAE):
        return (X > 0).astype(float)
    return X


def _failing_params(estimator):
    """Parameters that pass validation but make fit fail after the input has been validated."""
    if isinstance(estimator, (PPCA, FactorAnalysisEM)):
        return {"n_components": 50}  # more than the 6 features allow
    return {"early_stopping": True, "validation_fraction": 0.999}  # leaves no training row


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator", _estimators(), ids=lambda e: type(e).__name__)
def test_a_failed_fit_leaves_an_unfitted_estimator(estimator):
    X = _data(estimator)
    estimator.set_params(**_failing_params(estimator))
    with pytest.raises(ValueError):
        estimator.fit(X)
    assert not [name for name in vars(estimator) if name.endswith("_")]
    for method in (estimator.transform, estimator.score_samples):
        with pytest.raises(NotFittedError):
            method(X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator", _estimators(), ids=lambda e: type(e).__name__)
def test_a_failed_refit_keeps_the_previous_model_whole(estimator):
    X = _data(estimator)
    estimator.fit(X)
    before = estimator.score_samples(X)
    params = estimator.get_params()
    estimator.set_params(**_failing_params(estimator))
    wider = _data(estimator, d=8, seed=1)
    with pytest.raises(ValueError):
        estimator.fit(wider)
    estimator.set_params(**params)
    assert estimator.n_features_in_ == 6
    np.testing.assert_array_equal(estimator.score_samples(X), before)
    with pytest.raises(ValueError, match="X has 8 features"):
        estimator.transform(wider)


def test_an_interrupted_linear_fit_leaves_the_estimator_as_it_was(monkeypatch):
    X = np.random.RandomState(0).normal(size=(80, 6))
    X[::7, 2] = np.nan  # EM path
    model = FactorAnalysisEM(n_components=2, device="cpu")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("skvae.linear._gaussian.em_step_masked", interrupt)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X)
    with pytest.raises(NotFittedError):
        model.transform(X)


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysisEM])
def test_an_interrupted_linear_partial_fit_keeps_the_statistics_it_had(cls):
    # Ctrl-C at any line of skvae's code in a partial_fit (a trace function that raises at
    # the n-th line): the statistics are merged into new objects, so the call raises and the
    # estimator is the one before it (an uninterrupted call, line 0, gives the new one).
    import copy
    import os
    import sys

    X = np.random.RandomState(0).normal(size=(80, 6))
    start = cls(n_components=2, device="cpu").partial_fit(X[:40])
    expected = copy.deepcopy(start).partial_fit(X[40:]).score_samples(X)
    before = start.score_samples(X)
    package = os.path.dirname(skvae.__file__)
    outcomes, total = [], None
    for number in [0] + list(range(1, 20)):
        model, count = copy.deepcopy(start), [0]
        number = number if total is None else 1 + number * total // 20  # spread over the call

        def local(frame, event, arg):
            if event == "line":
                count[0] += 1
                if count[0] == number:
                    raise KeyboardInterrupt
            return local

        sys.settrace(lambda f, e, a: local if f.f_code.co_filename.startswith(package) else None)
        try:
            model.partial_fit(X[40:])
            outcomes.append(False)
        except KeyboardInterrupt:
            outcomes.append(True)
        finally:
            sys.settrace(None)
        total = count[0] if total is None else total
        if outcomes[-1]:
            assert model._stats[0] == 40
        np.testing.assert_array_equal(model.score_samples(X), before if outcomes[-1] else expected)
    assert not outcomes[0] and all(outcomes[1:])  # no line swallows the interrupt


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysisEM])
def test_finite_float32_input_whose_sum_overflows_is_accepted(cls):
    # 1e37 is finite in float32, but a column sum of such values is not: that must not be
    # mistaken for NaN. Linear models compute in float64, so the fit equals the one on the
    # same values given as float64.
    rng = np.random.RandomState(0)
    X = (rng.normal(size=(200, 4)) * 1e37).astype(np.float32)
    model = cls(n_components=1, device="cpu").fit(X)
    reference = cls(n_components=1, device="cpu").fit(X.astype(np.float64))
    np.testing.assert_allclose(model.score_samples(X), reference.score_samples(X), rtol=1e-12)
    assert np.all(np.isfinite(model.score_samples(X)))


def test_a_float32_overflowing_sum_is_not_called_nan_by_the_vae():
    X = np.full((40, 3), 3e37, dtype=np.float32)
    X[:, 1] = -X[:, 1]
    with pytest.raises(ValueError) as error:
        GaussianVAE(**TINY_VAE).fit(X)
    assert "NaN" not in str(error.value).split(".")[0]


@pytest.mark.parametrize("estimator", _estimators(), ids=lambda e: type(e).__name__)
def test_pickles_record_versions_and_warn_when_loaded_under_others(estimator, monkeypatch):
    X = _data(estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(X)
    blob = pickle.dumps(estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same versions: silent
        same = pickle.loads(blob)
    assert "_pickled_versions" not in vars(same)
    np.testing.assert_array_equal(same.score_samples(X), estimator.score_samples(X))

    monkeypatch.setattr(skvae._base, "__version__", "9.9.9")
    with pytest.warns(InconsistentVersionWarning, match=r"skvae 0\.1\.0\.dev0 -> 9\.9\.9") as record:
        other = pickle.loads(blob)
    assert record[0].message.mismatched == {"skvae": (skvae.__version__, "9.9.9")}
    np.testing.assert_array_equal(other.score_samples(X), estimator.score_samples(X))


def test_a_pickle_without_versions_warns_that_they_are_unknown():
    model = PPCA(device="cpu").fit(np.random.RandomState(0).normal(size=(30, 4)))
    state = model.__getstate__()
    del state["_pickled_versions"]
    restored = PPCA.__new__(PPCA)
    with pytest.warns(InconsistentVersionWarning, match="skvae unknown ->"):
        restored.__setstate__(state)


def test_versions_recorded_are_the_running_ones():
    state = PPCA(device="cpu").fit(np.random.RandomState(0).normal(size=(30, 4))).__getstate__()
    assert state["_pickled_versions"] == {
        "skvae": skvae.__version__, "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
    }


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator", _estimators(), ids=lambda e: type(e).__name__)
def test_a_tensor_gets_the_shape_checks_an_array_gets(estimator):
    # The same scikit-learn checks for both (no hand copies of check_array's messages).
    def error(X, method="fit", fitted=None):
        with pytest.raises(ValueError) as info:
            getattr(fitted or estimator, method)(X)
        return str(info.value)

    for shape in [(0, 6), (5, 0)]:
        X = np.zeros(shape)
        assert error(torch.as_tensor(X)) == error(X)
    X = _data(estimator)
    fitted = estimator.fit(X)
    assert (error(torch.as_tensor(X[:, :4]), "transform", fitted)
            == error(X[:, :4], "transform", fitted))
    # Fitted on a DataFrame, given unnamed columns: the same warning for a tensor as an array.
    pd = pytest.importorskip("pandas")
    named = estimator.fit(pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])]))
    for unnamed in (X, torch.as_tensor(X)):
        with pytest.warns(UserWarning, match="X does not have valid feature names"):
            named.transform(unnamed)
