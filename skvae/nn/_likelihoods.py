"""Observation models p(x | z): one small class per likelihood.

A likelihood turns the decoder's output (``params``, the last dimension of width
``n_outputs``) into a distribution over a row. The training objectives, the importance-weighted
estimate and every score call the same ``log_prob``, so the normalizing constants are included
once and everywhere: ``log_prob`` is a log-density (or log-mass) in nats.

A likelihood knows nothing of standardization. One that models continuous data in
standardized units says so with ``standardizes_targets = True``: the network
(:class:`~skvae.nn.VAEModule`), which owns the per-feature location and scale, then hands it
standardized rows and adds the Jacobian of the change of units itself.

Shapes: ``x`` is (..., n_features) and broadcasts against ``params`` (..., n_outputs); the
result of ``log_prob`` has the leading shape of the broadcast, one value per row. ``mask``,
when given, broadcasts against ``x`` and is nonzero where an entry is observed: only those
entries enter the density (the marginal of the observed entries, since features are
conditionally independent given z).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

_LOG_2PI = math.log(2.0 * math.pi)
# softplus(_SOFTPLUS_ONE) == 1: raw variance parameters start at unit variance.
_SOFTPLUS_ONE = math.log(math.e - 1.0)


def masked_sum(values, mask):
    """Sum over the last dimension of ``values``, of the entries where ``mask`` is nonzero.

    Masked entries may hold anything finite or not (the product with a zero mask of a NaN
    would be NaN, so they are replaced rather than multiplied).
    """
    if mask is None:
        return values.sum(-1)
    mask = mask.to(torch.bool)
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(-1)


class Likelihood(nn.Module):
    """Base class of the observation models p(x | params) of a VAE.

    A subclass sets ``n_outputs`` (the width of the decoder output it reads) and implements
    :meth:`log_prob`, :meth:`mean` and :meth:`sample`; the rest has defaults. A new likelihood
    is one such class.

    Parameters
    ----------
    n_features : int
        Width of x.
    """

    #: Whether the model is of standardized rows ``(x - loc) / scale`` (continuous data), so
    #: that the network feeds it those and adds ``-sum_j log scale_j`` to ``log_prob``.
    standardizes_targets = False

    def __init__(self, n_features):
        super().__init__()
        self.n_features = int(n_features)

    @property
    def n_outputs(self):
        """Width of the decoder output this likelihood reads."""
        return self.n_features

    def log_prob(self, x, params, mask=None):
        """log p(x | params) summed over the (observed) features, one value per row, in nats."""
        raise NotImplementedError

    def mean(self, params):
        """E[x | params], in the units the likelihood models."""
        raise NotImplementedError

    def sample(self, params, generator):
        """One draw of x per row of ``params``, from the torch ``generator``."""
        raise NotImplementedError

    def initial_output_bias(self, x):
        """Bias of the decoder's last layer at initialization, from training rows ``x`` (in the
        likelihood's units); None keeps zeros."""
        return None

    def on_standardization(self, scale):
        """Told the per-feature scale of the data when the network records it (a fixed
        variance given in the units of x needs it); nothing by default."""


class GaussianLikelihood(Likelihood):
    """x_j ~ N(f_j(z), s_j): a diagonal Gaussian decoder, on standardized rows.

    The variance s_j is

    - ``"feature"``: one learned variance per feature (softplus of a parameter),
    - ``"sample"``: predicted by the decoder for every row (heteroscedastic), or
    - a positive float: fixed, in the units of the original x (converted with the scale the
      network reports through :meth:`on_standardization`).

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

    standardizes_targets = True

    def __init__(self, n_features, variance="feature", floor=1e-4):
        super().__init__(n_features)
        self.variance_mode = variance if isinstance(variance, str) else "fixed"
        self.floor = float(floor)
        self.fixed_variance = None if isinstance(variance, str) else float(variance)
        if self.variance_mode == "feature":
            self.raw_variance = nn.Parameter(torch.full((self.n_features,), _SOFTPLUS_ONE))
        elif self.variance_mode == "fixed":
            # The fixed variance in standardized units: fixed_variance / scale_j ** 2.
            self.register_buffer("unit_variance", torch.full((self.n_features,), self.fixed_variance))
        elif self.variance_mode != "sample":
            raise ValueError(
                f"variance={variance!r} must be 'feature', 'sample' or a positive float."
            )
        # Models pickled before the network owned the standardization stored it here too.
        self._register_load_state_dict_pre_hook(_drop_legacy_standardization, with_module=True)

    @property
    def n_outputs(self):
        """Width of the decoder output this likelihood reads."""
        return 2 * self.n_features if self.variance_mode == "sample" else self.n_features

    def on_standardization(self, scale):
        """Express a fixed variance (in the units of x) in standardized units."""
        if self.variance_mode == "fixed":
            self.unit_variance.copy_(self.fixed_variance / scale.square())

    def initial_output_bias(self, x):
        """Zero means; a predicted variance starts at 1 (standardized units)."""
        if self.variance_mode != "sample":
            return None
        bias = torch.zeros(self.n_outputs, dtype=x.dtype, device=x.device)
        bias[self.n_features:] = _SOFTPLUS_ONE
        return bias

    def _split(self, params):
        if self.variance_mode == "sample":
            return params[..., : self.n_features], params[..., self.n_features:]
        return params, None

    def variance(self, params=None):
        """Variance s (per row for "sample", else per feature), in the likelihood's units."""
        if self.variance_mode == "sample":
            return F.softplus(self._split(params)[1]) + self.floor
        if self.variance_mode == "feature":
            return F.softplus(self.raw_variance) + self.floor
        return self.unit_variance

    def log_prob(self, x, params, mask=None):
        """log N(x; mean, variance) summed over the (observed) features, per row, in nats."""
        mean, _ = self._split(params)
        var = self.variance(params)
        residual = x - mean
        # Without autograd, square in place: one (draws x rows x features) buffer fewer to
        # allocate and fault in per inference chunk.
        residual = residual.square() if residual.requires_grad else residual.square_()
        if mask is not None:
            return -0.5 * masked_sum(residual / var + torch.log(var) + _LOG_2PI, mask)
        if self.variance_mode == "sample":
            quadratic = (residual / var + torch.log(var)).sum(-1)
        else:
            # One variance per feature: the weighted sum over features is a matrix-vector
            # product, and sum_j log var_j is one number rather than a row of them.
            quadratic = torch.matmul(residual, 1.0 / var) + torch.log(var).sum()
        return -0.5 * (quadratic + self.n_features * _LOG_2PI)

    def mean(self, params):
        """E[x | z]."""
        return self._split(params)[0]

    def sample(self, params, generator):
        """One draw of x per row of params."""
        mean = self.mean(params)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.sqrt(self.variance(params)) * noise


def _drop_legacy_standardization(module, state_dict, prefix, *args):
    for name in ("loc", "scale"):
        state_dict.pop(prefix + name, None)


class BernoulliLikelihood(Likelihood):
    """x_j ~ Bernoulli(sigmoid(l_j(z))) with the decoder's output l as logits.

    ``log_prob`` is sum_j [x_j l_j - softplus(l_j)], exact for binary x and the usual
    (continuous Bernoulli without its normalizer) cross-entropy for grey levels in [0, 1].

    Parameters
    ----------
    n_features : int
        Width of x.
    """

    def initial_output_bias(self, x):
        """Logits of the per-feature training means: the decoder starts at the marginals."""
        p = x.mean(dim=0).clamp(1e-3, 1.0 - 1e-3)
        return torch.log(p) - torch.log1p(-p)

    def log_prob(self, x, logits, mask=None):
        """sum_j [x_j l_j - softplus(l_j)] over the (observed) features, per row, in nats."""
        return masked_sum(x * logits - F.softplus(logits), mask)

    def mean(self, logits):
        """Probabilities sigmoid(l)."""
        return torch.sigmoid(logits)

    def sample(self, logits, generator):
        """One binary draw per entry."""
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)
