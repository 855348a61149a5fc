"""scikit-learn's own estimator checks over every public estimator, with small settings."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from skvae import PPCA, FactorAnalysisEM

# Each estimator is built with settings small enough for the checks' tiny data sets.
ESTIMATORS = [
    PPCA(device="cpu"),
    PPCA(solver="em", device="cpu", random_state=0),
    FactorAnalysisEM(device="cpu", max_iter=200),
]

# {estimator class name: {check name: reason}}: every expected failure says why.
EXPECTED_FAILED_CHECKS = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
