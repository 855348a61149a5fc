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

    Attributes
    ----------
    standardizes_targets : bool
        Whether the model is of standardized rows (continuous data): the network then feeds
        it ``(x - loc) / scale`` and adds ``-sum_j log scale_j`` to ``log_prob``. False here.
    """

    standardizes_targets = False

    def __init__(self, n_features):
        super().__init__()
        self.n_features = int(n_features)

    @property
    def n_outputs(self):
        """Width of the decoder output this likelihood reads."""
        return self.n_features

    def log_prob(self, x, params, mask=None):
        """Compute log p(x | params), summed over the (observed) features of each row.

        Parameters
        ----------
        x : torch.Tensor of shape (..., n_features)
            Rows, in the likelihood's units (standardized when ``standardizes_targets``).
        params : torch.Tensor of shape (..., n_outputs)
            Decoder output; broadcasts against ``x``.
        mask : torch.Tensor of shape (..., n_features), default=None
            Nonzero where an entry is observed; only those enter. None: all are observed.

        Returns
        -------
        log_prob : torch.Tensor of shape (...,)
            The log-density (or log-mass) of each row in nats, constants included.
        """
        raise NotImplementedError

    def mean(self, params):
        """Compute E[x | params], in the units the likelihood models.

        Parameters
        ----------
        params : torch.Tensor of shape (..., n_outputs)
            Decoder output.

        Returns
        -------
        mean : torch.Tensor of shape (..., n_features)
            The conditional mean of each row.
        """
        raise NotImplementedError

    def sample(self, params, generator):
        """Draw one x per row of ``params``.

        Parameters
        ----------
        params : torch.Tensor of shape (..., n_outputs)
            Decoder output.
        generator : torch.Generator
            Source of the randomness (never the global one).

        Returns
        -------
        x : torch.Tensor of shape (..., n_features)
            One draw from p(x | params) per row.
        """
        raise NotImplementedError

    def initial_output_bias(self, x):
        """Give the bias of the decoder's last layer at initialization.

        Parameters
        ----------
        x : torch.Tensor of shape (n_samples, n_features)
            Training rows, in the likelihood's units.

        Returns
        -------
        bias : torch.Tensor of shape (n_outputs,) or None
            The starting bias; None (the default) keeps zeros.
        """
        return None

    def on_standardization(self, scale):
        """Receive the per-feature scale of the data when the network records it.

        A fixed variance given in the units of x needs it; the default does nothing.

        Parameters
        ----------
        scale : torch.Tensor of shape (n_features,)
            The positive scale the network divides the rows by.
        """

    def encoder_input(self, x):
        """Transform rows into what the encoder reads, before the network standardizes it.

        Parameters
        ----------
        x : torch.Tensor of shape (..., n_features)
            Rows in the units of the data.

        Returns
        -------
        inputs : torch.Tensor of shape (..., n_features)
            ``x`` itself by default; count likelihoods return log1p(x).
        """
        return x

    def on_training_data(self, x):
        """Receive the training rows when the network is initialized.

        For statistics the likelihood keeps (count models record library sizes); the default
        does nothing.

        Parameters
        ----------
        x : torch.Tensor of shape (n_samples, n_features)
            Training rows, in the likelihood's units.
        """


class GaussianLikelihood(Likelihood):
    """Diagonal Gaussian observation model x_j ~ N(f_j(z), s_j), on standardized rows.

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
        """Give the variance s, in the likelihood's (standardized) units.

        Parameters
        ----------
        params : torch.Tensor of shape (..., n_outputs), default=None
            Decoder output; needed only when the variance is predicted (``"sample"``).

        Returns
        -------
        variance : torch.Tensor of shape (..., n_features) or (n_features,)
            Per row and feature for ``"sample"``, else per feature.
        """
        if self.variance_mode == "sample":
            return F.softplus(self._split(params)[1]) + self.floor
        if self.variance_mode == "feature":
            return F.softplus(self.raw_variance) + self.floor
        return self.unit_variance

    def log_prob(self, x, params, mask=None):
        # log N(x; mean, variance) summed over the (observed) features, per row, in nats.
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
        return self._split(params)[0]

    def sample(self, params, generator):
        mean = self.mean(params)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.sqrt(self.variance(params)) * noise


def _drop_legacy_standardization(module, state_dict, prefix, *args):
    for name in ("loc", "scale"):
        state_dict.pop(prefix + name, None)


class BernoulliLikelihood(Likelihood):
    """Bernoulli observation model x_j ~ Bernoulli(sigmoid(l_j(z))), l the decoder's logits.

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
        return torch.logit(p)

    def log_prob(self, x, params, mask=None):
        # sum_j [x_j l_j - softplus(l_j)] over the (observed) features, l = params the logits.
        return masked_sum(x * params - F.softplus(params), mask)

    def mean(self, params):
        return torch.sigmoid(params)  # probabilities

    def sample(self, params, generator):
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


# Bounds on log theta (NB inverse dispersion): theta in [e^-8, e^8] ~ [3e-4, 3e3]. Past the
# upper bound NB is Poisson to well within float32 rounding of lgamma(x + theta) - lgamma(theta).
_LOG_THETA_MIN, _LOG_THETA_MAX = -8.0, 8.0
# Library sizes kept (as quantiles of the training totals) for mean() and sample().
_N_LIBRARY_QUANTILES = 1024


class CountLikelihood(Likelihood):
    """Base class of the count models x_j ~ D(mu_j), mu_j = l * rho_j (scVI's form).

    The decoder outputs (the first ``n_features`` of them) are logits of per-feature
    proportions rho = softmax(logits); the mean of x_j is mu_j = l * rho_j, where the library
    size l is the row's observed total sum_j x_j (an offset, as scVI with observed library
    sizes). ``log_prob`` is therefore log p(x | z, l = sum_j x_j): for each fixed l a
    normalized probability mass function over the counts x.

    With a ``mask``, only observed entries enter: the library is the total of the observed
    entries and rho is renormalized over the observed features, so masking entries is the same
    as dropping those columns (from x, the logits and any per-feature parameter).

    The encoder reads log1p(x) (:meth:`encoder_input`). For :meth:`mean` and :meth:`sample`,
    which have no x, the library comes from ``library_quantiles``: 1024 quantiles of the
    training rows' totals recorded by :meth:`on_training_data` (the mean uses their mean; a
    draw picks one of them at random).

    Parameters
    ----------
    n_features : int
        Width of x.
    """

    def __init__(self, n_features):
        super().__init__(n_features)
        self.register_buffer("library_quantiles", torch.ones(_N_LIBRARY_QUANTILES))

    def encoder_input(self, x):
        """log1p(x): counts span orders of magnitude, their logarithm is what the encoder sees."""
        return torch.log1p(x)

    def on_training_data(self, x):
        """Record quantiles of the library sizes (row totals) of training rows ``x``."""
        totals = x.sum(-1).double()
        levels = (torch.arange(_N_LIBRARY_QUANTILES, dtype=torch.float64, device=x.device)
                  + 0.5) / _N_LIBRARY_QUANTILES
        # The empirical quantile function: level q picks the floor(q * n)-th smallest total,
        # so each training total fills about 1024 / n of the slots.
        index = (levels * totals.shape[0]).floor().long().clamp_max(totals.shape[0] - 1)
        quantiles = torch.sort(totals).values[index]
        self.library_quantiles.copy_(quantiles.to(self.library_quantiles.dtype))

    def initial_output_bias(self, x):
        """Logits of the pooled proportions of each feature: the decoder starts at the
        independent model mu_j = l * (sum_i x_ij / sum_i,j x_ij)."""
        totals = x.sum(dim=0)
        log_rho = torch.log(totals + 1e-3 * totals.sum().clamp_min(1.0) / self.n_features)
        bias = torch.zeros(self.n_outputs, dtype=x.dtype, device=x.device)
        bias[: self.n_features] = log_rho - log_rho.mean()
        return bias

    def log_mean(self, x, params, mask=None):
        """log mu = log l + log_softmax(logits) and x with masked entries set to 0.

        Masked features are left out of the softmax (rho renormalized over the observed ones);
        their log mu is set to 0, a finite placeholder that ``masked_sum`` ignores. A zero
        library (all observed counts zero) is replaced by the smallest positive number, which
        gives those rows log p = -0 (up to 1e-38) and keeps every term finite.
        """
        logits = params[..., : self.n_features]
        if mask is not None:
            mask = mask.to(torch.bool)
            zero = torch.zeros((), dtype=x.dtype, device=x.device)
            x = torch.where(mask, x, zero)
            logits = torch.where(mask, logits, torch.full((), -math.inf, dtype=logits.dtype,
                                                          device=logits.device))
        library = x.sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        log_mu = torch.log(library) + torch.log_softmax(logits, dim=-1)
        if mask is not None:
            log_mu = torch.where(mask, log_mu, torch.zeros((), dtype=log_mu.dtype,
                                                          device=log_mu.device))
        return x, log_mu

    def proportions(self, params):
        """rho = softmax(logits): the expected share of each feature in a row's total."""
        return torch.softmax(params[..., : self.n_features], dim=-1)

    def mean_library(self):
        """Mean of the recorded training library sizes."""
        return self.library_quantiles.mean()

    def draw_library(self, shape, generator, device):
        """Library sizes of shape ``shape + (1,)`` drawn from the recorded quantiles."""
        index = torch.randint(_N_LIBRARY_QUANTILES, shape, generator=generator, device=device)
        return self.library_quantiles[index].unsqueeze(-1)

    def mean(self, params):
        """E[x | z] = E[l] * rho (times 1 - pi for ZINB), E[l] the mean training library."""
        return self.mean_library() * self.proportions(params)

    def sample(self, params, generator):
        """Counts (as floats) with a library size drawn from the training totals per row."""
        library = self.draw_library(params.shape[:-1], generator, params.device)
        return self.sample_counts(library * self.proportions(params), params, generator)

    def sample_counts(self, mu, params, generator):
        """Counts drawn with mean ``mu`` (given the decoder output ``params``)."""
        raise NotImplementedError


def _lgamma1p(x):
    return torch.lgamma(x + 1.0)


class PoissonLikelihood(CountLikelihood):
    """Poisson observation model x_j ~ Poisson(l * rho_j).

    log p = sum_j [x_j log mu_j - mu_j - log x_j!]. See :class:`CountLikelihood` for the
    library size l, proportions rho and masking.

    Parameters
    ----------
    n_features : int
        Width of x.
    """

    def log_prob(self, x, params, mask=None):
        # Poisson log-mass summed over the (observed) features, per row, in nats.
        x, log_mu = self.log_mean(x, params, mask)
        return masked_sum(x * log_mu - torch.exp(log_mu) - _lgamma1p(x), mask)

    def sample_counts(self, mu, params, generator):
        """Poisson draws."""
        return torch.poisson(mu, generator=generator)


def _nb_log_prob(x, log_mu, log_theta):
    """Elementwise log NB(x; mean mu, inverse dispersion theta), stable in log space.

    log Gamma(x + theta) - log Gamma(theta) - log x! + theta log(theta / (theta + mu))
    + x log(mu / (theta + mu)), with log(1 + mu / theta) = softplus(log mu - log theta), so
    that large theta (the Poisson limit) loses nothing to cancellation in the last two terms.
    """
    theta = torch.exp(log_theta)
    log_ratio = log_mu - log_theta
    log1p_ratio = F.softplus(log_ratio)  # log(1 + mu / theta)
    return (torch.lgamma(x + theta) - torch.lgamma(theta) - _lgamma1p(x)
            - theta * log1p_ratio + x * (log_ratio - log1p_ratio))


def standard_gamma(alpha, generator):
    """Gamma(alpha, 1) draws from the torch ``generator`` (torch's own gamma sampler takes none).

    Marsaglia and Tsang's rejection method, vectorized: every round draws for all entries and
    keeps the first accepted value of each (more than 95% accept per round for alpha >= 1);
    alpha < 1 uses Gamma(alpha) = Gamma(alpha + 1) * U^(1 / alpha).
    """
    options = {"generator": generator, "device": alpha.device, "dtype": alpha.dtype}
    boost = alpha < 1
    a = torch.where(boost, alpha + 1.0, alpha)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.zeros_like(alpha)
    pending = torch.ones(alpha.shape, dtype=torch.bool, device=alpha.device)
    while bool(pending.any()):
        z = torch.randn(alpha.shape, **options)
        u = torch.rand(alpha.shape, **options)
        v = (1.0 + c * z) ** 3
        log_v = torch.log(v.clamp_min(torch.finfo(alpha.dtype).tiny))
        accept = (v > 0) & (torch.log(u) < 0.5 * z.square() + d - d * v + d * log_v)
        out = torch.where(pending & accept, d * v, out)
        pending = pending & ~accept
    u = torch.rand(alpha.shape, **options)
    return torch.where(boost, out * u ** (1.0 / alpha), out)


class NegativeBinomialLikelihood(CountLikelihood):
    """Negative binomial observation model with mean l * rho_j and inverse dispersion theta_j.

    theta is learned per feature.

    Var[x_j] = mu_j + mu_j^2 / theta_j (scVI's "gene" dispersion); theta -> infinity is the
    Poisson model. theta = exp(log_theta) with log_theta clamped to [-8, 8]. Equivalently
    x_j ~ Poisson(g), g ~ Gamma(shape theta_j, mean mu_j); in scipy's terms
    ``nbinom(n=theta, p=theta / (theta + mu))``. See :class:`CountLikelihood` for l, rho and
    masking.

    Parameters
    ----------
    n_features : int
        Width of x.
    """

    def __init__(self, n_features):
        super().__init__(n_features)
        self.log_theta = nn.Parameter(torch.zeros(self.n_features))

    def log_inverse_dispersion(self):
        """log theta per feature (clamped)."""
        return self.log_theta.clamp(_LOG_THETA_MIN, _LOG_THETA_MAX)

    def inverse_dispersion(self):
        """Give the inverse dispersion theta of each feature.

        Returns
        -------
        theta : torch.Tensor of shape (n_features,)
            Var[x_j] = mu_j + mu_j^2 / theta_j.
        """
        return torch.exp(self.log_inverse_dispersion())

    def log_prob(self, x, params, mask=None):
        # NB log-mass summed over the (observed) features, per row, in nats.
        x, log_mu = self.log_mean(x, params, mask)
        return masked_sum(_nb_log_prob(x, log_mu, self.log_inverse_dispersion()), mask)

    def sample_counts(self, mu, params, generator):
        """Gamma-Poisson draws."""
        theta = self.inverse_dispersion().expand(mu.shape)
        rate = standard_gamma(theta, generator) * (mu / theta)
        return torch.poisson(rate, generator=generator)


class ZeroInflatedNegativeBinomialLikelihood(NegativeBinomialLikelihood):
    """Zero-inflated negative binomial observation model (scVI's ZINB).

    x_j = 0 with probability pi_j, else x_j ~ NB(l * rho_j, theta_j).

    The decoder has 2 * n_features outputs: the logits of rho, then the dropout logits d with
    pi = sigmoid(d). log p(0) = log(pi + (1 - pi) NB(0)) computed as
    logaddexp(-softplus(-d), -softplus(d) + log NB(0)); log p(x > 0) = -softplus(d) +
    log NB(x). E[x_j | z] = (1 - pi_j) mu_j.

    Parameters
    ----------
    n_features : int
        Width of x.
    """

    @property
    def n_outputs(self):
        """Width of the decoder output: proportions' logits and dropout logits."""
        return 2 * self.n_features

    def initial_output_bias(self, x):
        """Pooled proportions, and dropout logits of -3 (pi ~ 0.05)."""
        bias = super().initial_output_bias(x)
        bias[self.n_features:] = -3.0
        return bias

    def dropout_probability(self, params):
        """Give the zero-inflation probability pi = sigmoid(d) of each entry.

        Parameters
        ----------
        params : torch.Tensor of shape (..., 2 * n_features)
            Decoder output; its second half holds the dropout logits d.

        Returns
        -------
        pi : torch.Tensor of shape (..., n_features)
            The probability that an entry is an extra zero.
        """
        return torch.sigmoid(params[..., self.n_features:])

    def log_prob(self, x, params, mask=None):
        # ZINB log-mass summed over the (observed) features, per row, in nats.
        x, log_mu = self.log_mean(x, params, mask)
        d = params[..., self.n_features:]
        log_nb = _nb_log_prob(x, log_mu, self.log_inverse_dispersion())
        log_keep = -F.softplus(d)  # log(1 - pi)
        log_zero = torch.logaddexp(-F.softplus(-d), log_keep + log_nb)
        return masked_sum(torch.where(x == 0, log_zero, log_keep + log_nb), mask)

    def mean(self, params):
        # E[x | z] = (1 - pi) * E[l] * rho.
        return super().mean(params) * (1.0 - self.dropout_probability(params))

    def sample_counts(self, mu, params, generator):
        """NB draws set to zero with probability pi."""
        counts = super().sample_counts(mu, params, generator)
        pi = self.dropout_probability(params)
        keep = torch.rand(pi.shape, generator=generator, device=pi.device, dtype=pi.dtype) >= pi
        return torch.where(keep, counts, torch.zeros((), dtype=counts.dtype, device=counts.device))
