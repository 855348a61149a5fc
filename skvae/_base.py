"""What every skvae estimator shares: input validation, device state, feature names, score,
all-or-nothing fitting, pickling."""

import functools
import warnings

import numpy as np
import sklearn
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted

from ._backend import as_tensor, fallback_device, resolve_device, resolve_dtype
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


def blockwise(method):
    """Let a per-row method take a dask array: it runs block by block, results concatenated.

    The method is called on each row block (a numpy array) as it would be on an array; its
    results (an array, a tuple of arrays as ``transform(X, return_std=True)`` returns, or a
    dict of arrays) are joined along the rows. Other input goes straight to the method.
    """

    @functools.wraps(method)
    def wrapper(self, X, *args, **kwargs):
        if not _is_dask_array(X):
            return method(self, X, *args, **kwargs)
        parts = [method(self, block, *args, **kwargs) for block in _row_blocks(X)]
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
    return check_array(X, dtype=dtype, ensure_all_finite=False, copy=True)


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
        ``cast=False`` keeps the float type validation gave (float32 or float64 for arrays),
        for callers that take some columns at full precision and cast the rest themselves.
        """
        if reset:
            self._resolve_placement()
        if isinstance(X, torch.Tensor):
            X = self._check_tensor(X, reset=reset, ensure_min_samples=ensure_min_samples)
        else:
            X = self._check_array(X, reset=reset, ensure_min_samples=ensure_min_samples)
            X = as_tensor(X, device=self._device, dtype=torch.float32 if X.dtype == np.float32
                          else torch.float64)
        if cast and not (lazy_cast and X.dtype == torch.float32):
            if reset and X.dtype == torch.float64 and self._dtype == torch.float32:
                self._check_float32_holds(X)
            X = X.to(self._dtype)
        if not check_finite:
            return X
        has_nan = self._check_finite(X)
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
                X,
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
        dtype = torch.float32 if X.dtype == torch.float32 else self._dtype
        return X.detach().to(device=self._device, dtype=dtype)

    def _check_float32_holds(self, X):
        """Raise when a float64 column varies but its float32 cast does not (in ``fit``).

        Values below float32's smallest normal (about 1.2e-38) become subnormal or 0 in a
        float32 model: a column made only of them would silently become a constant.
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
            columns = torch.nonzero(lost).flatten().tolist()
            raise ValueError(
                f"X column(s) {columns[:10]} vary in float64 but not in float32 (their values "
                f"are below {tiny:.3g}, the smallest normal float32), so this "
                f"{type(self).__name__} computing in float32 would see them as constant. "
                "Rescale those columns (e.g. sklearn.preprocessing.StandardScaler in a "
                "Pipeline), drop them, or fit with dtype='float64'."
            )

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
            limit = torch.finfo(X.dtype).max
            raise ValueError(
                "X contains infinity. Remove or replace the infinite entries (set them to NaN "
                f"if they stand for missing values{self._nan_accepted_suffix()}). Values beyond "
                f"{limit:.3g} also become infinite in {X.dtype}: rescale X, e.g. with "
                "sklearn.preprocessing.StandardScaler."
            )
        if not any(bool(torch.isnan(chunk).any()) for chunk in chunks):
            return False  # finite entries whose sum overflowed
        hint = self._nan_policy()
        if hint is not None:
            raise ValueError(f"Input X contains NaN. {hint}")
        return True

    def _nan_accepted_suffix(self):
        return ": this model treats NaN as missing" if self._nan_policy() is None else ""

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
            warnings.warn(InconsistentVersionWarning(type(self).__name__, mismatched))
        device = state.get("_device")
        if isinstance(device, str):
            state["_device"] = fallback_device(torch.device(device))
        super().__setstate__(state)
        self._restore_device()

    def _restore_device(self):
        """Move tensor state to ``self._device`` after unpickling (subclasses with tensors)."""
