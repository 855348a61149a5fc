"""Torch building blocks of the VAEs: networks, likelihoods, bounds, training loop.

This layer sees only tensors and never imports scikit-learn.
"""

from ._bounds import (
    elbo,
    importance_weighted,
    kl_standard_normal,
    log_diag_normal,
    log_standard_normal,
    log_weights,
    monte_carlo_bounds,
    monte_carlo_impute,
)
from ._engine import TrainingHistory, kl_weight, train_epochs
from ._latent import interpolation_path, sample_gaussian_mixture
from ._likelihoods import (
    BernoulliLikelihood,
    CountLikelihood,
    GaussianLikelihood,
    Likelihood,
    NegativeBinomialLikelihood,
    PoissonLikelihood,
    ZeroInflatedNegativeBinomialLikelihood,
)
from ._modules import ACTIVATIONS, VAEModule
from ._objectives import ELBO, IWAE

__all__ = [
    "ACTIVATIONS",
    "BernoulliLikelihood",
    "CountLikelihood",
    "ELBO",
    "GaussianLikelihood",
    "IWAE",
    "Likelihood",
    "NegativeBinomialLikelihood",
    "PoissonLikelihood",
    "TrainingHistory",
    "VAEModule",
    "ZeroInflatedNegativeBinomialLikelihood",
    "elbo",
    "importance_weighted",
    "interpolation_path",
    "kl_standard_normal",
    "kl_weight",
    "log_diag_normal",
    "log_standard_normal",
    "log_weights",
    "monte_carlo_bounds",
    "sample_gaussian_mixture",
    "monte_carlo_impute",
    "train_epochs",
]
