"""Outlier detection with any density model: LatentOutlierDetector."""

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted

from ._base import named_rows, warn
from ._compat import HasMethods, Interval, StrOptions, _fit_context
from .linear import PPCA

# Tukey's fence: "auto" flags a row whose log-likelihood is below Q1 - _FENCE * IQR of the
# training log-likelihoods (Tukey 1977, the whisker of a box plot).
_FENCE = 1.5


def _default_estimator():
    return PPCA()


class LatentOutlierDetector(OutlierMixin, BaseEstimator):
    """Unsupervised outlier detection with the log-likelihood of a fitted latent variable model.

    Fits a density model (a clone of ``estimator``) to the training data and calls a row an
    outlier when its log-likelihood log p(x) is low: ``score_samples`` is log p(x) (higher is
    more normal, as in scikit-learn's detectors), ``decision_function`` subtracts the
    threshold ``offset_`` (negative for outliers) and ``predict`` returns -1 for outliers and
    1 for inliers, as ``sklearn.ensemble.IsolationForest`` does.

    Parameters
    ----------
    estimator : estimator object, default=None
        The density model, cloned by ``fit``. Any estimator with ``fit`` and a
        ``score_samples`` that returns a log-likelihood per row: :class:`PPCA`,
        :class:`FactorAnalysisEM`, :class:`GaussianVAE`, :class:`BernoulliVAE`, a
        ``Pipeline`` that ends in one of them (e.g. after a ``StandardScaler``), or
        scikit-learn's ``GaussianMixture`` and ``KernelDensity``. ``None`` means
        ``PPCA()``. Its parameters are reachable as ``estimator__<name>`` in
        ``set_params`` and ``GridSearchCV``.
    contamination : "auto" or float, default="auto"
        How the threshold ``offset_`` is set from the log-likelihoods of the training rows.

        - float in (0, 0.5]: the expected proportion of outliers in the training data;
          ``offset_`` is that quantile of the training log-likelihoods, so this fraction of
          the training rows is predicted as outliers (as in ``IsolationForest``).
        - ``"auto"``: Tukey's fence, ``offset_ = Q1 - 1.5 * (Q3 - Q1)`` with Q1 and Q3 the
          quartiles of the training log-likelihoods: the lower whisker of their box plot.
          See Notes for why.

    Attributes
    ----------
    estimator_ : estimator object
        The fitted clone of ``estimator``.
    offset_ : float
        Threshold on ``score_samples``: ``decision_function(X) = score_samples(X) - offset_``,
        and a row with a negative decision value is predicted as an outlier.
    n_features_in_ : int
        Number of features seen during ``fit`` (that of ``estimator_``).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` had string column names.

    See Also
    --------
    sklearn.ensemble.IsolationForest : Outlier detection by random partitions; same API.
    sklearn.covariance.EllipticEnvelope : A robust full-covariance Gaussian detector.

    Notes
    -----
    A log-likelihood has no natural zero: it moves with the units of the data, the number of
    features and the model, so a constant offset such as ``IsolationForest``'s -0.5 would flag
    everything or nothing. A fixed quantile of the training scores would flag that fraction
    of any data, however clean. Tukey's fence depends only on the spread of the training
    log-likelihoods: it is unchanged by adding a constant to them and scales with them, it
    works for every model (exact log p(x) or an importance-weighted bound), and the quartiles
    move little when up to a quarter of the training rows are outliers, where a rule such as
    mean - 3 std is dragged down by the outliers it should find. On clean data it flags only
    the tail: for a well-specified Gaussian model, log p(x) is a constant minus half a
    chi-squared with n_features degrees of freedom, and the fence flags about 8% of the rows
    with 1 feature, 2% with 10 and under 1% with 100 or more.

    With missing values (NaN, accepted when the estimator accepts them, as :class:`PPCA` and
    :class:`FactorAnalysisEM` do), ``score_samples`` is the log-likelihood of the observed
    entries only, which is higher when fewer entries are observed: compare rows with the same
    number of missing entries, or impute first.

    References
    ----------
    J. W. Tukey, *Exploratory Data Analysis*, Addison-Wesley, 1977.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae import PPCA, LatentOutlierDetector
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 5))
    >>> X[:4] += 8
    >>> detector = LatentOutlierDetector(PPCA(n_components=2, device="cpu"),
    ...                                  contamination=0.02).fit(X)
    >>> detector.predict(X[:6])
    array([-1, -1, -1, -1,  1,  1])
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "score_samples"]), None],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
    }

    def __init__(self, estimator=None, *, contamination="auto"):
        self.estimator = estimator
        self.contamination = contamination

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self._estimator())
        tags.input_tags.allow_nan = inner.input_tags.allow_nan
        tags.input_tags.sparse = inner.input_tags.sparse
        tags.non_deterministic = inner.non_deterministic
        return tags

    def _estimator(self):
        return _default_estimator() if self.estimator is None else self.estimator

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit a clone of ``estimator`` to ``X`` and set the threshold ``offset_``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Training data, validated by the estimator (NaN only where it accepts NaN).
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The fitted detector.
        """
        self._fit(X)
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def fit_predict(self, X, y=None):
        """Fit to ``X`` and return its labels: -1 for outliers, 1 for inliers.

        Equal to ``fit(X).predict(X)``, but scores the training rows once instead of twice
        (which matters for a VAE's importance-weighted log-likelihood).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Training data.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            -1 for outliers, 1 for inliers.
        """
        return self._labels(self._fit(X) - self.offset_)

    def _fit(self, X):
        """Fit, set the fitted attributes only once all went well, return the training scores."""
        estimator = clone(self._estimator())
        estimator.fit(X)
        scores = np.asarray(estimator.score_samples(X), dtype=np.float64)
        if np.isnan(scores).any():
            raise ValueError(
                f"{type(estimator).__name__}.score_samples returned NaN for "
                f"{int(np.isnan(scores).sum())} training row(s) {named_rows(np.isnan(scores))}, "
                "so no threshold can be set. Check the estimator's settings (a diverged fit?) "
                "or rescale X."
            )
        with np.errstate(invalid="ignore"):  # quantiles among -inf scores: checked below
            if self.contamination == "auto":
                q1, q3 = np.percentile(scores, [25.0, 75.0])
                offset = q1 - _FENCE * (q3 - q1)
            else:
                offset = np.percentile(scores, 100.0 * self.contamination)
        if not np.isfinite(offset):  # -inf - -inf would make unscorable rows inliers
            lowest = scores == -np.inf
            raise ValueError(
                f"{int(lowest.sum())} of the {scores.size} training rows score -inf under "
                f"{type(estimator).__name__} (row(s) {named_rows(lowest)}), so "
                f"contamination={self.contamination!r} gives no finite threshold. Drop or "
                "rescale those rows, or use a smaller contamination."
            )
        self.estimator_ = estimator
        self.offset_ = float(offset)
        return scores

    # ------------------------------------------------------------------ scoring
    def score_samples(self, X):
        """Log-likelihood of each row under the fitted model; lower is more abnormal.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            The data.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            ``estimator_.score_samples(X)``: log p(x) in nats (or the estimator's estimate of
            it), as float64. A row the estimator cannot score (NaN) gets -inf, the most
            abnormal score, with a warning naming it, so it is always an outlier.
        """
        check_is_fitted(self)
        scores = np.asarray(self.estimator_.score_samples(X), dtype=np.float64)
        unscorable = np.isnan(scores)
        if unscorable.any():
            warn(
                f"{type(self.estimator_).__name__}.score_samples returned NaN for row(s) "
                f"{named_rows(unscorable)} of X: {type(self).__name__} scores them -inf, the "
                "most abnormal value, and predicts them as outliers.",
                UserWarning,
            )
            scores = np.where(unscorable, -np.inf, scores)
        return scores

    def decision_function(self, X):
        """Log-likelihood minus the threshold: negative for outliers, positive for inliers.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            The data.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
            ``score_samples(X) - offset_``.
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Whether each row is an outlier (-1) or an inlier (1).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            The data.

        Returns
        -------
        is_inlier : ndarray of shape (n_samples,)
            -1 where ``decision_function(X) < 0``, 1 elsewhere.
        """
        return self._labels(self.decision_function(X))

    @staticmethod
    def _labels(decision):
        return np.where(decision < 0, -1, 1)

    def score(self, X, y=None):
        """Mean log-likelihood of the rows of ``X``: what ``GridSearchCV`` maximizes by default.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            The data.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        score : float
            Mean of :meth:`score_samples`, in nats.
        """
        return float(np.mean(self.score_samples(X)))

    # ------------------------------------------------------------------ delegated attributes
    @property
    def n_features_in_(self):
        """Number of features seen during ``fit``."""
        return self._fitted_estimator_attribute("n_features_in_")

    @property
    def feature_names_in_(self):
        """Names of the features seen during ``fit`` (only when they were strings)."""
        return self._fitted_estimator_attribute("feature_names_in_")

    def _fitted_estimator_attribute(self, name):
        try:
            check_is_fitted(self)
        except NotFittedError as error:
            raise AttributeError(
                f"{type(self).__name__} is not fitted yet, so it has no {name}."
            ) from error
        return getattr(self.estimator_, name)
