"""Covariate columns of a conditional VAE: which columns of X, how they are encoded, and
the covariate values that ``sample`` / ``inverse_transform`` / ``interpolate`` are given.

The VAE estimators keep their covariates in X (sklearn's ``transform`` takes no ``y``, so a
batch or class column must travel with the rows through ``Pipeline`` and ``GridSearchCV``).
This module turns the ``covariates`` parameter into column indices, fits the encoding of
those columns (one-hot or standardization, with scikit-learn's own transformers) and checks
covariate values given at prediction time, so the estimators only pass tensors along.
:class:`CovariateLayout` ties these together for one estimator's state.
"""

from numbers import Integral

import numpy as np
import torch
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_array

from .._backend import to_numpy

_SHOWN = 10  # names or categories listed in a message before it says "..."


def _listing(values):
    values = [_show(v) for v in values]
    more = ", ..." if len(values) > _SHOWN else ""
    return "[" + ", ".join(values[:_SHOWN]) + more + "]"


def _show(value):
    """A value for a message: 3 rather than 3.0, names quoted."""
    if isinstance(value, str):
        return repr(value)
    value = float(value)
    return f"{value:g}" if np.isfinite(value) else str(value)


def resolve_columns(covariates, n_features, feature_names=None):
    """Column indices (sorted, as in X) named by the ``covariates`` parameter, or None.

    ``covariates`` is None, an int, a str, or a list / array of ints (negative ones count
    from the end), of strs (names in ``feature_names``, the ``feature_names_in_`` of a
    DataFrame X) or of bools (a mask of length ``n_features``). None or an empty selection
    means no covariates.
    """
    if covariates is None:
        return None
    shown = f"covariates={covariates!r}"
    if isinstance(covariates, (str, Integral)) and not isinstance(covariates, (bool, np.bool_)):
        keys = [covariates]
    else:
        try:
            keys = list(np.asarray(covariates, dtype=object).ravel())
        except (TypeError, ValueError):
            keys = None
        if keys is None or np.ndim(covariates) != 1:
            raise ValueError(
                f"{shown} must be None, a column index or name, a list of them, or a boolean "
                f"mask of length n_features={n_features}."
            )
    if not keys:
        return None
    kinds = {
        "bool" if isinstance(k, (bool, np.bool_))
        else "int" if isinstance(k, (Integral, np.integer))
        else "str" if isinstance(k, str)
        else "other"
        for k in keys
    }
    if len(kinds) != 1 or kinds == {"other"}:
        raise ValueError(
            f"{shown} must hold only column indices (int), only column names (str) or be a "
            "boolean mask; it mixes kinds or holds something else."
        )
    kind = kinds.pop()
    if kind == "bool":
        if len(keys) != n_features:
            raise ValueError(
                f"{shown} is a boolean mask of length {len(keys)}, but X has "
                f"n_features={n_features} columns: the mask needs one entry per column."
            )
        columns = [j for j, k in enumerate(keys) if k]
        if not columns:
            return None
    elif kind == "int":
        bad = [int(k) for k in keys if not -n_features <= int(k) < n_features]
        if bad:
            raise ValueError(
                f"{shown} holds column index {bad[0]}, but X has n_features={n_features} "
                f"columns (valid indices are {-n_features}..{n_features - 1})."
            )
        columns = [int(k) % n_features for k in keys]
    else:
        if feature_names is None:
            raise ValueError(
                f"{shown} names columns, but X has no column names. Fit with a pandas "
                "DataFrame whose columns are strings, or give column indices."
            )
        position = {name: j for j, name in enumerate(feature_names)}
        unknown = [k for k in keys if k not in position]
        if unknown:
            raise ValueError(
                f"{shown} names {_show(unknown[0])}, which is not a column of X. Its columns "
                f"are {_listing(list(feature_names))}."
            )
        columns = [position[k] for k in keys]
    if len(set(columns)) != len(columns):
        raise ValueError(f"{shown} names a column more than once; name each column once.")
    if len(columns) == n_features:
        raise ValueError(
            f"{shown} selects all n_features={n_features} columns of X, leaving none to "
            "model. Covariates are conditioned on: at least one column must remain."
        )
    return np.array(sorted(columns), dtype=np.intp)


def column_label(j, feature_names=None):
    """How messages name column ``j`` of X."""
    if feature_names is not None:
        return f"{feature_names[j]!r} (column {j} of X)"
    return f"column {j} of X"


def check_observed(raw, columns, feature_names, where):
    """Raise when covariate values (rows of ``raw``, one column per covariate) are not finite."""
    bad = ~np.isfinite(raw)
    if not bad.any():
        return
    row, col = (int(i[0]) for i in np.nonzero(bad))
    count = int(bad[:, col].sum())
    raise ValueError(
        f"{where}: covariate {column_label(columns[col], feature_names)} holds {count} "
        f"missing or infinite value(s) (the first in row {row}: {_show(raw[row, col])}). "
        "Covariates are conditioned on, so they must be observed even where the model "
        "accepts NaN in the modeled columns. Drop those rows, or fill the covariate first."
    )


def fit_encoder(raw, encoding):
    """The fitted scikit-learn transformer of the covariate columns ``raw`` (n, m)."""
    if encoding == "onehot":
        encoder = OneHotEncoder(sparse_output=False, dtype=np.float64, handle_unknown="error")
    else:
        encoder = StandardScaler()
    return encoder.fit(raw)


def encoded_width(encoder):
    """Columns a fitted covariate encoder (OneHotEncoder or StandardScaler) makes, or None."""
    return None if encoder is None else len(encoder.get_feature_names_out())


def encode(encoder, raw, columns, feature_names, where):
    """``encoder.transform(raw)``, with a clear error for a category fit did not see."""
    if isinstance(encoder, OneHotEncoder):
        for col, categories in enumerate(encoder.categories_):
            unseen = ~np.isin(raw[:, col], categories)
            if unseen.any():
                row = int(np.argmax(unseen))
                raise ValueError(
                    f"{where}: covariate {column_label(columns[col], feature_names)} holds the "
                    f"category {_show(raw[row, col])} (row {row}), which fit did not see; its "
                    f"categories are {_listing(categories)}. The model has no encoding for a "
                    "new category: refit with rows of it, or map it to a seen one."
                )
    return encoder.transform(raw)


def covariate_rows(values, n_rows, columns, n_features, feature_names, where):
    """The covariates given to ``sample`` and friends as a float64 array (n_rows, m).

    ``values`` is, in X's units (a class label, not its one-hot code): one row (broadcast to
    ``n_rows``) or ``n_rows`` rows of the m covariate columns, in their order in X; or rows
    of X itself (all n_features columns, the covariate ones are taken; a 1-D row of X too);
    or, with a single covariate column, a 1-D array of one value per output row. A DataFrame
    whose columns include the covariates' names is read by name.
    """
    m = len(columns)
    names = None if feature_names is None else [feature_names[j] for j in columns]
    if names is not None and hasattr(values, "columns"):
        missing = [name for name in names if name not in set(values.columns)]
        if missing:
            raise ValueError(
                f"{where}: the DataFrame passed as covariates lacks the covariate column(s) "
                f"{_listing(missing)}; it has {_listing(list(values.columns))}."
            )
        values = values[names]
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    if not hasattr(values, "columns") and np.ndim(values) == 0:
        values = np.reshape(values, (1,))  # a scalar: one value of one covariate
    try:
        array = check_array(values, dtype=np.float64, ensure_2d=False, ensure_all_finite=False,
                            input_name="covariates")
    except ValueError as error:
        raise ValueError(
            f"{where}: covariates must be numeric values of the covariate columns ({error})."
        ) from error
    if array.ndim == 1:
        if array.shape[0] == m:
            array = array.reshape(1, m)
        elif m == 1 and array.shape[0] == n_rows:
            array = array.reshape(-1, 1)  # one value per output row
        elif array.shape[0] == n_features:
            array = array.reshape(1, n_features)  # one row of X
        else:
            raise ValueError(
                f"{where}: covariates has shape {array.shape}, but the model has {m} covariate "
                f"column(s) and {n_rows} output row(s); give one row of {m} values, a row of X "
                f"({n_features} values), or a 2-D array with {m} columns."
            )
    if array.ndim != 2:
        raise ValueError(f"{where}: covariates must be 1-D or 2-D; got shape {array.shape}.")
    if array.shape[1] == n_features and n_features != m:
        array = array[:, columns]  # rows of X: take their covariate columns
    elif array.shape[1] != m:
        raise ValueError(
            f"{where}: covariates has {array.shape[1]} columns, but the model has {m} covariate "
            f"column(s) ({', '.join(column_label(j, feature_names) for j in columns)}); give "
            f"their values ({m} columns) or rows of X ({n_features} columns)."
        )
    check_observed(array, columns, feature_names, where)
    if array.shape[0] == 1 and n_rows != 1:
        array = np.repeat(array, n_rows, axis=0)
    elif array.shape[0] != n_rows:
        raise ValueError(
            f"{where}: covariates has {array.shape[0]} rows, but {n_rows} are needed: give one "
            f"row (used for every output row) or {n_rows} rows."
        )
    return np.ascontiguousarray(array)


class CovariateLayout:
    """Where a VAE's covariates lie in X and how they are encoded (``columns`` None: none).

    Built from the estimator's state by ``BaseVAE._covariate_layout``; holds no data. Tensors
    it makes are on ``device`` in ``dtype``; ``owner`` is the estimator's class name.
    """

    def __init__(self, columns, encoder, n_features, feature_names, device, dtype, owner):
        self.columns = columns
        self.encoder = encoder
        self.n_features = n_features
        self.feature_names = feature_names
        self.device = device
        self.dtype = dtype
        self.owner = owner

    def modeled(self):
        """The indices of the modeled (non-covariate) columns of X."""
        return np.setdiff1d(np.arange(self.n_features), self.columns)

    def split(self, X, where):
        """A validated X (a tensor, any float type) -> (its modeled columns as given, the
        covariate columns as a float64 ndarray, checked observed)."""
        modeled = np.setdiff1d(np.arange(X.shape[1]), self.columns)
        raw = to_numpy(X[:, torch.as_tensor(self.columns, device=X.device)], np.float64)
        check_observed(raw, self.columns, self.feature_names, where)
        return X[:, torch.as_tensor(modeled, device=X.device)], raw

    def encoded(self, raw, where):
        """Raw covariate values -> the encoded tensor the network is given (``C=``)."""
        values = encode(self.encoder, raw, self.columns, self.feature_names, where)
        return torch.as_tensor(values, device=self.device).to(self.dtype)

    def given(self, covariates, n_rows, where):
        """The ``covariates=`` argument of ``sample`` and friends -> (encoded tensor, raw
        values), both None without covariates (then none may be given)."""
        columns = self.columns
        if columns is None:
            if covariates is not None:
                raise ValueError(
                    f"{where}: this {self.owner} has no covariates (it was fitted with "
                    "covariates=None), so covariates must be None."
                )
            return None, None
        if covariates is None:
            names = ", ".join(str(self.feature_names[j]) if self.feature_names is not None
                              else str(j) for j in columns)
            raise ValueError(
                f"{where} needs covariates: this {self.owner} is conditioned on the "
                f"column(s) [{names}] of X. Pass covariates= with their values in X's units (e.g. "
                f"the class label, not its one-hot code): one row, used for every output row, or "
                f"{n_rows} rows."
            )
        raw = covariate_rows(covariates, n_rows, columns, self.n_features,
                             self.feature_names, where)
        return self.encoded(raw, where), raw

    def full_rows(self, values, raw, dtype):
        """Rows of the modeled columns ``values`` (ndarray) -> rows in X's layout, the
        covariate columns holding ``raw``; ``values`` itself without covariates."""
        if self.columns is None:
            return values.astype(dtype, copy=False)
        full = np.empty((values.shape[0], self.n_features), dtype=dtype)
        full[:, self.modeled()] = values
        full[:, self.columns] = raw
        return full
