"""The EM side of PPCA and FactorAnalysisEM: shift and scale invariance, SQUAREM, stopping, limits."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from conftest import remove_at_random
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.decomposition import FactorAnalysis
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from skvae import PPCA, FactorAnalysisEM
from skvae.linear import _gaussian as gauss

OUTLIERS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "outliers"


# ---------------------------------------------------------------------- missing values, offsets
@pytest.mark.parametrize("cls", [PPCA, FactorAnalysisEM])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("offset", [1e3, 1e7, 1e9])
def test_em_with_gaps_is_shift_invariant(cls, dtype, offset, cancer):
    # Columns like timestamps: a large common offset. The values sit on a grid of 64 (standard
    # deviation 1024), so x + offset is exact in float32 too for every offset here and the two
    # fits see the same data; only the arithmetic can tell them apart.
    base, _ = remove_at_random(64.0 * np.round(cancer * 16.0), 0.1)
    reference = cls(n_components=5, dtype=dtype, device="cpu").fit(base)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        shifted = cls(n_components=5, dtype=dtype, device="cpu").fit(base + offset)
    # PPCA converges tightly. Factor analysis with gaps has a flat likelihood: two fits that
    # differ by rounding stop up to ~3e-3 nats per sample apart (of -202.6) with the default
    # tol; before centring, the offsets cost 10 (1e7) to 1e12 (1e9) nats per sample.
    rtol = 1e-9 if cls is PPCA and dtype == "float64" else 5e-5
    assert shifted.score(base + offset) == pytest.approx(reference.score(base), rel=rtol)
    np.testing.assert_allclose(shifted.mean_ - offset, reference.mean_, atol=64)
    assert np.all(np.diff(shifted.loglike_) >= -1e-9 * np.abs(shifted.loglike_[-1]))


def test_a_likelihood_decrease_is_not_convergence(cancer, monkeypatch):
    # If rounding (or a bug) makes a step lose more than noise, the fit must say so.
    X, _ = remove_at_random(cancer, 0.1)
    original = gauss.em_step_masked
    calls = []

    def faulty(*args, **kwargs):
        loglik, params = original(*args, **kwargs)
        calls.append(1)
        return (loglik - 1e3 if len(calls) == 6 else loglik), params

    monkeypatch.setattr(gauss, "em_step_masked", faulty)
    with pytest.warns(ConvergenceWarning, match="likelihood decreased"):
        FactorAnalysisEM(n_components=5, device="cpu").fit(X)


def test_ppca_float32_with_gaps_and_a_large_offset_fits(cancer):
    X, _ = remove_at_random(cancer, 0.1)
    model = PPCA(n_components=5, dtype="float32", device="cpu").fit(X + 1e7)
    assert np.isfinite(model.score(X + 1e7))
    assert np.all(np.isfinite(model.components_))


# ---------------------------------------------------------------------- iteration budget
@pytest.mark.parametrize("max_iter", [1, 2])
def test_factor_analysis_with_a_tiny_budget_fits_and_warns(max_iter, cancer):
    with pytest.warns(ConvergenceWarning, match=f"max_iter={max_iter}"):
        model = FactorAnalysisEM(n_components=5, max_iter=max_iter, device="cpu").fit(cancer)
    assert model.n_iter_ == max_iter == len(model.loglike_)
    assert np.isfinite(model.score(cancer))
    # the parameters returned are one EM step past the last point recorded: never worse
    assert model.loglike_[-1] / cancer.shape[0] <= model.score(cancer) + 1e-12


# ---------------------------------------------------------------------- SQUAREM
def test_squarem_keeps_a_jump_only_if_it_beats_the_second_em_point():
    # One parameter w; EM halves the distance to 10, so from w = 0 the points are 5 and 7.5 and
    # the SQUAREM jump lands exactly on 10. There the log-likelihood (6) beats theta1 (5) but
    # not theta2 (7.5): MATH.md's rule rejects the jump and EM climbs on towards 10.
    def loglik(w):
        return 6.0 if w == 10.0 else w

    def step(p):
        w = float(p.W[0, 0])
        return torch.tensor(loglik(w), dtype=torch.float64), gauss.Params(
            torch.full((1, 1), 10.0 - (10.0 - w) / 2, dtype=torch.float64), p.psi, p.mu)

    one = torch.ones(1, dtype=torch.float64)
    start = gauss.Params(torch.zeros(1, 1, dtype=torch.float64), one, one)
    _, loglikes, status = gauss.run_em(step, start, n=1, max_iter=200, tol=1e-3, floor=1e-12)
    assert loglikes[:3] == [0.0, 5.0, 7.5]
    assert np.all(np.diff(loglikes) > 0)
    assert loglikes[-1] > 9.9


@pytest.mark.parametrize("cls, params", [(FactorAnalysisEM, {}), (PPCA, {"solver": "em"})])
def test_recorded_likelihoods_never_decrease(cls, params, cancer):
    model = cls(n_components=5, device="cpu", random_state=0, **params).fit(cancer)
    assert np.all(np.diff(model.loglike_) >= -1e-12 * np.abs(model.loglike_[-1]))
    gappy = cls(n_components=5, device="cpu", random_state=0, **params).fit(
        remove_at_random(cancer, 0.2)[0])
    assert np.all(np.diff(gappy.loglike_) >= -1e-12 * np.abs(gappy.loglike_[-1]))


# ---------------------------------------------------------------------- stopping rule
def _mean_log_likelihood(X, mean, components, psi):
    """Mean log N(x; mean, W W^T + diag(psi)) over the rows, evaluated without cancellation.

    Independent of skvae: with M = Psi^-1/2 W and y = Psi^-1/2 (x - mean), the quadratic form
    is min_z |y - M z|^2 + |z|^2, a least-squares problem solved by a QR factorization of
    [M; I], whose R also gives log|I + M^T M| = 2 sum log|R_ii|. No term is ~1/psi times the
    answer, so noise variances at the floor (1e-12) cost no digits.
    """
    k = components.shape[0]
    root = np.sqrt(psi)
    M = components.T / root[:, None]
    Q, R = np.linalg.qr(np.vstack([M, np.eye(k)]))
    Y = (X - mean) / root
    z = np.linalg.solve(R, Q[: len(M)].T @ Y.T).T
    quadratic = ((Y - z @ M.T) ** 2).sum(axis=1) + (z**2).sum(axis=1)
    logdet = np.log(psi).sum() + 2.0 * np.log(np.abs(np.diag(R))).sum()
    return float(np.mean(-0.5 * (X.shape[1] * np.log(2.0 * np.pi) + logdet + quadratic)))


def _tabular_sets():
    sets = {
        "wine": load_wine().data,
        "diabetes": load_diabetes().data,
        "cancer": load_breast_cancer().data,
        "cancer27": load_breast_cancer().data[:, :27],
    }
    for name in ADBENCH_FAST + ADBENCH_SLOW:
        path = OUTLIERS / f"{name}.npz"
        sets[name] = np.load(path)["X"] if path.exists() else path
    return sets


# 6_cardio has three noise variances at the floor (a Heywood case, in scikit-learn too): the
# EM's own log-likelihood must keep its digits there for the stopping rule to see the gains.
# The slow ones are slow in scikit-learn (up to 1000 iterations of a randomized SVD).
ADBENCH_FAST = ["6_cardio", "4_breastw", "38_thyroid", "2_annthyroid", "23_mammography"]
ADBENCH_SLOW = ["24_mnist", "26_optdigits", "28_pendigits", "30_satellite", "32_shuttle"]
TABULAR = _tabular_sets()


@pytest.mark.parametrize("name", [name for name in TABULAR if name not in ADBENCH_SLOW]
                         + [pytest.param(name, marks=pytest.mark.slow) for name in ADBENCH_SLOW])
def test_default_settings_never_end_below_sklearn(name):
    X = TABULAR[name]
    if isinstance(X, Path):
        pytest.skip(f"{X} is absent (see ../shared/data/README.md)")
    X = StandardScaler().fit_transform(X)
    ours = FactorAnalysisEM(n_components=5, device="cpu").fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = FactorAnalysis(n_components=5).fit(X)
    # Both models scored by the same evaluator, per row, to 1e-6 nats.
    assert _mean_log_likelihood(X, ours.mean_, ours.components_, ours.noise_variance_) >= (
        _mean_log_likelihood(X, theirs.mean_, theirs.components_, theirs.noise_variance_) - 1e-6)
    assert ours.n_iter_ < ours.max_iter


def test_the_evaluator_of_the_sklearn_comparison_is_exact(wine):
    model = FactorAnalysis(n_components=4, random_state=0).fit(wine)
    mean_logpdf = multivariate_normal(model.mean_, model.get_covariance()).logpdf(wine).mean()
    assert _mean_log_likelihood(wine, model.mean_, model.components_,
                                model.noise_variance_) == pytest.approx(mean_logpdf, rel=1e-12)


# ---------------------------------------------------------------------- scale equivariance
@pytest.mark.parametrize("cls, params", [(PPCA, {}), (PPCA, {"solver": "em"}),
                                         (FactorAnalysisEM, {})])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-6), ("float32", 5e-2)])
@pytest.mark.parametrize("c", [1e-8, 1e-4, 1e4, 1e8])
def test_fits_are_scale_equivariant(cls, params, dtype, rtol, c, cancer):
    # Wine, standardized: no noise variance near zero, so the fits stop at the same point.
    X = StandardScaler().fit_transform(load_wine().data)
    make = lambda: cls(n_components=3, dtype=dtype, device="cpu", random_state=0, **params)  # noqa: E731
    reference = make().fit(X)
    scaled = make().fit(X * c)
    d = X.shape[1]
    assert scaled.score(X * c) == pytest.approx(reference.score(X) - d * np.log(c), rel=rtol,
                                                abs=rtol)
    C = reference.get_covariance()
    np.testing.assert_allclose(scaled.get_covariance() / c**2, C, atol=rtol * np.abs(C).max())
    if dtype == "float64":  # in float32 the weak third factor's direction is ill-determined
        W = reference.components_
        np.testing.assert_allclose(scaled.components_ / c, W, atol=rtol * 10 * np.abs(W).max())
        np.testing.assert_allclose(np.asarray(scaled.noise_variance_) / c**2,
                                   reference.noise_variance_, rtol=rtol * 10)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_constant_columns_get_a_floor_relative_to_the_data_scale(dtype, digits):
    constant = digits.std(axis=0) == 0
    for c in (1e-6, 1.0, 1e6):
        model = FactorAnalysisEM(n_components=8, dtype=dtype, device="cpu").fit(digits * c)
        floor = (1e-12 if dtype == "float64" else 1e-6) * np.var(digits * c, axis=0).mean()
        np.testing.assert_allclose(model.noise_variance_[constant], floor, rtol=1e-5)
        assert np.all(np.isfinite(model.score_samples(digits * c)))


# ---------------------------------------------------------------------- extreme data
def test_ppca_em_on_constant_data_fits():
    X = np.full((50, 4), 3.0)
    model = PPCA(n_components=2, solver="em", device="cpu", random_state=0).fit(X)
    np.testing.assert_allclose(model.mean_, 3.0)
    assert np.all(np.isfinite(model.components_)) and model.noise_variance_ > 0
    assert np.all(np.isfinite(model.score_samples(X)))


@pytest.mark.parametrize("scale", [1e15, 1e100])
def test_factor_analysis_on_huge_low_rank_data_fits(scale):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 2)) @ rng.normal(size=(2, 8)) * scale
    model = FactorAnalysisEM(n_components=3, device="cpu").fit(X)
    assert np.all(np.isfinite(model.components_))
    assert np.all(np.isfinite(model.noise_variance_)) and np.all(model.noise_variance_ > 0)
    assert np.all(np.isfinite(model.score_samples(X)))
    # the rank-2 signal is captured: the fitted covariance reproduces the data's
    np.testing.assert_allclose(model.get_covariance(), np.cov(X.T, bias=True), rtol=1e-6,
                               atol=1e-6 * scale**2)


def test_factor_analysis_on_float32_data_near_its_range():
    rng = np.random.RandomState(0)
    X = (rng.normal(size=(200, 2)) @ rng.normal(size=(2, 8)) + 0.1 * rng.normal(size=(200, 8)))
    model = FactorAnalysisEM(n_components=2, dtype="float32", device="cpu").fit(X * 1e15)
    assert np.all(np.isfinite(model.score_samples(X * 1e15)))
    with pytest.raises(ValueError, match="Rescale X"):
        FactorAnalysisEM(n_components=2, dtype="float32", device="cpu").fit(X * 1e20)


def test_log_likelihood_keeps_its_digits_with_noise_at_the_floor():
    # A column the factors explain almost exactly (psi_j at the floor) makes the Woodbury form
    # subtract two numbers ~1e12 times the answer; the log-density must still agree with an
    # evaluation in 60-digit arithmetic.
    mpmath = pytest.importorskip("mpmath")
    from skvae.linear import _gaussian as gauss

    rng = np.random.RandomState(0)
    d, k, n = 5, 2, 6
    W = rng.normal(size=(d, k))
    psi = np.array([1e-12, 1e-12, 0.3, 0.5, 1.1])
    z = rng.normal(size=(n, k))
    X = z @ W.T + rng.normal(size=(n, d)) * np.sqrt(psi)
    mpmath.mp.dps = 60
    C = mpmath.matrix((W @ W.T).tolist()) + mpmath.diag(psi.tolist())
    logdet = mpmath.log(mpmath.det(C))
    expected = []
    for row in X:
        r = mpmath.matrix(row.tolist())
        q = (r.T * mpmath.lu_solve(C, r))[0]
        expected.append(float(-0.5 * (d * mpmath.log(2 * mpmath.pi) + logdet + q)))
    T = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)
    got = gauss.log_likelihood(T(X), T(np.zeros(d)), T(W), T(psi)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- verbose
_EM_LINE = re.compile(r"Iteration (\d+), log-likelihood = (\S+)(?:, change = (\S+))?, \d+\.\d\d s")


@pytest.mark.parametrize("cls, params, gaps", [
    (PPCA, {"solver": "em"}, False),
    (PPCA, {}, True),
    (FactorAnalysisEM, {}, False),  # profile iterations, then EM: each printed once
    (FactorAnalysisEM, {"tol": 1e-3}, True),  # with gaps: a flat likelihood, a long tail
])
def test_verbose_prints_each_em_iteration_with_its_likelihood(cls, params, gaps, cancer, capsys):
    X = remove_at_random(cancer[:300, :12], 0.1)[0] if gaps else cancer
    model = cls(n_components=3, device="cpu", verbose=1, **params).fit(X)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == model.n_iter_ > 2
    matches = [_EM_LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    assert [int(m.group(1)) for m in matches] == list(range(1, model.n_iter_ + 1))
    per_sample = model.loglike_ / X.shape[0]
    printed = [float(m.group(2)) for m in matches]
    assert printed == pytest.approx(per_sample, rel=1e-5)
    assert matches[0].group(3) is None  # nothing to compare the first iteration with
    changes = [float(m.group(3)) for m in matches[1:]]
    assert changes == pytest.approx(np.diff(per_sample), rel=1e-2, abs=1e-9)


@pytest.mark.parametrize("solver", ["eigh", "svd"])
def test_verbose_closed_form_prints_one_line_with_the_training_likelihood(solver, cancer, capsys):
    model = PPCA(n_components=3, solver=solver, device="cpu", verbose=1).fit(cancer)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == model.n_iter_ == 1
    match = re.fullmatch(r"Iteration 1, log-likelihood = (\S+), closed form, "
                         rf"solver='{solver}', \d+\.\d\d s", lines[0])
    assert match, lines
    assert float(match.group(1)) == pytest.approx(model.score(cancer), rel=1e-5)


@pytest.mark.parametrize("cls, params", [(PPCA, {}), (PPCA, {"solver": "em"}),
                                         (FactorAnalysisEM, {})])
def test_verbose_zero_prints_nothing(cls, params, cancer, capsys):
    cls(n_components=3, device="cpu", **params).fit(cancer)
    cls(n_components=3, device="cpu", verbose=0, **params).partial_fit(cancer)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysisEM])
def test_verbose_is_validated(cls, cancer):
    with pytest.raises(ValueError, match="'verbose' parameter of .* must be"):
        cls(verbose="loud", device="cpu").fit(cancer)


@pytest.mark.parametrize("n", [500, 40])  # dense statistics, and a low-rank factor (n < d)
def test_em_log_likelihood_keeps_its_digits_with_noise_at_the_floor(n):
    # The EM's own log-likelihood (from the sufficient statistics) drives its stopping rule;
    # with noise variances at the floor its Woodbury form lost ~1e-4 nats per row, which made
    # the rounding allowance so wide that EM stopped early (6_cardio). It must agree with the
    # row-by-row evaluation (checked against 60-digit arithmetic above) to ~1e-9 per row.
    from skvae.linear._moments import merge_moments

    rng = np.random.RandomState(0)
    d, k = 60, 3
    W = rng.normal(size=(d, k))
    psi = rng.uniform(0.2, 1.0, size=d)
    psi[:3] = 1e-12
    X = rng.normal(size=(n, k)) @ W.T + rng.normal(size=(n, d)) * np.sqrt(psi)
    T = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    count, mean, scatter = merge_moments((0, None, None), T(X), low_rank=lambda rows: rows < d)
    params = gauss.Params(T(W * 1.01), T(psi), mean)  # near, not at, the optimum
    loglik, _ = gauss.em_step_stats(scatter / count, count, params, isotropic=False, floor=1e-12)
    rows = gauss.log_likelihood(T(X), mean, params.W, params.psi)
    assert float(loglik) / n == pytest.approx(float(rows.mean()), abs=1e-9)


def test_masked_log_likelihood_keeps_its_digits_with_noise_at_the_floor():
    # Rows with gaps (and EM over them) use the per-row form: it must not cancel either.
    rng = np.random.RandomState(1)
    d, k, n = 40, 3, 200
    W = rng.normal(size=(d, k))
    psi = rng.uniform(0.2, 1.0, size=d)
    psi[:3] = 1e-12
    X = rng.normal(size=(n, k)) @ W.T + rng.normal(size=(n, d)) * np.sqrt(psi)
    T = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    mu = T(np.zeros(d))
    complete = gauss.log_likelihood(T(X), mu, T(W * 1.01), T(psi))  # checked against mpmath
    mask = torch.ones(n, d, dtype=torch.bool)
    _, _, masked = gauss.masked_posterior(T(X), mask, mu, T(W * 1.01), T(psi))
    np.testing.assert_allclose(masked.numpy(), complete.numpy(), rtol=0, atol=1e-8)
    # and with a gap, the row's density is that of its observed coordinates
    mask[0, 5] = False
    _, _, gappy = gauss.masked_posterior(T(X), mask, mu, T(W * 1.01), T(psi))
    keep = np.arange(d) != 5
    alone = gauss.log_likelihood(T(X[:1, keep]), mu[keep], T(W[keep] * 1.01), T(psi[keep]))
    assert float(gappy[0]) == pytest.approx(float(alone[0]), abs=1e-8)
