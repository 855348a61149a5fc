"""skvae: probabilistic latent variable models as scikit-learn estimators, computed with PyTorch."""

from .linear import PPCA, FactorAnalysisEM

__all__ = ["FactorAnalysisEM", "PPCA"]

__version__ = "0.1.0.dev0"
