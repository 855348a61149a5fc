"""LatentOutlierDetector: scikit-learn's outlier-detector API, checked against IsolationForest."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skvae import (
    PPCA,
    BernoulliVAE,
    CountVAE,
    FactorAnalysisEM,
    GaussianVAE,
    LatentOutlierDetector,
)

OUTLIER_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "outliers"


def _small_vae(cls, **kwargs):
    return cls(n_components=2, hidden_layer_sizes=(8,), max_iter=5, batch_size=32,
               n_importance_samples=8, device="cpu", random_state=0, **kwargs)


# ---------------------------------------------------------------- scikit-learn's own checks
# The VAE in float32 and float64: its inference runs in chunks of one fixed shape, so the
# batch-invariance checks hold at their 1e-7 either way. Every check passes, so none is
# marked as an expected failure. BernoulliVAE is left out: the
# checks feed data outside [0, 1], which it rejects; test_every_skvae_model covers it.
CHECKED = [
    LatentOutlierDetector(PPCA(device="cpu")),
    LatentOutlierDetector(FactorAnalysisEM(device="cpu", max_iter=200), contamination=0.1),
    LatentOutlierDetector(_small_vae(GaussianVAE)),
    LatentOutlierDetector(_small_vae(GaussianVAE, dtype="float64")),
]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(CHECKED)
def test_sklearn_compatible_detector(estimator, check):
    check(estimator)


# ---------------------------------------------------------------- data
@pytest.fixture(scope="module")
def blobs_with_outliers():
    """300 rows in 4-D near a 2-D plane, 15 of them (the first) far off the plane."""
    rng = np.random.RandomState(0)
    Z = rng.normal(size=(300, 2))
    X = Z @ rng.normal(size=(2, 4)) + 0.1 * rng.normal(size=(300, 4))
    X[:15] += rng.choice([-1.0, 1.0], size=(15, 4)) * 3
    return X


def _adbench(name):
    path = OUTLIER_DATA / f"{name}.npz"
    if not path.exists():
        pytest.skip(f"{path} is absent (see ../shared/data/README.md)")
    with np.load(path) as data:
        return data["X"].astype(np.float64), data["y"]


# ---------------------------------------------------------------- the API, beside IsolationForest
@pytest.mark.parametrize("contamination", [0.05, 0.1, 0.25, 0.5])
def test_contamination_is_the_training_fraction_as_in_isolation_forest(
        blobs_with_outliers, contamination):
    X = blobs_with_outliers
    ours = LatentOutlierDetector(PPCA(n_components=2, device="cpu"),
                                 contamination=contamination).fit(X)
    forest = IsolationForest(contamination=contamination, random_state=0).fit(X)
    expected = int(round(contamination * len(X)))
    assert np.sum(ours.predict(X) == -1) == expected
    assert np.sum(forest.predict(X) == -1) == expected
    # the offset is the contamination quantile of the training scores, in both
    assert ours.offset_ == pytest.approx(np.percentile(ours.score_samples(X), 100 * contamination))
    assert forest.offset_ == pytest.approx(
        np.percentile(forest.score_samples(X), 100 * contamination))


def test_same_outputs_signs_and_attributes_as_isolation_forest(blobs_with_outliers):
    X = blobs_with_outliers
    ours = LatentOutlierDetector(PPCA(n_components=2, device="cpu"), contamination=0.05).fit(X)
    forest = IsolationForest(contamination=0.05, random_state=0).fit(X)
    for detector in (ours, forest):
        labels, decision, scores = (detector.predict(X), detector.decision_function(X),
                                    detector.score_samples(X))
        assert labels.dtype.kind == "i" and set(np.unique(labels)) == {-1, 1}
        assert decision.dtype == scores.dtype == np.float64
        np.testing.assert_allclose(decision, scores - detector.offset_)
        np.testing.assert_array_equal(labels, np.where(decision < 0, -1, 1))
        np.testing.assert_array_equal(detector.fit_predict(X), labels)
        assert isinstance(detector.offset_, float)
        assert detector.n_features_in_ == 4
        assert not hasattr(detector, "feature_names_in_")
        # lower score = more abnormal: the 15 planted outliers score below the rest on average
        assert scores[:15].mean() < scores[15:].mean()
    # the planted outliers are found by both
    assert np.all(ours.predict(X)[:15] == -1)
    assert np.mean(forest.predict(X)[:15] == -1) >= 0.8


def test_decision_function_is_zero_at_the_threshold(blobs_with_outliers):
    X = blobs_with_outliers
    detector = LatentOutlierDetector(PPCA(n_components=2, device="cpu"), contamination=0.1)
    detector.fit(X)
    scores = detector.score_samples(X)
    # a row whose score is exactly offset_ has decision 0 and is an inlier, as in sklearn
    at = np.argmin(np.abs(scores - detector.offset_))
    shifted = clone(detector).fit(X)
    shifted.offset_ = float(scores[at])
    # (scored within the same batch: a row alone may differ in the last bits, see README)
    assert shifted.decision_function(X)[at] == 0.0
    assert shifted.predict(X)[at] == 1
    # and the sign flips right around it
    order = np.argsort(scores)
    decision = detector.decision_function(X)[order]
    assert np.all(decision[:30] < 0) and np.all(decision[30:] > 0)


def test_score_samples_is_the_models_log_likelihood(blobs_with_outliers):
    X = blobs_with_outliers
    model = PPCA(n_components=2, device="cpu")
    detector = LatentOutlierDetector(model).fit(X)
    np.testing.assert_allclose(detector.score_samples(X), clone(model).fit(X).score_samples(X))
    assert detector.score(X) == pytest.approx(detector.estimator_.score(X))
    assert detector.estimator_ is not model and not hasattr(model, "components_")


def test_feature_names_come_from_the_estimator(blobs_with_outliers):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(blobs_with_outliers, columns=list("abcd"))
    detector = LatentOutlierDetector(PPCA(n_components=2, device="cpu")).fit(frame)
    np.testing.assert_array_equal(detector.feature_names_in_, list("abcd"))
    with pytest.warns(UserWarning, match="feature names"):
        detector.predict(blobs_with_outliers)


# ---------------------------------------------------------------- contamination="auto"
def test_auto_is_tukeys_fence(blobs_with_outliers):
    X = blobs_with_outliers
    detector = LatentOutlierDetector(PPCA(n_components=2, device="cpu")).fit(X)
    q1, q3 = np.percentile(detector.score_samples(X), [25, 75])
    assert detector.offset_ == pytest.approx(q1 - 1.5 * (q3 - q1))
    labels = detector.predict(X)
    # all 15 planted outliers (5%), and the clean rows' tail besides: for a Gaussian in 4-D
    # (log p = const - chi2_4 / 2) the fence lies at chi2_4 = 10.6, exceeded with p = 3.1%
    assert np.all(labels[:15] == -1)
    assert np.sum(labels[15:] == -1) <= 12


def test_auto_does_not_depend_on_the_units(blobs_with_outliers):
    # Scaling X by c shifts every log-likelihood by -d log c: a constant offset would flag
    # other rows, Tukey's fence flags the same ones.
    X = blobs_with_outliers
    base = LatentOutlierDetector(PPCA(n_components=2, device="cpu")).fit(X)
    for c in (1e-3, 1e3):
        scaled = LatentOutlierDetector(PPCA(n_components=2, device="cpu")).fit(c * X)
        assert scaled.offset_ == pytest.approx(base.offset_ - 4 * np.log(c), rel=1e-9)
        np.testing.assert_array_equal(scaled.predict(c * X), base.predict(X))


def test_auto_flags_a_small_tail_of_clean_gaussian_data():
    # log p(x) = const - chi2_d / 2 for data from the model: the fence flags ~1.9% at d=10.
    rng = np.random.RandomState(1)
    X = rng.normal(size=(20000, 3)) @ rng.normal(size=(3, 10)) + rng.normal(size=(20000, 10))
    labels = LatentOutlierDetector(PPCA(n_components=3, device="cpu")).fit_predict(X)
    assert 0.012 < np.mean(labels == -1) < 0.026


# ---------------------------------------------------------------- every skvae model
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("model", [
    PPCA(n_components=3, device="cpu"),
    FactorAnalysisEM(n_components=3, device="cpu"),
    _small_vae(GaussianVAE),
    _small_vae(BernoulliVAE),
], ids=lambda m: type(m).__name__)
def test_every_skvae_model(digits, model):
    X = digits[:400] / 16  # in [0, 1], so BernoulliVAE takes it too
    detector = LatentOutlierDetector(model, contamination=0.1)
    labels = detector.fit_predict(X)
    assert np.sum(labels == -1) == 40
    np.testing.assert_array_equal(detector.predict(X), labels)  # reproducible scores
    np.testing.assert_allclose(detector.score_samples(X), detector.estimator_.score_samples(X))
    assert type(detector.estimator_) is type(model)
    assert detector.set_params(estimator__n_components=2).estimator.n_components == 2


def test_torch_tensor_input(blobs_with_outliers):
    X = blobs_with_outliers
    detector = LatentOutlierDetector(PPCA(n_components=2, device="cpu"), contamination=0.05)
    from_tensor = detector.fit(torch.from_numpy(X)).predict(torch.from_numpy(X))
    assert isinstance(from_tensor, np.ndarray)
    np.testing.assert_array_equal(from_tensor, clone(detector).fit(X).predict(X))


# ---------------------------------------------------------------- missing values
@pytest.mark.parametrize("model", [PPCA(n_components=2, device="cpu"),
                                   FactorAnalysisEM(n_components=2, device="cpu")],
                         ids=lambda m: type(m).__name__)
def test_nan_where_the_model_accepts_it(blobs_with_outliers, model):
    X = blobs_with_outliers.copy()
    rng = np.random.RandomState(3)
    X[rng.rand(*X.shape) < 0.05] = np.nan
    detector = LatentOutlierDetector(model, contamination=0.05)
    assert get_tags(detector).input_tags.allow_nan
    labels = detector.fit_predict(X)
    assert np.all(np.isfinite(detector.decision_function(X)))
    assert np.sum(labels == -1) == 15
    # the planted outliers are still found (most of them: some lost the entries that showed it)
    assert np.mean(labels[:15] == -1) >= 0.8


def test_nan_rejected_where_the_model_rejects_it(blobs_with_outliers):
    X = blobs_with_outliers.copy()
    X[0, 0] = np.nan
    detector = LatentOutlierDetector(_small_vae(CountVAE))  # counts: no missing values yet
    assert not get_tags(detector).input_tags.allow_nan
    with pytest.raises(ValueError, match="NaN"):
        detector.fit(X)
    assert not hasattr(detector, "estimator_")


class _NaNFarOut(BaseEstimator):
    """A density model whose score_samples is ``far`` (NaN) for rows with an entry beyond 1e10."""

    def __init__(self, far=np.nan):
        self.far = far

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def score_samples(self, X):
        X = np.asarray(X, dtype=float)
        with np.errstate(over="ignore"):
            return np.where(np.abs(X).max(axis=1) > 1e10, self.far, -0.5 * (X**2).sum(axis=1))


def test_rows_the_estimator_cannot_score_are_outliers(blobs_with_outliers):
    # NaN < 0 is False: without care a row the model cannot score would be an inlier.
    detector = LatentOutlierDetector(_NaNFarOut()).fit(blobs_with_outliers)
    X = blobs_with_outliers[:4].copy()
    X[2, 1] = 1e20
    with pytest.warns(UserWarning, match=r"_NaNFarOut.score_samples returned NaN for row\(s\) "
                                         r"\[2\] of X: .*-inf.*outliers"):
        scores = detector.score_samples(X)
    assert scores[2] == -np.inf and np.isfinite(np.delete(scores, 2)).all()
    with pytest.warns(UserWarning, match=r"\[2\]"):
        assert detector.decision_function(X)[2] == -np.inf
    with pytest.warns(UserWarning, match=r"\[2\]"):
        assert detector.predict(X)[2] == -1


@pytest.mark.parametrize("contamination", ["auto", 0.1, 0.5])
def test_a_threshold_among_unscorable_training_rows_is_refused(blobs_with_outliers, contamination):
    # An offset_ of -inf would give -inf - -inf = NaN decisions: the unscorable rows inliers.
    X = blobs_with_outliers.copy()
    X[::2, 0] = 1e20  # half of the rows
    detector = LatentOutlierDetector(_NaNFarOut(far=-np.inf), contamination=contamination)
    with pytest.raises(ValueError, match=r"150 of the 300 training rows score -inf under "
                                         r"_NaNFarOut \(row\(s\) \[0, 2, 4, .*no finite threshold"):
        detector.fit(X)
    assert not hasattr(detector, "offset_")


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("estimator", [LinearRegression(), StandardScaler(), "PPCA"])
def test_estimator_without_score_samples_is_rejected(blobs_with_outliers, estimator):
    detector = LatentOutlierDetector(estimator)
    with pytest.raises(InvalidParameterError, match="'estimator'.*'score_samples'"):
        detector.fit(blobs_with_outliers)


@pytest.mark.parametrize("contamination", [0.0, 0.6, -0.1, "0.1", "none"])
def test_bad_contamination_is_rejected(blobs_with_outliers, contamination):
    with pytest.raises(InvalidParameterError, match="contamination"):
        LatentOutlierDetector(contamination=contamination).fit(blobs_with_outliers)


def test_bad_nested_parameter_is_rejected(blobs_with_outliers):
    detector = LatentOutlierDetector(PPCA(n_components=0, device="cpu"))
    with pytest.raises(InvalidParameterError, match="n_components"):
        detector.fit(blobs_with_outliers)


@pytest.mark.parametrize("method", ["predict", "decision_function", "score_samples", "score"])
def test_unfitted(blobs_with_outliers, method):
    detector = LatentOutlierDetector()
    with pytest.raises(NotFittedError):
        getattr(detector, method)(blobs_with_outliers)
    assert not hasattr(detector, "n_features_in_")


def test_failed_refit_keeps_the_fitted_detector(blobs_with_outliers):
    X = blobs_with_outliers
    detector = LatentOutlierDetector(PPCA(n_components=2, device="cpu")).fit(X)
    estimator, offset = detector.estimator_, detector.offset_
    with pytest.raises(ValueError, match="infinity"):
        detector.fit(np.full_like(X, np.inf))
    assert detector.estimator_ is estimator and detector.offset_ == offset


def test_wrong_number_of_features(blobs_with_outliers):
    detector = LatentOutlierDetector(PPCA(n_components=2, device="cpu")).fit(blobs_with_outliers)
    with pytest.raises(ValueError, match="X has 3 features, but PPCA is expecting 4"):
        detector.predict(blobs_with_outliers[:, :3])


# ---------------------------------------------------------------- model selection, persistence
def test_grid_search_over_the_wrapped_models_parameters():
    X, y = _adbench("38_thyroid")
    inlier = (y == 0).astype(int)  # roc_auc of decision_function: the positive class is "inlier"
    grid = {"estimator__n_components": [1, 2, 4]}
    detector = LatentOutlierDetector(PPCA(device="cpu"))
    by_auc = GridSearchCV(detector, grid, scoring="roc_auc", cv=3).fit(X, inlier)
    # the scorer is the ROC-AUC of -decision_function against the outlier labels
    refit = by_auc.best_estimator_
    assert roc_auc_score(y, -refit.decision_function(X)) == pytest.approx(
        by_auc.scorer_(refit, X, inlier))
    assert by_auc.best_params_ == {"estimator__n_components": 1}
    assert by_auc.best_score_ > 0.93
    # without a scorer: the held-out mean log-likelihood (score), which favours more components
    by_likelihood = GridSearchCV(detector, grid, cv=3).fit(X)
    assert by_likelihood.best_params_ == {"estimator__n_components": 4}
    assert np.all(np.diff(by_likelihood.cv_results_["mean_test_score"]) > 0)


def test_nested_parameters_through_a_pipeline(blobs_with_outliers):
    X = blobs_with_outliers
    detector = LatentOutlierDetector(make_pipeline(StandardScaler(), PPCA(device="cpu")),
                                     contamination=0.05)
    detector.set_params(estimator__ppca__n_components=2)
    assert detector.fit(X).estimator_[-1].n_components_ == 2
    assert np.all(detector.predict(X)[:15] == -1)


def test_pickle_round_trip(blobs_with_outliers):
    X = blobs_with_outliers
    detector = LatentOutlierDetector(PPCA(n_components=2, device="cpu"), contamination=0.1)
    detector.fit(X)
    loaded = pickle.loads(pickle.dumps(detector))
    assert loaded.offset_ == detector.offset_
    np.testing.assert_array_equal(loaded.decision_function(X), detector.decision_function(X))
    np.testing.assert_array_equal(loaded.predict(X), detector.predict(X))


# ---------------------------------------------------------------- real outlier data (ADBench)
# ADBench's protocol on one split: stratified 70/30, fit on the contaminated training part,
# ROC-AUC of -decision_function on the test part (lower decision = more abnormal).
# Measured (torch 2.13 CPU, split seed 0): mammography 87.2 (IsolationForest 85.5),
# thyroid 95.1 (IsolationForest 98.8).
@pytest.mark.parametrize("name, ours_at_least", [("23_mammography", 0.86), ("38_thyroid", 0.94)])
def test_real_outliers_beside_isolation_forest(name, ours_at_least):
    X, y = _adbench(name)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0)
    contamination = float(np.mean(y_train))
    ours = LatentOutlierDetector(make_pipeline(StandardScaler(), PPCA(n_components=1,
                                                                      device="cpu")),
                                 contamination=contamination).fit(X_train)
    forest = IsolationForest(contamination=contamination, random_state=0).fit(X_train)
    auc = {}
    for label, detector in (("ours", ours), ("forest", forest)):
        auc[label] = roc_auc_score(y_test, -detector.decision_function(X_test))
        # the true contamination gives the same number of flagged training rows in both
        assert np.sum(detector.predict(X_train) == -1) == pytest.approx(
            contamination * len(X_train), abs=1)
    assert auc["ours"] > ours_at_least
    assert abs(auc["ours"] - auc["forest"]) < 0.05
    # score_samples ranks the same way: the offset is a shift, whose rounding may tie or untie
    # a few pairs of nearly equal scores, each moving the AUC by 1 / (positives x negatives)
    pairs = np.sum(y_test == 1) * np.sum(y_test == 0)
    assert roc_auc_score(y_test, -ours.score_samples(X_test)) == pytest.approx(
        auc["ours"], rel=0, abs=5 / pairs)
