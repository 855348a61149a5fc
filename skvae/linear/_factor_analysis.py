"""Factor analysis by accelerated EM on sufficient statistics (Rubin & Thayer 1982)."""

import numpy as np
import torch

from .._backend import host_array
from .._compat import StrOptions, _ortho_rotation
from . import _gaussian as gauss
from ._base import BaseLinearGaussian


_PROFILE_MAX_ITER = 200  # iterations of the exact-W phase before EM takes over
_PROFILE_TOL = 1e-4  # per-sample gain below which EM (faster in the tail) takes over


class FactorAnalysisEM(BaseLinearGaussian):
    """Factor analysis, fitted by EM on the sample covariance and accelerated by SQUAREM.

    The model is x = W z + mu + e with z ~ N(0, I_k) and e ~ N(0, diag(psi)), so
    x ~ N(mu, W W^T + diag(psi)). The mean and covariance are computed once, so no iteration
    touches the n rows again. From psi = diag(S) (on standardized data scikit-learn's start, psi = 1), a few iterations that
    maximize over W exactly for the current psi (an eigendecomposition of the scaled covariance,
    O(d^3)) find the basin; EM steps (Rubin & Thayer, O(d^2 k) each) accelerated by SQUAREM
    extrapolation (Varadhan & Roland 2008) then close the slow tail. Every point kept raises
    the likelihood, so ``loglike_`` never decreases. With NaN entries, EM runs over the gaps
    from the PPCA solution of the mean-imputed data.

    Parameters
    ----------
    n_components : int, default=None
        Number of factors k, at most n_features. None means n_features, as in
        :class:`sklearn.decomposition.FactorAnalysis`.

    max_iter : int, default=1000
        Maximum number of iterations, all phases together (each evaluation counts as one).

    tol : float, default=1e-5
        EM stops when a cycle (two EM steps and an extrapolation) raises the mean
        log-likelihood per sample by less than tol and, beyond 1000 rows, the total by less
        than 1000 tol (0.01 nats at the default, scikit-learn FactorAnalysis's tol on the
        total), and a geometric extrapolation of the gain still to come is below that too.
        Gains do not change when X is rescaled.

    rotation : {"varimax", "quartimax"}, default=None
        Orthogonal rotation applied to the fitted loadings for interpretability. It changes
        ``components_`` and ``transform`` but not the likelihood or the covariance.

    noise_variance_init : array-like of shape (n_features,), default=None
        Initial noise variances. None means the variance of each feature (on standardized
        data: ones, scikit-learn's FactorAnalysis start).

    device : str or torch.device, default="auto"
        Where the computation runs: "auto" (CUDA when available, else CPU), "cpu", "cuda",
        "cuda:N" or a torch.device.

    dtype : {"float64", "float32"}, default="float64"
        Floating point type of the computation. float32 EM stops at another point than
        float64 and floors constant columns higher (``benchmarks/precision.py`` measures the
        difference: up to 0.07 nats per row on standardized wine and breast cancer).

    random_state : int, RandomState instance or None, default=None
        Seeds the default draws of :meth:`sample` (the fit itself is deterministic). None
        draws a seed from numpy's global random state, as scikit-learn does.

    verbose : int, default=0
        With 1 or more, print one line per iteration (profile and EM phases alike): iteration,
        mean log-likelihood per sample, its change since the previous iteration and seconds.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Factor loadings W^T. Without ``rotation``, rotated so that W^T Psi^-1 W is diagonal
        with decreasing entries and the largest entry of each factor positive.
    noise_variance_ : ndarray of shape (n_features,)
        The noise variance psi_j of each feature (at least 1e-12 times the mean feature
        variance in float64, 1e-6 times in float32).
    mean_ : ndarray of shape (n_features,)
        Mean of the training data (with NaN: the maximum-likelihood mean).
    n_components_ : int
        Number of factors of the fitted model.
    n_iter_ : int
        Number of EM iterations run.
    loglike_ : ndarray of shape (`n_iter_`,)
        Total training log-likelihood at each accepted EM point (never decreasing).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    PPCA : The same model with one noise variance shared by all features.
    sklearn.decomposition.FactorAnalysis : The SVD-based iteration of Barber (2012).

    References
    ----------
    D. B. Rubin and D. T. Thayer, "EM algorithms for ML factor analysis", Psychometrika 47(1),
    69-76, 1982. R. Varadhan and C. Roland, "Simple and globally convergent methods for
    accelerating the convergence of any EM algorithm", Scandinavian Journal of Statistics 35,
    335-353, 2008.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae import FactorAnalysisEM
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 2)) @ rng.normal(size=(2, 6)) + rng.normal(size=(200, 6))
    >>> fa = FactorAnalysisEM(n_components=2, device="cpu").fit(X)
    >>> fa.components_.shape, fa.noise_variance_.shape
    ((2, 6), (6,))
    >>> bool(np.all(np.diff(fa.loglike_) >= 0))
    True
    """

    _parameter_constraints = {
        **BaseLinearGaussian._parameter_constraints,
        "rotation": [StrOptions({"varimax", "quartimax"}), None],
        "noise_variance_init": ["array-like", None],
    }

    def __init__(
        self,
        n_components=None,
        *,
        max_iter=1000,
        tol=1e-5,
        rotation=None,
        noise_variance_init=None,
        device="auto",
        dtype="float64",
        random_state=None,
        verbose=0,
    ):
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.rotation = rotation
        self.noise_variance_init = noise_variance_init
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    def _nan_policy(self):
        return None

    def _resolve_n_components(self, n_samples, n_features):
        if self.n_components is None:
            return n_features
        if self.n_components > n_features:
            raise ValueError(
                f"n_components={self.n_components} must be <= n_features={n_features}. Lower "
                "n_components."
            )
        return self.n_components

    def _initial_noise(self, n_features, like):
        """``noise_variance_init`` as a tensor like ``like``, checked; None when not given."""
        if self.noise_variance_init is None:
            return None
        init = host_array(self.noise_variance_init)  # a CUDA tensor or negative strides too
        if init.shape != (n_features,) or not np.all(np.isfinite(init)) or np.any(init <= 0):
            raise ValueError(
                f"noise_variance_init must hold n_features={n_features} positive finite values; "
                f"got shape {init.shape}. Pass one variance per feature, or None."
            )
        return torch.as_tensor(init, device=like.device, dtype=like.dtype)

    def _initial_loadings(self, S):
        W, psi = super()._initial_loadings(S)
        init = self._initial_noise(S.shape[0], S)
        return (W, psi) if init is None else (W, init)

    def _fit_complete(self, n_samples, mean, S, progress=None):
        floor = self._noise_floor(S, per_feature=True)
        psi = self._initial_noise(S.shape[0], S)
        if psi is None:
            # Each feature's variance: on standardized data this is scikit-learn's start (ones),
            # so both land in the same basin, and it scales with the data (c X starts at c^2 psi).
            psi = S.diagonal().clone()
        W, psi, loglikes = gauss.profile_iterations(
            S, n_samples, psi.clamp_min(floor), self.n_components_, floor=floor,
            max_iter=min(_PROFILE_MAX_ITER, max(self.max_iter - 1, 1)), tol=_PROFILE_TOL,
            report=progress,
        )

        def step(p):
            return gauss.em_step_stats(S, n_samples, p, isotropic=False, floor=floor)

        # EM's first evaluation is at the profile's last point: record that point once.
        params = gauss.Params(W, psi, mean)
        params, loglikes = self._run_em(step, params, n_samples, floor, S.diagonal(),
                                        loglikes[:-1], progress=progress)
        return params.W, params.psi, loglikes

    def _after_fit(self, W, psi):
        if self.rotation is not None:
            # scikit-learn's varimax / quartimax (Kaiser's SVD iteration), converged tighter
            # than its defaults (tol=1e-6, max_iter=100); it returns the rotated W^T.
            self.components_ = _ortho_rotation(self.components_.T, method=self.rotation,
                                               tol=1e-8, max_iter=500)

