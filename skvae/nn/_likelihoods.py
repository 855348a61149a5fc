"""Observation models p(x | z): one small class per likelihood.

A likelihood turns the decoder's output (``params``, the last dimension of width
``n_outputs``) into a distribution over a row. The training loss, the importance-weighted
estimate and every score call the same ``log_prob``, so the normalizing constants are included
once and everywhere: ``log_prob`` is a log-density in nats.

Shapes: ``x`` is (..., n_features) and broadcasts against ``params`` (..., n_outputs); the
result of ``log_prob`` has the leading shape of the broadcast, one value per row.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

_LOG_2PI = math.log(2.0 * math.pi)
# softplus(_SOFTPLUS_ONE) == 1: raw variance parameters start at unit variance.
_SOFTPLUS_ONE = math.log(math.e - 1.0)


class GaussianLikelihood(nn.Module):
    """x_j ~ N(loc_j + scale_j f_j(z), scale_j^2 s_j): a diagonal Gaussian decoder.

    The network works in standardized units: ``loc`` and ``scale`` (buffers, set from the
    training data by :meth:`set_standardization`) map them back to the units of x, and the
    log-density includes the Jacobian ``-sum_j log scale_j``. The variance s_j is

    - ``"feature"``: one learned variance per feature (softplus of a parameter),
    - ``"sample"``: predicted by the decoder for every row (heteroscedastic), or
    - a positive float: fixed, in the units of x.

    Learned variances are ``softplus(raw) + floor`` in standardized units, so a feature never
    collapses to a point mass and the density stays finite.

    Parameters
    ----------
    n_features : int
        Width of x.
    variance : {"feature", "sample"} or float, default="feature"
        How the decoder variance is obtained (see above).
    floor : float, default=1e-4
        Smallest learned variance, in standardized units.
    """

    def __init__(self, n_features, variance="feature", floor=1e-4):
        super().__init__()
        self.n_features = int(n_features)
        self.variance_mode = variance if isinstance(variance, str) else "fixed"
        self.floor = float(floor)
        self.fixed_variance = None if isinstance(variance, str) else float(variance)
        self.register_buffer("loc", torch.zeros(self.n_features))
        self.register_buffer("scale", torch.ones(self.n_features))
        if self.variance_mode == "feature":
            self.raw_variance = nn.Parameter(torch.full((self.n_features,), _SOFTPLUS_ONE))
        elif self.variance_mode not in ("sample", "fixed"):
            raise ValueError(
                f"variance={variance!r} must be 'feature', 'sample' or a positive float."
            )

    @property
    def n_outputs(self):
        """Width of the decoder output this likelihood reads."""
        return 2 * self.n_features if self.variance_mode == "sample" else self.n_features

    # log_prob accepts rows standardized by the training loop (see ``log_prob``). A likelihood
    # without this attribute is always given the rows themselves.
    reads_standardized = True

    def set_standardization(self, loc, scale):
        """Record the per-feature location and scale of the training data."""
        self.loc.copy_(loc)
        self.scale.copy_(scale)

    def initial_output_bias(self, x):
        """Bias of the decoder's last layer at initialization (None: keep zeros = the mean)."""
        if self.variance_mode != "sample":
            return None
        bias = torch.zeros(self.n_outputs, dtype=self.loc.dtype, device=self.loc.device)
        bias[self.n_features:] = _SOFTPLUS_ONE
        return bias

    def _split(self, params):
        if self.variance_mode == "sample":
            return params[..., : self.n_features], params[..., self.n_features:]
        return params, None

    def standardized_variance(self, params):
        """Variance s in standardized units, broadcastable against the mean part of params."""
        mean, raw = self._split(params)
        if self.variance_mode == "sample":
            return F.softplus(raw) + self.floor
        if self.variance_mode == "feature":
            return F.softplus(self.raw_variance) + self.floor
        return self.fixed_variance / self.scale**2

    def variance(self, params=None):
        """Variance in the units of x (per row for "sample", else per feature)."""
        if self.variance_mode != "sample" and params is None:
            params = self.loc  # any tensor: the variance does not depend on it
        return self.standardized_variance(params) * self.scale**2

    def standardize(self, x):
        """(x - loc) / scale: a row in the units the decoder works in."""
        return (x - self.loc) / self.scale

    def log_prob(self, x, params, *, standardized=False):
        """log N(x; mean, variance) summed over features, one value per row, in nats.

        With ``standardized=True``, ``x`` holds ``standardize(x)`` already (the training loop
        standardizes its data once per fit instead of once per minibatch); the value is the
        same log-density of the original row in its own units, Jacobian included.
        """
        u = x if standardized else self.standardize(x)
        mean, _ = self._split(params)
        var = self.standardized_variance(params)
        residual = u - mean
        # Without autograd, square in place: one (draws x rows x features) buffer fewer to
        # allocate and fault in per inference chunk.
        residual = residual.square() if residual.requires_grad else residual.square_()
        if self.variance_mode == "sample":
            quadratic = (residual / var + torch.log(var)).sum(-1)
        else:
            # One variance per feature: the weighted sum over features is a matrix-vector
            # product, and sum_j log var_j is one number rather than a row of them.
            quadratic = torch.matmul(residual, 1.0 / var) + torch.log(var).sum()
        return -0.5 * (quadratic + self.n_features * _LOG_2PI) - torch.log(self.scale).sum()

    def mean(self, params):
        """E[x | z] in the units of x."""
        mean, _ = self._split(params)
        return self.loc + self.scale * mean

    def sample(self, params, generator):
        """One draw of x per row of params."""
        mean = self.mean(params)
        std = torch.sqrt(self.standardized_variance(params)) * self.scale
        noise = torch.randn(
            mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
        )
        return mean + std * noise


class BernoulliLikelihood(nn.Module):
    """x_j ~ Bernoulli(sigmoid(l_j(z))) with the decoder's output l as logits.

    ``log_prob`` is sum_j [x_j l_j - softplus(l_j)], exact for binary x and the usual
    (continuous Bernoulli without its normalizer) cross-entropy for grey levels in [0, 1].

    Parameters
    ----------
    n_features : int
        Width of x.
    """

    def __init__(self, n_features):
        super().__init__()
        self.n_features = int(n_features)

    @property
    def n_outputs(self):
        """Width of the decoder output this likelihood reads."""
        return self.n_features

    def set_standardization(self, loc, scale):
        """Bernoulli outputs are probabilities: nothing to record."""

    def initial_output_bias(self, x):
        """Logits of the per-feature training means: the decoder starts at the marginals."""
        p = x.mean(dim=0).clamp(1e-3, 1.0 - 1e-3)
        return torch.log(p) - torch.log1p(-p)

    def log_prob(self, x, logits):
        """sum_j [x_j l_j - softplus(l_j)], one value per row, in nats."""
        return (x * logits - F.softplus(logits)).sum(-1)

    def mean(self, logits):
        """Probabilities sigmoid(l)."""
        return torch.sigmoid(logits)

    def sample(self, logits, generator):
        """One binary draw per entry."""
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)
