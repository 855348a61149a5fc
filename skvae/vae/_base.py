"""What every VAE estimator shares: parameters, fitting, inference, scoring, sampling, pickling.

Subclasses choose the likelihood (``_likelihood_spec`` / ``_make_likelihood``), may restrict
the data (``_check_values``) and add fitted attributes (``_after_fit``).

Missing values (NaN) are accepted by every method that reads X. The bounds are then those of
log p(x_obs) (the likelihood of the observed entries, through the ``mask`` of ``skvae.nn``),
the encoder sees the standardized row with 0 in place of a missing entry, and a model whose
``fit`` saw NaN also gives its encoder the mask (``_module_spec["mask_inputs"]``). Complete
data never build a mask, so they train and score exactly as without this support.

Covariates (``covariates=`` columns of X, a conditional VAE): the fitted state says which
columns they are (``covariate_indices_``) and how they are encoded (``covariate_encoder_``).
Every method that reads X goes through :meth:`BaseVAE._rows`, which splits a validated X
(through the ``CovariateLayout`` of ``_covariates``) into the modeled columns (a tensor, as an
unconditional model sees X), the encoded covariates ``c`` handed to ``skvae.nn`` (``C=``) and
their raw values; methods that return rows of X's layout put the raw covariate values back in
their columns (``CovariateLayout.full_rows``).
Without covariates, ``c`` is None and every path is the unconditional one, bit for bit.
"""

import copy
from collections import namedtuple
from dataclasses import replace
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from .._backend import derived_seed, device_independent_normal, seed_from, to_numpy
from .._base import (
    BaseLatentModel,
    _caller_values,
    _is_dask_array,
    _output_dtype,
    blockwise,
    fit_all_or_nothing,
    scores_or_minus_inf,
    warn,
    warn_nan_rows,
)
from .._compat import Interval, StrOptions, _fit_context
from ..nn import (
    ACTIVATIONS,
    ELBO,
    IWAE,
    TrainingHistory,
    VAEModule,
    kl_standard_normal,
    monte_carlo_bounds,
    monte_carlo_impute,
    train_epochs,
)
from ..nn._bounds import decode_mean_in_chunks, encode_in_chunks
from ..nn._engine import load_optimizer_state, make_optimizer
from ._covariates import CovariateLayout, encoded_width, fit_encoder, resolve_columns
from ._latent_density import LatentDensityMixin
from ._reservoir import concat, draw_keys, merge_split, moved, reservoir_size, select, smallest
from ._resynthesis import ResynthesisMixin
from ._streaming import BottomK, DeviceCopies, Moments, RowBlocks, StreamedRows, is_streamed

# The uses of the fitted seed, as keys of numpy's SeedSequence (see derived_seed).
_CONTINUED_TRAINING = 1  # with the epoch count: each warm start / partial_fit call its own stream
_IMPORTANCE_DRAWS = 2
# Variance of a component's posterior mean over the data above which it counts as active.
_ACTIVITY_THRESHOLD = 0.01


def _standardization(X, mask=None):
    """Per-feature mean and std of X; a (numerically) constant feature gets scale 1.

    With ``mask`` (True where observed), of the observed entries only (nanmean, nanstd); a
    feature never observed gets location 0 and scale 1. The std is taken of the deviations
    divided by their largest magnitude, so squares neither underflow (a float32 column of size
    1e-25 would otherwise look constant) nor overflow. A feature that varies by less than the
    smallest normal number of the dtype cannot be standardized: ValueError.
    """
    if mask is None:
        mean = X.mean(dim=0)
        centred = X - mean
        count = X.shape[0]
    else:
        zero = torch.zeros((), dtype=X.dtype, device=X.device)
        count = mask.sum(dim=0).to(X.dtype).clamp(min=1)
        mean = torch.where(mask, X, zero).sum(dim=0) / count
        centred = torch.where(mask, X - mean, zero)
    largest = centred.abs().amax(dim=0)
    unit = torch.where(largest > 0, largest, torch.ones_like(largest))
    std = largest * torch.sqrt((centred / unit).square().sum(dim=0) / count)
    return _with_unit_scale_where_constant(mean, std)


def _with_unit_scale_where_constant(mean, std):
    """(mean, std) with scale 1 for the (numerically) constant features; an error for the
    features that vary only by subnormal amounts (they cannot be standardized)."""
    info = torch.finfo(std.dtype)
    constant = std <= 100 * info.eps * mean.abs()
    subnormal = ~constant & (std < info.tiny)
    if bool(subnormal.any()):
        columns = torch.nonzero(subnormal).flatten().tolist()
        raise ValueError(
            f"X column(s) {columns[:10]} vary only by subnormal amounts (standard deviation "
            f"below {info.tiny:.3g}, the smallest normal {str(std.dtype).replace('torch.', '')}): "
            "they cannot be standardized. Rescale those columns (e.g. "
            "sklearn.preprocessing.StandardScaler in a Pipeline) or drop them."
        )
    return mean, torch.where(constant, torch.ones_like(std), std)


# What the methods that read X work on: the modeled columns ``x`` (a tensor on the device, in
# the model's dtype), whether they hold NaN, the encoded covariates ``c`` (tensor or None) and
# the covariates' raw values ``raw`` (float64 ndarray or None).
_Rows = namedtuple("_Rows", ["x", "has_nan", "c", "raw"])


def _observed(X, has_nan=None):
    """The mask of observed (non-NaN) entries of X, or None when X is complete.

    ``has_nan`` is whether X holds NaN when the caller knows it (None: look).
    """
    if has_nan is None:
        missing = torch.isnan(X)
        return ~missing if bool(missing.any()) else None
    return ~torch.isnan(X) if has_nan else None


def _no_observed_entry(n_values):
    """The error of a fit whose X holds ``n_values`` values, all NaN."""
    return ValueError(
        f"X has no observed entry: all its {n_values} values are NaN, so there is nothing to "
        "fit. Pass rows with observed values."
    )


class BaseVAE(ResynthesisMixin, LatentDensityMixin, BaseLatentModel):
    """Base class of the VAE estimators (not public)."""

    _parameter_constraints = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariates": [None, Integral, str, "array-like"],
        "covariate_encoding": [StrOptions({"onehot", "numeric"})],
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "beta": [Interval(Real, 0, None, closed="left")],
        "kl_warmup": [Interval(Integral, 0, None, closed="left")],
        "objective": [StrOptions({"elbo", "iwae"})],
        "iwae_samples": [Interval(Integral, 1, None, closed="left")],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "n_importance_samples": [Interval(Integral, 1, None, closed="left")],
        "latent_density_components": [Interval(Integral, 1, None, closed="left")],
        "store_training_rows": ["boolean"],
        "warm_start": ["boolean"],
        "device": [str, torch.device],
        "dtype": [StrOptions({"float32", "float64"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def _nan_policy(self):
        return None

    # ------------------------------------------------------------------ subclass hooks
    def _likelihood_spec(self):
        """Plain-Python settings of the likelihood, stored with the fitted network."""
        return {}

    def _make_likelihood(self, n_features, spec):
        raise NotImplementedError

    def _check_values(self, X):
        """Raise if the values of X are outside what the likelihood models."""

    def _after_fit(self):
        """Set likelihood-specific fitted attributes."""

    # ------------------------------------------------------------------ validation
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, Integral) else list(sizes)
        bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, Integral) or s < 1]
        if bad:
            raise ValueError(
                f"hidden_layer_sizes={self.hidden_layer_sizes!r} must hold positive integers, "
                f"but has {bad}. Use e.g. hidden_layer_sizes=(256, 128), or () for linear "
                "encoder and decoder."
            )
        return tuple(int(s) for s in sizes)

    def _module_spec_for(self, n_features, columns=None, n_covariates=None):
        spec = {
            "n_features": int(n_features),
            "n_components": int(self.n_components),
            "hidden_layer_sizes": self._hidden_sizes(),
            "activation": self.activation,
            "likelihood": self._likelihood_spec(),
        }
        if columns is not None:  # no keys without covariates: specs of old stay equal
            spec["covariates"] = tuple(int(j) for j in columns)
            spec["covariate_encoding"] = self.covariate_encoding
            spec["n_covariates"] = None if n_covariates is None else int(n_covariates)
        return spec

    def _build_module(self, spec):
        likelihood = self._make_likelihood(spec["n_features"], spec["likelihood"])
        module = VAEModule(
            spec["n_features"],
            spec["n_components"],
            spec["hidden_layer_sizes"],
            spec["activation"],
            likelihood,
            n_covariates=spec.get("n_covariates") or 0,
            mask_inputs=spec.get("mask_inputs", False),
        )
        return module.to(device=self._device, dtype=self._dtype)

    def _objective(self):
        return IWAE(self.iwae_samples) if self.objective == "iwae" else ELBO()

    def _split_validation(self, X, generator, C=None):
        n = X.shape[0]
        n_val = int(np.ceil(self.validation_fraction * n))
        if n_val < 1 or n - n_val < 1:
            raise ValueError(
                f"early_stopping=True with validation_fraction={self.validation_fraction} "
                f"leaves {n_val} validation and {n - n_val} training rows out of "
                f"n_samples={n}; both need at least one. Pass more rows, change "
                "validation_fraction, or set early_stopping=False."
            )
        order = torch.randperm(n, generator=generator, device=X.device)
        train, val = order[n_val:], order[:n_val]
        if C is None:
            return X.index_select(0, train), X.index_select(0, val), None, None
        return (X.index_select(0, train), X.index_select(0, val),
                C.index_select(0, train), C.index_select(0, val))

    # ------------------------------------------------------------------ covariates
    def _covariate_layout(self, columns=None, encoder=None, *, fitted=True):
        """The :class:`CovariateLayout` of the fitted covariates, or (``fitted=False``) of
        ``columns`` and ``encoder`` during a fit."""
        if fitted:
            columns = getattr(self, "covariate_indices_", None)  # absent in pickles of old
            encoder = getattr(self, "covariate_encoder_", None)
        return CovariateLayout(columns, encoder, self.n_features_in_,
                               getattr(self, "feature_names_in_", None), self._device,
                               self._dtype, type(self).__name__)

    def _training_rows(self, X, *, reset):
        """fit's X -> (modeled columns, has_nan, raw covariates, covariate columns); the last
        two are None without covariates (the ``covariates`` parameter resolved against X)."""
        if self.covariates is None:
            X, has_nan = self._check_input(X, reset=reset, return_has_nan=True)
            return X, has_nan, None, None
        X = self._check_input(X, reset=reset, check_finite=False, cast=False)
        columns = resolve_columns(self.covariates, self.n_features_in_,
                                  getattr(self, "feature_names_in_", None))
        if columns is None:  # an empty selection: no covariates
            x = X.to(self._dtype)
            has_nan = self._check_finite(x)
            self._check_given(X)
            return x, has_nan, None, None
        x, has_nan, raw = self._split(self._covariate_layout(columns, fitted=False), X, "X")
        return x, has_nan, raw, columns

    def _split(self, layout, X, where):
        """A validated X (any float type) -> (modeled columns in the model's dtype, whether
        they hold NaN, the covariate columns as float64 ndarray, checked finite)."""
        given, raw = layout.split(X, where)
        x = given.to(self._dtype)
        has_nan = self._check_finite(x)
        self._check_given(given)
        return x, has_nan, raw

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    @fit_all_or_nothing
    def fit(self, X, y=None):
        """Fit the model to ``X`` by maximizing the beta-ELBO with Adam.

        With ``warm_start=True`` and a fitted model, training continues from the current
        weights for up to ``max_iter`` more epochs, on the current ``device`` and in the
        current ``dtype``: the network, the optimizer state and the sample of training rows
        move there first if either changed.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Training data. A CUDA tensor is used where it lies, without a copy to the host.
            NaN marks a missing entry: the model is then fitted to the observed entries
            (see Notes of the class). A dask array, or a ``numpy.memmap`` larger than
            32 MiB, is read block by block and never held whole (data beyond memory): see
            Notes.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The fitted estimator.

        Notes
        -----
        Block by block (a dask array: its row blocks; a memmap: row slices of about
        32 MiB), a first pass computes the input standardization exactly (the mean and
        std of all rows, NaN-aware), checks the values and keeps a uniform random sample of
        at most 100,000 rows (and 2**23 values), which initializes the decoder's output bias,
        gives ``kl_per_component_`` and ``latent_activity_`` and, as its codes at the end
        of the fit (the rows themselves with ``store_training_rows=True``), is the sample of
        ``sample(latent="aggregated_posterior")`` and ``latent_density_``. Each epoch then
        visits the blocks in a seeded random order and shuffles the rows within each block;
        ``loss_curve_`` is the mean over all rows. Memory: one block, its standardized copy
        and the sample. ``early_stopping=True`` and ``covariates`` are refused there (they
        need rows in memory): stop on the training loss (``tol``, ``n_iter_no_change``)
        instead, or fit an in-memory array.

        Ctrl-C (KeyboardInterrupt), here and in :meth:`partial_fit`: the call works on its
        own copy of the model and publishes it at the end. Before any epoch of the call has
        finished, it raises and leaves the estimator exactly as it was. After, it returns
        with a ``ConvergenceWarning`` and the model of the finished epochs: weights,
        optimizer state, ``n_iter_``, ``loss_curve_``, the sample of training rows and the
        diagnostics all describe them (an epoch in progress is dropped; with
        ``early_stopping``, the weights are the best validation epoch's). An interrupt after
        the last epoch runs the closing work (the best weights back, the row sample, the
        diagnostics: about one forward pass over the training rows) once more; a second one
        abandons the call and leaves the estimator as it was.
        """
        return self._fit(X, incremental=False)

    @_fit_context(prefer_skip_nested_validation=True)
    @fit_all_or_nothing
    def partial_fit(self, X, y=None):
        """Train for one epoch over the rows of ``X``, starting from the current weights.

        The first call initializes the model (and the input standardization) from ``X``;
        later calls continue with the same optimizer state, so data that arrive in chunks can
        be learned, on the current ``device`` and in the current ``dtype`` (the state moves
        there first if either changed). ``early_stopping`` does not apply here. The sample of
        the aggregated posterior stays a uniform sample of every row trained on; the chunk's
        rows in it get the codes of the encoder at the end of this call, those of earlier
        chunks keep theirs (with ``store_training_rows=True``, all are encoded by the current
        encoder). Ctrl-C: see the Notes of :meth:`fit`.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            A chunk of training data; NaN marks a missing entry.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The updated estimator.
        """
        return self._fit(X, incremental=True)

    def _fit(self, X, *, incremental):
        if is_streamed(X):
            return self._fit_streamed(X, incremental=incremental)
        fresh = self._starts_afresh(incremental)
        X_given = X
        X, has_nan, raw, columns = self._training_rows(X_given, reset=fresh)
        self._check_values(X)
        if has_nan and bool(torch.isnan(X).all()):
            raise _no_observed_entry(X.numel())
        encoder = None
        if not fresh and columns is not None:
            encoder = getattr(self, "covariate_encoder_", None)  # continuing: same encoding
        spec = self._module_spec_for(X.shape[1], columns, encoded_width(encoder))
        if not fresh and not self._continues_with(spec, incremental):
            fresh = True
            X, has_nan, raw, columns = self._training_rows(X_given, reset=True)
        self._note_column_range(X, reset=fresh, columns=None if columns is None else
                                self._covariate_layout(columns, fitted=False).modeled())
        if fresh:
            # The encoder reads the mask when the data it is fitted on have gaps.
            spec.pop("mask_inputs", None)
            if has_nan:
                spec["mask_inputs"] = True
        C = None
        if columns is not None:
            if fresh:
                encoder = fit_encoder(raw, self.covariate_encoding)
                spec["n_covariates"] = encoded_width(encoder)
            C = self._covariate_layout(columns, encoder, fitted=False).encoded(raw, "X")

        if fresh:
            seed = seed_from(self.random_state)
            generator = torch.Generator(device=self._device).manual_seed(seed)
        else:
            seed, generator, module, optimizer, history = self._continuation()
        X_train, X_val, C_train, C_val = X, None, C, None
        if self.early_stopping and not incremental:  # partial_fit: no validation split
            X_train, X_val, C_train, C_val = self._split_validation(X, generator, C)
        mask_train = _observed(X_train, has_nan)
        if fresh:
            module, optimizer, history = self._new_training(
                spec, generator, lambda m: _standardization(m.encoder_input(X_train), mask_train),
                X_train, mask_train)
        mask_val = None if X_val is None else _observed(X_val, has_nan)

        def train():
            return self._train(module, optimizer, X_train, generator, history, incremental,
                               X_val=X_val, C=C_train, C_val=C_val, mask=mask_train,
                               mask_val=mask_val)

        def publish(result, interrupted):
            kept = self._report(result, module, optimizer, history, incremental, interrupted)
            self._set_fitted(module, kept, history, spec, columns, encoder,
                             seed if fresh else None)
            codes = self._training_codes(X_train, has_nan, C_train)
            self._update_reservoir(X_train, generator, merge=not fresh, C=C_train,
                                   has_nan=has_nan, codes=codes)
            self._set_latent_diagnostics(codes)
            self._forget_latent_density()
            self._after_fit()
            self._warn_constant_columns()

        return self._train_and_publish(train, publish)

    def _fit_streamed(self, X, *, incremental):
        """``_fit`` for a dask array or a large memmap, read block by block (see
        ``_streaming``): a first pass for the standardization, the checks and a uniform sample
        of the rows; then epochs over the blocks. The sample stands for the training rows
        wherever the in-memory fit reads them all: the decoder's initial bias, the latent
        diagnostics and the sample of the aggregated posterior (``_update_reservoir``)."""
        kind = "dask array" if _is_dask_array(X) else "numpy.memmap"
        if self.covariates is not None:
            raise ValueError(
                f"covariates={self.covariates!r} is not supported when X is a {kind} fitted "
                "block by block. Fit in memory (np.asarray(X), or X.compute() for dask), or "
                "append the encoded covariates to X yourself and fit without covariates=."
            )
        if self.early_stopping and not incremental:
            raise ValueError(
                f"early_stopping=True needs validation rows held in memory, but X is a {kind} "
                "fitted block by block. Set early_stopping=False (training then stops when the "
                "training loss has not improved by tol for n_iter_no_change epochs), or fit "
                "an in-memory array."
            )
        blocks = RowBlocks(X)
        fresh = self._starts_afresh(incremental)
        if not fresh:
            spec = self._module_spec_for(blocks.n_features)
            fresh = not self._continues_with(spec, incremental)
        if fresh:
            seed = seed_from(self.random_state)
            self._check_input(np.empty((0, blocks.n_features)), reset=True,
                              ensure_min_samples=0)  # device, dtype, n_features_in_
            generator = torch.Generator(device=self._device).manual_seed(seed)
        else:
            seed, generator, module, optimizer, history = self._continuation()

        moments, keys, sample, has_nan = self._first_pass(X, blocks, fresh, generator)
        sample_mask = _observed(sample, has_nan)
        if fresh:
            spec = self._module_spec_for(blocks.n_features)
            if has_nan:
                spec["mask_inputs"] = True
            module, optimizer, history = self._new_training(
                spec, generator,
                lambda m: _with_unit_scale_where_constant(*moments.mean_std(self._dtype)),
                sample, sample_mask)

        to_tensor = DeviceCopies(self._device, self._dtype)  # pinned staging on CUDA
        rows = StreamedRows(blocks, to_tensor, has_nan)

        def publish(result, interrupted):
            kept = self._report(result, module, optimizer, history, incremental, interrupted)
            self._set_fitted(module, kept, history, spec, None, None, seed if fresh else None)
            codes = self._training_codes(sample, has_nan)
            self._update_reservoir(sample, None, merge=not fresh, has_nan=has_nan, keys=keys,
                                   codes=codes)
            self._set_latent_diagnostics(codes)
            self._forget_latent_density()
            self._after_fit()
            self._warn_constant_columns()

        return self._train_and_publish(
            lambda: self._train(module, optimizer, rows, generator, history, incremental),
            publish)

    def _starts_afresh(self, incremental):
        """Whether this fit call starts a new model (else it continues the fitted one, moved
        to the current device and dtype first)."""
        fresh = not hasattr(self, "module_") or not (incremental or self.warm_start)
        if not fresh:
            self._resolve_placement()
        return fresh

    def _continues_with(self, spec, incremental):
        """Whether the fitted model can continue with the architecture ``spec`` (which keeps
        how the fitted encoder reads rows); a changed one: fit starts afresh, partial_fit
        raises."""
        if self._module_spec.get("mask_inputs"):
            spec["mask_inputs"] = True  # how the fitted encoder reads rows stays as it is
        if spec == self._module_spec:
            return True
        if incremental:
            raise ValueError(
                f"partial_fit cannot continue: the architecture parameters of this "
                f"{type(self).__name__} changed since it was fitted ({self._module_spec} -> "
                f"{spec}). Call fit to start a new model, or restore the parameters."
            )
        return False

    def _first_pass(self, X, blocks, fresh, generator):
        """The first pass of a streamed fit over the blocks of ``X``: values checked, the
        moments of the encoder's input (``fresh`` only) and a uniform sample of the rows;
        (moments, the sample's keys, the sample, whether X holds NaN, the sample's size)."""
        likelihood = self._make_likelihood(blocks.n_features, self._likelihood_spec())
        moments = Moments()
        sampler = BottomK(max(1, min(reservoir_size(blocks.n_features), blocks.n_rows)),
                          blocks.n_features, self._dtype, self._device)
        has_nan, n_rows, all_missing = False, 0, True
        for index in range(blocks.n_blocks):
            block = blocks.read(index)
            if block.shape[0] == 0:
                continue
            x, block_nan = self._check_input(block, reset=False, return_has_nan=True)
            self._check_values(x)
            self._note_column_range(x, reset=fresh and n_rows == 0)
            has_nan = has_nan or block_nan
            all_missing = all_missing and block_nan and bool(torch.isnan(x).all())
            if fresh:
                moments.add(likelihood.encoder_input(x), block_nan)
            sampler.add(x, generator)
            n_rows += x.shape[0]
            del block, x  # one block in memory at a time
        if n_rows == 0:
            raise ValueError(f"Found array with 0 sample(s) (shape={tuple(X.shape)}) while a "
                             "minimum of 1 is required.")
        if all_missing:
            raise _no_observed_entry(n_rows * blocks.n_features)
        keys, sample = sampler.sample()
        return moments, keys, sample, has_nan

    def _new_training(self, spec, generator, standardization, rows, mask):
        """A new network, its optimizer and an empty history, for a fit that starts afresh.

        ``standardization(module)`` gives the (loc, scale) of the encoder's input; ``rows``
        (with their ``mask``, None when complete) initialize the weights and output biases.
        """
        module = self._build_module(spec)
        module.set_standardization(*standardization(module))
        module.reset_parameters(generator, rows if mask is None else module.fill(rows, mask))
        optimizer = make_optimizer(module.parameters(), self.learning_rate_init)
        return module, optimizer, TrainingHistory()

    def _continuation(self):
        """(seed, generator, module, optimizer, history) to continue training a fitted model.

        Copies, on the current device and dtype: the fitted model stays as it is until the
        call publishes the new one (fit_all_or_nothing restores attributes, not objects
        changed in place), and an interrupted call leaves it intact.
        """
        seed = self._seed
        generator = torch.Generator(device=self._device).manual_seed(
            derived_seed(seed, _CONTINUED_TRAINING, self._history.n_epochs)
        )
        self._check_reservoir_continues()
        module = copy.deepcopy(self.module_).to(device=self._device, dtype=self._dtype)
        optimizer = make_optimizer(module.parameters(), self.learning_rate_init)
        load_optimizer_state(optimizer, copy.deepcopy(self._optimizer.state_dict()))
        self._place_reservoir()
        history = replace(
            self._history,
            loss_curve=list(self._history.loss_curve),
            validation_scores=None if self._history.validation_scores is None
            else list(self._history.validation_scores),
            no_improvement_count=0,
            best_loss=np.inf,
            best_validation_score=-np.inf,
            best_state=None,
        )
        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate_init
        return seed, generator, module, optimizer, history

    def _place_reservoir(self):
        """Move the sample of training rows to ``_device`` and ``_dtype`` (keys stay float64)."""
        if isinstance(self.__dict__.get("_reservoir"), dict):
            self._reservoir = moved(self._reservoir, self._device, self._dtype)

    def _train_and_publish(self, train, publish):
        """``train()`` (the engine's result), then ``publish(result, interrupted)``, which sets
        the fitted attributes; ``self``.

        One protected region from training to the return: a KeyboardInterrupt after training
        (in the row sample, the diagnostics) puts the attributes back and publishes once more
        with ``interrupted=True``, so the finished epochs are kept; one that the engine lets
        through (no finished epoch), or a second one, propagates, and fit_all_or_nothing
        leaves the estimator as it was. Grad mode ends as it began (see fit_all_or_nothing).
        """
        before, result, grad = dict(self.__dict__), None, torch.is_grad_enabled()
        try:
            result = train()
            publish(result, False)
            torch.set_grad_enabled(grad)
            return self
        except KeyboardInterrupt:
            torch.set_grad_enabled(grad)
            if result is None:
                raise
            self.__dict__ = before
            publish(result, True)
            torch.set_grad_enabled(grad)
            return self

    def _train(self, module, optimizer, X, generator, history, incremental, **rows):
        """``train_epochs`` with this estimator's settings; a first-epoch divergence becomes
        a clear error."""
        try:
            return train_epochs(
                module,
                optimizer,
                X,
                generator=generator,
                batch_size=self.batch_size,
                max_epochs=1 if incremental else self.max_iter,
                beta=self.beta,
                kl_warmup=self.kl_warmup,
                history=history,
                tol=self.tol,
                n_iter_no_change=None if incremental else self.n_iter_no_change,
                verbose=self.verbose,
                objective=self._objective(),
                **rows,
            )
        except FloatingPointError:
            raise ValueError(
                f"{type(self).__name__} diverged in its first epoch (the loss or the weights "
                "became non-finite), so no finite weights exist to keep. Lower "
                f"learning_rate_init={self.learning_rate_init} (e.g. to "
                f"{self.learning_rate_init / 10:g}), or {self._range_hint()} if X holds huge "
                "values."
            ) from None

    def _report(self, result, module, optimizer, history, incremental, interrupted=False):
        """Warn about how training ended; the optimizer to keep (a new one after divergence).

        ``interrupted``: a KeyboardInterrupt came after training, while the model was being
        published.
        """
        if result.status == "diverged":
            optimizer = make_optimizer(module.parameters(), self.learning_rate_init)
            warn(
                f"{type(self).__name__}: the training loss or weights became non-finite in "
                f"epoch {result.diverged_at}; training stopped and the best finite weights "
                f"were restored. Lower learning_rate_init={self.learning_rate_init} or scale X.",
                ConvergenceWarning,
            )
        elif result.status == "worsened":
            optimizer = make_optimizer(module.parameters(), self.learning_rate_init)
            if result.best_epoch is None:
                start = ("the weights this call started from"
                         + (" (the initial ones: the model learned nothing)"
                            if history.n_epochs == result.epochs_run else ""))
                where, restored = "at the start", start
            else:
                where = f"epoch {result.best_epoch}"
                restored = "the weights that epoch started from"
            warn(
                f"{type(self).__name__}: training diverged: the {result.measure} rose from "
                f"{result.best_loss:.4g} ({where}) to {result.last_loss:.4g} nats per row; "
                f"{restored} were restored. Lower learning_rate_init="
                f"{self.learning_rate_init} (e.g. to {self.learning_rate_init / 10:g}).",
                ConvergenceWarning,
            )
        elif result.status == "max_iter" and not incremental:
            warn(
                f"{type(self).__name__}: maximum iterations (max_iter={self.max_iter} epochs) "
                "reached and the optimization hasn't converged yet. Increase max_iter, or "
                "raise tol.",
                ConvergenceWarning,
            )
        if interrupted or result.interrupted:
            warn(
                f"{type(self).__name__}: training interrupted by the user (KeyboardInterrupt); "
                f"the model keeps the {result.epochs_run} epoch(s) this call finished "
                f"(n_iter_={history.n_epochs}) and drops any epoch in progress (with "
                "early_stopping, the weights are those of the best validation epoch).",
                ConvergenceWarning,
            )
        return optimizer

    def _set_fitted(self, module, optimizer, history, spec, columns, encoder, seed):
        """Record the trained state (``seed`` None: continuing, the seed stays)."""
        self.module_ = module
        self._optimizer = optimizer
        self._history = history
        self._module_spec = spec
        self.covariate_indices_ = columns
        self.covariate_encoder_ = encoder
        if seed is not None:
            self._seed = seed
        self.n_components_ = spec["n_components"]
        self.n_iter_ = history.n_epochs
        self.loss_curve_ = list(history.loss_curve)
        self.best_loss_ = float(min(history.loss_curve))
        if history.validation_scores is None:
            self.validation_scores_ = None
            self.best_validation_score_ = None
        else:
            self.validation_scores_ = list(history.validation_scores)
            self.best_validation_score_ = float(max(history.validation_scores))

    def _update_reservoir(self, X, generator, *, merge, C=None, has_nan=None, keys=None,
                          codes=None):
        """Keep a uniform random sample of the training rows for the aggregated posterior.

        Every row gets an independent uniform key (``keys``, when the caller drew them) and the
        rows with the smallest keys are kept (bottom-k sampling): merging the sample of earlier
        calls (``merge``) with a new chunk gives a uniform sample of all rows seen, whatever
        their order. By default a sampled row is kept as its codes (the mean and log-variance
        of q(z | x, c)) from the encoder that has just been trained, and the rows of earlier
        calls keep the codes they got then; ``store_training_rows=True`` keeps the rows (and
        their encoded covariates ``C``) instead, encoded when they are used (the layout:
        ``skvae.vae._reservoir``). Must run after ``module_`` holds the call's final encoder;
        ``codes``, the (mean, log-variance) of every row of X from it, spares encoding again.
        """
        size = reservoir_size(X.shape[1])
        if keys is None:
            keys = draw_keys(X.shape[0], generator, X.device)
        if codes is not None and not self.store_training_rows:
            new = {"keys": keys, "mean": codes[0], "logvar": codes[1]}
        else:
            new = {"keys": keys, "rows": X, **({} if C is None else {"covariates": C})}
        new = smallest(new, size)
        old = None
        if merge:
            old = self._reservoir
            kept_old, kept_new = merge_split(old["keys"], new["keys"], size)
            old, new = select(old, kept_old), select(new, kept_new)
        if not self.store_training_rows:
            if "rows" in new:
                new = self._encoded_sample(new, has_nan)
            if old is not None and "rows" in old:  # rows stored until now: encoded, dropped
                old = self._encoded_sample(old)
        merged = new if old is None else concat(old, new)
        # A copy: X may share the caller's memory.
        self._reservoir = {name: value.clone() for name, value in merged.items()}

    def _encoded_sample(self, sample, has_nan=None):
        """A reservoir of rows -> the same entries as codes of the current encoder."""
        with torch.no_grad():
            mean, logvar = encode_in_chunks(self.module_, sample["rows"], has_nan,
                                            sample.get("covariates"))
        return {"keys": sample["keys"], "mean": mean, "logvar": logvar}

    def _check_reservoir_continues(self):
        """Refuse to continue training with rows stored when earlier rows were not kept."""
        if self.store_training_rows and "rows" not in self._reservoir:
            raise ValueError(
                f"store_training_rows=True, but this {type(self).__name__} was fitted with "
                "store_training_rows=False: the rows of its earlier fit / partial_fit calls "
                "were not kept, so a sample of all rows trained on cannot be stored. Start a "
                "new model to keep rows (fit with warm_start=False), or set "
                "store_training_rows=False."
            )

    def _reservoir_codes(self, index=None, with_logvar=True):
        """Means and log-variances (None without ``with_logvar``) of q(z | x, c) of the sampled
        training rows (those at positions ``index``, or all), stored or from the current
        encoder when the rows are stored."""
        sample = self._reservoir if index is None else select(self._reservoir, index)
        if "rows" not in sample:
            return sample["mean"], sample["logvar"] if with_logvar else None
        return encode_in_chunks(self.module_, sample["rows"], None, sample.get("covariates"),
                                with_logvar=with_logvar)

    def _training_codes(self, X, has_nan=None, C=None):
        """(mean, log-variance) of q(z | x, c) of the training rows X, by the final encoder."""
        with torch.no_grad():
            return encode_in_chunks(self.module_, X, has_nan, C)

    def _set_latent_diagnostics(self, codes):
        """Per-component KL and activity over the training rows, to show posterior collapse.

        A component is active when its posterior mean varies across the data: Burda et al.
        (2016) call latent unit j active when Var_x(E_q[z_j | x]) > 0.01; an inactive one has
        q(z_j | x) = p(z_j) for every x, so it carries no information and its KL is ~0.
        """
        mean, logvar = codes  # of the training rows (``_training_codes``)
        kl = kl_standard_normal(mean[..., None], logvar[..., None])  # per component
        self.kl_per_component_ = to_numpy(kl.mean(dim=0), np.float64)
        self.latent_activity_ = to_numpy(mean.var(dim=0, correction=0), np.float64)
        self.n_active_components_ = int(np.sum(self.latent_activity_ > _ACTIVITY_THRESHOLD))

    # ------------------------------------------------------------------ inference
    @staticmethod
    def _posterior_std(logvar):
        """Standard deviations of q(z | x) from its log-variances."""
        return torch.exp(0.5 * logvar)

    def _rows(self, X, where="X"):
        """Validate X for a fitted model: a :class:`_Rows` of its modeled columns, whether
        they hold NaN, and its encoded and raw covariates (None without covariates)."""
        check_is_fitted(self)
        layout = self._covariate_layout()
        if layout.columns is None:
            x, has_nan = self._check_input(X, reset=False, return_has_nan=True)
            self._check_values(x)
            return _Rows(x, has_nan, None, None)
        X = self._check_input(X, reset=False, check_finite=False, cast=False)
        x, has_nan, raw = self._split(layout, X, where)
        self._check_values(x)
        return _Rows(x, has_nan, layout.encoded(raw, where), raw)

    @blockwise
    def transform(self, X, return_std=False):
        """Mean of the approximate posterior q(z | x, c) of each row.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data to encode. NaN entries are missing: the result is q(z | x_obs), and a row
            with no observed entry gets the prior (mean 0, std 1). With ``covariates``, the
            covariate columns of X are the c the codes are conditioned on.
        return_std : bool, default=False
            Also return the standard deviations of q(z | x).

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components)
            Posterior means, in the float type of ``X`` (float64 unless X is float32).
        Z_std : ndarray of shape (n_samples, n_components)
            Posterior standard deviations, only when ``return_std=True``.
        """
        out = _output_dtype(X)
        rows = self._rows(X)
        with torch.inference_mode():
            mean, logvar = encode_in_chunks(self.module_, rows.x, rows.has_nan, rows.c,
                                            with_logvar=return_std)
            mean = to_numpy(mean, out)
            std = to_numpy(self._posterior_std(logvar), out) if return_std else None
        warn_nan_rows(self, "transform", mean, std)
        return (mean, std) if return_std else mean

    def inverse_transform(self, Z, *, covariates=None):
        """Decoded mean E[x | z] (E[x | z, c] with covariates) of latent codes.

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_components)
            Latent codes, e.g. the output of :meth:`transform`.
        covariates : array-like, default=None
            Required when the model has covariates, else must be None: the values of the
            covariate columns to decode with, in X's units (e.g. the class label), as one row
            (used for every code) or ``n_samples`` rows, in the order of the columns in X.
            Rows of X itself (all ``n_features_in_`` columns) are accepted too, so
            ``inverse_transform(transform(X), covariates=X)`` reconstructs X.

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`)
            The decoder's mean (probabilities for a Bernoulli likelihood). With covariates,
            in X's layout: the covariate columns hold the given values.
        """
        check_is_fitted(self)
        out = _output_dtype(Z)
        Z = self._check_latent(Z)
        layout = self._covariate_layout()
        C, raw = layout.given(covariates, Z.shape[0], "inverse_transform")
        with torch.inference_mode():
            decoded = to_numpy(decode_mean_in_chunks(self.module_, Z, C), out)
        warn_nan_rows(self, "inverse_transform", decoded, reason=(
            "their codes are so large that the decoder's computation overflows"))
        return layout.full_rows(decoded, raw, out)

    def _importance_draws(self):
        """The K standard normal draws (K, n_components) every row of every call shares: drawn
        on the CPU whatever the model's device, so scores do not change when a model moves."""
        return device_independent_normal(
            derived_seed(self._seed, _IMPORTANCE_DRAWS),
            (self.n_importance_samples, self.n_components_),
            device=self._device,
            dtype=self._dtype,
        )

    def _bounds(self, rows):
        X = rows.x
        self._warn_rows_off_constant_columns(X)
        eps = self._importance_draws()
        with torch.inference_mode():
            mask = ~torch.isnan(X) if rows.has_nan else None
            iw, lower = monte_carlo_bounds(self.module_, X, eps, C=rows.c, mask=mask)
        # A row whose value is below the dtype's range, or whose computation overflows
        # (NaN), scores -inf: named in a warning, never returned as NaN.
        return scores_or_minus_inf(self, to_numpy(iw, np.float64), to_numpy(lower, np.float64))

    @blockwise
    def score_samples(self, X):
        """Importance-weighted estimate of log p(x) for each row, in nats.

        log p(x) ~= logsumexp_k [log p(x | z_k) + log p(z_k) - log q(z_k | x)] - log K with
        K = ``n_importance_samples`` draws z_k ~ q(z | x). It is a lower bound of log p(x) in
        expectation, tightening as K grows. The draws come from a generator seeded when the
        model was fitted and are shared by all rows, so repeated calls agree and a row's
        value does not depend on the other rows passed with it.

        With NaN entries (missing), the estimate is of log p(x_obs), the density of the
        observed entries of the row (the missing ones integrated out); a row with no
        observed entry scores 0.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data; NaN marks a missing entry.

        Returns
        -------
        log_likelihood : ndarray of shape (n_samples,)
            Estimated log p(x) per row (float64). ``-score_samples`` is an outlier score.
            A row whose value is below the range of the model's dtype, or whose computation
            overflows, scores -inf (never NaN), and a ``UserWarning`` names it.
        """
        return self._bounds(self._rows(X))[0]

    @blockwise
    def elbo_samples(self, X):
        """Evidence lower bound (ELBO, beta = 1) of each row, in nats.

        Estimated with the same ``n_importance_samples`` draws as :meth:`score_samples` (the
        mean of the log importance weights instead of their log-mean-exp), so for every row
        ``elbo_samples(X) <= score_samples(X)``. With NaN entries, the ELBO of log p(x_obs).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data; NaN marks a missing entry.

        Returns
        -------
        elbo : ndarray of shape (n_samples,)
            ELBO per row (float64).
        """
        return self._bounds(self._rows(X))[1]

    @blockwise
    def score_breakdown(self, X):
        """Per-row terms of the bounds, to see where a model's likelihood goes.

        With the same draws as :meth:`score_samples`: ``log_likelihood`` (the importance-
        weighted estimate of log p(x)), ``elbo`` (the ELBO, beta = 1), ``kl`` (KL(q(z | x) ||
        p(z)) in closed form), ``reconstruction`` (``elbo + kl``, an estimate of
        E_q[log p(x | z)]) and ``gap`` (``log_likelihood - elbo`` >= 0, how far the encoder's
        q(z | x) is from the true posterior, as the importance weights see it). A large
        ``kl`` with a small ``gap`` is a good amortized posterior; ``kl`` near zero for every
        row is posterior collapse (see also ``kl_per_component_``).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data; NaN marks a missing entry (the terms are then those of x_obs).

        Returns
        -------
        breakdown : dict of str to ndarray of shape (n_samples,)
            The five terms above, float64, in nats; ``elbo == reconstruction - kl`` and
            ``log_likelihood == elbo + gap``.
        """
        rows = self._rows(X)
        iw, lower = self._bounds(rows)
        with torch.inference_mode():
            mean, logvar = encode_in_chunks(self.module_, rows.x, rows.has_nan, rows.c)
            kl = to_numpy(kl_standard_normal(mean, logvar), np.float64)
        with np.errstate(invalid="ignore"):  # -inf - -inf: named below
            terms = {"log_likelihood": iw, "elbo": lower, "reconstruction": lower + kl,
                     "kl": kl, "gap": iw - lower}
        warn_nan_rows(self, "score_breakdown", *terms.values(), reason=(
            "their log-likelihood and ELBO are -inf (see the warning above) or their encoding "
            "overflows, so the kl, reconstruction and gap of those rows are undefined"))
        return terms

    @blockwise
    def impute(self, X):
        """Fill the NaN entries of ``X`` with their conditional mean E[x_missing | x_observed].

        E[x_m | x_o] = E_{p(z | x_o)} E[x_m | z] is estimated by self-normalized importance
        sampling (MIWAE, Mattei & Frellsen 2019): with K = ``n_importance_samples`` draws
        z_k ~ q(z | x_o), sum_k w_k E[x_m | z_k], w_k proportional to
        p(x_o | z_k) p(z_k) / q(z_k | x_o). The draws are those of :meth:`score_samples`, so
        repeated calls agree and a row's values do not depend on the other rows. A row with
        no observed entry gets the model's mean E[x].

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data with NaN marking missing entries. It is not modified.

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features)
            A copy of ``X`` with its observed entries unchanged (bit for bit) and the missing
            ones imputed (probabilities for a Bernoulli likelihood), in the float type of
            ``X`` (float64 unless X is float32). A row whose observed values are so extreme
            that no draw has a representable importance weight keeps NaN in its missing
            entries, and a ``UserWarning`` names it.
        """
        out = _output_dtype(X)
        rows = self._rows(X)
        result = _caller_values(X, out)  # the caller's values, not the network's dtype
        if not rows.has_nan:
            return result
        with torch.inference_mode():
            means = monte_carlo_impute(self.module_, rows.x, ~torch.isnan(rows.x),
                                       self._importance_draws(), C=rows.c)
        missing = np.isnan(result)
        full = self._covariate_layout().full_rows(to_numpy(means, out), rows.raw, out)
        result[missing] = full[missing]
        warn_nan_rows(self, "impute", result, reason=(
            "their observed values lie so far from the training data that the importance "
            "weight of every draw underflows (score_samples gives them -inf) or the network's "
            "computation overflows, so their missing entries cannot be estimated"))
        return result

    def sample(self, n_samples=1, random_state=None, *, return_mean=False, latent="prior",
               covariates=None):
        """Generate rows by ancestral sampling: z, then x ~ p(x | z) (or p(x | z, c)).

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows to generate.
        random_state : int, RandomState instance or None, default=None
            Seed of the draws; None uses the estimator's ``random_state``.
        return_mean : bool, default=False
            Return the decoded mean E[x | z] instead of a draw from p(x | z).
        latent : {"prior", "aggregated_posterior", "fitted"}, default="prior"
            Where z comes from: the prior N(0, I), or the aggregated posterior of the training
            data (pick a training row at random, then z ~ q(z | x_row)), which follows the
            data more closely when q does not match the prior. The rows come from a uniform
            random sample of at most 100,000 of all rows trained on (``fit``, and every later
            ``partial_fit`` or warm start), kept as their codes (the mean and variance of
            q(z | x_row) from the encoder at the end of the call that trained on the row), or,
            with ``store_training_rows=True``, as rows encoded by the current encoder.
            "fitted" draws z from ``latent_density_``, a Gaussian mixture with
            ``latent_density_components`` components fitted to the posterior means of those
            rows (ex-post density estimation, Ghosh et al. 2020): it follows the codes like the
            aggregated posterior, but smooths between the sampled rows and drops the encoder
            noise; on digits, more of its samples lie as close to a held-out digit as real
            digits lie to each other (see the README). With covariates, the codes of the
            sampled rows are those given their own covariates, and every code is decoded
            with ``covariates``.
        covariates : array-like, default=None
            Required when the model has covariates, else must be None: the values of the
            covariate columns to generate for, in X's units (e.g. the class label, not its
            one-hot code), as one row (shared by all samples) or ``n_samples`` rows, in the
            order of the columns in X; rows of X itself (all ``n_features_in_`` columns) are
            accepted too. With one covariate column, a scalar or a 1-D array of
            ``n_samples`` values works.

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`)
            Generated rows (float64). With covariates, in X's layout, the covariate columns
            holding the given values, so ``score_samples(sample(...))`` is log p(x | c) of
            the samples.
        """
        return self._sample(n_samples, random_state, return_mean, latent, covariates)

    def _sample(self, n_samples, random_state, return_mean, latent, covariates, emit=None):
        """:meth:`sample`; ``emit(params, generator, return_mean)``, when given, turns the
        decoder output into the rows (in place of the network's mean or draw)."""
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples={n_samples!r} must be a positive integer.")
        if latent not in ("prior", "aggregated_posterior", "fitted"):
            raise ValueError(
                f"latent={latent!r} must be 'prior', 'aggregated_posterior' or 'fitted'."
            )
        layout = self._covariate_layout()
        C, raw = layout.given(covariates, n_samples, "sample")
        seed = seed_from(self.random_state if random_state is None else random_state)
        generator = torch.Generator(device=self._device).manual_seed(seed)
        options = {"generator": generator, "device": self._device, "dtype": self._dtype}
        with torch.inference_mode():
            z = torch.randn((n_samples, self.n_components_), **options)
            if latent == "aggregated_posterior":
                rows = torch.randint(
                    self._reservoir["keys"].shape[0], (n_samples,), generator=generator,
                    device=self._device,
                )
                mean, logvar = self._reservoir_codes(rows)
                z = mean + torch.exp(0.5 * logvar) * z
            elif latent == "fitted":
                z = self._draw_fitted_latent(z, generator)
            module = self.module_
            params = module.decode(z) if C is None else module.decode(z, C)
            if emit is not None:
                X = emit(params, generator, return_mean)
            else:
                X = module.mean(params) if return_mean else module.sample(params, generator)
        X = to_numpy(X, np.float64)
        warn_nan_rows(self, "sample", X, reason="the decoder's computation overflows for them")
        return layout.full_rows(X, raw, np.float64)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = super().__getstate__()
        module = state.get("module_")
        if isinstance(module, torch.nn.Module):
            state["module_"] = {
                "spec": state["_module_spec"],
                "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            }
        optimizer = state.get("_optimizer")
        if isinstance(optimizer, torch.optim.Optimizer):
            state["_optimizer"] = _to_cpu(optimizer.state_dict())
        history = state.get("_history")
        if history is not None and history.best_state is not None:
            state["_history"] = TrainingHistory(**{**vars(history), "best_state": None})
        return state

    def _restore_device(self):
        packed = self.__dict__.get("module_")
        if isinstance(packed, dict):
            module = self._build_module(packed["spec"])
            module.load_state_dict(packed["state_dict"])
            self.module_ = module
            optimizer_state = self.__dict__.get("_optimizer")
            optimizer = make_optimizer(module.parameters(), self.learning_rate_init)
            if isinstance(optimizer_state, dict):
                load_optimizer_state(optimizer, optimizer_state)
            self._optimizer = optimizer
        self._place_reservoir()


def _to_cpu(value):
    """A copy of a (nested) optimizer state dict with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value
