"""KL term, ELBO and importance-weighted estimate of log p(x), on tensors.

The row-level functions (``elbo``, ``log_weights``, ``importance_weighted``) take the encoder's
output, the standard normal noise ``eps`` and the decoder and likelihood, so they are pure and
can be checked with ``torch.autograd.gradcheck``. ``monte_carlo_bounds`` drives them over many
rows and draws in chunks whose size is set by a memory budget.
"""

import math

import torch

_LOG_2PI = math.log(2.0 * math.pi)

# Elements (rows x draws x widest layer) one inference step may hold in a layer's activations:
# 2**23 float32 values are 32 MiB, so a step stays far below a GiB whatever K and n are.
DEFAULT_BUDGET = 2**23


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
    return mean + torch.exp(0.5 * logvar) * eps


def elbo(x, mean, logvar, eps, decode, likelihood, beta=1.0):
    """beta-ELBO per row with one reparameterized draw and the KL term in closed form.

    E_q[log p(x | z)] is estimated with z = mean + std * eps; ``beta`` weights the KL term.
    """
    z = reparameterize(mean, logvar, eps)
    return likelihood.log_prob(x, decode(z)) - beta * kl_standard_normal(mean, logvar)


def log_weights(x, mean, logvar, eps, decode, likelihood):
    """log p(x | z_k) + log p(z_k) - log q(z_k | x) for draws eps of shape (K, n or 1, k).

    Returns shape (K, n). Since (z - mean) / std = eps, log q is computed from eps directly.
    """
    z = reparameterize(mean, logvar, eps)
    log_q = -0.5 * (eps**2 + logvar + _LOG_2PI).sum(-1)
    return likelihood.log_prob(x, decode(z)) + log_standard_normal(z) - log_q


def importance_weighted(x, mean, logvar, eps, decode, likelihood):
    """logsumexp_k log w_k - log K per row: the importance-weighted bound (Burda et al.)."""
    lw = log_weights(x, mean, logvar, eps, decode, likelihood)
    return torch.logsumexp(lw, dim=0) - math.log(lw.shape[0])


def monte_carlo_bounds(module, X, eps, budget=DEFAULT_BUDGET):
    """Importance-weighted estimate and ELBO estimate of log p(x) for every row of X.

    Every row uses the same K draws ``eps`` (shape (K, n_components)), so a row's values do not
    depend on which other rows are in X. The ELBO estimate is the mean of the same log weights,
    hence ``elbo <= iw`` row by row (Jensen). Rows and draws are processed in chunks of at most
    ``budget`` elements per layer; the draws of a row are combined with a running logsumexp.

    Returns
    -------
    iw, elbo : tensors of shape (n,)
    """
    n = X.shape[0]
    K = eps.shape[0]
    width = module.widest()
    rows = max(1, min(n, budget // (K * width)))
    draws = max(1, min(K, budget // (rows * width)))
    iw_parts, elbo_parts = [], []
    for start in range(0, n, rows):
        x = X[start : start + rows]
        mean, logvar = module.encode(x)
        lse = torch.full((x.shape[0],), -math.inf, dtype=mean.dtype, device=mean.device)
        total = torch.zeros_like(lse)
        for k0 in range(0, K, draws):
            lw = log_weights(
                x, mean, logvar, eps[k0 : k0 + draws, None, :], module.decode, module.likelihood
            )
            lse = torch.logaddexp(lse, torch.logsumexp(lw, dim=0))
            total = total + lw.sum(dim=0)
        iw_parts.append(lse - math.log(K))
        elbo_parts.append(total / K)
    return torch.cat(iw_parts), torch.cat(elbo_parts)


def mean_elbo(module, X, eps, budget=DEFAULT_BUDGET):
    """Mean ELBO (beta = 1) over the rows of X with fixed noise eps (n, k), chunked."""
    rows = max(1, budget // module.widest())
    total = torch.zeros((), dtype=eps.dtype, device=eps.device)
    for start in range(0, X.shape[0], rows):
        x = X[start : start + rows]
        mean, logvar = module.encode(x)
        values = elbo(x, mean, logvar, eps[start : start + rows], module.decode, module.likelihood)
        total = total + values.sum()
    return total / X.shape[0]
