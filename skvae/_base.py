"""What every skvae estimator shares: input validation, device state, feature names, score,
all-or-nothing fitting, pickling."""

import contextvars
import functools
import sys
import warnings

import numpy as np
import sklearn
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted

from ._backend import as_tensor, fallback_device, resolve_device, resolve_dtype, to_numpy
from ._compat import validate_data
from ._version import __version__


class InconsistentVersionWarning(UserWarning):
    """A fitted skvae model was unpickled under other versions than it was pickled with.

    Parameters
    ----------
    estimator_name : str
        Class of the unpickled estimator.
    mismatched : dict
        ``{package: (version when pickled, version now)}`` for each package that differs.

    Attributes
    ----------
    estimator_name : str
        Class of the unpickled estimator.
    mismatched : dict
        ``{package: (version when pickled, version now)}`` for each package that differs.
    """

    def __init__(self, estimator_name, mismatched):
        self.estimator_name = estimator_name
        self.mismatched = dict(mismatched)

    def __str__(self):
        changes = ", ".join(f"{name} {then} -> {now}" for name, (then, now) in self.mismatched.items())
        return (
            f"This {self.estimator_name} was pickled under other versions than the ones loading "
            f"it ({changes}). It may load wrongly or give other results; refit it under the "
            "current versions to be sure."
        )


def _versions():
    """The versions a pickle records: the packages whose changes can alter a fitted model."""
    return {"skvae": __version__, "scikit-learn": sklearn.__version__, "torch": torch.__version__}


def _on_cpu(value):
    """``value`` with every tensor in it on the CPU (tensors, and tuples, lists and dicts of
    them), so that a model fitted on a GPU unpickles on a machine without one. Other objects
    holding tensors are moved by the estimator's own ``__getstate__``."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (tuple, list)):
        return type(value)(_on_cpu(item) for item in value)
    if isinstance(value, dict):
        return {key: _on_cpu(item) for key, item in value.items()}
    return value


def fit_all_or_nothing(method):
    """Make a fitting method atomic: when it raises, the estimator is as it was before the call.

    Validation records ``n_features_in_``, the device and the dtype before later checks can
    fail; without this, a failed ``fit`` would leave an estimator that looks fitted to
    ``check_is_fitted`` but lacks its parameters, and a failed refit would mix the old model
    with the new input's shape. The instance dictionary is restored as a shallow copy, which
    is enough because no fit changes in place an object the estimator holds: every fit
    assigns new objects to its fitted attributes (a VAE that continues training trains a copy
    of its network and optimizer). The restore is one assignment, so a second Ctrl-C cannot
    stop it halfway. Torch's grad mode is put back too: an interrupt that lands just before a
    ``with torch.no_grad()`` block exits (in our code or in torch's optimizer step) skips
    the exit and would leave gradients off for the whole process.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        before, grad = dict(self.__dict__), torch.is_grad_enabled()
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            torch.set_grad_enabled(grad)
            self.__dict__ = before
            raise

    return wrapper


# Index in X of the first row a blockwise method is working on (0 outside blockwise calls):
# a context variable, so concurrent calls from threads each see their own.
_ROW_OFFSET = contextvars.ContextVar("skvae_row_offset", default=0)


def _is_dask_array(X):
    """Whether ``X`` is a dask array (checked without importing dask)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "numblocks")


def _row_blocks(X):
    """The row blocks of a dask array ``X``, computed one at a time as numpy arrays.

    Blocks keep every column (a dask array chunked along columns is rechunked to whole rows
    first), so each is a complete set of rows; only one is in memory at a time.
    """
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2-D dask array for X, got shape {X.shape}. Reshape it with "
            "X.reshape(-1, 1) for a single feature."
        )
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    for i in range(X.numblocks[0]):
        yield np.asarray(X.blocks[i].compute())


# Rows of a numpy.memmap copied to a GPU at a time: the file is never copied to it whole.
DEVICE_BLOCK_BYTES = 64 * 2**20


def memmap_blocks(X):
    """Row slices of the 2-D memmap ``X`` of about ``DEVICE_BLOCK_BYTES`` each (views)."""
    rows = max(2, DEVICE_BLOCK_BYTES // max(1, X.shape[1] * X.itemsize))
    for start in range(0, X.shape[0], rows):
        yield X[start : start + rows]


def _streams_to_device(model, X):
    """Whether a per-row method reads the memmap ``X`` block by block: when the model's
    device is not the CPU (there, a memmap is viewed in place, without a copy)."""
    device = getattr(model, "_device", None)
    return (isinstance(X, np.memmap) and X.ndim == 2 and device is not None
            and torch.device(device).type != "cpu" and X.nbytes > DEVICE_BLOCK_BYTES)


def blockwise(method):
    """Let a per-row method take a dask array: it runs block by block, results concatenated.

    The method is called on each row block (a numpy array) as it would be on an array; its
    results (an array, a tuple of arrays as ``transform(X, return_std=True)`` returns, or a
    dict of arrays) are joined along the rows. A large memmap given to a model on a GPU is
    read the same way, so it is never copied to the device whole. Other input goes straight
    to the method.
    """

    @functools.wraps(method)
    def wrapper(self, X, *args, **kwargs):
        if _is_dask_array(X):
            blocks = _row_blocks(X)
        elif _streams_to_device(self, X):
            blocks = memmap_blocks(X)
        else:
            return method(self, X, *args, **kwargs)
        parts, start = [], 0
        for block in blocks:
            token = _ROW_OFFSET.set(start)  # warnings name rows of X, not of the block
            try:
                parts.append(method(self, block, *args, **kwargs))
            finally:
                _ROW_OFFSET.reset(token)
            start += block.shape[0]
        if not parts:
            return method(self, np.empty((0, X.shape[1])), *args, **kwargs)
        if isinstance(parts[0], tuple):
            return tuple(np.concatenate(column) for column in zip(*parts))
        if isinstance(parts[0], dict):  # e.g. score_breakdown: arrays by name
            return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        return np.concatenate(parts)

    return wrapper


def _output_dtype(X):
    """numpy dtype of what transform-like methods return for the caller's input.

    The one output rule of skvae: transform, inverse_transform and impute return float32 for
    float32 input (a float32 tensor, array or all-float32 DataFrame) and float64 otherwise,
    whatever precision the model computes in; score_samples, score and sample return float64.
    """
    if isinstance(X, torch.Tensor):
        return np.float32 if X.dtype == torch.float32 else np.float64
    dtypes = getattr(X, "dtypes", None)  # pandas DataFrame
    if dtypes is not None:
        try:
            kinds = {np.dtype(d) for d in dtypes}
        except TypeError:
            return np.float64
        return np.float32 if kinds == {np.dtype(np.float32)} else np.float64
    dtype = getattr(X, "dtype", None)
    return np.float32 if dtype == np.float32 else np.float64


def _caller_values(X, dtype):
    """A new numpy array of the caller's values of ``X`` in ``dtype`` (NaN kept): what
    ``impute`` returns for the observed entries, never rounded through the model's dtype."""
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy().astype(dtype, copy=True)
    return check_array(_numeric_columns(X), dtype=dtype, ensure_all_finite=False, copy=True)


def _is_dataframe(X):
    """Whether ``X`` is a pandas DataFrame (checked without importing pandas)."""
    return type(X).__module__.split(".")[0] == "pandas" and hasattr(X, "columns")


def _numeric_columns(X):
    """``X`` with the object and text columns of a DataFrame made numbers, else ``X`` itself.

    pandas' missing markers (``pd.NA``, ``None``) in such a column become NaN, as they do in
    pandas' nullable numeric columns; a column of dates, durations or periods, or one holding
    text that is not a number, is an error naming the column.
    """
    if not _is_dataframe(X):
        return X
    import pandas as pd  # X is a DataFrame: pandas is there

    converted = {}
    for j, (name, dtype) in enumerate(X.dtypes.items()):
        if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(
                dtype, pd.PeriodDtype) or pd.api.types.is_timedelta64_dtype(dtype):
            raise ValueError(
                f"X column {name!r} holds {dtype} values (dates or durations), not numbers. "
                "Convert it first (e.g. to elapsed seconds, or to calendar features such as "
                "the day of the year), or drop it."
            )
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            try:
                converted[j] = pd.to_numeric(X.iloc[:, j]).to_numpy(dtype=np.float64,
                                                                   na_value=np.nan)
            except (ValueError, TypeError) as error:
                raise ValueError(
                    f"X column {name!r} must be numeric, but it holds non-numeric values "
                    f"({error}). Encode text or categorical columns as numbers first, e.g. "
                    "with sklearn.preprocessing.OneHotEncoder in a ColumnTransformer."
                ) from error
    if not converted:
        return X
    X = X.copy(deep=False)
    for j, column in converted.items():
        X.isetitem(j, column)
    return X


def warn(message, category=UserWarning):
    """``warnings.warn`` at the line of the first caller outside skvae and scikit-learn, so a
    warning names the user's line (and its module, for filters), however many wrappers
    (``_fit_context``, ``blockwise``, a Pipeline) stand between."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in (
            "skvae", "sklearn"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)


def named_rows(flags):
    """The row indices where ``flags`` (a boolean ndarray, rows first) holds, as ``[3, 17]``,
    the first ten only (``[3, 17, ...] (12 rows)``) when there are more; inside a
    :func:`blockwise` call, indices of the whole X."""
    rows = np.flatnonzero(flags.reshape(flags.shape[0], -1).any(axis=1)) + _ROW_OFFSET.get()
    head = ", ".join(str(i) for i in rows[:10])
    return f"[{head}]" if rows.size <= 10 else f"[{head}, ...] ({rows.size} rows)"


def _model_dtype(estimator):
    """The estimator's computing dtype as a name ('float32'), and the advice its messages end
    with: rescale X, or (in float32) fit in float64."""
    dtype = str(getattr(estimator, "_dtype", "float64")).replace("torch.", "")
    hint = getattr(estimator, "_far_rows_hint", "Check the scale of X (e.g. a missing "
                                                "StandardScaler)")
    if dtype == "float32":
        hint += ", or fit with dtype='float64'"
    return dtype, hint + "."


def scores_or_minus_inf(estimator, *scores):
    """Per-row scores (float64 ndarrays) with NaN replaced by -inf, and a warning naming the
    rows that score -inf: a row the model cannot score is the most abnormal row, never NaN.

    A row scores -inf when its value is below the range of the model's dtype or when
    computing it overflows (NaN): both are told, with the rows, in one warning.
    """
    cleaned = tuple(np.where(np.isnan(s), -np.inf, s) for s in scores)
    lowest = np.zeros(cleaned[0].shape, dtype=bool)
    for s in cleaned:
        lowest |= s == -np.inf
    if lowest.any():
        dtype, hint = _model_dtype(estimator)
        warn(
            f"{type(estimator).__name__}: row(s) {named_rows(lowest)} of X lie so far from the "
            f"training data that their log-likelihood cannot be computed in {dtype} (it is below "
            f"the range of {dtype}, or computing it overflows): they score -inf, the lowest "
            f"(most abnormal) value. {hint}",
            UserWarning,
        )
    return cleaned if len(cleaned) > 1 else cleaned[0]


def warn_nan_rows(estimator, method, *outputs, reason=None):
    """Warn, naming the rows, where any of ``outputs`` (ndarrays, rows first; None skipped)
    holds NaN; ``reason`` says why those values are NaN (default: the computation overflows)."""
    bad = None
    for values in outputs:
        if values is None or values.shape[0] == 0:
            continue
        flags = np.isnan(values).reshape(values.shape[0], -1).any(axis=1)
        bad = flags if bad is None else bad | flags
    if bad is None or not bad.any():
        return
    dtype, hint = _model_dtype(estimator)
    if reason is None:
        reason = f"their values are so large that the model's computation overflows {dtype}"
    warn(
        f"{type(estimator).__name__}.{method}: the results of row(s) {named_rows(bad)} are "
        f"NaN: {reason}. {hint}",
        UserWarning,
    )


class BaseLatentModel(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class of the skvae estimators (not public).

    Subclasses implement ``fit``, ``transform``, ``inverse_transform``, ``score_samples`` and
    ``sample``; this class gives them one way to validate input and land it on the device, and
    the methods that follow from those (``score``, feature names, pickling).
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # One source of truth for NaN: the model's policy (see _nan_policy).
        tags.input_tags.allow_nan = self._nan_policy() is None
        # Computation runs in self.dtype; transform-like outputs follow the input's float type
        # (see _output_dtype).
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # Subclasses say whether NaN entries are accepted (as missing values) by ``fit``.
    def _nan_policy(self):
        """None when NaN is accepted, else the message hint telling the user what to do."""
        return (
            f"{type(self).__name__} does not accept missing values encoded as NaN. "
            "Impute them first, e.g. with sklearn.impute.SimpleImputer in a Pipeline."
        )

    # ------------------------------------------------------------------ validation
    def _check_input(self, X, *, reset, ensure_min_samples=1, return_has_nan=False,
                     check_finite=True, lazy_cast=False, cast=True):
        """Validate ``X`` and return it as a tensor on the estimator's device and dtype.

        ``reset=True`` (in ``fit``) also resolves ``device`` and ``dtype`` and records
        ``n_features_in_`` / ``feature_names_in_``; otherwise those are checked against ``X``.
        The caller's array is never written to: the tensor may share its memory, so code that
        receives it must not modify it in place. With ``return_has_nan``, also says whether X
        holds NaN (known from the same pass over the data that rules out infinity).
        ``check_finite=False`` leaves NaN and infinity for the caller, which must then call
        :meth:`_check_finite` itself before any value computed from X is returned.
        ``lazy_cast=True`` keeps float32 input as float32 in a float64 model, for callers that
        cast it chunk by chunk (a whole float64 copy would double the memory held).
        ``cast=False`` keeps the float type validation gave (float32, or float64 for any
        other input), for callers that take some columns at full precision and cast the rest
        themselves; those call :meth:`_check_given` on the columns they model.
        """
        if reset:
            self._resolve_placement()
        if isinstance(X, torch.Tensor):
            X = self._check_tensor(X, reset=reset, ensure_min_samples=ensure_min_samples)
        else:
            X = self._check_array(X, reset=reset, ensure_min_samples=ensure_min_samples)
            X = as_tensor(X, device=self._device, dtype=torch.float32 if X.dtype == np.float32
                          else torch.float64)
        given = X
        if cast and not (lazy_cast and X.dtype == torch.float32):
            if reset and X.dtype == torch.float64 and self._dtype == torch.float32:
                self._check_float32_holds(X)
            X = X.to(self._dtype)
        if not check_finite:
            if cast:
                self._check_given(given)
            return X
        has_nan = self._check_finite(X)
        if cast:  # after the NaN and infinity checks, whose errors come first
            self._check_given(given)
        return (X, has_nan) if return_has_nan else X

    def _resolve_placement(self):
        """Set ``_device`` and ``_dtype`` from the ``device`` and ``dtype`` parameters.

        Every fit does, a fit that continues a fitted model (``partial_fit``, a warm start)
        too: it then moves the fitted state there, so a changed ``device`` or ``dtype`` is
        followed, and one that does not exist here raises the usual clear error.
        """
        self._device = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype)

    def _check_array(self, X, *, reset, ensure_min_samples):
        try:
            return validate_data(
                self,
                _numeric_columns(X),
                reset=reset,
                accept_sparse=False,
                dtype=[np.float64, np.float32],
                ensure_all_finite=False,
                ensure_min_samples=ensure_min_samples,
            )
        except ValueError as error:
            if "could not convert" in str(error) or "string" in str(error).lower():
                raise ValueError(
                    f"X must be numeric, but it holds non-numeric values ({error}). Encode text "
                    "or categorical columns as numbers first, e.g. with "
                    "sklearn.preprocessing.OneHotEncoder in a ColumnTransformer."
                ) from error
            raise

    def _check_tensor(self, X, *, reset, ensure_min_samples):
        if X.ndim != 2:
            raise ValueError(
                f"Expected a 2-D tensor for X, got shape {tuple(X.shape)}. Reshape it with "
                "X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single sample."
            )
        if X.is_complex() or not (X.is_floating_point() or X.dtype in (torch.int32, torch.int64,
                                                                        torch.int16, torch.int8,
                                                                        torch.uint8, torch.bool)):
            raise ValueError(f"X must hold real numbers; got a tensor of dtype {X.dtype}.")
        # The shape checks (sample and feature counts, n_features_in_, feature names) are
        # scikit-learn's, run on a zero-strided stand-in of X's shape: no copy of X, and no trip
        # of a CUDA tensor to the host. (The checks above are the tensor's own: check_array
        # would print the stand-in's values for a 1-D X, and knows no torch dtypes.)
        validate_data(self, np.broadcast_to(np.zeros((), dtype=np.float64), tuple(X.shape)),
                      reset=reset, dtype=None, ensure_all_finite=False,
                      ensure_min_samples=ensure_min_samples)
        # float32 stays float32 and anything else becomes float64 (exact for integers up to
        # 2**53), as for arrays: the values as given reach _check_given before any cast.
        dtype = torch.float32 if X.dtype == torch.float32 else torch.float64
        return X.detach().to(device=self._device, dtype=dtype)

    def _check_given(self, X):
        """Raise if the values of ``X`` as given (float32 or float64, before the cast to the
        model's dtype; NaN and infinity left to :meth:`_check_finite`) are not modelled."""

    def _check_float32_holds(self, X):
        """Raise when a float64 column varies but its float32 cast does not (in ``fit``).

        Two causes: values below float32's smallest normal (about 1.2e-38) become subnormal or
        0, and a spread below float32's resolution at the column's magnitude (7 digits: a
        column of 1e12 + noise) rounds away. Either way a float32 model would silently see a
        constant.
        """
        rows = max(1, 2**20 // max(1, X.shape[1]))
        low = high = None  # per column, row 0: in float64, row 1: after the float32 cast
        for i in range(0, X.shape[0], rows):  # chunks: no float32 copy of all of X at once
            chunk = X[i : i + rows]
            chunk_low, chunk_high = torch.aminmax(torch.stack([chunk, chunk.float().double()]),
                                                  dim=1)
            low = chunk_low if low is None else torch.minimum(low, chunk_low)
            high = chunk_high if high is None else torch.maximum(high, chunk_high)
        if low is None:
            return
        tiny = torch.finfo(torch.float32).tiny
        width64, width32 = high - low
        lost = (width64 > 0) & (width32 < tiny)  # NaN widths (gaps) compare False
        if bool(lost.any()):
            raise ValueError(self._float32_lost_message(lost, low[0], high[0], width64))

    def _float32_lost_message(self, lost, low, high, width):
        """The error of :meth:`_check_float32_holds` for the ``lost`` columns, by cause."""
        tiny = torch.finfo(torch.float32).tiny
        magnitude = torch.maximum(low.abs(), high.abs())
        small = lost & (magnitude < tiny)
        columns = torch.nonzero(small if bool(small.any()) else lost).flatten().tolist()
        start = (f"X column(s) {columns[:10]} vary in float64 but not in float32, so this "
                 f"{type(self).__name__} computing in float32 would see them as constant: ")
        if bool(small.any()):
            cause = (f"their values are below {tiny:.3g}, the smallest normal float32. Rescale "
                     "those columns (e.g. sklearn.preprocessing.StandardScaler in a Pipeline), "
                     "drop them, or fit with dtype='float64'.")
        else:
            j = columns[0]
            cause = (f"their spread is below float32's resolution at their magnitude (column "
                     f"{j}: values of about {float(magnitude[j]):.3g} that vary by "
                     f"{float(width[j]):.3g}; float32 keeps about 7 significant digits). "
                     "Centre them (e.g. sklearn.preprocessing.StandardScaler in a Pipeline) "
                     "or fit with dtype='float64'.")
        return start + cause

    def _check_finite(self, X):
        """Raise on infinity, and on NaN unless the model accepts it; return whether NaN is in X."""
        # The common case in one cheap pass: a finite sum means no NaN and no infinity. A sum
        # of finite values can overflow (float32 entries of 1e37), so a non-finite sum only
        # sends us to the exact checks below.
        if bool(torch.isfinite(X.sum())):
            return False
        # Row chunks: torch.isinf and isnan make temporaries the size of what they examine.
        rows = max(1, 2**20 // max(1, X.shape[1]))
        chunks = [X[i : i + rows] for i in range(0, X.shape[0], rows)]
        if any(bool(torch.isinf(chunk).any()) for chunk in chunks):
            raise ValueError(self._infinity_message(X))
        if not any(bool(torch.isnan(chunk).any()) for chunk in chunks):
            return False  # finite entries whose sum overflowed
        hint = self._nan_policy()
        if hint is not None:
            raise ValueError(f"Input X contains NaN. {hint}")
        return True

    def _infinity_message(self, X):
        """The error for infinite entries in ``X`` (as validated, in ``X.dtype``)."""
        message = "X contains infinity"
        cast = X.dtype == torch.float32 and self._dtype == torch.float32
        if cast:
            message += (f", or values beyond {torch.finfo(torch.float32).max:.3g} in magnitude, "
                        "which become infinite in float32")
        message += ". Remove or replace the infinite entries"
        if self._nan_policy() is None:
            message += (" (or set them to NaN if they stand for missing values: this model "
                        "treats NaN as missing)")
        if cast:
            message += f". For values beyond the float32 range, {self._range_hint()}"
        return message + "."

    def _range_hint(self):
        """How to bring values beyond the float32 range within a model's reach."""
        hint = "rescale X (e.g. with sklearn.preprocessing.StandardScaler)"
        if self._dtype == torch.float32:
            hint += " or fit with dtype='float64'"
        return hint

    def _check_latent(self, Z):
        """Validate latent codes for ``inverse_transform``: (n, n_components_) -> tensor."""
        if isinstance(Z, torch.Tensor):
            Z = Z.detach()
            if Z.ndim != 2:
                raise ValueError(f"Expected a 2-D tensor for Z, got shape {tuple(Z.shape)}.")
        else:
            Z = check_array(Z, dtype=[np.float64, np.float32], input_name="Z")
        if Z.shape[1] != self.n_components_:
            raise ValueError(
                f"Z has {Z.shape[1]} columns, but {type(self).__name__} has "
                f"n_components_={self.n_components_}: pass the output of transform."
            )
        Z = as_tensor(Z, device=self._device, dtype=self._dtype)
        if not torch.isfinite(Z).all():
            raise ValueError("Z contains NaN or infinity; latent codes must be finite.")
        return Z

    # ------------------------------------------------------------------ constant columns
    def _note_column_range(self, X, *, reset, columns=None):
        """Track the range of each column of the training rows ``X`` (NaN ignored).

        ``reset`` starts afresh (a new fit), else the range of the rows seen before is
        widened (``partial_fit``, a warm start, the next block of a stream). ``columns`` are
        the indices in the caller's X of the columns of ``X`` (None: all, in order).
        """
        if reset or getattr(self, "_column_low", None) is None:
            self._column_low = self._column_high = None
        if X.shape[0] == 0:
            return
        rows = max(1, 2**20 // max(1, X.shape[1]))
        inf = torch.tensor(float("inf"), dtype=X.dtype, device=X.device)
        with torch.no_grad():
            for i in range(0, X.shape[0], rows):  # chunks: no full-size temporaries
                chunk = X[i : i + rows]
                missing = torch.isnan(chunk)
                low = to_numpy(torch.where(missing, inf, chunk).amin(dim=0), np.float64)
                high = to_numpy(torch.where(missing, -inf, chunk).amax(dim=0), np.float64)
                if self._column_low is not None:
                    low = np.minimum(self._column_low, low)
                    high = np.maximum(self._column_high, high)
                self._column_low, self._column_high = low, high
        self._column_index = (np.arange(X.shape[1]) if columns is None
                              else np.asarray(columns, dtype=np.intp))

    def _constant_columns(self):
        """Positions (in the tracked columns) of the columns constant in the training rows."""
        low = getattr(self, "_column_low", None)
        return np.empty(0, dtype=np.intp) if low is None else np.flatnonzero(
            low == self._column_high)

    def _column_labels(self, positions):
        """The caller's names (or indices) of the tracked columns at ``positions``, first 10."""
        index = self._column_index[positions[:10]]
        names = getattr(self, "feature_names_in_", None)
        labels = [str(names[j]) if names is not None else int(j) for j in index]
        more = len(positions) - len(labels)
        return f"{labels}" + (f" and {more} more" if more else "")

    def _warn_constant_columns(self):
        """Warn (at the end of a fit) about the columns constant in all training rows."""
        constant = self._constant_columns()
        if constant.size:
            warn(
                f"{type(self).__name__}: {constant.size} column(s) {self._column_labels(constant)} "
                "of X are constant in the training data: the model learns (almost) no variance "
                "there, so a later row with another value in such a column gets an extremely "
                "low score (score_samples then warns). Drop them before fitting (e.g. "
                "sklearn.feature_selection.VarianceThreshold in a Pipeline) unless later data "
                "hold the same values.",
                UserWarning,
            )

    def _warn_rows_off_constant_columns(self, X):
        """Warn once, naming the rows of the validated ``X`` (the tracked columns) whose
        value in a column constant in the training rows differs from that value."""
        constant = self._constant_columns()
        if not constant.size or X.shape[0] == 0:
            return
        with torch.no_grad():
            values = X[:, torch.as_tensor(constant, device=X.device)]
            training = torch.as_tensor(self._column_low[constant], device=X.device).to(X.dtype)
            off = (values != training) & ~torch.isnan(values)
            rows = to_numpy(off.any(dim=1))
            if not rows.any():
                return
            columns = constant[to_numpy(off.any(dim=0))]
        warn(
            f"{type(self).__name__}: row(s) {named_rows(rows)} of X differ from the value "
            f"that column(s) {self._column_labels(columns)} held in every training row. The "
            "model saw no variation there, so the scores of these rows mostly measure that "
            "difference and can be extremely low.",
            UserWarning,
        )

    # ------------------------------------------------------------------ shared surface
    def score(self, X, y=None):
        """Mean log-likelihood of the rows of ``X`` (the mean of :meth:`score_samples`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The data.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        score : float
            Mean log-likelihood per row, in nats. Higher is better, so model selection tools
            such as ``GridSearchCV`` maximise it.
        """
        return float(np.mean(self.score_samples(X)))

    @property
    def _n_features_out(self):
        return self.n_components_

    def _fitted_device(self):
        check_is_fitted(self)
        return self._device

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        # A copy: object.__getstate__ returns the instance's own __dict__, which must not change.
        state = dict(super().__getstate__())
        state["_pickled_versions"] = _versions()
        for key, value in state.items():
            state[key] = _on_cpu(value)
        if isinstance(state.get("_device"), torch.device):
            state["_device"] = str(state["_device"])
        return state

    def __setstate__(self, state):
        pickled = state.pop("_pickled_versions", {"skvae": "unknown"})
        current = _versions()
        mismatched = {
            name: (then, current[name]) for name, then in pickled.items()
            if name in current and then != current[name]
        }
        if mismatched:
            warn(InconsistentVersionWarning(type(self).__name__, mismatched))
        device = state.get("_device")
        if isinstance(device, str):
            state["_device"] = fallback_device(torch.device(device))
        super().__setstate__(state)
        self._restore_device()

    def _restore_device(self):
        """Move tensor state to ``self._device`` after unpickling (subclasses with tensors)."""
