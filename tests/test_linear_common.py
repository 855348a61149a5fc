"""What PPCA and FactorAnalysisEM share: missing values, streaming, workflows, bad input, persistence."""

import io
import pickle
from unittest import mock

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch
from conftest import remove_at_random
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skvae import PPCA, FactorAnalysisEM

MODELS = [PPCA, FactorAnalysisEM]


def make(cls, **params):
    return cls(device="cpu", **params)


# ---------------------------------------------------------------------- missing values
@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_em_with_gaps_beats_mean_imputation(cls, fraction, cancer):
    X, removed = remove_at_random(cancer, fraction)
    column_mean = np.nanmean(X, axis=0)
    mean_imputed = np.where(np.isnan(X), column_mean, X)
    model = make(cls, n_components=5).fit(X)
    baseline = make(cls, n_components=5).fit(mean_imputed)
    assert np.all(np.diff(model.loglike_) >= 0)
    # log p(x_observed), averaged over rows, for both models on the same gappy data
    assert model.score(X) > baseline.score(X) + 0.3
    imputed = model.impute(X)
    np.testing.assert_array_equal(imputed[~removed], cancer[~removed])
    rmse = np.sqrt(np.mean((imputed[removed] - cancer[removed]) ** 2))
    rmse_mean = np.sqrt(np.mean((column_mean[np.nonzero(removed)[1]] - cancer[removed]) ** 2))
    assert rmse < 0.65 * rmse_mean  # measured: 0.55-0.59 vs 1.0-1.08


@pytest.mark.parametrize("cls", MODELS)
def test_gappy_rows_are_scored_on_their_observed_entries(cls, wine):
    X = StandardScaler().fit_transform(wine)
    gappy, removed = remove_at_random(X, 0.3, seed=1)
    model = make(cls, n_components=3).fit(X)
    C, mu = model.get_covariance(), model.mean_
    scores = model.score_samples(gappy)
    Z, Z_std = model.transform(gappy, return_std=True)
    W = model.components_.T
    psi = np.broadcast_to(model.noise_variance_, mu.shape)
    for i in range(0, 178, 17):
        o = ~removed[i]
        expected = multivariate_normal(mu[o], C[np.ix_(o, o)]).logpdf(X[i, o])
        assert scores[i] == pytest.approx(expected, rel=1e-10)
        A = np.eye(3) + W[o].T @ (W[o] / psi[o, None])
        posterior_mean = np.linalg.solve(A, W[o].T @ ((X[i, o] - mu[o]) / psi[o]))
        np.testing.assert_allclose(Z[i], posterior_mean, atol=1e-10)
        np.testing.assert_allclose(Z_std[i], np.sqrt(np.diag(np.linalg.inv(A))), rtol=1e-10)
        m = removed[i]
        conditional = mu[m] + C[np.ix_(m, o)] @ np.linalg.solve(C[np.ix_(o, o)], X[i, o] - mu[o])
        np.testing.assert_allclose(model.impute(gappy)[i, m], conditional, atol=1e-9)


@pytest.mark.parametrize("cls", MODELS)
def test_empty_rows_and_columns(cls, wine):
    X = wine.copy()
    X[3] = np.nan
    model = make(cls, n_components=2).fit(X)
    assert model.score_samples(X)[3] == 0.0  # the density of an empty observation
    Z, Z_std = model.transform(X[3:4], return_std=True)
    np.testing.assert_allclose(Z, 0.0, atol=1e-12)
    np.testing.assert_allclose(Z_std, 1.0)  # the prior
    X[:, 5] = np.nan
    with pytest.raises(ValueError, match=r"no observed value in column\(s\) \[5\]"):
        make(cls, n_components=2).fit(X)


def test_ppca_em_with_gaps_approaches_the_complete_fit(cancer):
    # A handful of gaps barely moves the maximum-likelihood solution.
    X, _ = remove_at_random(cancer, 0.002)
    gappy = make(PPCA, n_components=4, tol=1e-9).fit(X)
    full = make(PPCA, n_components=4).fit(cancer)
    assert gappy.noise_variance_ == pytest.approx(full.noise_variance_, rel=0.01)
    np.testing.assert_allclose(gappy.explained_variance_, full.explained_variance_, rtol=0.02)


# ---------------------------------------------------------------------- streaming
@pytest.mark.parametrize("cls", MODELS)
def test_partial_fit_equals_fit(cls, digits):
    X = digits[:, digits.std(axis=0) > 0] + 1e3  # an offset stresses the moment merging
    whole = make(cls, n_components=6).fit(X)
    chunked = make(cls, n_components=6)
    if cls is PPCA:
        with pytest.raises(ValueError, match="first partial_fit chunk of PPCA needs at least 8"):
            chunked.partial_fit(X[:5])  # too few rows for 6 components: refused, nothing kept
    for chunk in np.array_split(X, [50, 300, 301, 1000]):  # uneven, one chunk of a single row
        chunked.partial_fit(chunk)
    # The merged sufficient statistics are exact.
    assert chunked._stats[0] == whole._stats[0] == X.shape[0]
    for merged, direct in ((chunked._stats[1], whole._stats[1]),
                           (chunked._stats[2].dense_sum(), whole._stats[2].dense_sum())):
        np.testing.assert_allclose(merged.numpy(), direct.numpy(), rtol=1e-10,
                                   atol=1e-10 * direct.abs().max().item())
    np.testing.assert_allclose(chunked.mean_, whole.mean_, rtol=1e-12)
    if cls is PPCA:  # closed form: the same model to rounding
        rtol, atol = 1e-10, 1e-8
    else:  # EM from the same start: the same model to EM's tolerance
        rtol, atol = 1e-5, 1e-5
    np.testing.assert_allclose(chunked.get_covariance(), whole.get_covariance(), rtol=rtol,
                               atol=rtol * np.abs(whole.get_covariance()).max())
    np.testing.assert_allclose(chunked.components_, whole.components_, rtol=rtol * 100, atol=atol)
    np.testing.assert_allclose(chunked.score_samples(X), whole.score_samples(X), rtol=rtol)


@pytest.mark.parametrize("cls", MODELS)
def test_partial_fit_refuses_gaps_and_keeps_its_statistics(cls, wine):
    gappy, _ = remove_at_random(wine, 0.1)
    with pytest.raises(ValueError, match="partial_fit .* cannot handle missing values"):
        make(cls, n_components=2).partial_fit(gappy)
    fitted = make(cls, n_components=2).fit(gappy)
    with pytest.raises(ValueError, match="fitted on data with missing values"):
        fitted.partial_fit(wine)
    streaming = make(cls, n_components=2).partial_fit(wine)
    with pytest.raises(ValueError, match="X has 3 features, but .* is expecting 13"):
        streaming.partial_fit(wine[:, :3])
    with pytest.raises(ValueError, match="too large in magnitude"):
        streaming.partial_fit(wine * 1e200)
    assert streaming._stats[0] == 178  # the refused chunks left the statistics as they were
    np.testing.assert_allclose(streaming.partial_fit(wine).mean_, wine.mean(axis=0))


# ---------------------------------------------------------------------- workflows
def test_grid_search_picks_the_held_out_likelihood_maximum(digits):
    pipe = Pipeline([("scale", StandardScaler()), ("ppca", PPCA(device="cpu"))])
    grid = GridSearchCV(pipe, {"ppca__n_components": [2, 10, 30, 60]}, cv=3).fit(digits)
    means = grid.cv_results_["mean_test_score"]
    assert grid.best_params_["ppca__n_components"] == [2, 10, 30, 60][int(np.argmax(means))]
    assert grid.best_params_["ppca__n_components"] in (10, 30)  # neither extreme wins
    scores = cross_val_score(PPCA(n_components=10, device="cpu"), digits, cv=3)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))


@pytest.mark.parametrize("cls, prefix", [(PPCA, "ppca"), (FactorAnalysisEM, "factoranalysisem")])
def test_pandas_in_and_out(cls, prefix, wine):
    frame = pd.DataFrame(wine, columns=[f"f{i}" for i in range(13)])
    model = make(cls, n_components=3).set_output(transform="pandas").fit(frame)
    out = model.transform(frame)
    assert list(out.columns) == [f"{prefix}{i}" for i in range(3)]
    # A column-major frame rounds differently, and factor analysis on raw wine (a flat
    # likelihood) may then stop EM a cycle apart: measured up to 1.5e-5 on codes of order 1.
    expected = make(cls, n_components=3).fit(wine).transform(wine)
    np.testing.assert_allclose(out.to_numpy(), expected, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_array_equal(model.feature_names_in_, frame.columns)
    mean, std = model.transform(frame, return_std=True)
    assert list(mean.columns) == list(out.columns) and std.shape == (178, 3)
    params = clone(model).get_params()
    assert params["n_components"] == 3 and params["device"] == "cpu"


@pytest.mark.parametrize("cls", MODELS)
def test_torch_tensor_input_matches_numpy(cls, cancer):
    tensor = torch.as_tensor(cancer)
    by_tensor = make(cls, n_components=3).fit(tensor)
    by_array = make(cls, n_components=3).fit(cancer)
    np.testing.assert_allclose(by_tensor.score_samples(tensor), by_array.score_samples(cancer))
    np.testing.assert_allclose(by_tensor.transform(tensor.float()), by_array.transform(cancer),
                               atol=1e-5)
    assert by_tensor.n_features_in_ == 30 and not hasattr(by_tensor, "feature_names_in_")


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls", MODELS)
def test_bad_input_messages(cls, wine):
    model = make(cls, n_components=2)
    X = wine.copy()
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="X contains infinity.*NaN.*missing"):
        model.fit(X)
    with pytest.raises(ValueError, match=r"1 sample\(s\)"):
        model.fit(wine[:1])
    with pytest.raises(TypeError, match=r"[Ss]parse .*toarray"):
        model.fit(scipy.sparse.csr_matrix(wine))
    strings = wine.astype(object)
    strings[0, 0] = "red"
    with pytest.raises(ValueError, match="X must be numeric.*OneHotEncoder"):
        model.fit(strings)
    with pytest.raises(ValueError, match="too large in magnitude.*StandardScaler"):
        model.fit(wine * 1e200)
    with pytest.raises(ValueError, match="device='tpu' is not a device torch knows"):
        cls(device="tpu").fit(wine)
    with mock.patch("torch.cuda.is_available", return_value=False):
        with pytest.raises(ValueError, match="CUDA is not available.*device='cpu'"):
            cls(device="cuda").fit(wine)
    fitted = make(cls, n_components=2).fit(wine)
    for method in (fitted.transform, fitted.score_samples, fitted.score, fitted.impute):
        with pytest.raises(ValueError, match="X has 12 features, but .* is expecting 13"):
            method(wine[:, :12])
    with pytest.raises(ValueError, match="Z has 3 columns, but .* n_components_=2"):
        fitted.inverse_transform(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="n_samples=0 must be a positive integer"):
        fitted.sample(0)


def test_n_components_limits(wine):
    with pytest.raises(ValueError, match=r"n_components=13 must be <= min\(n_samples - 1, "
                                         r"n_features\) - 1 = 12"):
        PPCA(n_components=13, device="cpu").fit(wine)
    with pytest.raises(ValueError, match="n_components=14 must be <= n_features=13"):
        FactorAnalysisEM(n_components=14, device="cpu").fit(wine)
    with pytest.raises(ValueError, match="n_features=1"):
        PPCA(device="cpu").fit(wine[:, :1])
    with pytest.raises(ValueError, match="'n_components' parameter of PPCA must be"):
        PPCA(n_components=0).fit(wine)
    gappy, _ = remove_at_random(wine, 0.1)
    with pytest.raises(ValueError, match="solver='eigh' needs complete data.*'em'"):
        PPCA(solver="eigh", device="cpu").fit(gappy)


@pytest.mark.parametrize("cls", MODELS)
def test_caller_data_is_never_modified(cls, wine):
    gappy, _ = remove_at_random(wine, 0.2)
    original = gappy.copy()
    model = make(cls, n_components=3).fit(gappy)
    for method in (model.transform, model.score_samples, model.impute, model.partial_fit):
        try:
            method(gappy)
        except ValueError:  # partial_fit refuses gaps, after looking
            pass
    np.testing.assert_array_equal(gappy, original)  # NaN positions and values alike
    tensor = torch.as_tensor(wine)
    before = tensor.clone()
    make(cls, n_components=3).fit(tensor).impute(tensor)
    assert torch.equal(tensor, before)


@pytest.mark.parametrize("cls", MODELS)
def test_constant_columns_give_finite_results(cls, wine):
    X = np.column_stack([wine, np.full(178, 4.0), np.zeros(178)])
    model = make(cls, n_components=3).fit(X)
    for out in (model.score_samples(X), model.transform(X), model.get_precision()):
        assert np.all(np.isfinite(out))


@pytest.mark.parametrize("cls", MODELS)
def test_rows_far_from_the_mean_score_low_never_nan(cls, wine):
    # Past |x| ~ 1e154 the squares in the quadratic form overflow and, unscaled, their
    # difference is NaN. Scaled rows give the density where float64 holds it, else -inf.
    model = make(cls, n_components=3).fit(wine)
    far = wine[:3].copy()
    far[0, 4], far[1, 4], far[2, 4] = 1e100, 1e200, -1e300
    gappy = far.copy()
    gappy[:, 0] = np.nan
    for X in (far, gappy):
        with pytest.warns(UserWarning, match=r"row\(s\) \[1, 2\] of X .* score -inf"):
            scores = model.score_samples(X)
        observed = ~np.isnan(X[0])
        expected = multivariate_normal(
            model.mean_[observed], model.get_covariance()[np.ix_(observed, observed)]
        ).logpdf(X[0, observed])
        np.testing.assert_allclose(scores[0], expected, rtol=1e-10)
        assert scores[0] < -1e190
        np.testing.assert_array_equal(scores[1:], -np.inf)


@pytest.mark.parametrize("cls", MODELS)
def test_rows_far_from_the_mean_are_encoded_and_imputed_never_nan(cls, cancer):
    # E[z | x] is linear in x - mu: where the terms of a row's sum overflow (inf - inf),
    # scaling the row first gives the finite value float64 holds.
    model = make(cls, n_components=3).fit(cancer)
    direction = np.zeros(cancer.shape[1])
    direction[[1, 4, 6, 9]] = 1.0, -1.0, 1.0, -1.0
    far = model.mean_ + 1.5e308 * direction
    unit = model.transform(np.vstack([model.mean_ + direction, model.mean_]))
    np.testing.assert_allclose(model.transform(far[None])[0] / 1.5e308, unit[0] - unit[1],
                               rtol=1e-6)
    gappy = far[None].copy()
    gappy[0, 0] = np.nan
    assert np.isfinite(model.transform(gappy)).all() and np.isfinite(model.impute(gappy)).all()


# ---------------------------------------------------------------------- persistence and devices
@pytest.mark.parametrize("cls", MODELS)
def test_pickle_and_joblib_round_trips(cls, cancer):
    model = make(cls, n_components=4, random_state=0).fit(cancer)
    for restored in (pickle.loads(pickle.dumps(model)), _joblib_round_trip(model)):
        np.testing.assert_array_equal(restored.score_samples(cancer), model.score_samples(cancer))
        np.testing.assert_array_equal(restored.transform(cancer), model.transform(cancer))
        np.testing.assert_array_equal(restored.sample(3), model.sample(3))
    streamed = make(cls, n_components=4).partial_fit(cancer[:300])
    restored = pickle.loads(pickle.dumps(streamed)).partial_fit(cancer[300:])
    continued = make(cls, n_components=4).partial_fit(cancer[:300]).partial_fit(cancer[300:])
    np.testing.assert_array_equal(restored.get_covariance(), continued.get_covariance())


def _joblib_round_trip(model):
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


@pytest.mark.parametrize("cls", MODELS)
def test_a_model_saved_on_cuda_loads_without_cuda(cls, wine):
    model = make(cls, n_components=3).fit(wine)
    model._device = torch.device("cuda:0")  # as if fitted on a GPU machine
    blob = pickle.dumps(model)
    with mock.patch("torch.cuda.is_available", return_value=False):
        restored = pickle.loads(blob)
        assert restored._device == torch.device("cpu")
        np.testing.assert_array_equal(restored.score_samples(wine),
                                      make(cls, n_components=3).fit(wine).score_samples(wine))


@pytest.mark.cuda
@pytest.mark.parametrize("cls", MODELS)
def test_cuda_matches_cpu(cls, cancer):
    on_gpu = cls(n_components=4, device="cuda").fit(cancer)
    on_cpu = make(cls, n_components=4).fit(cancer)
    np.testing.assert_allclose(on_gpu.score_samples(cancer), on_cpu.score_samples(cancer),
                               rtol=1e-8)
    tensor = torch.as_tensor(cancer, device="cuda")  # stays on the device
    np.testing.assert_allclose(on_gpu.transform(tensor), on_cpu.transform(cancer), atol=1e-8)
    auto = cls(n_components=4).fit(cancer)
    assert auto._device.type == "cuda"
