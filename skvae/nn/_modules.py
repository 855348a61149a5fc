"""The networks of a VAE: an MLP encoder to (mean, log-variance) and an MLP decoder."""

import math

import torch
from torch import nn

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
    """Encoder q(z | x) = N(mean(x), diag exp(logvar(x))), decoder params(z), and a likelihood.

    The encoder sees standardized input ``(x - in_loc) / in_scale`` (buffers set from the
    training data); the decoder's output is read by ``likelihood`` (which maps it back to the
    units of x). With ``hidden_layer_sizes=()`` both networks are linear.

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
    likelihood : torch.nn.Module
        The observation model, e.g. :class:`GaussianLikelihood`.
    """

    def __init__(self, n_features, n_components, hidden_layer_sizes, activation, likelihood):
        super().__init__()
        hidden = tuple(int(h) for h in hidden_layer_sizes)
        self.n_features = int(n_features)
        self.n_components = int(n_components)
        # nn.Linear draws its default initialization from the global RNG: fork it so building
        # a module never changes the caller's random state (reset_parameters draws the
        # weights from the estimator's own generator).
        with torch.random.fork_rng(devices=[]):
            self.encoder = mlp(n_features, hidden, 2 * n_components, activation)
            self.decoder = mlp(n_components, hidden[::-1], likelihood.n_outputs, activation)
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
                bias = self.likelihood.initial_output_bias(x)
                if bias is not None:
                    self.decoder[-1].bias.copy_(bias)

    def set_standardization(self, loc, scale):
        """Per-feature location and (positive) scale of the training data."""
        with torch.no_grad():
            self.in_loc.copy_(loc)
            self.in_scale.copy_(scale)
            self.likelihood.set_standardization(loc, scale)

    def standardize(self, x):
        """(x - in_loc) / in_scale: the encoder's input."""
        return (x - self.in_loc) / self.in_scale

    def prepare(self, X):
        """The training rows, standardized once: ``(inputs, targets, standardized)``.

        ``inputs`` is a row-major copy of ``standardize(X)`` (a minibatch is then a gather of
        contiguous rows, even when X is column-major). ``targets`` is what the likelihood
        reads: ``inputs`` itself when it accepts standardized rows (``standardized=True``,
        no second copy), else the rows of X, row-major.
        """
        with torch.no_grad():
            inputs = torch.empty(X.shape, dtype=X.dtype, device=X.device)
            torch.sub(X, self.in_loc, out=inputs)
            inputs.div_(self.in_scale)
        if self.shares_standardization():
            return inputs, inputs, True
        return inputs, X.contiguous(), False

    def shares_standardization(self):
        """Whether the likelihood reads the encoder's standardized rows (same loc and scale)."""
        likelihood = self.likelihood
        return (
            getattr(likelihood, "reads_standardized", False)
            and torch.equal(likelihood.loc, self.in_loc)
            and torch.equal(likelihood.scale, self.in_scale)
        )

    def encode(self, x):
        """Mean and log-variance of q(z | x), each (n, n_components)."""
        return self.encode_standardized(self.standardize(x))

    def encode_standardized(self, u):
        """:meth:`encode` for rows already standardized by :meth:`standardize`."""
        mean, logvar = self.encoder(u).chunk(2, dim=-1)
        return mean, logvar.clamp(_LOGVAR_MIN, _LOGVAR_MAX)

    def decode(self, z):
        """Decoder output for latent codes of shape (..., n_components)."""
        return self.decoder(z)

    def widest(self):
        """Largest layer width: sets how many rows an inference chunk can hold."""
        widths = [self.n_features, self.likelihood.n_outputs]
        widths += [m.out_features for m in self.modules() if isinstance(m, nn.Linear)]
        return max(widths)
