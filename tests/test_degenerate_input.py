"""Issue 15, section 6: degenerate data and the messages that explain it.

Negative-stride views, constant columns, NaN beside huge values, pandas columns that are not
numbers, and messages that must be true for the value that triggered them.
"""

import warnings

import numpy as np
import pytest

from skvae import PPCA, BernoulliVAE, CountVAE, FactorAnalysisEM, GaussianVAE, LatentOutlierDetector

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

VAE = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=2, n_importance_samples=4,
           device="cpu", random_state=0)


def _data(kind, n=40, d=5, seed=0):
    rng = np.random.RandomState(seed)
    if kind == "counts":
        return rng.poisson(3.0, size=(n, d)).astype(float)
    if kind == "binary":
        return (rng.uniform(size=(n, d)) > 0.5).astype(float)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d))


ESTIMATORS = [
    (PPCA(n_components=2, device="cpu"), "real"),
    (PPCA(n_components=2, solver="em", device="cpu", random_state=0), "real"),
    (FactorAnalysisEM(n_components=2, device="cpu"), "real"),
    (GaussianVAE(**VAE), "real"),
    (BernoulliVAE(**VAE), "binary"),
    (CountVAE(**VAE), "counts"),
]
IDS = ["ppca", "ppca-em", "fa", "gaussian", "bernoulli", "count"]


@pytest.mark.parametrize("estimator, kind", ESTIMATORS, ids=IDS)
@pytest.mark.parametrize("view", [lambda X: X[::-1], np.flip, lambda X: X[:, ::-1]],
                         ids=["rows", "flip", "columns"])
def test_negative_stride_views_are_accepted_by_every_method(estimator, kind, view):
    X = _data(kind)
    flipped = view(X)
    assert any(s < 0 for s in flipped.strides)
    same = np.ascontiguousarray(flipped)
    model = estimator.fit(flipped)
    reference = type(estimator)(**estimator.get_params()).fit(same)
    np.testing.assert_allclose(model.score_samples(same), reference.score_samples(same),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.score_samples(flipped), model.score_samples(same),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.transform(flipped), model.transform(same), rtol=1e-5,
                               atol=1e-6)
    Z = model.transform(same)
    np.testing.assert_allclose(model.inverse_transform(Z[::-1]), model.inverse_transform(Z)[::-1],
                               rtol=1e-5, atol=1e-6)
    assert np.isfinite(model.score(flipped))
    np.testing.assert_array_equal(model.impute(flipped), same)
    if hasattr(model, "elbo_samples"):
        np.testing.assert_allclose(model.elbo_samples(flipped), model.elbo_samples(same),
                                   rtol=1e-5, atol=1e-5)
        model.score_breakdown(flipped)
    model.partial_fit(flipped)
    detector = LatentOutlierDetector(type(estimator)(**estimator.get_params())).fit(flipped)
    assert detector.predict(flipped).shape == (X.shape[0],)


def test_negative_stride_parameters_are_accepted():
    X = _data("real")
    FactorAnalysisEM(n_components=2, device="cpu", noise_variance_init=np.ones(10)[::2]).fit(X)
    model = CountVAE(**VAE).fit(_data("counts"))
    assert model.sample(3, library_size=np.array([10.0, 20.0, 30.0])[::-1]).shape == (3, 5)
