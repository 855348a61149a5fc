"""The networks of a VAE: an MLP encoder to (mean, log-variance) and an MLP decoder."""

import math

import torch
from torch import nn

from ._likelihoods import masked_sum

ACTIVATIONS = {
    "identity": nn.Identity,
    "logistic": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
}

# Bounds on the encoder's log-variance: exp() of them stays finite and positive in float32.
_LOGVAR_MIN, _LOGVAR_MAX = -30.0, 15.0


def mlp(n_in, hidden_layer_sizes, n_out, activation):
    """Linear layers of widths n_in -> hidden... -> n_out with ``activation`` between them."""
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation={activation!r} is not supported; use one of {sorted(ACTIVATIONS)}."
        )
    widths = [int(n_in), *(int(h) for h in hidden_layer_sizes), int(n_out)]
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class VAEModule(nn.Module):
    """Encoder q(z | x, c) = N(mean, diag exp(logvar)), decoder params(z, c), and a likelihood.

    The network is the one owner of the data's standardization: the encoder sees
    ``(x - in_loc) / in_scale`` (buffers set from the training data), and a likelihood that
    models standardized rows (``likelihood.standardizes_targets``) is given the same rows, the
    Jacobian of the change of units being added by :meth:`log_prob`; :meth:`mean` and
    :meth:`sample` map its output back to the units of x. With ``hidden_layer_sizes=()`` both
    networks are linear.

    Optional covariates c (``n_covariates`` columns, e.g. a one-hot batch or class label) are
    conditioned on, not modelled: they are appended to the encoder's input and to the
    decoder's input z.

    Missing entries: every method that reads rows takes an optional boolean ``mask``
    (nonzero where an entry is observed). Unobserved entries may hold anything (NaN
    included): :meth:`fill` sets them to ``in_loc``, i.e. to 0 in standardized units, the
    likelihood counts only the observed entries (the marginal of x_obs), and a row with no
    observed entry is given the prior as its posterior (the exact posterior given nothing).
    With ``mask_inputs=True`` the encoder also reads the mask (input width 2 * n_features
    + n_covariates), so q(z | x_obs) can tell a missing entry from an observed mean
    (Mattei & Frellsen, 2019); without it, a mask still works (the encoder then sees the
    mean in place of a missing entry).

    Parameters
    ----------
    n_features : int
        Width of x.
    n_components : int
        Width of z.
    hidden_layer_sizes : sequence of int
        Widths of the encoder's hidden layers; the decoder uses them in reverse order.
    activation : {"identity", "logistic", "tanh", "relu"}
        Nonlinearity between layers.
    likelihood : Likelihood
        The observation model, e.g. :class:`GaussianLikelihood`.
    n_covariates : int, default=0
        Width of c.
    mask_inputs : bool, default=False
        Whether the encoder also reads the mask of observed entries.
    """

    def __init__(self, n_features, n_components, hidden_layer_sizes, activation, likelihood,
                 n_covariates=0, mask_inputs=False):
        super().__init__()
        hidden = tuple(int(h) for h in hidden_layer_sizes)
        self.n_features = int(n_features)
        self.n_components = int(n_components)
        self.n_covariates = int(n_covariates)
        self.mask_inputs = bool(mask_inputs)
        n_inputs = (2 if self.mask_inputs else 1) * self.n_features + self.n_covariates
        # nn.Linear draws its default initialization from the global RNG: fork it so building
        # a module never changes the caller's random state (reset_parameters draws the
        # weights from the estimator's own generator).
        with torch.random.fork_rng(devices=[]):
            self.encoder = mlp(n_inputs, hidden, 2 * n_components, activation)
            self.decoder = mlp(n_components + self.n_covariates, hidden[::-1],
                               likelihood.n_outputs, activation)
        self.likelihood = likelihood
        self.register_buffer("in_loc", torch.zeros(self.n_features))
        self.register_buffer("in_scale", torch.ones(self.n_features))

    def reset_parameters(self, generator, x=None):
        """Glorot-uniform weights and zero biases, drawn from ``generator`` (not the global RNG).

        With training data ``x``, the decoder's last bias starts where the likelihood asks
        (e.g. the logits of the pixel means for Bernoulli data).
        """
        with torch.no_grad():
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    fan_out, fan_in = layer.weight.shape
                    bound = math.sqrt(6.0 / (fan_in + fan_out))
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.zero_()
            if x is not None:
                # Once, and standardized in place: one copy of x at most (x may be large).
                targets = self.prepare(x)[0] if self.likelihood.standardizes_targets else x
                self.likelihood.on_training_data(targets)
                bias = self.likelihood.initial_output_bias(targets)
                if bias is not None:
                    self.decoder[-1].bias.copy_(bias)

    def set_standardization(self, loc, scale):
        """Per-feature location and (positive) scale of the training data."""
        with torch.no_grad():
            self.in_loc.copy_(loc)
            self.in_scale.copy_(scale)
            self.likelihood.on_standardization(self.in_scale)

    def encoder_input(self, x):
        """The rows as the encoder reads them before standardization (the likelihood says:
        x itself, or e.g. log1p(x) for counts); ``in_loc`` and ``in_scale`` are theirs."""
        return self.likelihood.encoder_input(x)

    def standardize(self, x):
        """(encoder_input(x) - in_loc) / in_scale: the encoder's input."""
        return (self.encoder_input(x) - self.in_loc) / self.in_scale

    def fill(self, x, mask):
        """x with its unobserved entries (``mask`` zero) set to ``in_loc``, a new tensor:
        they standardize to exactly 0 and are finite for every later step (a NaN left in a
        masked entry would still poison the gradients through ``torch.where``)."""
        return torch.where(mask.to(torch.bool), x, self.in_loc)

    def targets(self, x):
        """What the likelihood reads for rows x: standardized rows or x itself."""
        return self.standardize(x) if self.likelihood.standardizes_targets else x

    def targets_from(self, x, u):
        """:meth:`targets` when the standardized rows ``u`` of ``x`` are already at hand."""
        return u if self.likelihood.standardizes_targets else x

    def prepare(self, X, mask=None):
        """The training rows, standardized once: ``(inputs, targets)``.

        With ``mask``, unobserved entries are filled first (see :meth:`fill`).

        ``inputs`` is a row-major copy of ``standardize(X)`` (a minibatch is then a gather of
        contiguous rows, even when X is column-major). ``targets`` is what the likelihood
        reads: ``inputs`` itself when it models standardized rows (no second copy), else the
        rows of X, row-major.
        """
        with torch.no_grad():
            if mask is not None:
                X = self.fill(X, mask)
            inputs = torch.empty(X.shape, dtype=X.dtype, device=X.device)
            torch.sub(self.encoder_input(X), self.in_loc, out=inputs)
            inputs.div_(self.in_scale)
        return inputs, self.targets_from(X.contiguous(), inputs)

    def encode(self, x, c=None, mask=None):
        """Mean and log-variance of q(z | x, c), each (n, n_components); with ``mask``, of
        q(z | x_obs, c)."""
        if mask is not None:
            x = self.fill(x, mask)
        return self.encode_standardized(self.standardize(x), c, mask)

    def encode_standardized(self, u, c=None, mask=None):
        """:meth:`encode` for rows already standardized by :meth:`standardize` (and, with
        ``mask``, filled by :meth:`fill`)."""
        parts = [u]
        if self.mask_inputs:
            parts.append(torch.ones_like(u) if mask is None else mask.to(u.dtype))
        if self.n_covariates:
            parts.append(c)
        mean, logvar = self.encoder(torch.cat(parts, dim=-1) if len(parts) > 1 else u).chunk(
            2, dim=-1)
        logvar = logvar.clamp(_LOGVAR_MIN, _LOGVAR_MAX)
        if mask is not None:
            # Nothing observed: the posterior is the prior, so log weights and KL are 0.
            seen = mask.to(torch.bool).any(dim=-1, keepdim=True)
            mean = torch.where(seen, mean, torch.zeros((), dtype=mean.dtype, device=mean.device))
            logvar = torch.where(seen, logvar,
                                 torch.zeros((), dtype=logvar.dtype, device=logvar.device))
        return mean, logvar

    def decode(self, z, c=None):
        """Decoder output for latent codes of shape (..., n, n_components) and covariates
        (n, n_covariates), which broadcast over z's leading draw dimensions."""
        if self.n_covariates:
            z = torch.cat([z, c.expand(*z.shape[:-1], c.shape[-1])], dim=-1)
        return self.decoder(z)

    def log_prob(self, targets, params, mask=None):
        """log p(x | params) in nats, in the units of x, for ``targets(x)`` (see
        :meth:`targets`): the likelihood's value plus the Jacobian of standardization."""
        value = self.likelihood.log_prob(targets, params, mask)
        if not self.likelihood.standardizes_targets:
            return value
        log_scale = torch.log(self.in_scale)
        if mask is None:
            return value - log_scale.sum()
        return value - masked_sum(log_scale.expand(mask.shape), mask)

    def mean(self, params):
        """E[x | z] in the units of x."""
        mean = self.likelihood.mean(params)
        return self._to_data_units(mean)

    def sample(self, params, generator):
        """One draw of x per row of ``params``, in the units of x."""
        return self._to_data_units(self.likelihood.sample(params, generator))

    def _to_data_units(self, values):
        if not self.likelihood.standardizes_targets:
            return values
        return torch.addcmul(self.in_loc, self.in_scale, values)

    def widest(self):
        """Largest layer width: sets how many rows an inference chunk can hold."""
        widths = [(2 if self.mask_inputs else 1) * self.n_features, self.likelihood.n_outputs]
        widths += [m.out_features for m in self.modules() if isinstance(m, nn.Linear)]
        return max(widths)
