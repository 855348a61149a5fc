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
from ._likelihoods import BernoulliLikelihood, GaussianLikelihood, Likelihood
from ._modules import ACTIVATIONS, VAEModule
from ._objectives import ELBO, IWAE

__all__ = [
    "ACTIVATIONS",
    "BernoulliLikelihood",
    "ELBO",
    "GaussianLikelihood",
    "IWAE",
    "Likelihood",
    "TrainingHistory",
    "VAEModule",
    "elbo",
    "importance_weighted",
    "kl_standard_normal",
    "kl_weight",
    "log_diag_normal",
    "log_standard_normal",
    "log_weights",
    "monte_carlo_bounds",
    "monte_carlo_impute",
    "train_epochs",
]
