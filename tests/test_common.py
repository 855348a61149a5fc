"""scikit-learn's own estimator checks over every public estimator, with small settings."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from skvae import PPCA, BernoulliVAE, FactorAnalysisEM, GaussianVAE

# Each estimator is built with settings small enough for the checks' tiny data sets.
_VAE_SMALL = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=5, batch_size=32,
                  n_importance_samples=8, device="cpu", random_state=0)
ESTIMATORS = [
    PPCA(device="cpu"),
    PPCA(solver="em", device="cpu", random_state=0),
    FactorAnalysisEM(device="cpu", max_iter=200),
    GaussianVAE(**_VAE_SMALL),
    GaussianVAE(**_VAE_SMALL, dtype="float64"),
    BernoulliVAE(**_VAE_SMALL),
]

# {estimator class name: {check name: reason}}: every expected failure says why.
EXPECTED_FAILED_CHECKS = {}
# BernoulliVAE rightly rejects data outside [0, 1] (its positive_only tag is set), and these
# checks feed Gaussian blobs or data shifted to be positive but above 1.
# tests/test_vae_estimators.py runs the same checks on BernoulliVAE behind a sigmoid (a
# subclass that maps the checks' data into [0, 1]).
_BERNOULLI_REASON = (
    "feeds data outside [0, 1], which BernoulliVAE rejects with a ValueError; covered with "
    "[0, 1] data in tests/test_vae_estimators.py"
)
EXPECTED_FAILED_CHECKS["BernoulliVAE"] = {
    name: _BERNOULLI_REASON
    for name in [
        "check_estimators_dtypes",
        "check_estimators_overwrite_params",
        "check_dont_overwrite_parameters",
        "check_estimators_fit_returns_self",
        "check_readonly_memmap_input",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
        "check_transformer_n_iter",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_fit2d_1sample",
        "check_fit2d_1feature",
        "check_dict_unchanged",
        "check_fit_idempotent",
        "check_fit_check_is_fitted",
        "check_n_features_in",
        "check_fit2d_predict1d",
    ]
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=_expected_failed_checks, xfail_strict=True
)
def test_sklearn_compatible_estimator(estimator, check):
    # Every check runs, float32 VAEs included: their inference goes through chunks of one
    # fixed shape, so the subset and sample-order checks hold at the checks' 1e-7.
    check(estimator)
