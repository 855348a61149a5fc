"""Conditional VAEs: ``covariates=`` columns of X that the networks condition on.

What is checked: without covariates nothing changed (figures of the code before covariates
existed, and empty selections); score_samples is log p(x | c) computed independently with
torch.distributions; class-conditional samples of digits look like their class; a batch
column as covariate removes a batch shift from the codes; every method that reads or returns
X's columns handles the covariate columns; bad covariates get clear errors.
"""

import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from skvae import BernoulliVAE, CountVAE, GaussianVAE, LatentOutlierDetector
from skvae.nn import monte_carlo_bounds

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # NearestCentroid notes the constant border pixels of some digit classes.
    pytest.mark.filterwarnings("ignore:self.within_class_std_dev_:UserWarning"),
]

TINY = dict(hidden_layer_sizes=(16,), max_iter=4, batch_size=64, n_importance_samples=8,
            device="cpu", random_state=3)


@pytest.fixture(scope="module")
def labelled_digits():
    """load_digits as grey levels in [0, 1] with the label as a 65th column."""
    X, y = load_digits(return_X_y=True)
    return np.column_stack([X / 16, y]), y


def _toy(n=120, seed=0):
    """Real-valued rows (6 columns) whose mean depends on a 3-level group in column 2."""
    rng = np.random.RandomState(seed)
    group = rng.randint(3, size=n)
    z = rng.normal(size=(n, 2))
    X = np.tanh(z @ rng.normal(size=(2, 5))) + group[:, None] * np.linspace(-1, 1, 5)
    X += 0.1 * rng.normal(size=X.shape)
    return np.column_stack([X[:, :2], group, X[:, 2:]]).astype(np.float64)


# ----------------------------------------------------------------------- no covariates
# Figures of the code before covariates existed (commit f2e12e0; the scores since the
# importance draws are seeded through numpy's SeedSequence, as on branch eco before the
# covariates were merged), same settings: a change in how the unconditional models draw or
# compute would move them far beyond the tolerance, which only allows for other CPUs' float32
# rounding. (The outputs were also compared bit for bit, with sha256 digests of every output,
# before and after.)
_BEFORE = {
    "bernoulli": dict(loss_last=27.431686197916665, score_sum=-8082.841815948486,
                      transform_00=0.4369839131832123),
    "count": dict(loss_last=132.3698046875, score_sum=-39398.36028289795,
                  transform_00=0.30480965971946716),
    "gaussian_early_stopping": dict(loss_last=26.288873291015626, score_sum=-4421.217586517334,
                                    transform_00=-0.6384673118591309),
}


def _before_cases():
    from sklearn.datasets import load_wine

    X = load_digits().data[:300]
    kw = dict(TINY, n_components=3)
    return {
        "bernoulli": (BernoulliVAE(**kw), X / 16),
        "count": (CountVAE(**kw), X),
        "gaussian_early_stopping": (GaussianVAE(**kw, early_stopping=True, n_iter_no_change=2),
                                    load_wine().data),
    }


@pytest.mark.parametrize("name", sorted(_BEFORE))
def test_without_covariates_the_fit_is_the_one_of_before(name):
    model, X = _before_cases()[name]
    model.fit(X)
    found = dict(loss_last=model.loss_curve_[-1], score_sum=model.score_samples(X).sum(),
                 transform_00=model.transform(X)[0, 0])
    for key, value in _BEFORE[name].items():
        assert found[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert model.covariate_indices_ is None and model.covariate_encoder_ is None


@pytest.mark.parametrize("empty", [[], np.zeros(6, dtype=bool)], ids=["list", "mask"])
def test_an_empty_selection_is_the_unconditional_model_bit_for_bit(empty):
    X = _toy()
    base = GaussianVAE(n_components=2, **TINY).fit(X)
    model = GaussianVAE(n_components=2, covariates=empty, **TINY).fit(X)
    assert model.covariate_indices_ is None
    for method in ("transform", "score_samples"):
        np.testing.assert_array_equal(getattr(model, method)(X), getattr(base, method)(X))
    np.testing.assert_array_equal(model.sample(4), base.sample(4))


# ----------------------------------------------------------------------- log p(x | c)
def test_score_samples_is_log_p_of_the_modeled_columns_given_the_covariates(labelled_digits):
    D, y = labelled_digits
    D = D[:200].copy()
    D[:, :64] = D[:, :64] > 0.5  # binary: torch's Bernoulli is an exact reference
    model = BernoulliVAE(n_components=3, covariates=[64], hidden_layer_sizes=(16,), max_iter=3,
                         n_importance_samples=16, device="cpu", random_state=0,
                         dtype="float64").fit(D)
    # By hand: q(z | x, c) from the encoder, K shared draws, log p(x | z, c) from the decoder's
    # logits through torch.distributions, the label one-hot encoded independently.
    x = torch.as_tensor(D[:, :64])
    c = torch.as_tensor(np.eye(10)[y[:200]])
    eps = model._importance_draws()  # (K, k): the draws score_samples shares over rows
    module = model.module_
    with torch.no_grad():
        mean, logvar = module.encode(x, c)
        std = torch.exp(0.5 * logvar)
        z = mean + std * eps[:, None, :]  # (K, n, k)
        logits = module.decode(z, c)
        log_px = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = torch.distributions.Normal(mean, std).log_prob(z).sum(-1)
        expected = torch.logsumexp(log_px + log_pz - log_qz, dim=0) - math.log(eps.shape[0])
    np.testing.assert_allclose(model.score_samples(D), expected.numpy(), rtol=1e-10)
    # Changing only the label changes the score: c enters the likelihood.
    other = D.copy()
    other[:, 64] = (other[:, 64] + 1) % 10
    assert np.all(model.score_samples(other) != model.score_samples(D))


def test_gaussian_score_samples_matches_the_nn_bounds_with_standardized_covariates():
    X = _toy()
    model = GaussianVAE(n_components=2, covariates=[2], covariate_encoding="numeric",
                        **TINY).fit(X)
    assert isinstance(model.covariate_encoder_, StandardScaler)
    g = X[:, 2:3]
    c = torch.as_tensor((g - g.mean()) / g.std(), dtype=torch.float32)
    x = torch.as_tensor(np.delete(X, 2, axis=1), dtype=torch.float32)
    with torch.no_grad():
        iw, lower = monte_carlo_bounds(model.module_, x, model._importance_draws(), C=c)
    np.testing.assert_allclose(model.score_samples(X), iw.numpy(), rtol=1e-5)
    np.testing.assert_allclose(model.elbo_samples(X), lower.numpy(), rtol=1e-5)
    breakdown = model.score_breakdown(X)
    np.testing.assert_allclose(breakdown["log_likelihood"], model.score_samples(X))
    assert np.all(breakdown["gap"] >= -1e-6)


# ----------------------------------------------------------------------- what c does
# Measured on seeds 0-5 (see the README): every class's conditional sample mean is nearest to
# its own training mean (10 of 10 classes), and a nearest-centroid classifier trained on real
# digits assigns 0.950-0.997 of the decoded means and 0.590-0.643 of the Bernoulli draws to the
# class they were generated for (chance: 0.1); log p(x | true class) > log p(x | class + 5)
# for 0.977-0.985 of the rows; decoded means of the same codes differ by 0.081-0.099 per pixel
# between classes 3 and 8. The thresholds below keep a margin.
CLASS_SETTINGS = dict(n_components=4, covariates=[-1], hidden_layer_sizes=(64,), max_iter=20,
                      n_importance_samples=8, device="cpu")
CLASS_ACCURACY_MEAN = 0.85
CLASS_ACCURACY_DRAW = 0.4


def _class_conditional_figures(model, X, y, per_class=30):
    labels = np.repeat(np.arange(10), per_class)
    means = model.sample(len(labels), covariates=labels, return_mean=True, random_state=1)
    draws = model.sample(len(labels), covariates=labels, random_state=1)
    np.testing.assert_array_equal(means[:, -1], labels)  # X's layout: the label is filled in
    class_means = np.array([X[y == c].mean(0) for c in range(10)])
    sample_means = np.array([means[labels == c, :64].mean(0) for c in range(10)])
    distances = ((sample_means[:, None] - class_means[None]) ** 2).sum(-1)
    centroid = NearestCentroid().fit(X, y)
    return (distances.argmin(1), (centroid.predict(means[:, :64]) == labels).mean(),
            (centroid.predict(draws[:, :64]) == labels).mean())


def test_samples_conditioned_on_a_digit_class_look_like_that_class(labelled_digits):
    D, y = labelled_digits
    model = BernoulliVAE(**CLASS_SETTINGS, random_state=0).fit(D)
    nearest, accuracy_mean, accuracy_draw = _class_conditional_figures(model, D[:, :64], y)
    assert np.sum(nearest == np.arange(10)) >= 9
    assert accuracy_mean >= CLASS_ACCURACY_MEAN
    assert accuracy_draw >= CLASS_ACCURACY_DRAW
    # Same codes (same random_state), another class: other digits come out.
    threes = model.sample(20, covariates=3, return_mean=True, random_state=5)
    eights = model.sample(20, covariates=8, return_mean=True, random_state=5)
    assert np.abs(threes[:, :64] - eights[:, :64]).mean() > 0.05
    # log p(x | c) is higher under the true class than under another for most rows.
    wrong = D.copy()
    wrong[:, -1] = (wrong[:, -1] + 5) % 10
    assert np.mean(model.score_samples(D) > model.score_samples(wrong)) > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_samples_conditioned_on_a_digit_class_look_like_that_class_other_seeds(
        labelled_digits, seed):
    D, y = labelled_digits
    model = BernoulliVAE(**CLASS_SETTINGS, random_state=seed).fit(D)
    nearest, accuracy_mean, accuracy_draw = _class_conditional_figures(model, D[:, :64], y)
    assert np.sum(nearest == np.arange(10)) >= 9
    assert accuracy_mean >= CLASS_ACCURACY_MEAN
    assert accuracy_draw >= CLASS_ACCURACY_DRAW


def _two_batches(seed=0, n=900):
    """Digits split at random into two batches, batch 1 shifted by a fixed offset and scale
    (what a second instrument or lab does to the same kind of rows)."""
    rng = np.random.RandomState(seed)
    X = StandardScaler().fit_transform(load_digits().data[:n])
    X = X[:, X.std(0) > 0]
    batch = rng.randint(2, size=X.shape[0])
    offset = rng.normal(scale=1.0, size=X.shape[1])
    X = np.where(batch[:, None] == 1, 1.2 * X + offset, X)
    return np.column_stack([X, batch]), batch


BATCH_SETTINGS = dict(n_components=4, hidden_layer_sizes=(64,), max_iter=30, batch_size=64,
                      n_importance_samples=8, device="cpu", random_state=0)
# Cross-validated accuracy of a logistic regression predicting the batch from the codes,
# measured on seeds 0-9: 0.981-1.000 without the covariate, 0.463-0.549 with it (chance: 0.5;
# with max_iter=15 instead of 30 the conditional codes still held some batch, up to 0.836).
BATCH_WITHOUT = 0.9
BATCH_WITH = 0.65


def test_conditioning_on_the_batch_removes_the_batch_shift_from_the_codes():
    D, batch = _two_batches()
    X = D[:, :-1]
    plain = GaussianVAE(**BATCH_SETTINGS).fit(X)
    conditional = GaussianVAE(**BATCH_SETTINGS, covariates=[-1]).fit(D)
    classifier = LogisticRegression(max_iter=1000)
    without = cross_val_score(classifier, plain.transform(X), batch, cv=5).mean()
    with_batch = cross_val_score(classifier, conditional.transform(D), batch, cv=5).mean()
    assert without >= BATCH_WITHOUT
    assert with_batch <= BATCH_WITH


def test_numeric_covariates_are_standardized_and_drive_the_conditional_mean():
    # x = t / 50 * (1, -1, 0.5) + a latent factor + noise, t a covariate on its own scale.
    rng = np.random.RandomState(0)
    t = rng.uniform(0, 100, size=400)
    x = (np.outer(t / 50, [1.0, -1.0, 0.5]) + np.outer(rng.normal(size=400), [0.5, 0.5, -0.5])
         + 0.1 * rng.normal(size=(400, 3)))
    model = GaussianVAE(n_components=1, covariates=[0], covariate_encoding="numeric",
                        hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=3e-3,
                        n_importance_samples=8, device="cpu", random_state=0
                        ).fit(np.column_stack([t, x]))
    np.testing.assert_allclose(model.covariate_encoder_.mean_, [t.mean()])
    # E[x | t] of the model (decoded means averaged over 200 prior draws) on a grid of t:
    # its slope in t / 50 is the true (1, -1, 0.5); measured within 0.1 on seeds 0-5.
    grid = np.linspace(0, 100, 11)
    drawn = model.sample(11 * 200, covariates=np.repeat(grid, 200), return_mean=True,
                         random_state=0)
    np.testing.assert_array_equal(drawn[:, 0], np.repeat(grid, 200))
    conditional_mean = drawn[:, 1:].reshape(11, 200, 3).mean(axis=1)
    design = np.column_stack([grid / 50, np.ones(11)])
    slope = np.linalg.lstsq(design, conditional_mean, rcond=None)[0][0]
    np.testing.assert_allclose(slope, [1.0, -1.0, 0.5], atol=0.2)


# ----------------------------------------------------------------------- the surface
@pytest.fixture(scope="module")
def toy_model():
    return GaussianVAE(n_components=2, covariates=[2], **TINY).fit(_toy())


def test_the_fitted_state_names_the_covariates_and_their_encoding(toy_model):
    X = _toy()
    assert toy_model.n_features_in_ == 6
    np.testing.assert_array_equal(toy_model.covariate_indices_, [2])
    assert isinstance(toy_model.covariate_encoder_, OneHotEncoder)
    np.testing.assert_array_equal(toy_model.covariate_encoder_.categories_[0], [0, 1, 2])
    assert toy_model.module_.n_features == 5 and toy_model.module_.n_covariates == 3
    assert toy_model.transform(X).shape == (120, 2)
    assert list(toy_model.get_feature_names_out()) == ["gaussianvae0", "gaussianvae1"]


def test_sample_and_inverse_transform_return_x_layout_with_the_given_covariates(toy_model):
    X = _toy()
    one = toy_model.sample(5, covariates=1, random_state=0)
    assert one.shape == (5, 6)
    np.testing.assert_array_equal(one[:, 2], 1)
    several = toy_model.sample(3, covariates=[[0], [1], [2]], random_state=0)
    np.testing.assert_array_equal(several[:, 2], [0, 1, 2])
    # A 1-D array with one value per sample, and rows of X, are accepted too.
    np.testing.assert_array_equal(toy_model.sample(3, covariates=[0, 1, 2], random_state=0),
                                  several)
    np.testing.assert_array_equal(toy_model.sample(4, covariates=X[:4], random_state=0)[:, 2],
                                  X[:4, 2])
    np.testing.assert_array_equal(toy_model.sample(2, covariates=X[7], random_state=0)[:, 2],
                                  [X[7, 2]] * 2)
    assert np.all(np.isfinite(toy_model.score_samples(several)))
    # The same codes decoded with other covariates give other rows (c reaches the decoder).
    Z = toy_model.transform(X[:4])
    own = toy_model.inverse_transform(Z, covariates=X[:4])
    np.testing.assert_array_equal(own[:, 2], X[:4, 2])
    shifted = toy_model.inverse_transform(Z, covariates=(X[:4, 2:3] + 1) % 3)
    assert np.all(np.abs(np.delete(own - shifted, 2, axis=1)).max(axis=1) > 1e-3)
    for method in ("prior", "aggregated_posterior", "fitted"):
        draws = toy_model.sample(6, covariates=2, latent=method, random_state=0)
        assert draws.shape == (6, 6) and np.all(draws[:, 2] == 2) and np.all(np.isfinite(draws))


def test_the_modeled_columns_alone_depend_on_the_modeled_data(toy_model):
    # transform and score_samples read the covariate column as c, not as data: rows that
    # differ only in it get other codes, and the model's tensor never holds it.
    X = _toy()
    other = X.copy()
    other[:, 2] = (other[:, 2] + 1) % 3
    assert np.all(np.any(toy_model.transform(X) != toy_model.transform(other), axis=1))
    breakdown = toy_model.score_breakdown(X)
    np.testing.assert_allclose(breakdown["elbo"], toy_model.elbo_samples(X))
    np.testing.assert_allclose(breakdown["elbo"], breakdown["reconstruction"] - breakdown["kl"])


def test_impute_fills_modeled_gaps_given_c_and_keeps_the_covariate_column():
    X = _toy()
    gaps = X.copy()
    rng = np.random.RandomState(1)
    hole = rng.uniform(size=X.shape) < 0.2
    hole[:, 2] = False
    gaps[hole] = np.nan
    model = GaussianVAE(n_components=2, covariates=[2], **TINY).fit(gaps)
    filled = model.impute(gaps)
    np.testing.assert_array_equal(filled[~hole], X[~hole])
    assert np.all(np.isfinite(filled))
    # Imputed values depend on the row's group through c.
    flipped = gaps.copy()
    flipped[:, 2] = (flipped[:, 2] + 1) % 3
    assert np.all(model.impute(flipped)[hole] != filled[hole])
    assert np.all(np.isfinite(model.score_samples(gaps)))


def test_interpolate_and_attribute_vectors_with_covariates(toy_model):
    X = _toy()
    same = np.flatnonzero(X[:, 2] == X[0, 2])[1]
    path = toy_model.interpolate(X[0], X[same], n_steps=5)
    assert path.shape == (5, 6) and np.all(path[:, 2] == X[0, 2])
    ends = toy_model.inverse_transform(toy_model.transform(X[[0, same]]), covariates=X[[0, same]])
    np.testing.assert_allclose(path[[0, -1]], ends, rtol=1e-6)
    other = np.flatnonzero(X[:, 2] != X[0, 2])[0]
    with pytest.raises(ValueError, match="different covariates.*covariates="):
        toy_model.interpolate(X[0], X[other])
    morph = toy_model.interpolate(X[0], X[other], n_steps=3, covariates=X[other, 2])
    assert np.all(morph[:, 2] == X[other, 2])
    vector = toy_model.attribute_vector(X[X[:, 2] == 0], X[X[:, 2] == 1])
    edited = toy_model.apply_attribute(X[:3], vector, strength=0.0)
    np.testing.assert_array_equal(edited[:, 2], X[:3, 2])
    np.testing.assert_allclose(
        edited, toy_model.inverse_transform(toy_model.transform(X[:3]), covariates=X[:3]),
        rtol=1e-6)


def test_pickle_clone_dtypes_and_the_outlier_detector(toy_model):
    X = _toy()
    loaded = pickle.loads(pickle.dumps(toy_model))
    np.testing.assert_array_equal(loaded.score_samples(X), toy_model.score_samples(X))
    np.testing.assert_array_equal(loaded.sample(3, covariates=1, latent="aggregated_posterior"),
                                  toy_model.sample(3, covariates=1, latent="aggregated_posterior"))
    assert clone(toy_model).get_params()["covariates"] == [2]
    assert toy_model.transform(X.astype(np.float32)).dtype == np.float32
    assert toy_model.inverse_transform(np.zeros((2, 2), np.float32), covariates=0).dtype == (
        np.float32)
    model64 = GaussianVAE(n_components=2, covariates=[2], **{**TINY, "dtype": "float64"}).fit(X)
    assert model64.transform(X).dtype == np.float64
    detector = LatentOutlierDetector(GaussianVAE(n_components=2, covariates=[2], **TINY),
                                     contamination=0.1).fit(X)
    np.testing.assert_allclose(detector.score_samples(X), toy_model.score_samples(X))
    assert set(np.unique(detector.predict(X))) <= {-1, 1}


def test_partial_fit_warm_start_and_early_stopping_keep_the_encoding():
    X = _toy(n=180)
    model = GaussianVAE(n_components=2, covariates=[2], **TINY)
    model.partial_fit(X[:90])
    encoder = model.covariate_encoder_
    model.partial_fit(X[90:])
    assert model.covariate_encoder_ is encoder and model.n_iter_ == 2
    novel = X[:5].copy()
    novel[:, 2] = 7
    with pytest.raises(ValueError, match=r"category 7 .*fit did not see.*\[0, 1, 2\]"):
        model.partial_fit(novel)
    assert model.n_iter_ == 2  # all or nothing
    warm = GaussianVAE(n_components=2, covariates=[2], warm_start=True, **TINY).fit(X)
    warm.fit(X)
    assert warm.n_iter_ == 8
    stopped = GaussianVAE(n_components=2, covariates=[2], early_stopping=True, **TINY).fit(X)
    assert len(stopped.validation_scores_) == stopped.n_iter_
    # Changing the covariates makes a new model (fit) or an error (partial_fit).
    warm.set_params(covariates=[0])
    warm.fit(X)
    assert warm.n_iter_ == 4 and list(warm.covariate_indices_) == [0]
    with pytest.raises(ValueError, match="partial_fit cannot continue"):
        model.set_params(covariates=[1]).partial_fit(X)


def test_dataframe_columns_are_named_and_covariates_given_by_name():
    X = _toy()
    columns = ["a", "b", "batch", "c", "d", "e"]
    frame = pd.DataFrame(X, columns=columns)
    model = GaussianVAE(n_components=2, covariates=["batch"], **TINY).fit(frame)
    np.testing.assert_array_equal(model.covariate_indices_, [2])
    by_index = GaussianVAE(n_components=2, covariates=[2], **TINY).fit(X)
    np.testing.assert_array_equal(model.transform(frame), by_index.transform(X))
    mask = GaussianVAE(n_components=2, covariates=[c == "batch" for c in columns], **TINY)
    np.testing.assert_array_equal(mask.fit(X).transform(X), by_index.transform(X))
    drawn = model.sample(3, covariates=pd.DataFrame({"batch": [0, 1, 2]}), random_state=0)
    np.testing.assert_array_equal(drawn, by_index.sample(3, covariates=[0, 1, 2], random_state=0))
    np.testing.assert_array_equal(model.sample(2, covariates=frame.iloc[:2], random_state=0)[:, 2],
                                  X[:2, 2])


def test_count_vae_conditions_on_a_non_count_covariate():
    # The batch moves the counts' proportions: feature 0 is frequent in batch 0.5, feature 4
    # in batch 1.5. The covariate column is not a count (fine: it is not modeled).
    rng = np.random.RandomState(0)
    batch = rng.randint(2, size=300)
    rates = np.where(batch[:, None] == 1, [2.0, 2, 2, 2, 8], [8.0, 2, 2, 2, 2])
    X = np.column_stack([rng.poisson(rates), batch + 0.5])
    model = CountVAE(n_components=2, covariates=[5], **{**TINY, "max_iter": 30}).fit(X)
    draws = model.sample(400, covariates=np.repeat([0.5, 1.5], 200), random_state=0)
    assert np.all(draws[:, :5] == np.round(draws[:, :5])) and np.all(draws[:, :5] >= 0)
    share = draws[:, :5] / draws[:, :5].sum(axis=1, keepdims=True).clip(1)
    first, second = share[:200].mean(0), share[200:].mean(0)
    # Measured on seeds 0-3: each batch's own frequent feature has a share larger by
    # 0.09-0.18 (true: 0.5 against 0.125; 30 small epochs do not get all the way).
    assert first[0] > second[0] + 0.05 and second[4] > first[4] + 0.05


def test_grid_search_over_a_pipeline_with_a_covariate_model(labelled_digits):
    D, y = labelled_digits
    D = D[:400]
    # Scale the pixels, pass the label through (it lands last), condition on it.
    scale = ColumnTransformer([("pixels", MinMaxScaler(clip=True), slice(0, 64))],
                              remainder="passthrough")
    pipe = Pipeline([("scale", scale),
                     ("vae", BernoulliVAE(covariates=[-1], **{**TINY, "max_iter": 3}))])
    search = GridSearchCV(pipe, {"vae__n_components": [2, 4]}, cv=2).fit(D)
    assert search.best_params_["vae__n_components"] in (2, 4)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.transform(D).shape == (400, search.best_params_["vae__n_components"])
    vae = search.best_estimator_.named_steps["vae"]
    assert vae.sample(2, covariates=7)[:, -1].tolist() == [7, 7]


# ----------------------------------------------------------------------- bad covariates
@pytest.mark.parametrize("covariates, message", [
    ([6], r"covariates=\[6\] holds column index 6, but X has n_features=6 .*-6\.\.5"),
    ([-7], r"column index -7"),
    (["batch"], r"names columns, but X has no column names"),
    ([0, 0], r"more than once"),
    ([True, False], r"boolean mask of length 2, but X has n_features=6"),
    ([0, "a"], r"mixes kinds"),
    (list(range(6)), r"selects all n_features=6 columns"),
    ([[0, 1]], r"must be None, a column index"),
])
def test_bad_covariate_selections_are_explained(covariates, message):
    with pytest.raises(ValueError, match=message):
        GaussianVAE(covariates=covariates, **TINY).fit(_toy())


def test_unknown_names_are_listed():
    frame = pd.DataFrame(_toy(), columns=["a", "b", "batch", "c", "d", "e"])
    with pytest.raises(ValueError, match=r"names 'bacth', which is not a column of X.*'batch'"):
        GaussianVAE(covariates=["bacth"], **TINY).fit(frame)


def test_nan_in_a_covariate_is_an_error_even_where_nan_is_accepted(toy_model):
    X = _toy()
    X[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"covariate column 2 of X holds 1 missing .*row 5"):
        GaussianVAE(covariates=[2], **TINY).fit(X)
    for method in ("transform", "score_samples", "impute"):
        with pytest.raises(ValueError, match=r"covariate column 2 of X holds 1 missing"):
            getattr(toy_model, method)(X)
    with pytest.raises(ValueError, match=r"sample: covariate column 2 of X holds 1 missing"):
        toy_model.sample(2, covariates=[np.nan])


def test_an_unseen_category_is_named_with_its_column(toy_model):
    X = _toy()
    X[3, 2] = 5
    for method in ("transform", "score_samples"):
        with pytest.raises(ValueError, match=r"X: covariate column 2 of X holds the category 5 "
                                             r"\(row 3\), which fit did not see.*\[0, 1, 2\]"):
            getattr(toy_model, method)(X)
    with pytest.raises(ValueError, match=r"sample: .*category 9"):
        toy_model.sample(1, covariates=9)


def test_generation_without_covariates_is_refused_with_the_fix(toy_model):
    with pytest.raises(ValueError,
                       match=r"sample needs covariates.*column\(s\) \[2\].*covariates="):
        toy_model.sample(3)
    with pytest.raises(ValueError, match=r"inverse_transform needs covariates"):
        toy_model.inverse_transform(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"covariates has 2 rows, but 3 are needed"):
        toy_model.sample(3, covariates=[[0], [1]])
    with pytest.raises(ValueError, match=r"covariates has 3 columns, but the model has 1"):
        toy_model.sample(3, covariates=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"covariates has shape \(4,\), but the model has 1"):
        toy_model.sample(3, covariates=[0, 1, 2, 0])
    plain = GaussianVAE(n_components=2, **TINY).fit(_toy())
    for call in (lambda: plain.sample(2, covariates=1),
                 lambda: plain.inverse_transform(np.zeros((2, 2)), covariates=1)):
        with pytest.raises(ValueError, match=r"has no covariates .*covariates must be None"):
            call()


def test_the_modeled_columns_alone_are_checked_against_the_likelihood(labelled_digits):
    # The label (0..9) is outside BernoulliVAE's [0, 1], and a covariate: that is fine.
    D, _ = labelled_digits
    model = BernoulliVAE(n_components=2, covariates=[64], **TINY).fit(D[:100])
    bad = D[:100].copy()
    bad[0, 0] = 2.0
    with pytest.raises(ValueError, match=r"BernoulliVAE models data in \[0, 1\]"):
        model.score_samples(bad)
