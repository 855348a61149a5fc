"""The textbook VAE the benchmarks compare against: written the way a tutorial would.

An MLP encoder to (mean, log-variance), an MLP decoder, one reparameterized draw per row for
the ELBO, and the importance-weighted estimate of log p(x) with K draws from the encoder.
A subclass gives the decoder's likelihood, ``log_px_z(x, z)``.
"""

import math

import torch
from torch import nn


def mlp(widths, activation=nn.ReLU):
    """Linear layers of the given widths with ``activation`` between them."""
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class PlainVAE(nn.Module):
    def __init__(self, d, hidden, latent, activation=nn.ReLU):
        super().__init__()
        self.encoder = mlp([d, *hidden, 2 * latent], activation)
        self.decoder = mlp([latent, *hidden[::-1], d], activation)

    def log_px_z(self, x, z):
        raise NotImplementedError

    def loss(self, x):
        mean, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(-1)
        return -(self.log_px_z(x, z) - kl).mean()

    @torch.no_grad()
    def log_likelihood(self, X, K=100, rows=100):
        """Importance-weighted log p(x) of each row of X with K draws from q(z | x)."""
        out = []
        for x in X.split(rows):
            mean, logvar = self.encoder(x).chunk(2, dim=-1)
            eps = torch.randn(K, *mean.shape)
            z = mean + torch.exp(0.5 * logvar) * eps
            log_q = -0.5 * (eps**2 + logvar + math.log(2 * math.pi)).sum(-1)
            log_p = -0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)
            out.append(torch.logsumexp(self.log_px_z(x, z) + log_p - log_q, 0) - math.log(K))
        return torch.cat(out)
