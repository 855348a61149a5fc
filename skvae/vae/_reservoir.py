"""The uniform sample of training rows behind ``sample(latent="aggregated_posterior")`` and
``latent_density_``, as the fitted model keeps it.

A reservoir is a dict of tensors with one entry per sampled row: ``"keys"`` (independent
uniform float64 keys; the rows with the smallest keys form the sample, so merging the
sample of earlier calls with a new chunk by their keys gives a uniform sample of all rows
seen: bottom-k sampling) and either the row's codes, ``"mean"`` and ``"logvar"`` of
q(z | x) (the default), or, with ``store_training_rows=True``, the row itself, ``"rows"``,
and its encoded covariates, ``"covariates"`` (when the model has some). A plain dict of
tensors pickles with its tensors on the CPU (``skvae._base._on_cpu``).
"""

import torch

# At most this many rows and this many values (rows x features) are sampled.
_MAX_ROWS = 100_000
_MAX_VALUES = 2**23


def reservoir_size(n_features):
    """Number of rows the sample of training rows holds for ``n_features`` columns."""
    return max(1, min(_MAX_ROWS, _MAX_VALUES // max(1, int(n_features))))


def draw_keys(n_rows, generator, device):
    """Independent uniform keys (float64) of ``n_rows`` rows."""
    return torch.rand(n_rows, generator=generator, device=device, dtype=torch.float64)


def select(reservoir, index):
    """The entries ``index`` (a tensor of positions) of ``reservoir``."""
    return {name: value.index_select(0, index.to(value.device))
            for name, value in reservoir.items()}


def smallest(reservoir, size):
    """The ``size`` entries of ``reservoir`` with the smallest keys, in their order."""
    keys = reservoir["keys"]
    if keys.shape[0] <= size:
        return reservoir
    index = torch.topk(keys, size, largest=False, sorted=False).indices
    return select(reservoir, torch.sort(index).values)


def merge_split(old_keys, new_keys, size):
    """Positions in ``old_keys`` and in ``new_keys`` of the ``size`` smallest keys of both."""
    keys = torch.cat([old_keys.to(new_keys.device), new_keys])
    if keys.shape[0] <= size:
        index = torch.arange(keys.shape[0], device=keys.device)
    else:
        index = torch.sort(torch.topk(keys, size, largest=False, sorted=False).indices).values
    n_old = old_keys.shape[0]
    return index[index < n_old], index[index >= n_old] - n_old


def concat(first, second):
    """The entries of ``first``, then those of ``second`` (in ``second``'s dtype and device)."""
    if set(first) != set(second):
        raise ValueError(f"cannot merge samples holding {sorted(first)} and {sorted(second)}")
    return {name: torch.cat([first[name].to(second[name]), second[name]]) for name in second}


def moved(reservoir, device, dtype=None):
    """``reservoir`` with its tensors on ``device`` (and, but for the float64 keys, in
    ``dtype`` when given)."""
    return {name: value.to(device=device, dtype=value.dtype if dtype is None or name == "keys"
                           else dtype)
            for name, value in reservoir.items()}
