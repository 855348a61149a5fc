"""skvae: probabilistic latent variable models as scikit-learn estimators, computed with PyTorch."""

from .linear import PPCA, FactorAnalysisEM
from .vae import BernoulliVAE, GaussianVAE

__all__ = ["BernoulliVAE", "FactorAnalysisEM", "GaussianVAE", "PPCA"]

__version__ = "0.1.0.dev0"
