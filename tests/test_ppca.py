"""PPCA against closed forms, scikit-learn's PCA and scipy."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from skvae import PPCA


def _unit_rows(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


@pytest.mark.parametrize("data, k", [("digits", 10), ("cancer", 5), ("wine", 3), ("digits", 40)])
def test_matches_pca_when_n_exceeds_d(data, k, request):
    X = request.getfixturevalue(data)
    n = X.shape[0]
    model = PPCA(n_components=k, device="cpu").fit(X)
    pca = PCA(n_components=k, svd_solver="full").fit(X)
    ratio = (n - 1) / n  # PCA estimates variances with n - 1, maximum likelihood with n
    np.testing.assert_allclose(model.get_covariance(), pca.get_covariance() * ratio, rtol=1e-8,
                               atol=1e-10 * np.abs(pca.get_covariance()).max())
    np.testing.assert_allclose(model.noise_variance_, pca.noise_variance_ * ratio, rtol=1e-8)
    np.testing.assert_allclose(model.explained_variance_, pca.explained_variance_ * ratio, rtol=1e-8)
    np.testing.assert_allclose(model.explained_variance_ratio_, pca.explained_variance_ratio_,
                               rtol=1e-8)
    # Same principal axes with the same sign convention, so the subspace is identical.
    np.testing.assert_allclose(_unit_rows(model.components_), pca.components_, atol=1e-8)
    np.testing.assert_allclose(model.mean_, pca.mean_, atol=1e-12)
    # The maximum-likelihood parameters can only score at least as well on the training data.
    assert model.score(X) >= pca.score(X)


def test_n_below_d_uses_the_maximum_likelihood_noise(wide):
    # With n <= d, PCA averages the discarded eigenvalues over n - k directions (the rest are
    # zero), while the maximum-likelihood sigma2 averages over all d - k.
    n, d = wide.shape
    k = 5
    model = PPCA(n_components=k, device="cpu").fit(wide)
    pca = PCA(n_components=k, svd_solver="full").fit(wide)
    expected = pca.noise_variance_ * (n - 1) / n * (n - k) / (d - k)
    np.testing.assert_allclose(model.noise_variance_, expected, rtol=1e-8)
    np.testing.assert_allclose(model.explained_variance_, pca.explained_variance_ * (n - 1) / n,
                               rtol=1e-8)
    np.testing.assert_allclose(_unit_rows(model.components_), pca.components_, atol=1e-8)
    assert model.score(wide) > pca.score(wide)


def test_svd_and_eigh_solvers_agree(wide, wine):
    for X in (wide, wine):
        by_svd = PPCA(n_components=3, solver="svd", device="cpu").fit(X)
        by_eigh = PPCA(n_components=3, solver="eigh", device="cpu").fit(X)
        np.testing.assert_allclose(by_svd.get_covariance(), by_eigh.get_covariance(), rtol=1e-8,
                                   atol=1e-10 * np.abs(by_eigh.get_covariance()).max())


@pytest.mark.parametrize("data", ["digits", "cancer", "wide"])
def test_score_samples_equals_scipy(data, request):
    X = request.getfixturevalue(data)
    model = PPCA(n_components=4, device="cpu").fit(X)
    reference = multivariate_normal(model.mean_, model.get_covariance()).logpdf(X)
    np.testing.assert_allclose(model.score_samples(X), reference, rtol=1e-8)
    assert model.score(X) == pytest.approx(reference.mean(), rel=1e-10)


def test_posterior_and_precision_closed_forms(cancer):
    model = PPCA(n_components=4, device="cpu").fit(cancer)
    W, mu, s2 = model.components_.T, model.mean_, model.noise_variance_
    M = W.T @ W + s2 * np.eye(4)
    mean, std = model.transform(cancer, return_std=True)
    np.testing.assert_allclose(mean, np.linalg.solve(M, W.T @ (cancer - mu).T).T, atol=1e-10)
    np.testing.assert_allclose(std, np.tile(np.sqrt(np.diag(s2 * np.linalg.inv(M))), (569, 1)),
                               rtol=1e-10)
    np.testing.assert_allclose(model.get_precision() @ model.get_covariance(), np.eye(30),
                               atol=1e-9)
    Z = np.random.RandomState(0).normal(size=(7, 4))
    np.testing.assert_allclose(model.inverse_transform(Z), Z @ W.T + mu, atol=1e-12)
    # Decoding then encoding shrinks by (W^T W + s2 I)^-1 W^T W, exactly.
    np.testing.assert_allclose(model.transform(model.inverse_transform(Z)),
                               np.linalg.solve(M, W.T @ W @ Z.T).T, atol=1e-10)


def test_em_solver_converges_to_the_closed_form(wine, cancer):
    # Standardized data: on raw wine (variances from 0.01 to 1e5) EM's linear rate crawls.
    for X in (StandardScaler().fit_transform(wine), cancer):
        closed = PPCA(n_components=3, device="cpu").fit(X)
        em = PPCA(n_components=3, solver="em", tol=1e-12, max_iter=5000, random_state=0,
                  device="cpu").fit(X)
        assert np.all(np.diff(em.loglike_) >= 0)
        # EM stops where its log-likelihood no longer rises above rounding noise (~1e-9 relative)
        assert em.score(X) == pytest.approx(closed.score(X), abs=1e-5)
        assert em.score(X) <= closed.score(X) + 1e-9
        np.testing.assert_allclose(em.get_covariance(), closed.get_covariance(), rtol=1e-3,
                                   atol=1e-3 * np.abs(closed.get_covariance()).max())
        np.testing.assert_allclose(np.abs(em.components_), np.abs(closed.components_), atol=1e-3 *
                                   np.abs(closed.components_).max())


def test_default_n_components_leaves_one_direction_for_the_noise(wine, wide):
    assert PPCA(device="cpu").fit(wine).n_components_ == wine.shape[1] - 1
    assert PPCA(device="cpu").fit(wide).n_components_ == wide.shape[0] - 2
    two = np.random.RandomState(0).normal(size=(30, 2))
    model = PPCA(device="cpu").fit(two)
    assert model.n_components_ == 1 and model.noise_variance_ > 0


def test_sample_has_the_model_covariance(wine):
    model = PPCA(n_components=3, device="cpu", random_state=0).fit(wine)
    draws = model.sample(100_000)
    assert draws.shape == (100_000, 13)
    scale = np.sqrt(np.diag(model.get_covariance()))
    np.testing.assert_allclose(draws.mean(axis=0), model.mean_, atol=0.02 * scale.max())
    corr = np.cov(draws.T) / np.outer(scale, scale)
    np.testing.assert_allclose(corr, model.get_covariance() / np.outer(scale, scale), atol=0.02)
    np.testing.assert_array_equal(model.sample(5), model.sample(5))  # seeded by random_state
    np.testing.assert_array_equal(model.sample(5, random_state=1), model.sample(5, random_state=1))
    assert not np.array_equal(model.sample(5, random_state=1), model.sample(5, random_state=2))


def test_feature_names_out(wine):
    model = PPCA(n_components=3, device="cpu").fit(wine)
    assert list(model.get_feature_names_out()) == ["ppca0", "ppca1", "ppca2"]


def test_float32_is_close_to_float64(cancer):
    exact = PPCA(n_components=5, device="cpu").fit(cancer)
    single = PPCA(n_components=5, dtype="float32", device="cpu").fit(cancer)
    # Outputs follow the input's dtype, not the model's (see test_linear_scale.py).
    assert single.transform(cancer).dtype == np.float64
    assert single.transform(cancer.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(single.score_samples(cancer), exact.score_samples(cancer),
                               rtol=1e-4)


def test_a_large_offset_costs_no_precision(digits):
    # The scatter is accumulated from centred rows, so a constant offset changes nothing;
    # PCA(svd_solver="covariance_eigh") forms X^T X - n mean mean^T and loses the spectrum
    # (measured: relative error 8e-7 at offset 1e6, 0.25 at 1e8).
    reference = PPCA(n_components=10, device="cpu").fit(digits)
    shifted = PPCA(n_components=10, device="cpu").fit(digits + 1e8)
    np.testing.assert_allclose(shifted.explained_variance_, reference.explained_variance_,
                               rtol=1e-12)
    assert shifted.noise_variance_ == pytest.approx(reference.noise_variance_, rel=1e-12)


def test_float32_scoring_keeps_digits_on_columns_of_very_different_scales(wine):
    # Raw wine: |W_j|^2 / sigma2 reaches 5e5 (proline), so the Woodbury quadratic form
    # subtracts two numbers 5e5 times larger than it, losing 0.3 nats per row in float32
    # (7 digits). Scored as a sum of squares, float32 loses no more than its rounding.
    from skvae.linear._gaussian import log_likelihood

    model = PPCA(n_components=5, device="cpu").fit(wine)
    mu, W, psi = model.mean_, model.components_.T, np.full(13, model.noise_variance_)
    exact = log_likelihood(*(torch.as_tensor(a) for a in (wine, mu, W, psi))).numpy()
    single = log_likelihood(*(torch.as_tensor(a, dtype=torch.float32)
                              for a in (wine, mu, W, psi))).numpy()
    np.testing.assert_allclose(single, exact, rtol=1e-5, atol=1e-4)
