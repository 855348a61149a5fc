"""Resynthesis with a fitted VAE: interpolation between rows and latent attribute vectors.

:class:`ResynthesisMixin` is one of the bases of ``BaseVAE`` and adds public methods only.
It reads the estimator through two helpers, ``_rows`` (validated rows of X) and
``_covariate_layout`` (the covariates' ``CovariateLayout``), its placement (``_device``,
``_dtype``) and the fitted ``module_``, which it runs through the chunked
``encode_in_chunks`` / ``decode_mean_in_chunks`` of ``skvae.nn`` and ``VAEModule``'s own
``decode`` and ``sample``.
"""

from numbers import Integral, Real

import numpy as np
import torch
from scipy import sparse
from sklearn.utils.validation import check_is_fitted

from .._backend import seed_from, to_numpy
from .._base import _output_dtype, warn, warn_nan_rows
from ..nn import interpolation_path
from ..nn._bounds import decode_mean_in_chunks, encode_in_chunks


class ResynthesisMixin:
    """Interpolation and attribute vectors of the VAEs."""

    # ------------------------------------------------------------------ encoding helpers
    def _posterior_means(self, X, name):
        """Validated ``X`` -> (posterior means on the device (model dtype), the validated
        rows: see ``BaseVAE._rows``); errors name ``X``."""
        try:
            rows = self._rows(X, where=name)
        except ValueError as error:
            if name == "X" or str(error).startswith(f"{name}:"):
                raise
            raise ValueError(f"{name}: {error}") from error
        with torch.inference_mode():
            return encode_in_chunks(self.module_, rows.x, None, rows.c, with_logvar=False)[0], rows

    @staticmethod
    def _one_row(x, name):
        """A single row given as (n_features,) or (1, n_features), reshaped to (1, n_features)."""
        if isinstance(x, torch.Tensor):
            x = x.reshape(1, -1) if x.ndim == 1 else x
        elif sparse.issparse(x) or hasattr(x, "columns"):
            pass  # validation explains sparse input; a DataFrame keeps its column names
        elif getattr(x, "ndim", None) == 1 and hasattr(x, "to_frame"):
            x = x.to_frame().T  # a pandas Series: its index becomes the column names
        else:
            x = np.asarray(x)
            x = x.reshape(1, -1) if x.ndim == 1 else x
        shape = tuple(x.shape)
        if len(shape) != 2 or shape[0] != 1:
            raise ValueError(
                f"{name} must be one row, of shape (n_features,) or (1, n_features); got shape "
                f"{shape}. Pass X[i] to use row i of X."
            )
        return x

    # ------------------------------------------------------------------ interpolation
    def interpolate(self, x_a, x_b, n_steps=8, *, method="slerp", return_mean=True,
                    random_state=None, covariates=None):
        """Decode a path in latent space between the codes of two rows.

        Both rows are encoded to their posterior means z_a and z_b, ``n_steps`` codes from z_a
        to z_b are made, both endpoints included, and each is decoded. The first and last rows
        of the result are therefore ``inverse_transform(transform(x_a))`` and the same for
        ``x_b`` (the reconstructions, not the rows themselves).

        Parameters
        ----------
        x_a, x_b : array-like, pandas Series or torch.Tensor of shape (n_features,) or \
(1, n_features)
            The rows to interpolate between.
        n_steps : int, default=8
            Number of rows returned, endpoints included; at least 2.
        method : {"slerp", "linear"}, default="slerp"
            "slerp" moves along the great circle between the directions of z_a and z_b
            (spherical interpolation, White 2016), which keeps the path at the norm typical of
            the Gaussian prior: with equal-norm endpoints every step has that norm. "linear"
            takes the straight line (1 - t) z_a + t z_b, whose midpoint is the mean of the
            two codes. When z_a and z_b are parallel, opposite or zero, "slerp" falls back to
            the straight line.
        return_mean : bool, default=True
            Return the decoded means E[x | z]; False draws each row from p(x | z).
        random_state : int, RandomState instance or None, default=None
            Seed of the draws when ``return_mean=False``; None uses the estimator's
            ``random_state``. Unused with ``return_mean=True``.
        covariates : array-like, default=None
            Only for a model with covariates (else must be None): the covariate values, in
            X's units, to decode the path with (one row, or ``n_steps`` rows). Each endpoint
            is encoded with its own covariates; by default the path is decoded with them
            too, which requires x_a and x_b to have the same covariates. Pass e.g. x_b's
            class to morph x_a's style into that class.

        Returns
        -------
        X_path : ndarray of shape (n_steps, n_features)
            The decoded path, from x_a's reconstruction to x_b's; float32 when both rows are
            float32, else float64. With covariates, in X's layout, the covariate columns
            holding the covariates the path was decoded with.

        References
        ----------
        T. White, "Sampling generative networks", arXiv:1609.04468, 2016.
        """
        check_is_fitted(self)
        if isinstance(n_steps, bool) or not isinstance(n_steps, Integral) or n_steps < 2:
            raise ValueError(
                f"n_steps={n_steps!r} must be an integer >= 2 (the path includes both endpoints)."
            )
        if method not in ("slerp", "linear"):
            raise ValueError(f"method={method!r} must be 'slerp' or 'linear'.")
        if not isinstance(return_mean, (bool, np.bool_)):
            raise ValueError(f"return_mean={return_mean!r} must be True or False.")
        out = np.float32 if _output_dtype(x_a) == _output_dtype(x_b) == np.float32 else np.float64
        codes_a, rows_a = self._posterior_means(self._one_row(x_a, "x_a"), "x_a")
        codes_b, rows_b = self._posterior_means(self._one_row(x_b, "x_b"), "x_b")
        if covariates is None and rows_a.raw is not None:
            if not np.array_equal(rows_a.raw, rows_b.raw):
                raise ValueError(
                    f"interpolate: x_a and x_b have different covariates ({rows_a.raw[0].tolist()}"
                    f" and {rows_b.raw[0].tolist()}), so the path has no single covariate to be "
                    "decoded with. Pass covariates= (one row, in X's units) to choose it."
                )
            covariates = rows_a.raw
        layout = self._covariate_layout()
        C, raw = layout.given(covariates, int(n_steps), "interpolate")
        with torch.inference_mode():
            path = interpolation_path(codes_a[0], codes_b[0], int(n_steps), method)
            if return_mean:
                decoded = to_numpy(decode_mean_in_chunks(self.module_, path, C), out)
            else:
                seed = seed_from(self.random_state if random_state is None else random_state)
                generator = torch.Generator(device=self._device).manual_seed(seed)
                module = self.module_
                params = module.decode(path) if C is None else module.decode(path, C)
                decoded = to_numpy(module.sample(params, generator), out)
        warn_nan_rows(self, "interpolate", decoded, reason=(
            "x_a or x_b is so large that its code or the decoded path overflows"))
        return layout.full_rows(decoded, raw, out)

    # ------------------------------------------------------------------ attribute vectors
    def attribute_vector(self, X_from, X_to):
        """Latent direction from one group of rows to another: the difference of mean codes.

        ``mean(transform(X_to)) - mean(transform(X_from))``, e.g. from rows without a feature
        (a pen stroke, a phenotype) to rows with it. Add it to codes with
        :meth:`apply_attribute` to move other rows the same way.

        Parameters
        ----------
        X_from : array-like or torch.Tensor of shape (n_from, n_features)
            Rows of the starting group.
        X_to : array-like or torch.Tensor of shape (n_to, n_features)
            Rows of the target group.

        Returns
        -------
        vector : ndarray of shape (`n_components_`,)
            The difference of the groups' mean posterior means (float64).
        """
        check_is_fitted(self)
        means = [
            self._posterior_means(X, name)[0].to(torch.float64).mean(dim=0)
            for X, name in ((X_from, "X_from"), (X_to, "X_to"))
        ]
        vector = to_numpy(means[1] - means[0], np.float64)
        if np.isnan(vector).any():  # one vector, not rows: say which codes failed
            warn(f"{type(self).__name__}.attribute_vector: the vector is NaN: some rows of "
                 "X_from or X_to are so large that their codes overflow (transform names "
                 "them). Drop or rescale those rows.")
        return vector

    def apply_attribute(self, X, vector, *, strength=1.0):
        """Move the codes of rows along a latent direction and decode them.

        Returns ``inverse_transform(transform(X) + strength * vector)`` (decoded with the
        rows' own covariates, if the model has some): with ``vector`` from
        :meth:`attribute_vector`, ``strength=1`` adds the attribute, ``-1`` removes it and
        ``0`` gives the plain reconstructions.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Rows to edit.
        vector : array-like of shape (`n_components_`,)
            Latent direction, e.g. the output of :meth:`attribute_vector`.
        strength : float, default=1.0
            Multiple of ``vector`` added to each code.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features)
            The decoded means of the moved codes, in the float type of ``X`` (float64 unless
            X is float32); covariate columns, if any, keep X's values.
        """
        check_is_fitted(self)
        if isinstance(strength, (bool, np.bool_)) or not isinstance(strength, Real) or not (
            np.isfinite(strength)
        ):
            raise ValueError(f"strength={strength!r} must be a finite real number.")
        if isinstance(vector, torch.Tensor):
            vector = to_numpy(vector)
        try:
            vector = np.asarray(vector, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("vector must hold real numbers, e.g. the output of "
                             "attribute_vector.") from None
        if vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]
        if vector.shape != (self.n_components_,):
            raise ValueError(
                f"vector must have shape (n_components_,) = ({self.n_components_},), like the "
                f"output of attribute_vector; got shape {vector.shape}."
            )
        if not np.all(np.isfinite(vector)):
            raise ValueError("vector contains NaN or infinity; it must be finite.")
        out = _output_dtype(X)
        codes, rows = self._posterior_means(X, "X")
        shift = torch.as_tensor(float(strength) * vector, device=self._device, dtype=self._dtype)
        with torch.inference_mode():
            decoded = to_numpy(decode_mean_in_chunks(self.module_, codes + shift, rows.c), out)
        warn_nan_rows(self, "apply_attribute", decoded)
        return self._covariate_layout().full_rows(decoded, rows.raw, out)
