"""Training objectives: what a minibatch step maximizes, one small class each.

An objective is called with the network, a minibatch of standardized rows (the encoder's
input), what the likelihood reads for the same rows (see ``VAEModule.targets``), the torch
generator for its draws, the KL weight of the current epoch (``beta`` after warm-up) and the
rows' covariates (None without them), and the rows' mask of observed entries (None when
complete; then the objective of log p(x_obs), see ``skvae.nn._bounds``). It returns one value per row, in nats, to maximize; the
training loop minimizes the negative mean. ELBO, beta-ELBO with warm-up and the
importance-weighted bound are peers: a new objective is one such class.
"""

import math

import torch

from ._bounds import _decoder, _log_weights_and_params, elbo


class ELBO:
    """The (beta-)ELBO with one reparameterized draw per row and the KL term in closed form.

    The KL weight is ``beta`` once warm-up is over (``beta=1``: the evidence lower bound).
    """

    name = "elbo"

    def __call__(self, module, inputs, targets, generator, kl_weight, c=None, mask=None):
        mean, logvar = module.encode_standardized(inputs, c, mask)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return elbo(targets, mean, logvar, eps, _decoder(module, c), module, kl_weight, mask)


class IWAE:
    """The importance-weighted bound of Burda et al. with ``n_samples`` draws per row.

    log (1/K) sum_k p(x | z_k) (p(z_k) / q(z_k | x))^w with z_k ~ q(z | x): at w = 1 the
    bound IWAE-K, which tightens towards log p(x) as K grows and equals the ELBO's expectation
    at K = 1. A KL weight w < 1 (warm-up, beta) tempers the prior-to-posterior ratio as the
    beta-ELBO does its KL term.

    Parameters
    ----------
    n_samples : int, default=5
        Importance samples K per row.
    """

    name = "iwae"

    def __init__(self, n_samples=5):
        self.n_samples = int(n_samples)

    def __call__(self, module, inputs, targets, generator, kl_weight, c=None, mask=None):
        mean, logvar = module.encode_standardized(inputs, c, mask)
        eps = torch.randn((self.n_samples, *mean.shape), generator=generator,
                          device=mean.device, dtype=mean.dtype)
        log_w, _ = _log_weights_and_params(targets, mean, logvar, eps, _decoder(module, c),
                                           module, mask, prior_weight=kl_weight)
        return torch.logsumexp(log_w, dim=0) - math.log(self.n_samples)
