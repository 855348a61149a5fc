"""KL term, ELBO and importance-weighted estimate of log p(x), on tensors.

The row-level functions (``elbo``, ``log_weights``, ``importance_weighted``) take the encoder's
output, the standard normal noise ``eps`` and the decoder and likelihood, so they are pure and
can be checked with ``torch.autograd.gradcheck``. ``monte_carlo_bounds`` drives them over many
rows and draws in chunks whose size is set by a memory budget; ``monte_carlo_impute`` does the
same for the importance-weighted conditional means of missing entries.

Missing entries: each function takes an optional ``mask`` (nonzero where an entry is
observed, shaped like x). The bounds are then those of log p(x_obs), the likelihood counting
only the observed entries, and q(z | x_obs) reads the mask (see ``VAEModule``). ``x`` must be
finite where masked out (``VAEModule.fill``); the chunked drivers fill it themselves.
"""

import math

import torch

_LOG_2PI = math.log(2.0 * math.pi)

# Elements (rows x draws x widest layer) one inference step may hold in a layer's activations:
# 2**20 float32 values are 4 MiB, so a step stays far below a GiB whatever K and n are. Smaller
# is also faster on a CPU: with 16-32 MiB temporaries (2**22, 2**23) every step allocates fresh
# pages from the OS (~500k page faults per 3,000 rows at K=100) and score_samples runs about
# 2x slower; from 2**20 down the allocator reuses its memory. Much smaller chunks (2**18) pay
# per-step overhead instead.
DEFAULT_BUDGET = 2**20
# On a GPU a step is launch-bound long before it is memory-bound: 4 MiB steps would run ~13
# rows at K=100, d=784. 2**26 float32 values (256 MiB per layer) keep a step to a fraction of
# any GPU's memory and give ~850 rows there.
CUDA_BUDGET = 2**26


def kl_standard_normal(mean, logvar):
    """KL( N(mean, diag exp(logvar)) || N(0, I) ) per row, in closed form."""
    return 0.5 * (mean**2 + torch.exp(logvar) - 1.0 - logvar).sum(-1)


def log_standard_normal(z):
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z**2 + _LOG_2PI).sum(-1)


def log_diag_normal(z, mean, logvar):
    """log N(z; mean, diag exp(logvar)) summed over the last dimension."""
    return -0.5 * ((z - mean) ** 2 * torch.exp(-logvar) + logvar + _LOG_2PI).sum(-1)


def reparameterize(mean, logvar, eps):
    """z = mean + exp(logvar / 2) * eps (eps may carry extra leading draw dimensions)."""
    return torch.addcmul(mean, torch.exp(0.5 * logvar), eps)


def _log_prob(likelihood, x, params, mask):
    # Without a mask, the call of old: likelihoods written before masks keep working.
    if mask is None:
        return likelihood.log_prob(x, params)
    return likelihood.log_prob(x, params, mask)


def elbo(x, mean, logvar, eps, decode, likelihood, beta=1.0, mask=None):
    """beta-ELBO per row with one reparameterized draw and the KL term in closed form.

    E_q[log p(x | z)] is estimated with z = mean + std * eps; ``beta`` weights the KL term.
    ``likelihood`` is anything with ``log_prob(x, params)``: a :class:`Likelihood`, or a
    :class:`VAEModule`, which takes ``module.targets(x)`` and returns nats in the units of x.
    With ``mask``, the bound of log p(x_obs).
    """
    z = reparameterize(mean, logvar, eps)
    log_px = _log_prob(likelihood, x, decode(z), mask)
    return log_px - beta * kl_standard_normal(mean, logvar)


def log_weights(x, mean, logvar, eps, decode, likelihood, mask=None):
    """log p(x | z_k) + log p(z_k) - log q(z_k | x) for draws eps of shape (K, n or 1, k).

    Returns shape (K, n). Since (z - mean) / std = eps, log q is computed from eps directly:
    log p(z) - log q(z | x) = -0.5 * sum_j (z_j**2 - eps_j**2 - logvar_j), the 2 pi terms
    cancelling.
    """
    return _log_weights_and_params(x, mean, logvar, eps, decode, likelihood, mask)[0]


def _log_weights_and_params(x, mean, logvar, eps, decode, likelihood, mask=None,
                            prior_weight=1.0):
    """:func:`log_weights` and the decoder outputs of its draws; ``prior_weight`` w scales
    log p(z) - log q(z | x) (the KL weight of a tempered importance-weighted objective)."""
    z = reparameterize(mean, logvar, eps)
    log_ratio = -0.5 * (z.square().sum(-1) - eps.square().sum(-1) - logvar.sum(-1))
    params = decode(z)
    return _log_prob(likelihood, x, params, mask) + prior_weight * log_ratio, params


def importance_weighted(x, mean, logvar, eps, decode, likelihood, mask=None):
    """logsumexp_k log w_k - log K per row: the importance-weighted bound (Burda et al.)."""
    lw = log_weights(x, mean, logvar, eps, decode, likelihood, mask)
    return torch.logsumexp(lw, dim=0) - math.log(lw.shape[0])


def _decoder(module, c):
    return module.decode if c is None else (lambda z: module.decode(z, c))


# Rows of every inference chunk are a multiple of this, and a short last chunk is padded to
# the full count: BLAS then sees one matrix shape whatever the number of rows passed, so a
# row's outputs do not depend on the other rows of the call (a single row would otherwise go
# through a matrix-vector kernel, a few rows through another small-matrix one, each rounding
# differently), and every elementwise kernel of a chunk runs in its vectorized loop.
ROW_QUANTUM = 64
# Rows one chunk of encode / decode holds at most: the GEMMs are efficient long before, and a
# call with few rows still computes one whole chunk.
_MAX_CHUNK_ROWS = 1024
_MAX_CUDA_CHUNK_ROWS = 16384


def device_of(module):
    """The device of a module's parameters (the CPU for a module without any)."""
    parameter = next(iter(module.parameters()), None)
    return torch.device("cpu") if parameter is None else parameter.device


def inference_budget(device):
    """Elements (rows x draws x widest layer) one inference step may hold on ``device``."""
    return CUDA_BUDGET if torch.device(device).type == "cuda" else DEFAULT_BUDGET


def chunk_rows(module, K=1, budget=None):
    """Rows per inference chunk: a multiple of ``ROW_QUANTUM`` set by the module, K and the
    device only (never by the number of rows), at most ``budget`` elements (rows x K x widest
    layer; by default the device's :func:`inference_budget`)."""
    device = device_of(module)
    if budget is None:
        budget = inference_budget(device)
    cap = _MAX_CUDA_CHUNK_ROWS if device.type == "cuda" else _MAX_CHUNK_ROWS
    rows = min(cap, budget // (K * module.widest()))
    return max(ROW_QUANTUM, rows - rows % ROW_QUANTUM)


def padded_chunks(n, rows):
    """(start, stop) of the chunks of ``rows`` rows that cover n rows."""
    return [(start, min(start + rows, n)) for start in range(0, n, rows)]


def pad_rows(values, start, rows):
    """Rows ``start:start + rows`` of ``values`` (None passes), padded to ``rows`` rows with
    copies of the first: the padding's outputs are computed and dropped."""
    if values is None:
        return None
    part = values[start : start + rows]
    short = rows - part.shape[0]
    if short:
        part = torch.cat([part, part[:1].expand(short, *part.shape[1:])])
    return part


def encode_in_chunks(module, X, has_nan=None, C=None, with_logvar=True):
    """Mean and log-variance of q(z | x_obs, c) for every row of X, in padded chunks; NaN
    entries are missing (``has_nan``: whether X holds any, when known; None looks in every
    chunk). Without ``with_logvar`` None comes in place of the log-variances (computed all the
    same, by the one head that gives the means)."""
    n, rows = X.shape[0], chunk_rows(module)
    means, logvars = [], []
    for start, stop in padded_chunks(n, rows):
        x, c = pad_rows(X, start, rows), pad_rows(C, start, rows)
        missing = None if has_nan is False else torch.isnan(x)
        if missing is not None and bool(missing.any()):
            mean, logvar = module.encode(x, c, mask=~missing)
        else:
            mean, logvar = module.encode(x, c)
        means.append(mean[: stop - start])
        logvars.append(logvar[: stop - start])
    return torch.cat(means), torch.cat(logvars) if with_logvar else None


def decode_mean_in_chunks(module, Z, C=None):
    """The decoded mean E[x | z, c] of every row of Z, in padded chunks."""
    rows = chunk_rows(module)
    parts = []
    for start, stop in padded_chunks(Z.shape[0], rows):
        z, c = pad_rows(Z, start, rows), pad_rows(C, start, rows)
        params = module.decode(z) if c is None else module.decode(z, c)
        parts.append(module.mean(params)[: stop - start])
    return torch.cat(parts)


def _chunk_sizes(module, K, budget):
    """Rows per chunk and draws per step so that a step holds at most ``budget`` elements
    (rows x draws x widest layer); both fixed for a module and K (see ``chunk_rows``)."""
    if budget is None:
        budget = inference_budget(device_of(module))
    rows = chunk_rows(module, K, budget)
    return rows, max(1, min(K, budget // (rows * module.widest())))


def _chunk(module, X, C, mask, start, rows):
    """Rows ``start:start + rows``, padded to ``rows``: (x filled, standardized u, targets, c,
    mask)."""
    x = pad_rows(X, start, rows).contiguous()  # a column-major X would slow every step
    c = pad_rows(C, start, rows)
    m = pad_rows(mask, start, rows)
    if m is not None:
        x = module.fill(x, m)
    u = module.standardize(x)
    return x, u, module.targets_from(x, u), c, m


def monte_carlo_bounds(module, X, eps, budget=None, C=None, mask=None):
    """Importance-weighted estimate and ELBO estimate of log p(x) for every row of X.

    Every row uses the same K draws ``eps`` (shape (K, n_components)) and goes through chunks
    of one fixed shape (see ``chunk_rows``), so a row's values do not depend on which other
    rows are in X. The ELBO estimate is the mean of the same log weights,
    hence ``elbo <= iw`` row by row (Jensen). Rows and draws are processed in chunks of at most
    ``budget`` elements per layer; the draws of a row are combined with a running logsumexp.
    A chunk of rows is standardized once and read by the encoder and, when it models
    standardized rows, the likelihood. ``C`` holds the rows' covariates when the module has
    some; ``mask`` (like X, True where observed) makes them bounds of log p(x_obs).

    Returns
    -------
    iw, elbo : tensors of shape (n,)
    """
    n, K = X.shape[0], eps.shape[0]
    rows, draws = _chunk_sizes(module, K, budget)
    # Results go straight into preallocated outputs: keeping each chunk's small result alive
    # between the large transient buffers fragments the heap (glibc), and resident memory
    # then grows with n instead of staying at one chunk's worth.
    iw = torch.empty(n, dtype=eps.dtype, device=eps.device)
    lower = torch.empty(n, dtype=eps.dtype, device=eps.device)
    for start, stop in padded_chunks(n, rows):
        _, u, target, c, m = _chunk(module, X, C, mask, start, rows)
        mean, logvar = module.encode_standardized(u, c, m)
        decode = _decoder(module, c)
        lse, total = _RunningLogSumExp(), None
        for k0 in range(0, K, draws):
            lw = log_weights(target, mean, logvar, eps[k0 : k0 + draws, None, :], decode, module,
                             m)
            lse.add(lw)
            total = lw.sum(dim=0) if total is None else total + lw.sum(dim=0)
        iw[start:stop] = (lse.value() - math.log(K))[: stop - start]
        lower[start:stop] = (total / K)[: stop - start]
    return iw, lower


class _RunningLogSumExp:
    """logsumexp over dim 0 of values added in steps: a running maximum and a running sum of
    exp(value - maximum), so K draws give log(K) exactly when every log weight is 0 (a row
    with nothing observed then scores exactly 0), which summing logs step by step would not."""

    def __init__(self):
        self.top = self.sum = None

    def add(self, values):
        top = values.amax(dim=0)
        if self.top is not None:
            top = torch.maximum(top, self.top)
        shift = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        part = torch.exp(values - shift).sum(dim=0)
        if self.top is not None:
            part = part + self.sum * torch.exp(self.top - shift)
        self.top, self.sum = top, part

    def value(self):
        shift = torch.where(torch.isfinite(self.top), self.top, torch.zeros_like(self.top))
        return shift + torch.log(self.sum)


def monte_carlo_impute(module, X, mask, eps, budget=None, C=None):
    """Importance-weighted conditional means E[x | x_obs] of every entry, in the units of x.

    E[x | x_obs] = E_{p(z | x_obs)} E[x | z] ~= sum_k w_k E[x | z_k] with z_k ~ q(z | x_obs)
    and self-normalized weights w_k proportional to p(x_obs | z_k) p(z_k) / q(z_k | x_obs)
    (Mattei & Frellsen, 2019, MIWAE). All rows share the K draws ``eps`` (K, n_components),
    chunked and combined with a running logsumexp as in :func:`monte_carlo_bounds`. Every
    entry is returned, observed ones included: the caller keeps the observed values.
    """
    n, K = X.shape[0], eps.shape[0]
    rows, draws = _chunk_sizes(module, K, budget)
    out = torch.empty(X.shape, dtype=eps.dtype, device=eps.device)
    for start, stop in padded_chunks(n, rows):
        _, u, target, c, m = _chunk(module, X, C, mask, start, rows)
        mean, logvar = module.encode_standardized(u, c, m)
        decode = _decoder(module, c)
        lse = acc = None
        for k0 in range(0, K, draws):
            lw, params = _log_weights_and_params(  # lw: (draws, rows)
                target, mean, logvar, eps[k0 : k0 + draws, None, :], decode, module, m)
            part = torch.logsumexp(lw, dim=0)
            weighted = (torch.exp(lw - part)[..., None] * module.mean(params)).sum(0)
            if lse is None:
                lse, acc = part, weighted
            else:
                new = torch.logaddexp(lse, part)
                acc = acc * torch.exp(lse - new)[:, None] + weighted * torch.exp(part - new)[:, None]
                lse = new
        out[start:stop] = acc[: stop - start]
    return out


def mean_elbo(module, X, eps, budget=None, C=None, mask=None):
    """Mean ELBO (beta = 1) over the rows of X with fixed noise eps (n, k), chunked."""
    rows = chunk_rows(module, 1, budget)
    total = torch.zeros((), dtype=eps.dtype, device=eps.device)
    for start, stop in padded_chunks(X.shape[0], rows):
        _, u, target, c, m = _chunk(module, X, C, mask, start, rows)
        mean, logvar = module.encode_standardized(u, c, m)
        values = elbo(target, mean, logvar, pad_rows(eps, start, rows), _decoder(module, c),
                      module, mask=m)
        total = total + values[: stop - start].sum()
    return total / X.shape[0]
