"""Stress test of issue 15: extreme finite inputs never give silent NaN.

Every estimator (float32 and float64), fitted once on ordinary data, is fed seeded random
matrices that mix ordinary rows with extreme finite values (+-1e30, +-1e36 and, for float64
models, +-1e155, +-1e300, 1.7e308; 1e-30, 1e-300, subnormals; whole rows of them), and every
method that reads rows or codes is called. The rule checked on every output:

- no NaN comes back unless a warning named the rows holding it;
- scores are finite or -inf (never NaN, never +inf), and a -inf row is named in a warning;
- a LatentOutlierDetector labels every row its estimator cannot score (-inf) an outlier (-1).
"""

import re
import warnings

import numpy as np
import pytest

from skvae import (
    PPCA,
    BernoulliVAE,
    CountVAE,
    FactorAnalysisEM,
    GaussianVAE,
    LatentOutlierDetector,
)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_FEATURES = 5
VAE = dict(n_components=2, hidden_layer_sizes=(16,), max_iter=2, batch_size=32,
           n_importance_samples=8, device="cpu", random_state=0)
MODELS = {
    "ppca": (lambda dtype: PPCA(n_components=2, dtype=dtype, device="cpu"), "real"),
    "fa": (lambda dtype: FactorAnalysisEM(n_components=2, dtype=dtype, device="cpu"), "real"),
    "gaussian_vae": (lambda dtype: GaussianVAE(dtype=dtype, **VAE), "real"),
    "bernoulli_vae": (lambda dtype: BernoulliVAE(dtype=dtype, **VAE), "unit"),
    **{f"count_vae_{name}": ((lambda dtype, name=name: CountVAE(likelihood=name, dtype=dtype,
                                                                 **VAE)), "count")
       for name in ("poisson", "nb", "zinb")},
}
CASES = [(name, dtype) for name in MODELS for dtype in ("float32", "float64")]


def _training_data(kind, rng):
    if kind == "real":
        return rng.normal(size=(80, N_FEATURES))
    if kind == "unit":
        return (rng.uniform(size=(80, N_FEATURES)) < 0.4).astype(float)
    return rng.poisson(5.0, size=(80, N_FEATURES)).astype(float)


def _extremes(kind, dtype):
    """The extreme finite values a model of this kind accepts."""
    tiny = [1e-30, 1e-300, 5e-324, 1e-40]
    if kind == "unit":
        return tiny
    huge = [1e30, 1e36] + ([1e155, 1e300, 1.7e308] if dtype == "float64" else [3e38])
    if kind == "count":
        return huge
    return huge + [-v for v in huge] + tiny + [-v for v in tiny]


def _stress_matrix(kind, dtype, seed):
    """Six rows: ordinary ones, one of extreme values only, others with a few extreme entries."""
    rng = np.random.RandomState(seed)
    X = _training_data(kind, rng)[:6].copy()
    pool = np.array(_extremes(kind, dtype))
    X[0] = rng.choice(pool, size=N_FEATURES)
    hit = rng.uniform(size=(5, N_FEATURES)) < 0.3
    X[1:][hit] = rng.choice(pool, size=int(hit.sum()))
    return X


@pytest.fixture(scope="module")
def fitted():
    """Every (model, dtype) fitted once on ordinary data, with a detector around it."""
    models = {}
    for name, dtype in CASES:
        make, kind = MODELS[name]
        X = _training_data(kind, np.random.RandomState(0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models[name, dtype] = (make(dtype).fit(X),
                                   LatentOutlierDetector(make(dtype)).fit(X), kind)
    return models


def _call(method, *args, **kwargs):
    """(result, text of every warning raised); None for a clear ValueError on bad input."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = method(*args, **kwargs)
        except ValueError:
            return None, ""
    return result, " ".join(str(w.message) for w in caught)


def _named(rows, text):
    """Whether a warning text names the first of the given rows (as '[i' or ', i')."""
    return all(re.search(rf"[\[ ]{i}[,\]]", text) for i in rows[:5])


def _check_no_silent_nan(label, result, text):
    parts = result if isinstance(result, tuple) else (
        list(result.values()) if isinstance(result, dict) else [result])
    for values in parts:
        values = np.asarray(values, dtype=np.float64)
        rows = np.flatnonzero(np.isnan(values.reshape(values.shape[0], -1)).any(axis=1))
        assert rows.size == 0 or _named(rows.tolist(), text), (
            f"{label}: NaN in rows {rows.tolist()} without a warning naming them ({text!r})")


def _check_scores(label, scores, text):
    scores = np.asarray(scores, dtype=np.float64)
    assert not np.isnan(scores).any() and not (scores == np.inf).any(), f"{label}: {scores}"
    lowest = np.flatnonzero(scores == -np.inf).tolist()
    assert not lowest or _named(lowest, text), f"{label}: -inf rows {lowest} unnamed ({text!r})"


@pytest.mark.parametrize("name, dtype", CASES)
def test_extreme_finite_inputs_never_give_silent_nan(fitted, name, dtype):
    model, detector, kind = fitted[name, dtype]
    for seed in range(3):
        X = _stress_matrix(kind, dtype, seed)
        label = f"{name} {dtype} seed={seed}"
        for std in (False, True):
            result, text = _call(model.transform, X, return_std=std)
            if result is not None:
                _check_no_silent_nan(f"{label} transform(return_std={std})", result, text)
        for method in ("score_samples", "elbo_samples"):
            if hasattr(model, method):
                scores, text = _call(getattr(model, method), X)
                if scores is not None:
                    _check_scores(f"{label} {method}", scores, text)
        score, _ = _call(model.score, X)
        assert score is None or not np.isnan(score), label
        if hasattr(model, "score_breakdown"):
            terms, text = _call(model.score_breakdown, X)
            if terms is not None:
                _check_scores(f"{label} breakdown", terms["log_likelihood"], text)
                _check_scores(f"{label} breakdown", terms["elbo"], text)
                _check_no_silent_nan(f"{label} score_breakdown", terms, text)
        gappy = X.copy()
        gappy[:, -1] = np.nan
        imputed, text = _call(model.impute, gappy)  # CountVAE refuses NaN: a ValueError
        if imputed is not None:
            _check_no_silent_nan(f"{label} impute", imputed, text)
        codes = np.array([[0.0, 0.0], [1e30, -1e30], [-1e-300, 5e-324]])
        decoded, text = _call(model.inverse_transform, codes)
        if decoded is not None:
            _check_no_silent_nan(f"{label} inverse_transform", decoded, text)
        scores, _ = _call(detector.score_samples, X)
        labels, _ = _call(detector.predict, X)
        decision, _ = _call(detector.decision_function, X)
        if scores is not None:
            _check_scores(f"{label} detector", scores, "[" + ", ".join(
                str(i) for i in np.flatnonzero(scores == -np.inf)) + "]")
            assert np.all(labels[scores == -np.inf] == -1), f"{label}: {scores} {labels}"
            assert np.all(decision[scores == -np.inf] < 0), label
    drawn, text = _call(model.sample, 5, random_state=0)
    _check_no_silent_nan(f"{name} {dtype} sample", drawn, text)
