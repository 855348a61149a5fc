"""Linear Gaussian latent variable models, fitted in closed form or by EM."""

from ._factor_analysis import FactorAnalysisEM
from ._ppca import PPCA

__all__ = ["FactorAnalysisEM", "PPCA"]
