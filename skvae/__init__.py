"""skvae: probabilistic latent variable models as scikit-learn estimators, computed with PyTorch."""

from ._base import InconsistentVersionWarning
from ._outlier import LatentOutlierDetector
from ._version import __version__
from .linear import PPCA, FactorAnalysisEM
from .vae import BernoulliVAE, CountVAE, GaussianVAE

__all__ = [
    "BernoulliVAE",
    "CountVAE",
    "FactorAnalysisEM",
    "GaussianVAE",
    "InconsistentVersionWarning",
    "LatentOutlierDetector",
    "PPCA",
]
