"""What PPCA and FactorAnalysisEM share: everything but how the parameters are estimated."""

import time
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from .._backend import make_generator, resolve_device, robust_linalg, to_numpy
from .._base import (
    BaseLatentModel,
    _caller_values,
    _is_dask_array,
    _output_dtype,
    _row_blocks,
    blockwise,
    fit_all_or_nothing,
    memmap_blocks,
    scores_or_minus_inf,
    warn,
    warn_nan_rows,
)
from .._compat import Interval, StrOptions, _fit_context
from . import _gaussian as gauss
from ._moments import DenseScatter, LowRankScatter, merge_moments

_CHUNK_BYTES = 4 * 2**20  # rows per inference chunk: about this many bytes of float64 input
# On a GPU every chunk ends in a copy to the host (a sync): fewer, larger chunks there.
_CUDA_CHUNK_BYTES = 128 * 2**20


def _chunk_bytes(device):
    """Bytes of float64 input per inference chunk on ``device``."""
    return _CUDA_CHUNK_BYTES if device.type == "cuda" else _CHUNK_BYTES


class _EMProgress:
    """The ``verbose`` lines of one fit: one per EM iteration, or one for a closed form.

    Called with each recorded total log-likelihood, it prints the iteration, the mean
    log-likelihood per sample, its change since the previous line and the seconds the
    iteration took, in the format of the VAEs' epoch lines. :meth:`continue_after` rewinds the
    count when a solver re-evaluates a point already printed (factor analysis hands its last
    profile iteration to EM), so each iteration is printed once and the lines number
    ``n_iter_``.
    """

    def __init__(self, n_samples, print_fn=print):
        self.n_samples = n_samples
        self.print_fn = print_fn
        self.iteration = 0
        self.printed = 0
        self.last = None
        self.clock = time.perf_counter()

    def continue_after(self, iterations):
        self.iteration = iterations

    def __call__(self, loglik):
        self.iteration += 1
        if self.iteration <= self.printed:
            return
        now, mean = time.perf_counter(), loglik / self.n_samples
        change = "" if self.last is None else f", change = {mean - self.last:.3g}"
        self.print_fn(f"Iteration {self.iteration}, log-likelihood = {mean:.6g}{change}, "
                      f"{now - self.clock:.2f} s")
        self.printed, self.last, self.clock = self.iteration, mean, now

    def closed_form(self, loglik, solver):
        how = "closed form" if solver is None else f"closed form, solver={solver!r}"
        self.print_fn(f"Iteration 1, log-likelihood = {loglik / self.n_samples:.6g}, {how}, "
                      f"{time.perf_counter() - self.clock:.2f} s")


class BaseLinearGaussian(BaseLatentModel):
    """x = W z + mu + e with e ~ N(0, Psi): inference, scoring, sampling, streaming, imputation.

    Subclasses set ``_isotropic`` and implement ``_resolve_n_components``, ``_fit_complete``
    (from the sufficient statistics, optionally with the rows) and ``_init_missing``.
    """

    _isotropic = False

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [StrOptions({"float32", "float64"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    @fit_all_or_nothing
    def fit(self, X, y=None):
        """Fit the model to ``X``; NaN entries are treated as missing at random.

        Parameters
        ----------
        X : array-like, dask array or torch.Tensor of shape (n_samples, n_features)
            Training data. NaN marks a missing entry; the model is then fitted by EM on the
            observed entries. A ``numpy.memmap`` or a dask array larger than memory is read
            in row chunks (one pass; complete rows only for a dask array) into the same
            statistics as the in-memory fit, to rounding; the model equals the in-memory one
            as :meth:`partial_fit` says.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        if _is_dask_array(X):
            return self._fit_blocks(_row_blocks(X))
        if isinstance(X, np.memmap) and X.ndim == 2 and self._streams_memmap():
            # Complete rows stream to the device block by block; with gaps, EM revisits every
            # row at each iteration, so the rows are then copied whole as below.
            fitted = self._fit_blocks(memmap_blocks(X), on_nan=lambda: None)
            if fitted is not None:
                return fitted
        # lazy_cast: float32 rows stay float32 (a memmap stays on disk) and are cast chunk by
        # chunk into the statistics, which are in the model's precision.
        X, has_nan = self._check_input(X, reset=True, ensure_min_samples=2, return_has_nan=True,
                                       lazy_cast=True)
        n_samples, n_features = X.shape
        self.n_components_ = self._resolve_n_components(n_samples, n_features)
        self._note_column_range(X, reset=True)
        if has_nan:
            self._stats = None
            X = X.to(self._dtype)
            self._fit_missing(X, ~torch.isnan(X))
        else:
            self._stats = self._merged((0, None, None), X, whole=True)
            self._fit_from_stats()
        self._warn_constant_columns()
        return self

    def _streams_memmap(self):
        """Whether ``fit`` reads a memmap block by block: when the model is not on the CPU
        (there, a memmap is viewed in place, without a copy)."""
        return resolve_device(self.device).type != "cpu"

    def _fit_blocks(self, blocks, on_nan=None):
        """Fit from row blocks (numpy arrays) read one at a time: exact streamed statistics.

        A block with NaN raises, or, with ``on_nan``, returns what ``on_nan()`` returns."""
        stats = (0, None, None)
        for block in blocks:
            X, has_nan = self._check_input(block, reset=stats[0] == 0, return_has_nan=True,
                                           lazy_cast=True)
            if has_nan and on_nan is not None:
                return on_nan()
            if has_nan:
                raise ValueError(
                    "Input X contains NaN: a dask array is fitted in one pass over its blocks, "
                    "which needs complete rows (EM over missing entries revisits every row at "
                    "each iteration). Fit X.compute() in memory, or impute the gaps first."
                )
            self._note_column_range(X, reset=stats[0] == 0)
            stats = self._merged(stats, X, whole=False)
            del block, X  # before the next block is computed: one block in memory at a time
        if stats[0] < 2:
            raise ValueError(
                f"Found array with {stats[0]} sample(s) while a minimum of 2 is required by "
                f"{type(self).__name__}."
            )
        self.n_components_ = self._resolve_n_components(stats[0], self.n_features_in_)
        self._stats = stats
        self._fit_from_stats()
        self._warn_constant_columns()
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    @fit_all_or_nothing
    def partial_fit(self, X, y=None):
        """Add the rows of ``X`` to the exact sufficient statistics and refit.

        The count, mean and scatter matrix of all rows seen so far are merged exactly (to
        rounding), and the model is refitted from them. A closed-form fit (PPCA's "eigh" and
        "svd") then equals one :meth:`fit` on all rows to rounding. An EM fit
        (FactorAnalysisEM, PPCA's "em") agrees with it only to the stopping rule ``tol``: the
        rounding of the merged statistics can move the iteration at which EM stops. Measured
        on standardized wine with ``FactorAnalysisEM(n_components=5)`` in 4 chunks: 1.5e-4
        nats per row apart at the default tol, 5e-7 at ``tol=1e-8``. Missing values are not
        supported here: use :meth:`fit` for data with NaN. A changed ``device`` or ``dtype``
        is followed: the statistics move there before the chunk is merged (those of the
        earlier chunks keep the precision they were summed in).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            A chunk of training data. The first chunk needs at least 2 rows; for PPCA at
            least ``n_components + 2`` (and 3), since the noise variance is estimated from
            the directions the components leave out. Later chunks may have any size.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        first = not hasattr(self, "components_")  # set only by a fit that succeeded
        if not first and getattr(self, "_stats", None) is None:
            raise ValueError(
                f"partial_fit cannot continue this {type(self).__name__}: it was fitted on data "
                "with missing values, which keeps no sufficient statistics. Call fit on all rows "
                "instead, or start a new estimator for streaming."
            )
        if not first:
            self._resolve_placement()  # the statistics follow a changed device or dtype
        X, has_nan = self._check_input(X, reset=first, ensure_min_samples=2 if first else 1,
                                       return_has_nan=True, lazy_cast=True)
        if has_nan:
            raise ValueError(
                "Input X contains NaN: partial_fit accumulates complete-data statistics and "
                "cannot handle missing values. Use fit on all rows (it runs EM over the gaps), "
                "or impute the chunk first."
            )
        need, why = self._first_chunk_rows()
        if first and X.shape[0] < need:
            raise ValueError(
                f"The first partial_fit chunk of {type(self).__name__} needs at least {need} "
                f"rows{why}; got {X.shape[0]}. Pass a larger first chunk (later chunks may "
                "have any size)."
            )
        stats = (0, None, None) if first else self._placed_stats()
        # Check before merging, so that a refused chunk leaves the statistics as they were.
        n_components = self._resolve_n_components(stats[0] + X.shape[0], self.n_features_in_)
        self._stats = self._merged(stats, X, whole=False)
        self._note_column_range(X, reset=first)
        self.n_components_ = n_components
        self._fit_from_stats()
        self._warn_constant_columns()
        return self

    def _first_chunk_rows(self):
        """Rows the first ``partial_fit`` chunk needs, and why (a phrase, or "")."""
        return 2, ""

    def _placed_stats(self):
        """The sufficient statistics on ``_device`` and in ``_dtype`` (new objects)."""
        count, mean, scatter = self._stats
        return (count, mean.to(device=self._device, dtype=self._dtype),
                scatter.to(self._device, self._dtype))

    def _merged(self, stats, X, *, whole):
        """The statistics with the rows of ``X`` merged in, checked before anything is kept.

        ``whole`` says that X holds all the training rows (``fit``), not one chunk of a stream.
        """
        d = X.shape[1]
        merged = merge_moments(stats, X, low_rank=lambda rows: self._keeps_factor(rows, d, whole),
                               dtype=self._dtype)
        self._check_covariance_finite(merged[2].is_finite())
        return merged

    def _check_covariance_finite(self, finite):
        """Raise the error for data whose covariance overflows the dtype unless ``finite``."""
        if finite:
            return
        wider = " or fit with dtype='float64'" if self._dtype == torch.float32 else ""
        raise ValueError(
            f"X is too large in magnitude: its covariance overflows "
            f"{str(self._dtype).replace('torch.', '')} (|x| above about 1e150 in float64, 1e18 "
            f"in float32). Rescale X first, e.g. with sklearn.preprocessing.StandardScaler in a "
            f"Pipeline{wider}."
        )

    def _keeps_factor(self, rows, n_features, whole):
        """Whether the scatter of ``rows`` rows is kept as a factor (see ``_moments``).

        A factor with fewer rows than columns is smaller than the d x d matrix and every solver
        works from it in O(rows^2 d), so wide data never forms a d x d matrix.
        """
        return rows < n_features

    def _fit_from_stats(self):
        count, mean, scatter = self._stats
        progress = self._progress(count)
        S = scatter / count
        W, psi, loglikes = self._fit_complete(count, mean, S, progress)
        if progress is not None and loglikes is None:
            loglik, _ = gauss.em_step_stats(S, count, gauss.Params(W, psi, mean),
                                            isotropic=self._isotropic, floor=0.0)
            progress.closed_form(float(loglik), getattr(self, "solver", None))
        self._set_fitted(mean, W, psi, loglikes)

    def _progress(self, n_samples):
        """The printer of the verbose lines of one fit, or None when ``verbose`` is off."""
        return _EMProgress(n_samples) if self.verbose else None

    def _fit_missing(self, X, mask):
        empty = ~mask.any(dim=0)
        if bool(empty.any()):
            columns = torch.nonzero(empty).flatten().tolist()
            raise ValueError(
                f"X has no observed value in column(s) {columns[:10]}: a feature that is NaN in "
                "every row cannot be modelled. Drop those columns before fitting."
            )
        progress = self._progress(X.shape[0])
        params, floor, variances = self._init_missing(X, mask)

        def step(p):
            return gauss.em_step_masked(X, mask, p, isotropic=self._isotropic, floor=floor)

        params, loglikes = self._run_em(step, params, X.shape[0], floor, variances,
                                        progress=progress)
        self._set_fitted(params.mu, params.W, params.psi, loglikes)

    def _run_em(self, step, params, n_samples, floor, variances, loglikes=(), progress=None):
        """EM (SQUAREM-accelerated) after the iterations whose log-likelihoods are ``loglikes``.

        ``progress`` (an :class:`_EMProgress` or None) prints a line per EM iteration.
        """
        loglikes = list(loglikes)
        if progress is not None:
            progress.continue_after(len(loglikes))
        params, more, status = gauss.run_em(
            step, params, n=n_samples, max_iter=self.max_iter - len(loglikes), tol=self.tol,
            floor=floor, variances=variances, report=progress,
        )
        loglikes += more
        if not np.all(np.isfinite(loglikes)):
            raise ValueError(
                f"EM produced a non-finite log-likelihood in {type(self).__name__}.fit; the data "
                "may be degenerate (check for huge values or duplicated columns)."
            )
        if status == "decreased":
            warn(
                f"{type(self).__name__} EM stopped after {len(loglikes)} iterations because the "
                "log-likelihood decreased (or became non-finite) by more than rounding explains; "
                "the fit is the best point reached and may be far from the optimum. Rescale X "
                "(e.g. sklearn.preprocessing.StandardScaler) or use dtype='float64'.",
                ConvergenceWarning,
            )
        elif status == "max_iter":
            warn(
                f"{type(self).__name__} EM did not converge in max_iter={self.max_iter} "
                f"iterations (tol={self.tol}). Increase max_iter or tol.",
                ConvergenceWarning,
            )
        return params, loglikes

    def _noise_floor(self, S, per_feature=False):
        """Smallest noise variance allowed, relative to the mean variance of the data (``S``).

        1e-12 (float64) or 1e-6 (float32) times the mean of diag(S), so that c * X gets the
        floor of X times c^2 and fits stay scale equivariant; an absolute sqrt(tiny) keeps
        all-constant data at a finite density. With ``per_feature`` (a diagonal noise) in
        float32, each non-constant feature's floor is 1e-6 times its own variance instead:
        1e-6 times the mean would sit above the variance of columns on a scale 1e3 times
        smaller than the others (raw breast cancer lost 33 nats per row to it).
        """
        rel = 1e-12 if self._dtype == torch.float64 else 1e-6
        tiny = torch.finfo(self._dtype).tiny ** 0.5
        variances = S if getattr(S, "ndim", 2) == 1 else S.diagonal()  # diag(S) may be given
        shared = max(rel * float(variances.mean()), tiny)
        if not per_feature or self._isotropic or self._dtype == torch.float64:
            return shared
        own = (rel * variances).clamp_min(tiny)
        return torch.where(variances > 0, own, torch.full_like(variances, shared))

    def _initial_loadings(self, S):
        """W and Psi from the PPCA solution on covariance ``S``: a deterministic EM start.

        ``S`` is a dense or low-rank scatter (``_moments``); a low-rank one is made dense only
        when more loadings are asked for than it has eigenpairs.
        """
        d = S.shape[0]
        k = min(self.n_components_, d - 1)
        if isinstance(S, LowRankScatter) and self.n_components_ >= S.rows:
            S = DenseScatter(S.dense_sum(), S.scale)
        eigvals, eigvecs = S.eigh()
        floor = self._noise_floor(S)
        W, sigma2 = gauss.ppca_from_eigen(eigvals, eigvecs, k, floor)
        if k < self.n_components_:  # k = d (factor analysis only): start the last column small
            W = torch.cat([W, eigvecs[:, k:] * torch.sqrt(sigma2) * 0.5], dim=1)
        if self._isotropic:
            return W, sigma2.expand(d).clone()
        return W, (S.diagonal() - (W * W).sum(dim=1)).clamp_min(floor)

    def _init_missing(self, X, mask):
        """Start EM with gaps from the PPCA solution on mean-imputed data; also the noise floor.

        The column means are taken relative to each column's first observed value, so a large
        common offset costs no digits, even in float32. Wide data (n < d) keep the n x d
        centred rows as a low-rank factor: no d x d matrix is formed.
        """
        zero = torch.zeros((), dtype=X.dtype, device=X.device)
        counts = mask.sum(dim=0).to(X.dtype)
        first = torch.argmax(mask.to(torch.int8), dim=0)
        reference = X[first, torch.arange(X.shape[1], device=X.device)]
        mean = reference + torch.where(mask, X - reference, zero).sum(dim=0) / counts
        centred = torch.where(mask, X - mean, zero)
        variances = (centred * centred).sum(dim=0) / counts
        # Off-diagonal entries of the scatter are bounded by these (Cauchy-Schwarz).
        self._check_covariance_finite(bool(torch.isfinite(variances).all()))
        n, d = X.shape
        if n < d:
            scatter = LowRankScatter(centred)
        else:
            scatter = DenseScatter(gauss._centred_scatter(centred, zero, gauss.ROW_CHUNK))
        W, psi = self._initial_loadings(scatter / n)
        floor = self._noise_floor(variances, per_feature=True)
        return gauss.Params(W, psi.clamp_min(floor), mean), floor, variances

    def _set_fitted(self, mean, W, psi, loglikes):
        W = self._canonical(W, psi, rotate=loglikes is not None)
        self.mean_ = to_numpy(mean, np.float64)
        self.components_ = to_numpy(W.T, np.float64)
        psi = to_numpy(psi, np.float64)
        self.noise_variance_ = float(psi[0]) if self._isotropic else psi
        if loglikes is None:
            self.n_iter_ = 1
            for name in ("loglike_",):
                if hasattr(self, name):
                    delattr(self, name)
        else:
            self.n_iter_ = len(loglikes)
            self.loglike_ = np.asarray(loglikes)
        self._after_fit(W, psi)

    def _after_fit(self, W, psi):
        """Hook for estimator-specific attributes (explained variance, rotation)."""

    @staticmethod
    def _canonical(W, psi, rotate):
        """Rotate W so W^T Psi^-1 W is diagonal (descending), each column's largest entry > 0.

        The likelihood does not see a rotation of W; fixing one makes ``components_`` unique
        (up to ties) and comparable across fits, as PCA's sign convention does. A closed-form
        solution is already in that basis and only gets the sign convention.
        """
        if rotate:
            scaled = W / torch.sqrt(psi)[:, None]
            _, rotation = robust_linalg(torch.linalg.eigh, scaled.T @ scaled)
            W = W @ rotation.flip(1)
        largest = torch.argmax(W.abs(), dim=0)
        signs = torch.sign(W[largest, torch.arange(W.shape[1], device=W.device)])
        signs[signs == 0] = 1
        return W * signs

    # ------------------------------------------------------------------ fitted tensors
    def _tensors(self):
        check_is_fitted(self)
        device, dtype = self._device, self._dtype
        mu = torch.as_tensor(self.mean_, device=device, dtype=dtype)
        W = torch.as_tensor(self.components_.T, device=device, dtype=dtype)
        psi = torch.as_tensor(
            np.broadcast_to(self.noise_variance_, self.mean_.shape).copy(), device=device, dtype=dtype
        )
        return mu, W, psi

    def __getstate__(self):
        state = super().__getstate__()
        if state.get("_stats") is not None:
            count, mean, scatter = state["_stats"]  # the scatter object moves its own tensors
            state["_stats"] = (count, mean, scatter.to("cpu"))
        return state

    def _restore_device(self):
        if getattr(self, "_stats", None) is not None:
            count, mean, scatter = self._stats
            self._stats = (count, mean.to(self._device), scatter.to(self._device))

    # ------------------------------------------------------------------ inference
    def _row_chunks(self, X):
        """Slices of about ``_chunk_bytes`` of rows of ``X``, each cast to the model's dtype.

        Inference works chunk by chunk, so what it holds beyond the input and the output is
        bounded by the chunk size, not by n x d (a float32 input is never cast whole).
        """
        rows = max(1, _chunk_bytes(X.device) // (8 * X.shape[1]))
        for start in range(0, X.shape[0], rows):
            yield slice(start, start + rows), X[start : start + rows].to(self._dtype)

    @blockwise
    def transform(self, X, return_std=False):
        """Posterior mean E[z | x] of the latent variables (rows with NaN: given what is observed).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data; NaN entries are treated as missing and integrated out.
        return_std : bool, default=False
            Also return the posterior standard deviations of z.

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components)
            Posterior means; float32 for float32 input, else float64.
        Z_std : ndarray of shape (n_samples, n_components)
            Posterior standard deviations, only when ``return_std=True``.
        """
        mu, W, psi = self._tensors()
        out = _output_dtype(X)
        X, has_nan = self._check_input(X, reset=False, return_has_nan=True, lazy_cast=True)
        shape = (X.shape[0], W.shape[1])
        mean = np.empty(shape, dtype=out)
        std = np.empty(shape, dtype=out) if return_std else None
        for rows, chunk in self._row_chunks(X):
            mask = ~torch.isnan(chunk) if has_nan else None
            if mask is None or bool(mask.all()):
                m, cov = gauss.posterior(chunk, mu, W, psi)
                s = torch.sqrt(torch.diagonal(cov)).expand_as(m)
            else:
                m, cov, _ = gauss.chunked_masked_posterior(chunk, mask, mu, W, psi)
                s = torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2))
            mean[rows] = to_numpy(m)
            if return_std:
                std[rows] = to_numpy(s)
        warn_nan_rows(self, "transform", mean, std)
        return (mean, std) if return_std else mean

    def inverse_transform(self, Z):
        """Decoded mean E[x | z] = W z + mu.

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_components)
            Latent codes, e.g. the output of :meth:`transform`.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            The decoded means; float32 for float32 codes, else float64.
        """
        mu, W, _ = self._tensors()
        out = _output_dtype(Z)
        Z = self._check_latent(Z)
        X = np.empty((Z.shape[0], W.shape[0]), dtype=out)
        for rows, chunk in self._row_chunks(torch.empty(Z.shape[0], W.shape[0], device="meta")):
            X[rows] = to_numpy(Z[rows] @ W.T + mu)
        warn_nan_rows(self, "inverse_transform", X)
        return X

    @blockwise
    def score_samples(self, X):
        """Exact log-likelihood log p(x) of each row, in nats (observed entries only with NaN).

        Computed through the Woodbury identity and the matrix determinant lemma: O(n d k).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data; NaN entries are marginalized out (a row with no observed entry scores 0).

        Returns
        -------
        log_likelihood : ndarray of shape (n_samples,)
            The log-likelihood log p(x) of each row in nats, float64. A row whose value is
            below the range of the model's dtype scores -inf (never NaN), and a
            ``UserWarning`` names it.
        """
        mu, W, psi = self._tensors()
        X = self._check_input(X, reset=False, check_finite=False, lazy_cast=True)
        loglik = np.empty(X.shape[0], dtype=np.float64)
        checked = False
        for rows, chunk in self._row_chunks(X):
            part = gauss.log_likelihood(chunk, mu, W, psi)
            # NaN or infinity in a row makes its value NaN, so checking the results stands in
            # for a pass over the input; only then is X itself examined, once (infinity
            # raises, NaN entries are marginalized out).
            if not bool(torch.isfinite(part).all()):
                if not checked:
                    checked = True
                    if not self._check_finite(X):
                        checked = None  # no NaN anywhere: the non-finite values stand
                if checked:
                    part = gauss.chunked_masked_posterior(chunk, ~torch.isnan(chunk), mu, W,
                                                          psi)[2]
            loglik[rows] = to_numpy(part)
        self._warn_rows_off_constant_columns(X)
        return scores_or_minus_inf(self, loglik)

    @blockwise
    def impute(self, X):
        """Fill the NaN entries of ``X`` with their conditional mean E[x_missing | x_observed].

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data with NaN marking missing entries. It is not modified.

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features)
            A copy of ``X`` with observed entries unchanged and missing ones imputed; float32
            for float32 input, else float64.
        """
        mu, W, psi = self._tensors()
        out = _output_dtype(X)
        given = X
        X, has_nan = self._check_input(X, reset=False, return_has_nan=True, lazy_cast=True)
        filled = _caller_values(given, out)  # observed entries exactly as given
        for rows, chunk in self._row_chunks(X):
            mask = ~torch.isnan(chunk) if has_nan else None
            if mask is not None and not bool(mask.all()):
                mean, _, _ = gauss.chunked_masked_posterior(chunk, mask, mu, W, psi)
                missing = to_numpy(~mask, bool)
                block = filled[rows]
                block[missing] = to_numpy(mean @ W.T + mu, out)[missing]
        warn_nan_rows(self, "impute", filled)
        return filled

    def sample(self, n_samples=1, random_state=None):
        """Draw rows from the fitted model by ancestral sampling: z ~ N(0, I), x ~ p(x | z).

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows to draw.
        random_state : int, RandomState instance or None, default=None
            Seed of the draws; None uses the estimator's ``random_state``.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            The drawn rows, float64.
        """
        mu, W, psi = self._tensors()
        if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"n_samples={n_samples!r} must be a positive integer.")
        seed = self.random_state if random_state is None else random_state
        generator = make_generator(seed, self._device)
        options = {"generator": generator, "device": self._device, "dtype": self._dtype}
        z = torch.randn(n_samples, W.shape[1], **options)
        noise = torch.randn(n_samples, W.shape[0], **options) * torch.sqrt(psi)
        return to_numpy(z @ W.T + mu + noise, np.float64)

    def get_covariance(self):
        """Model covariance C = W W^T + Psi.

        Returns
        -------
        cov : ndarray of shape (n_features, n_features)
            The covariance of x under the fitted model, float64.
        """
        _, W, psi = self._tensors()
        return to_numpy(W @ W.T + torch.diag(psi), np.float64)

    def get_precision(self):
        """Model precision C^-1, by the Woodbury identity.

        Returns
        -------
        precision : ndarray of shape (n_features, n_features)
            The inverse of :meth:`get_covariance`, float64.
        """
        _, W, psi = self._tensors()
        return to_numpy(gauss.precision(W, psi), np.float64)
