"""Probabilistic PCA (Tipping & Bishop 1999)."""

import numpy as np
import torch

from .._backend import make_generator, robust_linalg
from .._compat import StrOptions
from . import _gaussian as gauss
from ._base import BaseLinearGaussian


class PPCA(BaseLinearGaussian):
    """Probabilistic principal component analysis, fitted by maximum likelihood.

    The model is x = W z + mu + e with z ~ N(0, I_k) and e ~ N(0, sigma2 I), so
    x ~ N(mu, W W^T + sigma2 I). Without missing values the maximum-likelihood solution is
    closed form: sigma2 is the mean of the discarded eigenvalues of the (1/n) covariance and
    W = U_k (L_k - sigma2 I)^(1/2). With NaN entries the model is fitted by EM over the gaps.

    Parameters
    ----------
    n_components : int, default=None
        Number of latent dimensions k. None keeps as many as the data allow while leaving one
        direction to estimate the noise: ``min(n_samples - 1, n_features) - 1``. Any value must
        satisfy ``1 <= n_components <= min(n_samples - 1, n_features) - 1``, since a model with
        no discarded direction has zero noise variance and a singular covariance.

    solver : {"auto", "eigh", "svd", "em"}, default="auto"
        "eigh": eigendecomposition of the d x d covariance (one pass over the data; best when
        n_samples >= n_features). "svd": SVD of the centred data (best when n_samples <
        n_features). "em": expectation-maximization from a random start (accelerated by
        SQUAREM). "auto": "em" when X has NaN, else "eigh" or "svd" by the shape of X.
        ``partial_fit`` works from the covariance, so it uses "eigh" unless "em" is chosen.

    max_iter : int, default=1000
        Maximum number of EM iterations (solver "em", or NaN in X).

    tol : float, default=1e-5
        EM stops when a cycle (two EM steps and an extrapolation) raises the mean
        log-likelihood per sample by less than tol and, beyond 1000 rows, the total by less
        than 1000 tol (0.01 nats at the default, scikit-learn FactorAnalysis's tol on the
        total), and a geometric extrapolation of the gain still to come is below that too.

    device : str or torch.device, default="auto"
        Where the computation runs: "auto" (CUDA when available, else CPU), "cpu", "cuda",
        "cuda:N" or a torch.device.

    dtype : {"float64", "float32"}, default="float64"
        Floating point type of the computation. float64 matches scikit-learn to ~1e-10;
        float32 costs digits on columns of very different scales (measured in
        ``benchmarks/precision.py``: up to 0.21 nats per row on raw wine, 2e-6 relative on
        standardized data).

    random_state : int, RandomState instance or None, default=None
        Seeds the random start of the EM solver and the default draws of :meth:`sample`.
        None draws a seed from numpy's global random state, as scikit-learn does.

    verbose : int, default=0
        With 1 or more, print one line per EM iteration: iteration, mean log-likelihood per
        sample, its change since the previous iteration and seconds. A closed-form fit prints
        one line.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Loadings W^T: row i is the i-th principal axis scaled by sqrt(l_i - sigma2).
    explained_variance_ : ndarray of shape (n_components,)
        The k largest eigenvalues l_i of the maximum-likelihood covariance (denominator n).
    explained_variance_ratio_ : ndarray of shape (n_components,)
        ``explained_variance_`` divided by the total variance.
    noise_variance_ : float
        sigma2, the maximum-likelihood isotropic noise variance.
    mean_ : ndarray of shape (n_features,)
        Mean of the training data (with NaN: the maximum-likelihood mean).
    n_components_ : int
        Number of latent dimensions of the fitted model.
    n_iter_ : int
        Number of EM iterations; 1 for the closed-form solvers.
    loglike_ : ndarray of shape (`n_iter_`,)
        Total training log-likelihood at each EM iteration (EM only; never decreasing).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    FactorAnalysisEM : The same model with a separate noise variance per feature.
    sklearn.decomposition.PCA : Its ``score_samples`` uses the same model with n - 1 estimates.

    Notes
    -----
    ``score_samples`` is the exact log-density, computed with the Woodbury identity and the
    matrix determinant lemma in O(n d k). ``get_covariance()`` equals
    ``PCA(n_components=k).get_covariance() * (n - 1) / n`` when n_samples > n_features
    (PCA estimates variances with n - 1). When n_samples <= n_features PCA averages the
    discarded eigenvalues over n_samples - k directions instead of n_features - k, so its noise
    variance is not the maximum-likelihood one and the relation has an extra factor.

    ``transform`` returns the posterior mean M^-1 W^T (x - mu), M = W^T W + sigma2 I, which
    shrinks towards 0 compared with PCA's projection.

    References
    ----------
    M. E. Tipping and C. M. Bishop, "Probabilistic principal component analysis", Journal of
    the Royal Statistical Society B, 61(3), 611-622, 1999.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae import PPCA
    >>> X = np.random.RandomState(0).normal(size=(100, 5)) @ np.diag([3., 2., 1., .5, .5])
    >>> model = PPCA(n_components=2, device="cpu").fit(X)
    >>> model.transform(X).shape
    (100, 2)
    >>> round(model.noise_variance_, 3)  # the discarded variances 1, 0.25, 0.25 average 0.5
    0.489
    """

    _isotropic = True

    _parameter_constraints = {
        **BaseLinearGaussian._parameter_constraints,
        "solver": [StrOptions({"auto", "eigh", "svd", "em"})],
    }

    def __init__(
        self,
        n_components=None,
        *,
        solver="auto",
        max_iter=1000,
        tol=1e-5,
        device="auto",
        dtype="float64",
        random_state=None,
        verbose=0,
    ):
        self.n_components = n_components
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    def _nan_policy(self):
        if self.solver in ("eigh", "svd"):
            return (
                f"solver={self.solver!r} needs complete data. Use solver='auto' or 'em', which "
                "fit by EM over the missing entries, or impute X first."
            )
        return None

    def _resolve_n_components(self, n_samples, n_features):
        if n_features < 2:
            raise ValueError(
                f"PPCA needs at least 2 features, got n_features={n_features}: with one feature "
                "there is no direction left to estimate the noise variance."
            )
        largest = min(n_samples - 1, n_features) - 1
        if largest < 1:
            raise ValueError(
                f"PPCA needs at least 3 samples, got n_samples={n_samples}: the noise variance "
                "is estimated from the directions the latent space leaves out."
            )
        if self.n_components is None:
            return largest
        if self.n_components > largest:
            raise ValueError(
                f"n_components={self.n_components} must be <= min(n_samples - 1, n_features) - 1"
                f" = {largest} (n_samples={n_samples}, n_features={n_features}): PPCA needs at "
                "least one discarded direction to estimate the noise variance. Lower "
                "n_components, or use FactorAnalysisEM."
            )
        return self.n_components

    def _first_chunk_rows(self):
        """Rows the first ``partial_fit`` chunk needs: n_components + 2, and at least 3."""
        k = 1 if self.n_components is None else self.n_components
        rule = "3" if self.n_components is None else f"n_components + 2 = {k + 2}"
        return max(3, k + 2), (
            f" ({rule}: n rows span n - 1 directions, and PPCA estimates its noise variance "
            "from those the components leave out)"
        )

    def _keeps_factor(self, rows, n_features, whole):
        if self.solver == "eigh":
            return False
        # solver="svd" on all the rows: the factor is the centred data, as that solver promises.
        return rows < n_features or (whole and self.solver == "svd")

    def _fit_complete(self, n_samples, mean, S, progress=None):
        k = self.n_components_
        floor = self._floor_for(S)
        if self.solver == "em":
            return self._fit_em(n_samples, mean, S, floor, progress)
        # A low-rank S (n < d, or solver="svd") is decomposed by a thin SVD of its factor, the
        # centred data: no d x d matrix. Otherwise the d x d covariance is eigendecomposed.
        eigvals, eigvecs = S.eigh()
        W, sigma2 = gauss.ppca_from_eigen(eigvals, eigvecs, k, floor)
        self._eigvals = eigvals
        return W, sigma2.expand(S.shape[0]).clone(), None

    def _fit_em(self, n_samples, mean, S, floor, progress=None):
        d, k = S.shape[0], self.n_components_
        generator = make_generator(self.random_state, self._device)
        scale = torch.sqrt(S.diagonal().mean() / k)
        W = torch.randn(d, k, generator=generator, device=self._device, dtype=self._dtype) * scale
        psi = S.diagonal().mean().clamp_min(floor).expand(d).clone()
        params = gauss.Params(W, psi, mean)

        def step(p):
            return gauss.em_step_stats(S, n_samples, p, isotropic=True, floor=floor)

        params, loglikes = self._run_em(step, params, n_samples, floor, S.diagonal(),
                                        progress=progress)
        self._eigvals = S.eigh()[0]
        return params.W, params.psi, loglikes

    def _fit_missing(self, X, mask):
        self._eigvals = None  # _after_fit then reports the spectrum of the fitted covariance
        super()._fit_missing(X, mask)

    def _floor_for(self, S):
        """sigma2 >= 1e-9 times the mean variance (or the absolute floor for all-constant data)."""
        return max(float(S.diagonal().mean()) * 1e-9, self._noise_floor(S))

    def _after_fit(self, W, psi):
        eigvals = getattr(self, "_eigvals", None)
        if eigvals is None:  # EM with gaps: the spectrum of the fitted covariance
            eigvals = robust_linalg(torch.linalg.eigvalsh, W.T @ W).flip(0) + psi[0]
            total = float((W * W).sum() + psi.sum())
        else:
            total = float(eigvals.clamp_min(0).sum())
        self._eigvals = None
        k = self.n_components_
        self.explained_variance_ = eigvals[:k].detach().cpu().numpy().astype(np.float64)
        self.explained_variance_ratio_ = self.explained_variance_ / total if total > 0 else (
            np.zeros(k)
        )
