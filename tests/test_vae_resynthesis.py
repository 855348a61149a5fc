"""Resynthesis with the VAEs: interpolate, attribute vectors, sample(latent="fitted")."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture

from skvae import BernoulliVAE, GaussianVAE
from skvae.nn import interpolation_path, sample_gaussian_mixture

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SMALL = dict(hidden_layer_sizes=(16,), max_iter=15, batch_size=64, n_importance_samples=8,
             device="cpu", random_state=0)


def _gaussian_data(n=150, d=6, seed=0):
    rng = np.random.RandomState(seed)
    z = rng.normal(size=(n, 2))
    return np.tanh(z @ rng.normal(size=(2, d))) * 3 + 0.1 * rng.normal(size=(n, d)) + 5


def _clusters(sizes, centers, seed):
    rng = np.random.RandomState(seed)
    return np.vstack([c + 0.3 * rng.normal(size=(n, len(c))) for n, c in zip(sizes, centers)])


@pytest.fixture(scope="module")
def gaussian():
    X = _gaussian_data()
    return GaussianVAE(n_components=3, **SMALL).fit(X), X


@pytest.fixture(scope="module")
def bernoulli():
    X = (_gaussian_data(d=8) > 5).astype(np.float64)
    return BernoulliVAE(n_components=2, **SMALL).fit(X), X


def _reconstruct(model, X):
    return model.inverse_transform(model.transform(X))


# ---------------------------------------------------------------------- latent paths (torch)
def _slerp_reference(a, b, t):
    """White (2016), written out in numpy."""
    angle = np.arccos(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
    return (np.sin((1 - t) * angle) * a + np.sin(t * angle) * b) / np.sin(angle)


def test_interpolation_path_endpoints_midpoint_and_norms():
    rng = np.random.RandomState(0)
    a, b = rng.normal(size=5), rng.normal(size=5)
    za, zb = torch.tensor(a), torch.tensor(b)
    for method in ("slerp", "linear"):
        path = interpolation_path(za, zb, 7, method).numpy()
        assert path.shape == (7, 5)
        np.testing.assert_array_equal(path[0], a)
        np.testing.assert_array_equal(path[-1], b)
    linear = interpolation_path(za, zb, 5, "linear").numpy()
    np.testing.assert_allclose(linear[2], (a + b) / 2, rtol=1e-12)
    np.testing.assert_allclose(np.diff(linear, axis=0), np.tile((b - a) / 4, (4, 1)), rtol=1e-9)
    slerp = interpolation_path(za, zb, 5, "slerp").numpy()
    np.testing.assert_allclose(slerp, [_slerp_reference(a, b, t) for t in np.linspace(0, 1, 5)],
                               rtol=1e-10)
    # Equal-norm endpoints: every slerp step keeps the norm; the straight line dips inside.
    b_same = b / np.linalg.norm(b) * np.linalg.norm(a)
    path = interpolation_path(za, torch.tensor(b_same), 9, "slerp").numpy()
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(a), rtol=1e-12)
    chord = interpolation_path(za, torch.tensor(b_same), 9, "linear").numpy()
    assert np.linalg.norm(chord[4]) < 0.99 * np.linalg.norm(a)
    # The dtype of the codes is kept.
    assert interpolation_path(za.float(), zb.float(), 3).dtype == torch.float32


def test_interpolation_path_falls_back_to_a_line_without_an_angle():
    a = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    for b in (3 * a, -a, torch.zeros(3, dtype=torch.float64)):
        slerp = interpolation_path(a, b, 5, "slerp")
        assert torch.isfinite(slerp).all()
        torch.testing.assert_close(slerp, interpolation_path(a, b, 5, "linear"))
    with pytest.raises(ValueError, match="method='cubic'"):
        interpolation_path(a, a, 3, "cubic")


def test_sample_gaussian_mixture_follows_its_components():
    weights = torch.tensor([0.2, 0.8], dtype=torch.float64)
    means = torch.tensor([[-10.0, 0.0], [10.0, 5.0]], dtype=torch.float64)
    cholesky = torch.stack([torch.eye(2), torch.tensor([[2.0, 0.0], [1.0, 0.5]])]).double()
    g = torch.Generator().manual_seed(0)
    eps = torch.randn((20000, 2), generator=g, dtype=torch.float32)
    z = sample_gaussian_mixture(weights, means, cholesky, eps, g).double().numpy()
    assert z.shape == (20000, 2)
    right = z[:, 0] > 0
    assert abs(right.mean() - 0.8) < 0.015  # binomial sd 0.003
    np.testing.assert_allclose(z[right].mean(0), [10, 5], atol=0.05)
    covariance = (cholesky[1] @ cholesky[1].T).numpy()
    np.testing.assert_allclose(np.cov(z[right].T), covariance, atol=0.1)
    np.testing.assert_allclose(np.cov(z[~right].T), np.eye(2), atol=0.1)
    # The generator drives everything: same seed, same draws.
    g2 = torch.Generator().manual_seed(0)
    again = sample_gaussian_mixture(weights, means, cholesky,
                                    torch.randn((20000, 2), generator=g2), g2)
    np.testing.assert_array_equal(again.double().numpy(), z)


# ---------------------------------------------------------------------- interpolate
def test_interpolate_endpoints_are_the_reconstructions(gaussian):
    model, X = gaussian
    for method in ("slerp", "linear"):
        path = model.interpolate(X[0], X[1], n_steps=6, method=method)
        assert path.shape == (6, X.shape[1]) and path.dtype == np.float64
        np.testing.assert_allclose(path[[0, -1]], _reconstruct(model, X[:2]), rtol=1e-6)


def test_interpolate_decodes_the_latent_path(gaussian):
    model, X = gaussian
    za, zb = model.transform(X[3:5])
    linear = model.interpolate(X[3], X[4], n_steps=3, method="linear")
    np.testing.assert_allclose(linear[1], model.inverse_transform([(za + zb) / 2])[0],
                               rtol=1e-5)
    slerp = model.interpolate(X[3], X[4], n_steps=5)
    codes = [_slerp_reference(za, zb, t) for t in np.linspace(0, 1, 5)]
    np.testing.assert_allclose(slerp, model.inverse_transform(codes), rtol=1e-4, atol=1e-5)


def test_interpolate_accepts_every_form_of_a_row(gaussian):
    model, X = gaussian
    expected = model.interpolate(X[0], X[1], n_steps=4)
    forms = [
        (X[:1], X[1:2]),
        (list(X[0]), tuple(X[1])),
        (torch.tensor(X[0]), torch.tensor(X[1:2])),
        (pd.Series(X[0]), pd.DataFrame(X[1:2])),
    ]
    for x_a, x_b in forms:
        np.testing.assert_array_equal(model.interpolate(x_a, x_b, n_steps=4), expected)
    x32 = X[:2].astype(np.float32)
    path32 = model.interpolate(x32[0], x32[1], n_steps=4)
    assert path32.dtype == np.float32
    np.testing.assert_allclose(path32, expected, rtol=1e-5)
    assert model.interpolate(x32[0], X[1], n_steps=4).dtype == np.float64


def test_interpolate_with_draws_is_seeded(bernoulli):
    model, X = bernoulli
    draws = model.interpolate(X[0], X[5], n_steps=50, return_mean=False, random_state=0)
    assert draws.shape == (50, X.shape[1]) and set(np.unique(draws)) <= {0.0, 1.0}
    np.testing.assert_array_equal(
        draws, model.interpolate(X[0], X[5], n_steps=50, return_mean=False, random_state=0))
    assert not np.array_equal(
        draws, model.interpolate(X[0], X[5], n_steps=50, return_mean=False, random_state=1))
    means = model.interpolate(X[0], X[5], n_steps=50)
    assert np.all((means > 0) & (means < 1))


def test_interpolate_rejects_bad_input(gaussian):
    model, X = gaussian
    with pytest.raises(NotFittedError):
        clone(model).interpolate(X[0], X[1])
    with pytest.raises(ValueError, match="n_steps=1 must be an integer >= 2"):
        model.interpolate(X[0], X[1], n_steps=1)
    with pytest.raises(ValueError, match="n_steps=True"):
        model.interpolate(X[0], X[1], n_steps=True)
    with pytest.raises(ValueError, match="method='cubic' must be 'slerp' or 'linear'"):
        model.interpolate(X[0], X[1], method="cubic")
    with pytest.raises(ValueError, match=r"x_a must be one row.*got shape \(2, 6\)"):
        model.interpolate(X[:2], X[1])
    with pytest.raises(ValueError, match=r"x_b must be one row.*got shape \(\)"):
        model.interpolate(X[0], 3.0)
    with pytest.raises(ValueError, match="x_b: X has 5 features, but GaussianVAE is expecting 6"):
        model.interpolate(X[0], X[1, :5])
    with pytest.raises(ValueError, match="x_a: X contains infinity"):
        model.interpolate(np.r_[np.inf, X[0, 1:]], X[1])
    # A row with a missing entry is encoded from what is observed (VAEs accept NaN).
    assert np.all(np.isfinite(model.interpolate(np.r_[np.nan, X[0, 1:]], X[1], n_steps=3)))
    with pytest.raises(ValueError, match="return_mean"):
        model.interpolate(X[0], X[1], return_mean="yes")


# ---------------------------------------------------------------------- attribute vectors
def test_attribute_vector_is_the_difference_of_mean_codes(gaussian):
    model, X = gaussian
    X_from, X_to = X[X[:, 0] < 5], X[X[:, 0] >= 5]
    vector = model.attribute_vector(X_from, X_to)
    assert vector.shape == (3,) and vector.dtype == np.float64
    expected = model.transform(X_to).mean(0) - model.transform(X_from).mean(0)
    np.testing.assert_allclose(vector, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.attribute_vector(X_to, X_from), -vector, rtol=1e-12)
    np.testing.assert_allclose(model.attribute_vector(X_to, X_to), 0, atol=1e-12)


def test_apply_attribute_shifts_codes_and_decodes(gaussian):
    model, X = gaussian
    vector = model.attribute_vector(X[X[:, 0] < 5], X[X[:, 0] >= 5])
    np.testing.assert_allclose(model.apply_attribute(X, vector, strength=0), _reconstruct(model, X),
                               rtol=1e-6)
    for strength in (1.0, -0.5, 2):
        moved = model.apply_attribute(X[:20], vector, strength=strength)
        expected = model.inverse_transform(model.transform(X[:20]) + strength * vector)
        assert moved.shape == (20, 6) and moved.dtype == np.float64
        np.testing.assert_allclose(moved, expected, rtol=1e-5, atol=1e-5)
    # Adding the attribute moves the first feature of the rows that lack it towards the others.
    low = X[X[:, 0] < 5]
    assert model.apply_attribute(low, vector)[:, 0].mean() > _reconstruct(model, low)[:, 0].mean()
    assert model.apply_attribute(X.astype(np.float32), vector).dtype == np.float32
    np.testing.assert_array_equal(model.apply_attribute(X[:3], vector[None, :]),
                                  model.apply_attribute(X[:3], list(vector)))


def test_attribute_methods_reject_bad_input(gaussian):
    model, X = gaussian
    vector = np.ones(3)
    with pytest.raises(NotFittedError):
        clone(model).attribute_vector(X, X)
    with pytest.raises(NotFittedError):
        clone(model).apply_attribute(X, vector)
    with pytest.raises(ValueError, match="X_to: X has 4 features"):
        model.attribute_vector(X, X[:, :4])
    with pytest.raises(ValueError, match="X_from: .*0 sample"):
        model.attribute_vector(X[:0], X)
    with pytest.raises(ValueError, match=r"vector must have shape \(n_components_,\) = \(3,\)"):
        model.apply_attribute(X, np.ones(4))
    with pytest.raises(ValueError, match="vector contains NaN"):
        model.apply_attribute(X, [0.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="vector must hold real numbers"):
        model.apply_attribute(X, ["a", "b", "c"])
    for strength in (np.nan, np.inf, True, "1"):
        with pytest.raises(ValueError, match="strength=.* must be a finite real number"):
            model.apply_attribute(X, vector, strength=strength)
    with pytest.raises(ValueError, match="X has 5 features"):
        model.apply_attribute(X[:, :5], vector)


# ---------------------------------------------------------------------- sample(latent="fitted")
def test_fitted_latent_density_is_a_mixture_of_the_codes(gaussian):
    model = clone(gaussian[0]).fit(gaussian[1])
    assert "_latent_density_cache" not in vars(model)  # fitted lazily, on first use
    draws = model.sample(300, random_state=0, latent="fitted")
    assert draws.shape == (300, 6) and draws.dtype == np.float64
    np.testing.assert_array_equal(draws, model.sample(300, random_state=0, latent="fitted"))
    assert not np.array_equal(draws, model.sample(300, random_state=1, latent="fitted"))
    mixture = model.latent_density_
    assert isinstance(mixture, GaussianMixture) and mixture.n_components == 10
    # The model fits its mixture to the codes of the sampled training rows (stored at fit)
    # in float64 (float32 codes would make a mixture that differs in the 6th digit:
    # scikit-learn then computes in float32).
    codes = model._reservoir["mean"].numpy().astype(np.float64)
    reference = GaussianMixture(10, covariance_type="full", max_iter=200,
                                random_state=mixture.random_state).fit(codes)
    np.testing.assert_allclose(mixture.means_, reference.means_, rtol=1e-6, atol=1e-8)
    # A fresh model with the same seed fits the same density.
    twin = clone(model).fit(gaussian[1])
    np.testing.assert_array_equal(twin.sample(50, random_state=3, latent="fitted"),
                                  model.sample(50, random_state=3, latent="fitted"))


def test_the_latent_density_names_its_own_parameter_when_it_does_not_converge(gaussian,
                                                                               monkeypatch):
    # scikit-learn's own warning ("Best performing initialization did not converge ...")
    # would leak out of sample() with nothing tying it to the call: it must come back as one
    # naming latent_density_components.
    from skvae.vae import _latent_density

    # as if the codes needed more than the iterations given
    monkeypatch.setattr(_latent_density, "_MIXTURE_MAX_ITER", 2)
    model = clone(gaussian[0]).fit(gaussian[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.sample(5, random_state=0, latent="fitted")
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(messages) == 1, messages
    assert "latent_density_components=10" in messages[0]
    assert "sample(latent=\"fitted\")" in messages[0]


@pytest.mark.parametrize("n, k, max_iter", [(300, 10, 200), (120, 3, 200), (300, 10, 4)])
def test_the_latent_density_em_is_gaussian_mixture_fit_without_its_warning(n, k, max_iter):
    # The mixture is fitted one warm-started step per call (so that scikit-learn never warns
    # and no warning filter is needed): the same steps and result as one fit, bit for bit.
    from skvae.vae._latent_density import _fit_mixture_quietly

    X = np.random.RandomState(n).standard_t(3, size=(n, 3))
    quiet = GaussianMixture(k, covariance_type="full", random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converged = _fit_mixture_quietly(quiet, X, max_iter, 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = GaussianMixture(k, covariance_type="full", random_state=1, max_iter=max_iter,
                                tol=1e-3).fit(X)
    assert converged == plain.converged_ == (max_iter == 200)
    assert quiet.n_iter_ == plain.n_iter_ and quiet.get_params() == plain.get_params()
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(quiet, name), getattr(plain, name))


def test_fitted_latent_density_is_refitted_when_the_model_changes(gaussian):
    model, X = gaussian
    model = pickle.loads(pickle.dumps(model))
    first = model.latent_density_
    assert model.latent_density_ is first  # cached
    model.set_params(latent_density_components=3)
    assert model.latent_density_.n_components == 3
    three = model.latent_density_
    model.partial_fit(X)
    assert "_latent_density_cache" not in vars(model)
    assert model.latent_density_ is not three
    model.fit(X[:4])  # fewer rows than components: one component per row
    assert model.latent_density_.n_components == 3
    model.fit(X[:2])
    assert model.latent_density_.n_components == 2
    # A failed fit keeps the old density (fit is all or nothing).
    kept = model.latent_density_
    with pytest.raises(ValueError):
        model.fit(X[:, :3] * np.nan)
    assert model.latent_density_ is kept
    model.set_params(latent_density_components=0)
    with pytest.raises(ValueError, match="latent_density_components=0 must be a positive"):
        model.sample(3, latent="fitted")
    with pytest.raises(ValueError, match="'prior', 'aggregated_posterior' or 'fitted'"):
        model.sample(3, latent="mixture")
    with pytest.raises(NotFittedError):
        clone(model).sample(3, latent="fitted")
    with pytest.raises(NotFittedError):
        clone(model).latent_density_


def test_pickling_keeps_the_fitted_latent_density(gaussian, monkeypatch):
    model = pickle.loads(pickle.dumps(gaussian[0]))
    draws = model.sample(100, random_state=0, latent="fitted")
    loaded = pickle.loads(pickle.dumps(model))

    def refit(*args, **kwargs):
        raise AssertionError("the pickled latent density should be reused")

    monkeypatch.setattr(GaussianMixture, "fit", refit)
    np.testing.assert_array_equal(loaded.sample(100, random_state=0, latent="fitted"), draws)
    np.testing.assert_array_equal(loaded.latent_density_.means_, model.latent_density_.means_)


def test_fitted_latent_follows_unbalanced_clusters_the_prior_misses():
    # beta=0: nothing pulls the codes of three clusters (60%, 30%, 10% of the rows) towards
    # N(0, I). Decoded fitted-density draws land on the clusters in their proportions; decoded
    # prior draws mostly fall between them (measured: 1.00 of the fitted draws within 1.5 of a
    # center, in proportions 0.59/0.33/0.08; prior 0.14; aggregated posterior 0.985).
    centers = np.array([[-3.0] * 4, [3.0] * 4, [3.0, -3.0, 3.0, -3.0]])
    X = _clusters([300, 150, 50], centers, seed=0)
    model = GaussianVAE(n_components=2, beta=0.0, latent_density_components=6,
                        **{**SMALL, "max_iter": 60}).fit(X)
    near, shares = {}, {}
    for latent in ("prior", "fitted"):
        sample = model.sample(2000, random_state=0, return_mean=True, latent=latent)
        distance = np.sqrt(((sample[:, None, :] - centers) ** 2).sum(-1))
        near[latent] = np.mean(distance.min(1) < 1.5)
        shares[latent] = np.bincount(distance.argmin(1), minlength=3) / len(sample)
    assert near["fitted"] > 0.95 and near["prior"] < 0.5, near
    np.testing.assert_allclose(shares["fitted"], [0.6, 0.3, 0.1], atol=0.06)


def _sample_quality(samples, real):
    """Precision and recall against real rows, at the median real-to-real neighbour distance.

    Precision: the fraction of generated rows whose nearest real row is closer than the
    typical gap between real rows (the median distance of a real row to its nearest other
    one). Recall: the fraction of real rows with a generated row that close.
    """
    from sklearn.neighbors import NearestNeighbors

    threshold = np.median(NearestNeighbors(n_neighbors=2).fit(real).kneighbors(real)[0][:, 1])
    to_real = NearestNeighbors(n_neighbors=1).fit(real).kneighbors(samples)[0][:, 0]
    to_samples = NearestNeighbors(n_neighbors=1).fit(samples).kneighbors(real)[0][:, 0]
    return np.mean(to_real < threshold), np.mean(to_samples < threshold)


@pytest.mark.slow
def test_fitted_latent_gives_more_realistic_digits():
    # The setting of examples/resynthesis.py: BernoulliVAE on 70% of the digits, decoded-mean
    # samples compared with the 30% held out, 3 sampling seeds. Measured (precision, recall):
    # prior (0.18, 0.18), aggregated_posterior (0.34, 0.23), fitted (0.43, 0.20); real
    # training rows (0.56, 0.52).
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X_train, X_test = train_test_split(load_digits().data / 16, test_size=0.3, random_state=0)
    model = BernoulliVAE(n_components=8, hidden_layer_sizes=(128,), max_iter=60, device="cpu",
                         random_state=0).fit(X_train)
    quality = {
        latent: np.mean([
            _sample_quality(model.sample(len(X_test), random_state=seed, return_mean=True,
                                         latent=latent), X_test)
            for seed in range(3)
        ], axis=0)
        for latent in ("prior", "aggregated_posterior", "fitted")
    }
    precision = {latent: q[0] for latent, q in quality.items()}
    assert precision["fitted"] > 1.15 * precision["aggregated_posterior"], quality
    assert precision["aggregated_posterior"] > 1.5 * precision["prior"], quality
    # More precise without giving up coverage.
    assert quality["fitted"][1] > 0.8 * quality["aggregated_posterior"][1], quality
    assert quality["fitted"][1] > quality["prior"][1] - 0.02, quality


def test_interpolate_and_attribute_vector_name_what_overflows():
    # A model fitted on data of scale 1e-3 cannot encode a row of 1e36 in float32: the code is
    # NaN, and so is every decoded step after the first and the attribute vector. Each method
    # says so in a warning instead of returning NaN silently.
    X = np.random.RandomState(0).normal(size=(60, 4)) * 1e-3
    model = GaussianVAE(n_components=2, hidden_layer_sizes=(8,), max_iter=3, device="cpu",
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    far = np.full(4, 1e36)
    with pytest.warns(UserWarning, match=r"interpolate: the results of row\(s\) \[1, 2, 3\]"):
        path = model.interpolate(X[1], far, n_steps=4)
    assert np.isfinite(path[0]).all() and np.isnan(path[1:]).all()
    with pytest.warns(UserWarning, match=r"attribute_vector: the vector is NaN"):
        vector = model.attribute_vector(X[:5], np.vstack([X[5:8], far]))
    assert np.isnan(vector).all()
