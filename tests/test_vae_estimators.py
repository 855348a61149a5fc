"""The estimator surface of GaussianVAE and BernoulliVAE on small data."""

import io
import pickle
import re
import warnings
from contextlib import redirect_stdout

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from skvae import BernoulliVAE, GaussianVAE
from skvae.nn._likelihoods import GaussianLikelihood

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SMALL = dict(hidden_layer_sizes=(16,), max_iter=15, batch_size=64, n_importance_samples=16,
             device="cpu", random_state=0)


def _gaussian_data(n=150, d=6, seed=0):
    rng = np.random.RandomState(seed)
    z = rng.normal(size=(n, 2))
    return np.tanh(z @ rng.normal(size=(2, d))) * 3 + 0.1 * rng.normal(size=(n, d)) + 5


def _binary_data(n=150, d=8, seed=0):
    return (_gaussian_data(n, d, seed) > 5).astype(np.float64)


def _models():
    return [
        (GaussianVAE(n_components=2, **SMALL), _gaussian_data()),
        (BernoulliVAE(n_components=2, **SMALL), _binary_data()),
    ]


# ----------------------------------------------------------------------- sklearn's checks
# BernoulliVAE rejects the checks' Gaussian data (see test_common.py). This subclass maps
# every validated input through a sigmoid into (0, 1), so the same checks exercise all of
# BernoulliVAE's code (fit, transform, scores, pickling, dtypes, memmaps...) with valid data.
def _squashed(X):
    """sigmoid(X) computed in float64, then in X's dtype: torch's float32 sigmoid rounds the
    last elements of a tensor (its scalar tail loop) differently, which would make a row's
    input, and so the batch-invariance checks, depend on where the row sits in X."""
    return torch.sigmoid(X.to(torch.float64)).to(X.dtype)


class SquashedBernoulliVAE(BernoulliVAE):
    def _check_input(self, X, **kwargs):
        checked = super()._check_input(X, **kwargs)
        if isinstance(checked, tuple):  # (X, has_nan)
            return (_squashed(checked[0]), *checked[1:])
        return _squashed(checked)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = False  # any real X is squashed into (0, 1)
        return tags


_SQUASHED_SMALL = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=5, batch_size=32,
                       n_importance_samples=8, device="cpu", random_state=0)


@parametrize_with_checks(
    [SquashedBernoulliVAE(**_SQUASHED_SMALL),
     SquashedBernoulliVAE(**_SQUASHED_SMALL, dtype="float64")],
    xfail_strict=True,
)
def test_bernoulli_vae_passes_sklearn_checks_on_unit_interval_data(estimator, check):
    # All of them, float32 included: inference runs in chunks of one fixed shape, so the
    # batch-invariance checks hold at their 1e-7.
    check(estimator)


# ----------------------------------------------------------------------- surface
@pytest.mark.parametrize("model, X", _models())
def test_fit_sets_attributes_and_shapes(model, X):
    assert model.fit(X) is model
    assert model.n_components_ == 2 and model.n_features_in_ == X.shape[1]
    assert model.n_iter_ == len(model.loss_curve_) == 15
    assert model.best_loss_ == min(model.loss_curve_)
    assert model.validation_scores_ is None and model.best_validation_score_ is None
    Z, Z_std = model.transform(X, return_std=True)
    assert Z.shape == Z_std.shape == (X.shape[0], 2) and np.all(Z_std > 0)
    assert model.inverse_transform(Z).shape == X.shape
    scores = model.score_samples(X)
    assert scores.shape == (X.shape[0],) and scores.dtype == np.float64
    assert np.all(np.isfinite(scores))
    assert model.score(X) == pytest.approx(scores.mean())
    names = model.get_feature_names_out()
    prefix = type(model).__name__.lower()
    assert list(names) == [f"{prefix}0", f"{prefix}1"]


@pytest.mark.parametrize("model, X", _models())
def test_loss_curve_is_a_negative_elbo_that_falls(model, X):
    model.set_params(max_iter=40).fit(X)
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    # Final training loss (beta = 1) is close to minus the mean ELBO on the same data.
    assert -model.elbo_samples(X).mean() == pytest.approx(model.loss_curve_[-1], rel=0.1)


@pytest.mark.parametrize("model, X", _models())
def test_elbo_is_below_iw_estimate_for_every_row(model, X):
    model.fit(X)
    elbo, iw = model.elbo_samples(X), model.score_samples(X)
    assert np.all(elbo <= iw + 1e-6)
    # More importance draws tighten the estimate on average.
    tighter = clone(model).set_params(n_importance_samples=256).fit(X).score(X)
    assert tighter >= model.score(X) - 1e-3


@pytest.mark.parametrize("model, X", _models())
def test_same_random_state_gives_bit_identical_models(model, X):
    a, b = clone(model).fit(X), clone(model).fit(X)
    for (name, p), (_, q) in zip(a.module_.state_dict().items(), b.module_.state_dict().items()):
        assert torch.equal(p, q), name
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))
    np.testing.assert_array_equal(a.sample(5), b.sample(5))
    assert a.loss_curve_ == b.loss_curve_
    c = clone(model).set_params(random_state=1).fit(X)
    assert not np.array_equal(a.transform(X), c.transform(X))


@pytest.mark.parametrize("model, X", _models())
def test_column_major_input_trains_the_same_model(model, X):
    # fit copies the rows into one standardized row-major tensor, so the memory layout of X
    # changes only the rounding of the per-feature mean and std (summation order).
    a = clone(model).fit(np.ascontiguousarray(X))
    b = clone(model).fit(np.asfortranarray(X))
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(a.score_samples(X), b.score_samples(X), rtol=1e-3)


def test_fit_leaves_global_torch_and_numpy_rng_alone():
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()
    GaussianVAE(n_components=2, **SMALL).fit(_gaussian_data()).score_samples(_gaussian_data())
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])


@pytest.mark.parametrize("model, X", _models())
def test_score_samples_is_repeatable_and_row_independent(model, X):
    model.fit(X)
    full = model.score_samples(X)
    np.testing.assert_array_equal(model.score_samples(X), full)
    order = np.random.RandomState(0).permutation(len(X))
    np.testing.assert_allclose(model.score_samples(X[order]), full[order], rtol=1e-7)
    np.testing.assert_allclose(model.score_samples(X[7:8]), full[7:8], rtol=1e-7)


@pytest.mark.parametrize(
    "cls, X", [(GaussianVAE, _gaussian_data()), (BernoulliVAE, _binary_data())]
)
def test_rows_are_scored_independently_of_the_batch(cls, X):
    # sklearn's check_methods_subset_invariance and sample_order_invariance at their 1e-7,
    # float32 included (fixed-shape inference chunks), and to 1e-12 with dtype="float64".
    order = np.random.RandomState(0).permutation(len(X))
    for dtype, rtol in (("float32", 1e-7), ("float64", 1e-12)):
        model = cls(n_components=2, **{**SMALL, "max_iter": 3}, dtype=dtype).fit(X)
        for method in ("transform", "score_samples", "elbo_samples"):
            full = getattr(model, method)(X)
            by_row = np.concatenate([getattr(model, method)(X[i : i + 1]) for i in range(20)])
            np.testing.assert_allclose(by_row, full[:20], rtol=rtol, atol=rtol)
            shuffled = getattr(model, method)(X[order])
            np.testing.assert_allclose(shuffled, full[order], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("model, X", _models())
def test_output_dtype_follows_input(model, X):
    model.fit(X)
    for dtype in (np.float32, np.float64):
        Xd = X.astype(dtype)
        assert model.transform(Xd).dtype == dtype
        assert model.inverse_transform(model.transform(Xd)).dtype == dtype
        assert model.score_samples(Xd).dtype == np.float64
    assert model.transform(torch.as_tensor(X, dtype=torch.float32)).dtype == np.float32


@pytest.mark.filterwarnings("ignore:X has feature names:UserWarning")
@pytest.mark.parametrize("model, X", _models())
def test_accepts_numpy_pandas_torch_alike_and_never_modifies_x(model, X):
    original = X.copy()
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    tensor = torch.as_tensor(X)
    tensor_copy = tensor.clone()
    model.fit(X)
    results = [model.transform(X), model.transform(frame), model.transform(tensor)]
    model.score_samples(X), model.elbo_samples(tensor), model.partial_fit(X)
    np.testing.assert_array_equal(X, original)
    assert torch.equal(tensor, tensor_copy)
    np.testing.assert_allclose(results[1], results[0])
    np.testing.assert_allclose(results[2], results[0])
    pandas_out = clone(model).set_output(transform="pandas").fit(frame).transform(frame)
    assert list(pandas_out.columns) == list(model.get_feature_names_out())


def test_gaussian_transform_std_and_noise_variance():
    X = _gaussian_data()
    for variance in ("feature", 0.5, "sample"):
        model = GaussianVAE(n_components=2, decoder_variance=variance, **SMALL).fit(X)
        if variance == "sample":
            assert model.noise_variance_ is None
        elif variance == "feature":
            assert model.noise_variance_.shape == (X.shape[1],)
            # Floor: at least variance_floor times each feature's training variance.
            assert np.all(model.noise_variance_ >= 1e-4 * X.var(0) * (1 - 1e-5))
        else:
            np.testing.assert_allclose(model.noise_variance_, 0.5, rtol=1e-6)
        assert np.all(np.isfinite(model.score_samples(X)))


def test_inverse_transform_gives_means_in_the_right_range():
    model = BernoulliVAE(n_components=2, **SMALL).fit(_binary_data())
    probs = model.inverse_transform(np.random.RandomState(0).normal(size=(50, 2)) * 3)
    assert np.all((probs >= 0) & (probs <= 1))
    X = _gaussian_data()
    params = {**SMALL, "max_iter": 100, "batch_size": 32, "learning_rate_init": 1e-2}
    gauss = GaussianVAE(n_components=2, **params).fit(X)
    reconstruction = gauss.inverse_transform(gauss.transform(X))
    # The data lie near a 2-D manifold: reconstructions explain most of the variance
    # (measured R^2 = 0.98).
    assert 1 - ((reconstruction - X) ** 2).sum() / ((X - X.mean(0)) ** 2).sum() > 0.9


@pytest.mark.parametrize("model, X", _models())
def test_sample_options(model, X):
    model.fit(X)
    draws = model.sample(400, random_state=0)
    assert draws.shape == (400, X.shape[1]) and draws.dtype == np.float64
    np.testing.assert_array_equal(draws, model.sample(400, random_state=0))
    assert not np.array_equal(draws, model.sample(400, random_state=1))
    means = model.sample(400, random_state=0, return_mean=True)
    if isinstance(model, BernoulliVAE):
        assert set(np.unique(draws)) <= {0.0, 1.0}
        assert np.all((means > 0) & (means < 1)) and not np.all(np.isin(means, [0, 1]))
    else:
        # A noisy draw scatters around its decoded mean by the noise variance.
        resid = draws - means
        np.testing.assert_allclose(resid.var(0), model.noise_variance_, rtol=0.3)
    # Draws from the prior reproduce the data's feature means roughly.
    np.testing.assert_allclose(draws.mean(0), X.mean(0), atol=0.35 * X.std(0).max() + 0.1)


def test_aggregated_posterior_follows_the_data_where_the_prior_does_not():
    # beta=0: nothing pulls q(z | x) towards N(0, I), so the codes of two clusters at -3 and
    # +3 spread wider than the prior. Decoded means of aggregated-posterior draws land on the
    # clusters with the data's spread (measured: all within 1.5 of a center, std 3.0); prior
    # draws decode to the gap between them (measured: a third near a center, std 0.9-1.3).
    centers = [[-3.0] * 4, [3.0] * 4]
    X = _clusters(300, centers, seed=0)
    model = GaussianVAE(n_components=2, beta=0.0, **{**SMALL, "max_iter": 30}).fit(X)
    near = {}
    for latent in ("prior", "aggregated_posterior"):
        sample = model.sample(2000, random_state=0, return_mean=True, latent=latent)
        near[latent] = np.mean(np.abs(sample - np.sign(sample[:, :1]) * 3).max(1) < 1.5)
        if latent == "aggregated_posterior":
            np.testing.assert_allclose(sample.std(0), X.std(0), rtol=0.1)
            np.testing.assert_allclose(sample.mean(0), X.mean(0), atol=0.3)
    assert near["aggregated_posterior"] > 0.9 and near["prior"] < 0.6, near


def _clusters(n, centers, seed):
    """``n`` rows around each center, sorted by cluster."""
    rng = np.random.RandomState(seed)
    return np.vstack([c + 0.3 * rng.normal(size=(n, len(c))) for c in centers])


def _cluster_counts(rows, centers):
    nearest = np.argmin(((rows[:, None, :] - np.asarray(centers)) ** 2).sum(-1), axis=1)
    return np.bincount(nearest, minlength=len(centers))


def test_aggregated_posterior_keeps_a_uniform_sample_of_all_training_rows(monkeypatch):
    from skvae.vae import _reservoir

    # With the rows stored (the sample, by keys, is the same without them: see
    # tests/test_vae_reservoir.py), they show which rows were sampled.
    monkeypatch.setattr(_reservoir, "_MAX_ROWS", 100)
    centers = [[-3.0] * 4, [3.0] * 4, [3.0, -3.0, 3.0, -3.0]]
    X = _clusters(600, centers[:2], seed=0)  # sorted: 600 of cluster 0, then 600 of cluster 1
    model = GaussianVAE(n_components=2, store_training_rows=True,
                        **{**SMALL, "max_iter": 2}).fit(X)
    rows = model._reservoir["rows"].numpy()
    assert rows.shape == (100, 4)
    # Training rows, each once ...
    assert len(np.unique(rows, axis=0)) == 100
    assert np.isin(rows.view([("", rows.dtype)] * 4), X.astype(np.float32).view(
        [("", np.float32)] * 4)).all()
    # ... drawn uniformly: both clusters in proportion (hypergeometric sd about 5 rows).
    assert 35 <= _cluster_counts(rows, centers)[0] <= 65
    # partial_fit merges: a uniform sample of all 1800 rows seen, a third of them new.
    model.partial_fit(_clusters(600, centers[2:], seed=1))
    counts = _cluster_counts(model._reservoir["rows"].numpy(), centers)
    assert counts.sum() == 100 and all(19 <= c <= 48 for c in counts), counts
    # A fresh fit starts a new sample; the number of stored values is capped too.
    monkeypatch.setattr(_reservoir, "_MAX_VALUES", 40)
    model.fit(X[:50])
    assert model._reservoir["rows"].shape == (10, 4)


def test_aggregated_posterior_codes_come_from_the_current_encoder():
    # With store_training_rows=True the stored rows are encoded when sampling.
    X = _gaussian_data()
    model = GaussianVAE(n_components=2, store_training_rows=True, **SMALL).fit(X)
    model.partial_fit(_gaussian_data(seed=1))
    # Move every posterior mean by +50 after training: samples must see the moved codes.
    with torch.no_grad():
        model.module_.encoder[-1].bias[:2] += 50.0
    codes = model.transform(model._reservoir["rows"]).mean(0)
    decoded = []
    decode = model.module_.decode
    model.module_.decode = lambda z: decoded.append(z.clone()) or decode(z)
    model.sample(2000, random_state=0, latent="aggregated_posterior")
    del model.module_.decode
    assert codes.min() > 40
    np.testing.assert_allclose(decoded[0].mean(0).numpy(), codes, atol=0.2)


@pytest.mark.parametrize("model, X", _models())
def test_partial_fit_trains_one_epoch_per_call(model, X):
    model = clone(model)
    for i, chunk in enumerate(np.array_split(X, 3)):
        model.partial_fit(chunk)
        assert model.n_iter_ == len(model.loss_curve_) == i + 1
    first = model.score(X)
    for _ in range(15):
        for chunk in np.array_split(X, 3):
            model.partial_fit(chunk)
    assert model.n_iter_ == 48
    assert model.score(X) > first


@pytest.mark.parametrize("model, X", _models())
def test_warm_start_continues_from_current_weights(model, X):
    cold = clone(model).fit(X)
    warm = clone(model).set_params(warm_start=True).fit(X)
    weights = {k: v.clone() for k, v in warm.module_.state_dict().items()}
    module = warm.module_
    warm.fit(X)
    assert warm.n_iter_ == 30 and len(warm.loss_curve_) == 30
    # It trained a copy (published at the end: an interrupt leaves the old model intact).
    assert warm.module_ is not module
    assert all(torch.equal(v, weights[k]) for k, v in module.state_dict().items())
    assert warm.loss_curve_[:15] == cold.loss_curve_
    assert warm.loss_curve_[15] < cold.loss_curve_[0]
    assert any(not torch.equal(v, weights[k]) for k, v in warm.module_.state_dict().items())
    # Changing the architecture under warm_start starts a fresh model.
    warm.set_params(n_components=3).fit(X)
    assert warm.n_components_ == 3 and warm.n_iter_ == 15


def test_partial_fit_refuses_a_changed_architecture():
    model = GaussianVAE(n_components=2, **SMALL).partial_fit(_gaussian_data())
    model.set_params(hidden_layer_sizes=(4,))
    with pytest.raises(ValueError, match="partial_fit cannot continue.*Call fit"):
        model.partial_fit(_gaussian_data())


def test_early_stopping_keeps_best_validation_weights():
    X = _gaussian_data(n=300)
    model = GaussianVAE(n_components=2, early_stopping=True, n_iter_no_change=3,
                        **{**SMALL, "max_iter": 200}).fit(X)
    scores = model.validation_scores_
    assert len(scores) == model.n_iter_ < 200
    assert model.best_validation_score_ == max(scores)
    assert len(scores) == int(np.argmax(scores)) + 1 + 3


def test_max_iter_warns_convergence():
    with pytest.warns(ConvergenceWarning, match=r"max_iter=2 epochs"):
        GaussianVAE(n_components=2, **{**SMALL, "max_iter": 2}).fit(_gaussian_data())


def test_kl_warmup_and_beta_shape_the_loss():
    X = _gaussian_data()
    warm = GaussianVAE(n_components=2, kl_warmup=10, **SMALL).fit(X)
    plain = GaussianVAE(n_components=2, **SMALL).fit(X)
    # With the KL term off at first the first epoch's loss is lower (no KL penalty).
    assert warm.loss_curve_[0] < plain.loss_curve_[0]
    # beta=0 gives no incentive to match the prior: posteriors drift far from N(0, I).
    ae = GaussianVAE(n_components=2, beta=0.0, **{**SMALL, "max_iter": 40}).fit(X)
    vae = GaussianVAE(n_components=2, beta=4.0, **{**SMALL, "max_iter": 40}).fit(X)
    _, std_ae = ae.transform(X, return_std=True)
    _, std_vae = vae.transform(X, return_std=True)
    assert std_ae.mean() < std_vae.mean()


def test_verbose_prints_one_line_per_epoch():
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        model = GaussianVAE(n_components=2, verbose=1, early_stopping=True,
                            **{**SMALL, "max_iter": 3}).fit(_gaussian_data())
    lines = buffer.getvalue().strip().splitlines()
    assert len(lines) == model.n_iter_ == 3
    pattern = r"Epoch (\d+), loss = (\S+), validation ELBO = (\S+), \d+\.\d\d s"
    matches = [re.fullmatch(pattern, ln) for ln in lines]
    assert all(matches), lines
    assert [int(m.group(1)) for m in matches] == [1, 2, 3]
    # The printed figures are the fitted curves (to the 6 digits shown).
    assert [float(m.group(2)) for m in matches] == pytest.approx(model.loss_curve_, rel=1e-5)
    assert ([float(m.group(3)) for m in matches]
            == pytest.approx(model.validation_scores_, rel=1e-5))


def test_verbose_zero_prints_nothing(capsys):
    GaussianVAE(n_components=2, **{**SMALL, "max_iter": 2}).fit(_gaussian_data())
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------- persistence
@pytest.mark.parametrize("model, X", _models())
def test_pickle_and_joblib_round_trips(model, X, tmp_path):
    model.fit(X)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    for loaded in (pickle.loads(pickle.dumps(model)), joblib.load(path)):
        np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
        np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))
        np.testing.assert_array_equal(loaded.sample(3, random_state=0),
                                      model.sample(3, random_state=0))
    # Training continues identically after a round trip (optimizer state included).
    loaded = pickle.loads(pickle.dumps(model))
    loaded.partial_fit(X)
    model.partial_fit(X)
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))


def test_pickling_does_not_change_the_estimator():
    model = GaussianVAE(n_components=2, **SMALL).fit(_gaussian_data())
    module = model.module_
    pickle.dumps(model)
    assert model.module_ is module and isinstance(model.module_, torch.nn.Module)


def test_diverging_training_warns_and_keeps_finite_weights(monkeypatch):
    X = _gaussian_data()
    model = GaussianVAE(n_components=2, **SMALL).fit(X)
    before = model.transform(X)
    likelihood = model.module_.likelihood
    original = type(likelihood).log_prob
    monkeypatch.setattr(type(likelihood), "log_prob",
                        lambda self, *args: original(self, *args) * float("nan"))
    model.set_params(warm_start=True)
    with pytest.warns(ConvergenceWarning, match="non-finite in epoch 16.*restored"):
        model.fit(X)
    monkeypatch.undo()
    np.testing.assert_array_equal(model.transform(X), before)
    assert np.all(np.isfinite(model.score_samples(X)))
    assert model.n_iter_ == 15


def test_diverging_first_epoch_raises_and_leaves_model_unfitted(monkeypatch):
    X = _gaussian_data()
    model = GaussianVAE(n_components=2, **SMALL)
    original = GaussianLikelihood.log_prob  # NaN from the first step on
    monkeypatch.setattr(GaussianLikelihood, "log_prob",
                        lambda self, *args, **kwargs: original(self, *args, **kwargs) * np.nan)
    with pytest.raises(ValueError, match="diverged in its first epoch.*scale X"):
        model.fit(X)
    assert not hasattr(model, "module_")


def test_a_value_whose_square_overflows_float32_is_standardized():
    # 1e38 is finite in float32 but its square is not: the input scale is computed without
    # squaring it, so the fit neither diverges nor returns a non-finite density.
    X = _gaussian_data()
    X[0, 0] = 1e38
    model = GaussianVAE(n_components=2, **SMALL).fit(X)
    assert float(model.module_.in_scale[0]) == pytest.approx(X[:, 0].std(), rel=1e-4)
    assert np.all(np.isfinite(model.score_samples(X)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transform_without_std_computes_no_std_and_the_same_means(dtype, monkeypatch):
    X = _gaussian_data().astype(dtype)
    X[3, 1] = np.nan  # a row with a gap goes through the masked encoder
    model = GaussianVAE(n_components=2, **SMALL).fit(_gaussian_data())
    mean, std = model.transform(X, return_std=True)
    with torch.inference_mode():  # the encoder's means, rounded to X's type
        reference = model.module_.encode(torch.as_tensor(X[:3], dtype=torch.float32))[0]
    np.testing.assert_allclose(mean[:3], reference.numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(std > 0)

    def refuse(*args):
        raise AssertionError("transform(return_std=False) computed the posterior std")

    monkeypatch.setattr(type(model), "_posterior_std", staticmethod(refuse))
    alone = model.transform(X)
    assert alone.dtype == dtype
    np.testing.assert_array_equal(alone, mean)  # bit for bit


def test_a_learning_rate_that_makes_training_worse_warns_and_keeps_the_best_weights():
    # learning_rate_init=1e3 sends the loss from ~6 nats (first epoch) to ~1e30 and keeps it
    # finite there: training ends "converged" at a useless model unless the rise is caught.
    X = np.random.RandomState(0).normal(size=(60, 4))
    model = GaussianVAE(n_components=2, hidden_layer_sizes=(8,), learning_rate_init=1e3,
                        max_iter=20, device="cpu", random_state=0)
    with pytest.warns(ConvergenceWarning, match=r"diverged.*learning_rate_init=1000"):
        model.fit(X)
    assert max(model.loss_curve_) > 1e20  # the run did go astray
    assert model.score(X) > -20.0  # the kept weights are those of the best epoch
    assert -model.score(X) == pytest.approx(model.best_loss_, rel=0.5)


def test_an_ordinary_fit_does_not_claim_divergence():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        GaussianVAE(n_components=2, hidden_layer_sizes=(8,), max_iter=200, device="cpu",
                    random_state=0).fit(np.random.RandomState(0).normal(size=(60, 4)))


def _all_finite(model):
    return all(bool(torch.isfinite(p).all()) for p in model.module_.parameters())


@pytest.mark.parametrize("learning_rate", [1e3, 1e6])
@pytest.mark.parametrize("model, X", _models())
def test_a_diverging_learning_rate_never_leaves_a_non_finite_model(model, X, learning_rate):
    fresh = clone(model).set_params(learning_rate_init=learning_rate, max_iter=5)
    try:
        fresh.fit(X)
    except ValueError as error:
        assert f"learning_rate_init={learning_rate}" in str(error)
        assert not hasattr(fresh, "module_")
    else:
        assert _all_finite(fresh) and np.all(np.isfinite(fresh.score_samples(X)))
    # From a good model, warm starts and partial fits keep finite weights (warning if any
    # epoch diverged, and then keeping the weights from before it).
    warm = clone(model).set_params(max_iter=3).fit(X)
    warm.set_params(warm_start=True, learning_rate_init=learning_rate)
    for method in ("fit", "partial_fit", "fit"):
        getattr(warm, method)(X)
        assert _all_finite(warm) and np.all(np.isfinite(warm.score_samples(X)))
        assert np.all(np.isfinite(warm.loss_curve_))


def _on_step(monkeypatch, number, action):
    """From now on, the ``number``-th optimizer step of training also runs ``action(module)``."""
    from skvae.nn import _engine

    original, count = _engine._epoch, [0]

    def epoch(module, optimizer, *args):
        step = optimizer.step

        def patched(*a, **k):
            out = step(*a, **k)
            count[0] += 1
            if count[0] == number:
                action(module)
            return out

        optimizer.step = patched
        try:
            return original(module, optimizer, *args)
        finally:
            del optimizer.step

    monkeypatch.setattr(_engine, "_epoch", epoch)


def _poison_weights_at_step(monkeypatch, number, value=float("inf")):
    _on_step(monkeypatch, number, lambda module: next(module.parameters()).data.fill_(value))


def _interrupt_at_step(monkeypatch, number):
    def interrupt(module):
        raise KeyboardInterrupt

    _on_step(monkeypatch, number, interrupt)


@pytest.mark.parametrize("model, X", _models())
def test_non_finite_weights_after_the_last_step_are_not_kept(model, X, monkeypatch):
    # 150 rows, batches of 64: 3 steps per epoch. The last step of the last epoch makes a
    # weight infinite after the epoch's loss was computed: the loss alone would not show it.
    reference = clone(model).set_params(max_iter=2).fit(X)
    _poison_weights_at_step(monkeypatch, 9)
    model = clone(model).set_params(max_iter=3)
    with pytest.warns(ConvergenceWarning, match="non-finite in epoch 3.*restored"):
        model.fit(X)
    assert model.n_iter_ == 2 and _all_finite(model)
    np.testing.assert_array_equal(model.score_samples(X), reference.score_samples(X))
    # In the first epoch there are no finite weights to keep: a clear error.
    monkeypatch.undo()
    _poison_weights_at_step(monkeypatch, 3, float("nan"))
    fresh = clone(model)
    with pytest.raises(ValueError, match=r"diverged in its first epoch.*learning_rate_init=0\.001"):
        fresh.fit(X)
    assert not hasattr(fresh, "module_")


@pytest.mark.parametrize("model, X", _models())
def test_interrupt_after_finished_epochs_warns_and_keeps_them(model, X, monkeypatch):
    # Ctrl-C in the second minibatch of epoch 3 (counted from 0), 3 minibatches per epoch:
    # like sklearn's MLP, training stops with a warning and the model is the 3-epoch one.
    reference = clone(model).set_params(max_iter=3).fit(X)
    _interrupt_at_step(monkeypatch, 3 * 3 + 2)
    model = clone(model)
    with pytest.warns(ConvergenceWarning, match=r"interrupted.*keeps the 3 epoch\(s\)"):
        assert model.fit(X) is model
    monkeypatch.undo()
    assert model.n_iter_ == len(model.loss_curve_) == 3
    assert model.loss_curve_ == reference.loss_curve_
    np.testing.assert_array_equal(model.score_samples(X), reference.score_samples(X))
    # Training continues exactly as after an uninterrupted fit.
    model.partial_fit(X), reference.partial_fit(X)
    np.testing.assert_array_equal(model.transform(X), reference.transform(X))


@pytest.mark.parametrize("model, X", _models())
def test_interrupt_before_an_epoch_finished_changes_nothing(model, X, monkeypatch):
    fresh = clone(model)
    _interrupt_at_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        fresh.fit(X)
    assert not hasattr(fresh, "module_") and vars(fresh) == vars(clone(model))
    monkeypatch.undo()
    # A fitted model interrupted in the first epoch of partial_fit or of a warm start is the
    # model it was: the next partial_fit gives what it would have without the interruption.
    fitted, reference = clone(model).fit(X), clone(model).fit(X)
    fitted.set_params(warm_start=True)
    for method in ("partial_fit", "fit"):
        _interrupt_at_step(monkeypatch, 1)
        with pytest.raises(KeyboardInterrupt):
            getattr(fitted, method)(X)
        monkeypatch.undo()
        assert fitted.n_iter_ == 15 and fitted.loss_curve_ == reference.loss_curve_
    fitted.partial_fit(X), reference.partial_fit(X)
    assert fitted.loss_curve_ == reference.loss_curve_
    np.testing.assert_array_equal(fitted.transform(X), reference.transform(X))


def test_float64_networks():
    X = _gaussian_data()
    model = GaussianVAE(n_components=2, dtype="float64", **SMALL).fit(X)
    assert next(model.module_.parameters()).dtype == torch.float64
    assert model.transform(X).dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert np.all(np.isfinite(model.score_samples(X)))


def test_a_first_partial_fit_trains_on_every_row_even_with_early_stopping():
    # partial_fit's docstring: early_stopping does not apply there. The first call used to
    # hold out validation_fraction of the chunk all the same (and record validation scores).
    X = np.random.RandomState(0).normal(size=(60, 4))
    settings = dict(n_components=2, hidden_layer_sizes=(8,), device="cpu", random_state=0)
    stopped = GaussianVAE(early_stopping=True, **settings).partial_fit(X)
    plain = GaussianVAE(**settings).partial_fit(X)
    assert stopped.validation_scores_ is None
    assert stopped.loss_curve_ == plain.loss_curve_
