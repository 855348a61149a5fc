"""Variational autoencoders as scikit-learn estimators."""

from ._bernoulli import BernoulliVAE
from ._count import CountVAE
from ._gaussian import GaussianVAE

__all__ = ["BernoulliVAE", "CountVAE", "GaussianVAE"]
