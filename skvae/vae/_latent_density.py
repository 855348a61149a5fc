"""The latent density of a fitted VAE: a Gaussian mixture fitted to the codes of the sampled
training rows, for ``latent_density_`` and ``sample(latent="fitted")``.

:class:`LatentDensityMixin` is one of the bases of ``BaseVAE``. It reads the codes of the
sampled training rows (``_reservoir_codes``), the fitted seed (``_seed``) and the device;
``sample`` calls :meth:`LatentDensityMixin._draw_fitted_latent` for ``latent="fitted"``, and
every fit calls :meth:`LatentDensityMixin._forget_latent_density`.
"""

from numbers import Integral

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted

from .._backend import derived_seed, to_numpy
from .._base import warn
from ..nn import sample_gaussian_mixture

_LATENT_DENSITY = 3  # the SeedSequence key of the mixture's seed (see vae._base, derived_seed)
# EM of the latent density: GaussianMixture's own defaults, with max_iter=200.
_MIXTURE_MAX_ITER = 200
_MIXTURE_TOL = 1e-3


def _fit_mixture_quietly(mixture, X, max_iter, tol):
    """``mixture.fit(X)`` with ``max_iter`` (at least 2) and ``tol``; whether it converged.

    GaussianMixture warns when it stops at ``max_iter``, and silencing that takes
    ``warnings.catch_warnings``, which changes the process-wide filters: not safe while other
    threads run. So EM runs one warm-started call per step, each with the largest float as
    ``tol`` (converged after its own step: no warning), and the stopping rule (a change of the
    lower bound below ``tol``) is applied here. The steps, and so the fitted mixture, are
    those of one ``fit`` (bit for bit, tested); the parameters end as if that ``fit`` had
    been called.
    """
    params = mixture.get_params()
    # max_iter=0 only initializes (scikit-learn does not warn then); the first bound
    # compares with -inf, so the first call takes two steps to end below that tol.
    mixture.set_params(max_iter=0, warm_start=True, tol=np.finfo(np.float64).max).fit(X)
    mixture.set_params(max_iter=2).fit(X)
    bounds = list(mixture.lower_bounds_)
    converged = len(bounds) == 2 and abs(bounds[1] - bounds[0]) < tol
    mixture.set_params(max_iter=1)
    while not converged and len(bounds) < max_iter:
        mixture.fit(X)
        bounds.append(mixture.lower_bound_)
        converged = abs(bounds[-1] - bounds[-2]) < tol
    mixture.set_params(**{**params, "max_iter": max_iter, "tol": tol})
    mixture.converged_, mixture.n_iter_, mixture.lower_bounds_ = converged, len(bounds), bounds
    return converged


class LatentDensityMixin:
    """The post-hoc latent density of the VAEs (fitted on first use, cached, pickled)."""

    @property
    def latent_density_(self):
        """The Gaussian mixture fitted to the posterior means of the training rows.

        The density of ``sample(latent="fitted")``, with ``latent_density_components``
        components (at most one per sampled row). It is fitted on first use (this attribute
        or such a ``sample``), to the posterior means of the same sample of training rows as
        the aggregated posterior (kept as codes, or as rows with ``store_training_rows=True``)
        with a seed fixed at ``fit``, so it is the same whenever it is computed; it is kept,
        pickled with the model, and recomputed after ``fit`` / ``partial_fit`` or a change of
        ``latent_density_components``.
        """
        return self._latent_density()["mixture"]

    def _forget_latent_density(self):
        """Drop the fitted latent density: called by every fit, which changes the codes."""
        self.__dict__.pop("_latent_density_cache", None)

    def _latent_density(self):
        check_is_fitted(self)
        requested = self.latent_density_components
        if isinstance(requested, bool) or not isinstance(requested, Integral) or requested < 1:
            raise ValueError(
                f"latent_density_components={requested!r} must be a positive integer."
            )
        cached = self.__dict__.get("_latent_density_cache")
        if cached is not None and cached["requested"] == requested:
            return cached
        with torch.inference_mode():
            codes = self._reservoir_codes(with_logvar=False)[0]
        codes = to_numpy(codes, np.float64)
        mixture = GaussianMixture(
            n_components=min(int(requested), codes.shape[0]),
            covariance_type="full",
            random_state=derived_seed(self._seed, _LATENT_DENSITY, bits=32),
        )
        # scikit-learn's own ConvergenceWarning would reach the user from a call that never
        # mentioned a mixture: this one names the parameter that sets it.
        if not _fit_mixture_quietly(mixture, codes, _MIXTURE_MAX_ITER, _MIXTURE_TOL):
            warn(
                f"{type(self).__name__}: the latent density of sample(latent=\"fitted\") "
                f"(a GaussianMixture of latent_density_components={requested} components "
                f"on the codes of the training rows) did not converge in "
                f"{_MIXTURE_MAX_ITER} iterations; it is used as it is. Lower "
                "latent_density_components if the draws look off.",
                ConvergenceWarning,
            )
        cached = {
            "requested": requested,
            "mixture": mixture,
            "cholesky": np.linalg.cholesky(mixture.covariances_),
        }
        self._latent_density_cache = cached
        return cached

    def _draw_fitted_latent(self, eps, generator):
        """Codes drawn from :attr:`latent_density_`, with standard normal noise ``eps``."""
        density = self._latent_density()
        mixture = density["mixture"]
        options = {"device": self._device, "dtype": torch.float64}
        return sample_gaussian_mixture(
            torch.as_tensor(mixture.weights_, **options),
            torch.as_tensor(mixture.means_, **options),
            torch.as_tensor(density["cholesky"], **options),
            eps,
            generator,
        )
