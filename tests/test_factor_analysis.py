"""FactorAnalysisEM against scikit-learn's FactorAnalysis, scipy and its own closed forms."""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.decomposition import FactorAnalysis
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from skvae import FactorAnalysisEM
from skvae.linear import _gaussian as gauss
from skvae.linear._moments import merge_moments


@pytest.mark.parametrize("data, k", [("digits", 5), ("digits", 20), ("cancer", 5),
                                     ("cancer", 20), ("wine", 3)])
def test_reaches_sklearn_likelihood(data, k, request):
    X = request.getfixturevalue(data)
    # Without digits' constant columns: their noise variance is each model's floor (ours
    # relative to the data scale, scikit-learn's an absolute 1e-12), not a fitted value. And
    # standardized: our start psi = diag(S) is scikit-learn's (ones) only there; on raw digits
    # with k=20 the two starts reach different local optima (-118.64 vs -118.59; raw wine with
    # k=3: -19.18 vs -19.72), so neither dominates.
    X = StandardScaler().fit_transform(X[:, X.std(axis=0) > 0])
    ours = FactorAnalysisEM(n_components=k, device="cpu").fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = FactorAnalysis(n_components=k, random_state=0).fit(X)
    assert ours.score(X) >= theirs.score(X) - 1e-6
    assert np.all(np.diff(ours.loglike_) >= 0)
    assert ours.loglike_[-1] / X.shape[0] == pytest.approx(ours.score(X), abs=1e-3)
    assert ours.n_iter_ == len(ours.loglike_) < ours.max_iter


@pytest.mark.parametrize("data", ["digits", "cancer", "wine"])
def test_score_samples_equals_scipy(data, request):
    X = request.getfixturevalue(data)
    if data == "digits":  # without the constant columns, whose 1e-12 variance scipy rejects
        X = X[:, X.std(axis=0) > 0]
    model = FactorAnalysisEM(n_components=4, device="cpu").fit(X)
    reference = multivariate_normal(model.mean_, model.get_covariance()).logpdf(X)
    np.testing.assert_allclose(model.score_samples(X), reference, rtol=1e-8)


def test_constant_columns_stay_finite(digits):
    model = FactorAnalysisEM(n_components=8, device="cpu").fit(digits)
    constant = digits.std(axis=0) == 0
    assert constant.sum() == 3
    floor = 1e-12 * digits.var(axis=0).mean()  # relative to the data scale
    np.testing.assert_allclose(model.noise_variance_[constant], floor, rtol=1e-10)
    assert np.all(np.isfinite(model.score_samples(digits)))
    assert np.all(np.isfinite(model.transform(digits)))


def test_posterior_closed_form(cancer):
    model = FactorAnalysisEM(n_components=3, device="cpu").fit(cancer)
    W, psi, mu = model.components_.T, model.noise_variance_, model.mean_
    G = np.linalg.inv(np.eye(3) + W.T @ (W / psi[:, None]))
    mean, std = model.transform(cancer, return_std=True)
    np.testing.assert_allclose(mean, (cancer - mu) @ (W / psi[:, None]) @ G, atol=1e-10)
    np.testing.assert_allclose(std[0], np.sqrt(np.diag(G)), rtol=1e-10)
    np.testing.assert_allclose(model.get_precision(), np.linalg.inv(model.get_covariance()),
                               rtol=1e-7, atol=1e-9)


def test_components_are_in_canonical_form(cancer):
    model = FactorAnalysisEM(n_components=4, device="cpu").fit(cancer)
    W, psi = model.components_.T, model.noise_variance_
    inner = W.T @ (W / psi[:, None])
    off_diagonal = inner - np.diag(np.diag(inner))
    assert np.abs(off_diagonal).max() < 1e-8 * np.abs(inner).max()
    assert np.all(np.diff(np.diag(inner)) <= 0)
    largest = np.abs(W).argmax(axis=0)
    assert np.all(W[largest, np.arange(4)] > 0)


@pytest.mark.parametrize("rotation", ["varimax", "quartimax"])
def test_rotation_keeps_the_model_and_simplifies_loadings(rotation, cancer):
    plain = FactorAnalysisEM(n_components=4, device="cpu").fit(cancer)
    rotated = FactorAnalysisEM(n_components=4, rotation=rotation, device="cpu").fit(cancer)
    np.testing.assert_allclose(rotated.get_covariance(), plain.get_covariance(), atol=1e-10)
    np.testing.assert_allclose(rotated.score_samples(cancer), plain.score_samples(cancer),
                               rtol=1e-10)

    def criterion(W):  # the varimax / quartimax objective, larger is simpler
        gamma = 1.0 if rotation == "varimax" else 0.0
        squares = W**2
        return (squares**2).sum() - gamma / len(W) * (squares.sum(axis=0) ** 2).sum()

    assert criterion(rotated.components_.T) > criterion(plain.components_.T) + 1e-3
    # transform follows the rotated loadings: same reconstruction of the data
    np.testing.assert_allclose(rotated.inverse_transform(rotated.transform(cancer)),
                               plain.inverse_transform(plain.transform(cancer)), atol=1e-8)


def test_varimax_matches_sklearn_rotation(cancer):
    ours = FactorAnalysisEM(n_components=3, rotation="varimax", device="cpu").fit(cancer)
    theirs = FactorAnalysis(n_components=3, rotation="varimax", random_state=0).fit(cancer)
    # Both fits reach the same optimum here; varimax then leaves factors up to order and sign.
    similarity = np.abs(_unit(ours.components_) @ _unit(theirs.components_).T)
    assert np.all(similarity.max(axis=1) > 0.999)


def _unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


@pytest.mark.parametrize("k", [5, 10])
def test_squarem_with_half_the_work_beats_plain_em(k, cancer):
    # A jump is kept only if it beats theta2 (MATH.md), which spends some evaluations on
    # rejected jumps: measured, SQUAREM with 100 recorded points no longer beats 300 plain ones.
    X = torch.as_tensor(cancer)
    count, mean, scatter = merge_moments((0, None, None), X, low_rank=lambda rows: False)
    S = scatter / count
    model = FactorAnalysisEM(n_components=k)
    model._dtype, model.n_components_ = torch.float64, k
    W, psi = model._initial_loadings(S)
    start = gauss.Params(W, psi, mean)

    def step(p):
        return gauss.em_step_stats(S, count, p, isotropic=False, floor=1e-12)


    final = {}
    for accelerate, budget in ((False, 300), (True, 150)):
        _, loglikes, _ = gauss.run_em(step, start, n=count, max_iter=budget, tol=0.0,
                                      accelerate=accelerate, floor=1e-12)
        assert np.all(np.diff(loglikes) >= 0)
        final[accelerate] = loglikes[-1] / count
    assert final[True] > final[False]


def test_convergence_warning_at_max_iter(cancer):
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        model = FactorAnalysisEM(n_components=5, max_iter=3, device="cpu").fit(cancer)
    assert model.n_iter_ == 3


def test_noise_variance_init(cancer):
    # The start matters after a few iterations (a parameter that is ignored would give the
    # same early iterate from any start) but not at convergence (same maximum).
    init = np.full(30, 0.5)
    early = {}
    for scale in (1.0, 40.0):
        with pytest.warns(ConvergenceWarning):
            early[scale] = FactorAnalysisEM(n_components=5, noise_variance_init=scale * init,
                                            max_iter=3, device="cpu").fit(cancer)
    assert not np.allclose(early[1.0].noise_variance_, early[40.0].noise_variance_, rtol=1e-2)
    model = FactorAnalysisEM(n_components=5, noise_variance_init=init, device="cpu").fit(cancer)
    reference = FactorAnalysisEM(n_components=5, device="cpu").fit(cancer)
    assert model.score(cancer) == pytest.approx(reference.score(cancer), abs=1e-3)
    with pytest.raises(ValueError, match="noise_variance_init must hold n_features=30"):
        FactorAnalysisEM(noise_variance_init=np.ones(3), device="cpu").fit(cancer)
    with pytest.raises(ValueError, match="noise_variance_init must hold"):
        FactorAnalysisEM(noise_variance_init=-init, device="cpu").fit(cancer)


def test_k_equal_d_is_allowed(wine):
    model = FactorAnalysisEM(device="cpu").fit(wine)
    assert model.n_components_ == 13
    assert np.all(np.isfinite(model.score_samples(wine)))
    assert list(model.get_feature_names_out()[:2]) == ["factoranalysisem0", "factoranalysisem1"]


@pytest.mark.parametrize("rotation", ["varimax", "quartimax"])
def test_rotation_is_sklearns_rotation_of_the_unrotated_loadings(rotation, cancer):
    # The rotation is scikit-learn's own (Kaiser's SVD iteration), with tol=1e-8, max_iter=500.
    from sklearn.decomposition._factor_analysis import _ortho_rotation

    plain = FactorAnalysisEM(n_components=4, device="cpu").fit(cancer)
    rotated = FactorAnalysisEM(n_components=4, rotation=rotation, device="cpu").fit(cancer)
    expected = _ortho_rotation(plain.components_.T, method=rotation, tol=1e-8, max_iter=500)
    np.testing.assert_allclose(rotated.components_, expected, rtol=1e-12, atol=1e-14)


# With gaps, float32 EM stops after 90 iterations (float64: 526), its rounding allowance being
# float32's: 2.5 nats per row apart (33 before the per-feature floor).
@pytest.mark.parametrize("gaps, nats", [(False, 1.0), (True, 3.0)], ids=["complete", "gaps"])
def test_float32_keeps_columns_on_a_small_scale(gaps, nats):
    # Raw breast cancer: areas vary by 1e5, fractal dimensions by 5e-5. A float32 noise floor
    # of 1e-6 times the mean variance (4e-3) sat far above the small columns' variance and
    # cost 33 nats per row; each column's floor is now relative to its own variance.
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer().data
    if gaps:
        X = X.copy()
        X[np.random.RandomState(0).uniform(size=X.shape) < 0.05] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exact = FactorAnalysisEM(n_components=5, device="cpu").fit(X)
        single = FactorAnalysisEM(n_components=5, dtype="float32", device="cpu").fit(X)
    assert abs(single.score(X) - exact.score(X)) < nats
    variances = np.nanvar(X, axis=0)
    small = np.argsort(variances)[:5]  # the floor was 60 to 600 times their variance
    assert np.all(single.noise_variance_[small] < variances[small])
