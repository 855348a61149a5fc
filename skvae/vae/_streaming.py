"""Training rows that do not fit in memory: a dask array or a numpy.memmap read block by block.

``BaseVAE.fit`` streams X when :func:`is_streamed` says so. A first pass over the blocks merges
the per-column moments of the encoder's input (:class:`Moments`, exact: the standardization
of the in-memory fit) and keeps a uniform random sample of the rows (:class:`BottomK`, the
bottom-k keys of ``BaseVAE._update_reservoir``); every epoch then reads the blocks again
through :class:`StreamedRows`. Only one block and the sample are held at a time.
"""

import math

import numpy as np
import torch

from .._backend import as_tensor
from .._base import _is_dask_array
from ..nn._engine import BlockSource

# Bytes of one row slice of a memmap. A memmap no larger than this is read whole, as an array.
STREAM_BLOCK_BYTES = 32 * 2**20


def is_streamed(X):
    """Whether ``fit`` reads X block by block: a dask array, or a memmap over one block."""
    return _is_dask_array(X) or (isinstance(X, np.memmap) and X.nbytes > STREAM_BLOCK_BYTES)


class RowBlocks:
    """Random access to the row blocks of a 2-D dask array or memmap, as numpy arrays."""

    def __init__(self, X):
        if X.ndim != 2:
            raise ValueError(
                f"Expected a 2-D array for X, got shape {X.shape}. Reshape it with "
                "X.reshape(-1, 1) for a single feature."
            )
        if not all(isinstance(n, (int, np.integer)) or math.isfinite(n) for n in X.shape):
            raise ValueError(
                f"X has unknown chunk sizes (shape {X.shape}); call X.compute_chunk_sizes() "
                "first."
            )
        self.n_rows, self.n_features = (int(n) for n in X.shape)
        if _is_dask_array(X):
            self._X = X if X.numblocks[1] == 1 else X.rechunk({1: -1})  # whole rows
            self.n_blocks = self._X.numblocks[0]
            self._slices = None
        else:
            self._X = X
            rows = max(1, STREAM_BLOCK_BYTES // max(1, X.shape[1] * X.itemsize))
            self._slices = [slice(i, min(i + rows, self.n_rows))
                            for i in range(0, self.n_rows, rows)]
            self.n_blocks = len(self._slices)

    def read(self, index):
        """Block ``index`` as a numpy array (a view of a memmap's file, no copy)."""
        if self._slices is None:
            return np.asarray(self._X.blocks[index].compute())
        return np.asarray(self._X[self._slices[index]])


class DeviceCopies:
    """Blocks of rows (numpy) -> tensors on ``device`` in ``dtype``, for every epoch's reads.

    To a GPU, each block goes through one pinned (page-locked) staging buffer that is reused:
    the copy to the device is then a DMA that does not block the host (``non_blocking``), and
    the buffer is refilled only once the previous copy out of it has finished. On the CPU a
    block is a tensor view or copy as ``as_tensor`` makes it. ``staged`` (default: on CUDA)
    and ``pin_memory`` (default: on CUDA) exist so the staging path can be checked anywhere.
    """

    def __init__(self, device, dtype, *, staged=None, pin_memory=None):
        self.device, self.dtype = torch.device(device), dtype
        on_cuda = self.device.type == "cuda"
        self.staged = on_cuda if staged is None else staged
        self.pin_memory = on_cuda if pin_memory is None else pin_memory
        self._buffer = self._copied = None

    def __call__(self, block):
        if not self.staged:
            return as_tensor(block, device=self.device, dtype=self.dtype)
        source = as_tensor(block, device="cpu", dtype=None if block.dtype.kind == "f"
                           else torch.float64)
        buffer = self._staging(source)
        if self._copied is not None:
            self._copied.synchronize()  # the last copy out of the buffer is done
        part = buffer[: source.numel()].view(source.shape)
        part.copy_(source)
        # copy=True: the buffer is reused, the result must own its memory on any device.
        out = part.to(device=self.device, non_blocking=self.pin_memory, copy=True)
        if self.device.type == "cuda":
            self._copied = torch.cuda.Event()
            self._copied.record(torch.cuda.current_stream(self.device))  # the copy's stream
        return out.to(self.dtype)

    def _staging(self, source):
        """The staging buffer, grown to hold ``source`` (same dtype)."""
        buffer = self._buffer
        if buffer is None or buffer.dtype != source.dtype or buffer.numel() < source.numel():
            if self._copied is not None:
                self._copied.synchronize()
            buffer = torch.empty(source.numel(), dtype=source.dtype,
                                 pin_memory=self.pin_memory)
            self._buffer = buffer
        return buffer


class StreamedRows(BlockSource):
    """The training rows for ``train_epochs``: each block read, made a tensor by
    ``to_tensor`` and standardized by the module as the in-memory path does (with the mask of
    observed entries when the data hold NaN)."""

    def __init__(self, blocks, to_tensor, has_nan):
        self._blocks, self._to_tensor, self._has_nan = blocks, to_tensor, has_nan
        self.n_rows, self.n_blocks = blocks.n_rows, blocks.n_blocks

    def prepared(self, index, module):
        x = self._to_tensor(self._blocks.read(index))
        mask = ~torch.isnan(x) if self._has_nan else None
        return (*module.prepare(x, mask), None, mask)


class Moments:
    """Per-column count, mean and sum of squared deviations, merged block by block (Chan et
    al.'s pairwise update, in float64); NaN entries are not counted."""

    def __init__(self):
        self.count = self.mean = self.m2 = None

    def add(self, u, has_nan=True):
        """Merge the rows ``u`` (``has_nan=False``: known to hold no NaN)."""
        missing = torch.isnan(u) if has_nan else None
        if missing is not None and bool(missing.any()):
            count = (~missing).sum(dim=0).to(torch.float64)
            deviations = u.nan_to_num(nan=0.0)  # one block-sized temporary, worked in place
            mean = deviations.sum(dim=0, dtype=torch.float64) / count.clamp(min=1)
            deviations.sub_(mean.to(u.dtype)).masked_fill_(missing, 0.0).square_()
            m2 = deviations.sum(dim=0, dtype=torch.float64)
            del deviations
        else:
            count = torch.full((u.shape[1],), float(u.shape[0]), dtype=torch.float64,
                               device=u.device)
            # Welford's reduction: no block-sized temporary.
            var, mean = torch.var_mean(u, dim=0, correction=0)
            mean, m2 = mean.to(torch.float64), var.to(torch.float64) * u.shape[0]
        if self.count is None:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        weight = count / total.clamp(min=1)
        self.mean = self.mean + delta * weight
        self.m2 = self.m2 + m2 + delta.square() * self.count * weight
        self.count = total

    def mean_std(self, dtype):
        """Mean and population std (0 and 0 for a column never observed), in ``dtype``."""
        std = torch.sqrt(self.m2 / self.count.clamp(min=1))
        return self.mean.to(dtype), std.to(dtype)


class BottomK:
    """A uniform random sample of ``size`` rows of a stream: every row gets an independent
    uniform key and the rows with the smallest keys are kept, in a buffer filled in place
    (a block adds only its rows whose keys beat the largest kept one)."""

    def __init__(self, size, n_features, dtype, device):
        self.keys = torch.full((size,), math.inf, dtype=torch.float64, device=device)
        self.rows = torch.empty((size, n_features), dtype=dtype, device=device)

    def add(self, x, generator):
        keys = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=torch.float64)
        size = self.keys.shape[0]
        if keys.shape[0] > size:
            keys, index = torch.topk(keys, size, largest=False, sorted=False)
        else:
            index = torch.arange(keys.shape[0], device=x.device)
        enter = keys < self.keys.max()
        keys, index = keys[enter], index[enter]
        if keys.shape[0] == 0:
            return
        merged = torch.cat([self.keys, keys])
        chosen = torch.zeros(merged.shape[0], dtype=torch.bool, device=x.device)
        chosen[torch.topk(merged, size, largest=False, sorted=False).indices] = True
        free = torch.nonzero(~chosen[:size]).squeeze(1)
        incoming = torch.nonzero(chosen[size:]).squeeze(1)
        self.keys[free] = keys[incoming]
        rows = index[incoming]
        for start in range(0, rows.shape[0], 4096):  # copies of 4096 rows, not of the block
            self.rows[free[start : start + 4096]] = x.index_select(
                0, rows[start : start + 4096]).to(self.rows.dtype)

    def sample(self):
        """(keys, rows) of the rows kept (all rows when the stream had at most ``size``)."""
        kept = torch.isfinite(self.keys)
        if bool(kept.all()):
            return self.keys, self.rows
        return self.keys[kept], self.rows[kept]
