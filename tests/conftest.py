"""Shared fixtures: small real data sets and the CUDA marker."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.preprocessing import StandardScaler


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        # The marker, not a keyword: keywords also hold the names of the test and of its
        # folders, so "cuda" in a test's name (or a checkout folder called cuda) would skip it.
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits, 1797 x 64, grey levels 0..16 (three constant columns)."""
    return load_digits().data


@pytest.fixture(scope="session")
def cancer():
    """Breast cancer features, standardized: 569 x 30."""
    return StandardScaler().fit_transform(load_breast_cancer().data)


@pytest.fixture(scope="session")
def wine():
    """Wine features on their own scales: 178 x 13."""
    return load_wine().data


@pytest.fixture(scope="session")
def wide():
    """Fewer rows than columns (n < d): 40 x 100, low-rank signal plus noise."""
    rng = np.random.RandomState(7)
    return rng.normal(size=(40, 3)) @ rng.normal(size=(3, 100)) * 2 + rng.normal(size=(40, 100))


def remove_at_random(X, fraction, seed=0):
    """A copy of X with ``fraction`` of its entries set to NaN (no row or column left empty)."""
    rng = np.random.RandomState(seed)
    X = np.array(X, dtype=float)
    mask = rng.uniform(size=X.shape) < fraction
    mask[np.arange(X.shape[0]), rng.randint(X.shape[1], size=X.shape[0])] = False
    X[mask] = np.nan
    return X, mask
