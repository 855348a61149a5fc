"""The one module that imports private scikit-learn helpers.

A scikit-learn upgrade that moves one of these touches this file only. Supported: >= 1.6.
"""

from sklearn.base import _fit_context
from sklearn.decomposition._factor_analysis import _ortho_rotation
from sklearn.utils._param_validation import HasMethods, Hidden, Interval, Options, StrOptions
from sklearn.utils.validation import validate_data

__all__ = [
    "HasMethods",
    "Hidden",
    "Interval",
    "Options",
    "StrOptions",
    "_fit_context",
    "_ortho_rotation",
    "validate_data",
]
