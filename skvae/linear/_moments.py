"""Sufficient statistics of complete rows: count, mean and the scatter matrix, dense or low rank.

The scatter Q = sum (x - mean)(x - mean)^T is d x d. When fewer rows than features have been
seen it has rank below d, and a factor F with Q = F^T F (one row per data row, plus one per
merge) is both smaller and enough for every solver that needs only products with Q, its
diagonal or its spectrum: PPCA's closed form (thin SVD of F), EM (S W = F^T (F W) / n) and the
profile iterations of factor analysis (thin SVD of F Psi^-1/2). A factor is merged exactly, by
stacking (Chan et al.'s update, ../shared/MATH.md), and becomes a dense matrix once it would
have as many rows as columns.

A covariance S = scale * Q is passed to the solvers as a :class:`DenseScatter` or
:class:`LowRankScatter`; both offer ``shape``, ``dtype``, ``device``, ``diagonal()``,
``S @ M``, ``eigh()``, ``scaled_eigh(root)`` and ``root_rows()`` (a factor F with S = F^T F).
"""

import math
from functools import partial

import torch

from .._backend import robust_linalg
from ._gaussian import ROW_CHUNK, _centred_scatter


class DenseScatter:
    """S = scale * Q with Q a dense symmetric d x d matrix."""

    def __init__(self, matrix, scale=1.0):
        self.matrix = matrix
        self.scale = scale

    shape = property(lambda self: self.matrix.shape)
    dtype = property(lambda self: self.matrix.dtype)
    device = property(lambda self: self.matrix.device)

    def __truediv__(self, value):
        return type(self)(self.matrix, self.scale / value)

    def __matmul__(self, M):
        return (self.matrix @ M) * self.scale

    def diagonal(self):
        return torch.diagonal(self.matrix) * self.scale

    def dense_sum(self):
        """Q itself (scale ignored): the scatter to merge into."""
        return self.matrix

    def is_finite(self):
        return bool(torch.isfinite(self.matrix).all())

    def eigh(self):
        """All eigenpairs of S, eigenvalues descending."""
        eigvals, eigvecs = robust_linalg(torch.linalg.eigh, self.matrix * self.scale)
        return eigvals.flip(0), eigvecs.flip(1)

    def scaled_eigh(self, root):
        """Eigenpairs of D^-1 S D^-1 with D = diag(root), eigenvalues descending."""
        scaled = self.matrix * self.scale / root[:, None] / root
        eigvals, eigvecs = robust_linalg(torch.linalg.eigh, scaled)
        return eigvals.flip(0), eigvecs.flip(1)

    def root_rows(self):
        """F (d, d) with S = F^T F, from the eigenpairs (negative rounding clamped to 0).

        Computed once per object and kept: EM evaluates its likelihood with it at every step
        where that must not cancel (see ``_gaussian.em_step_stats``).
        """
        if getattr(self, "_factor", None) is None:
            eigvals, eigvecs = robust_linalg(torch.linalg.eigh, self.matrix * self.scale)
            self._factor = (eigvecs * torch.sqrt(eigvals.clamp_min(0))).T
        return self._factor

    def to(self, device, dtype=None):
        return type(self)(self.matrix.to(device=device, dtype=dtype), self.scale)


class LowRankScatter:
    """S = scale * F^T F with F of shape (r, d), r < d: nothing d x d is ever formed."""

    def __init__(self, factor, scale=1.0):
        self.factor = factor
        self.scale = scale

    shape = property(lambda self: (self.factor.shape[1], self.factor.shape[1]))
    dtype = property(lambda self: self.factor.dtype)
    device = property(lambda self: self.factor.device)
    rows = property(lambda self: self.factor.shape[0])

    def __truediv__(self, value):
        return type(self)(self.factor, self.scale / value)

    def __matmul__(self, M):
        return self.factor.T @ (self.factor @ M) * self.scale

    def diagonal(self):
        return self.factor.square().sum(dim=0) * self.scale

    def dense_sum(self):
        zero = torch.zeros(self.factor.shape[1], dtype=self.dtype, device=self.device)
        return _centred_scatter(self.factor, zero, ROW_CHUNK)

    def is_finite(self):
        # Off-diagonal entries are bounded by the diagonal ones (Cauchy-Schwarz).
        return bool(torch.isfinite(self.factor.square().sum(dim=0)).all())

    def eigh(self):
        """The (at most r) leading eigenpairs of S, by a thin SVD of F; the rest are 0."""
        return self._thin(self.factor)

    def scaled_eigh(self, root):
        return self._thin(self.factor / root)

    def root_rows(self):
        """F (r, d) with S = F^T F: the stored rows scaled by sqrt(scale)."""
        return self.factor * math.sqrt(self.scale)

    def _thin(self, F):
        _, singular, Vt = robust_linalg(partial(torch.linalg.svd, full_matrices=False), F)
        return singular.square() * self.scale, Vt.T

    def to(self, device, dtype=None):
        return type(self)(self.factor.to(device=device, dtype=dtype), self.scale)


def _column_mean(X, dtype):
    """Mean of the rows of ``X`` in ``dtype``, summed chunk by chunk (``Tensor.mean(dtype=)``
    would cast all of X at once)."""
    if X.dtype == dtype:
        return X.mean(dim=0)
    total = torch.zeros(X.shape[1], dtype=dtype, device=X.device)
    for i in range(0, X.shape[0], ROW_CHUNK):
        total += X[i : i + ROW_CHUNK].to(dtype).sum(dim=0)
    return total / X.shape[0]


def merge_moments(stats, X, *, low_rank, dtype=None):
    """Merge the rows of ``X`` into ``stats`` = (count, mean, scatter); exact in any order.

    ``low_rank(rows)`` says whether a factor with that many rows is worth keeping for these
    data; when it is not, the scatter is (or becomes) dense, computed chunk by chunk.
    """
    count, mean, scatter = stats
    n_b = X.shape[0]
    # X may be of a lower precision than the statistics (a float32 array in a float64
    # model, cast chunk by chunk rather than copied whole): ``dtype`` is theirs.
    mean_b = _column_mean(X, dtype or X.dtype)
    if count == 0:
        if low_rank(n_b):
            return n_b, mean_b, LowRankScatter(X - mean_b)
        return n_b, mean_b, DenseScatter(_centred_scatter(X, mean_b, ROW_CHUNK))
    total = count + n_b
    delta = mean_b - mean
    mean_new = mean + delta * (n_b / total)
    weight = count * n_b / total
    if isinstance(scatter, LowRankScatter) and low_rank(scatter.rows + n_b + 1):
        rows = [scatter.factor, X - mean_b, delta[None, :] * math.sqrt(weight)]
        return total, mean_new, LowRankScatter(torch.cat(rows))
    dense = scatter.dense_sum() + _centred_scatter(X, mean_b, ROW_CHUNK)
    return total, mean_new, DenseScatter(dense + torch.outer(delta, delta) * weight)
