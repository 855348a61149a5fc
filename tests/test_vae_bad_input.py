"""Every bad input of issue 3, section 8: a ValueError/TypeError naming the argument and fix."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skvae import BernoulliVAE, CountVAE, GaussianVAE, LatentOutlierDetector

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=2, device="cpu", random_state=0)
CLASSES = [GaussianVAE, BernoulliVAE]


def _X(n=40, d=4, seed=0):
    return (np.random.RandomState(seed).uniform(size=(n, d)) > 0.5).astype(float)


@pytest.mark.parametrize("value", [-1.5, 2.0])
def test_bernoulli_rejects_data_outside_unit_interval_everywhere(value):
    X = _X()
    bad = X.copy()
    bad[3, 1] = value
    with pytest.raises(ValueError, match=r"BernoulliVAE models data in \[0, 1\].*Binarizer"):
        BernoulliVAE(**FAST).fit(bad)
    model = BernoulliVAE(**FAST).fit(X)
    for method in ("transform", "score_samples", "elbo_samples", "partial_fit"):
        with pytest.raises(ValueError, match=r"outside \[0, 1\].*MinMaxScaler"):
            getattr(model, method)(bad)
    # Grey levels inside [0, 1] are fine.
    BernoulliVAE(**FAST).fit(X * 0.7 + 0.1)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("value, message", [(np.inf, "contains infinity.*treats NaN as missing")])
def test_inf_is_rejected(cls, value, message):
    # NaN is a missing entry (tests/test_vae_missing.py); infinity is an error.
    X = _X()
    bad = X.copy()
    bad[0, 0] = value
    with pytest.raises(ValueError, match=message):
        cls(**FAST).fit(bad)
    model = cls(**FAST).fit(X)
    with pytest.raises(ValueError, match=message):
        model.transform(bad)
    with pytest.raises(ValueError, match=message):
        model.score_samples(torch.as_tensor(bad))


def test_values_beyond_float32_are_named_with_the_fix():
    X = _X()
    X[0, 0] = 1e39  # finite in float64, infinite in the networks' float32
    with pytest.raises(ValueError, match=r"beyond 3.4e\+38 in magnitude, which become "
                                         r"infinite in float32.*StandardScaler"):
        GaussianVAE(**FAST).fit(X)
    scores = GaussianVAE(**{**FAST, "dtype": "float64"}).fit(X).score_samples(X)  # in range
    assert np.all(np.isfinite(scores))


@pytest.mark.parametrize("cls", CLASSES)
def test_wrong_number_of_features(cls):
    model = cls(**FAST).fit(_X(d=4))
    for method in ("transform", "score_samples", "elbo_samples", "partial_fit"):
        with pytest.raises(ValueError, match="X has 3 features, but .* is expecting 4"):
            getattr(model, method)(_X(d=3))
    with pytest.raises(ValueError, match="Z has 3 columns.*n_components_=2"):
        model.inverse_transform(np.zeros((5, 3)))


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    "params, message",
    [
        ({"beta": -0.5}, "'beta' parameter .* must be a float in the range \\[0.0, inf\\)"),
        ({"n_importance_samples": 0}, "'n_importance_samples' parameter .* range \\[1, inf\\)"),
        ({"activation": "swish"}, "'activation' parameter .* must be a str among"),
        ({"n_components": 0}, "'n_components' parameter"),
        ({"learning_rate_init": 0.0}, "'learning_rate_init' parameter"),
        ({"validation_fraction": 1.0}, "'validation_fraction' parameter"),
        ({"dtype": "float16"}, "'dtype' parameter"),
        ({"hidden_layer_sizes": 0}, "'hidden_layer_sizes' parameter"),
    ],
)
def test_bad_parameters(cls, params, message):
    with pytest.raises(ValueError, match=message):
        cls(**{**FAST, **params}).fit(_X())


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("sizes", [(16, 0), (8, -3), (4.5,)])
def test_hidden_layer_sizes_must_be_positive_integers(cls, sizes):
    with pytest.raises(ValueError, match=r"hidden_layer_sizes=.* must hold positive integers"):
        cls(**{**FAST, "hidden_layer_sizes": sizes}).fit(_X())


def test_gaussian_decoder_variance_options():
    for bad in (0.0, -1.0, "diagonal"):
        with pytest.raises(ValueError, match="'decoder_variance' parameter"):
            GaussianVAE(**FAST, decoder_variance=bad).fit(_X())
    with pytest.raises(ValueError, match="'variance_floor' parameter"):
        GaussianVAE(**FAST, variance_floor=0.0).fit(_X())


@pytest.mark.parametrize("cls", CLASSES)
def test_too_few_samples_for_the_validation_split(cls):
    with pytest.raises(ValueError, match=r"early_stopping=True with validation_fraction=0.5 "
                                         r"leaves 1 validation and 0 training rows.*"):
        cls(**FAST, early_stopping=True, validation_fraction=0.5).fit(_X(n=1))
    with pytest.raises(ValueError, match="set early_stopping=False"):
        cls(**FAST, early_stopping=True, validation_fraction=0.99).fit(_X(n=5))
    cls(**FAST, early_stopping=True, validation_fraction=0.5).fit(_X(n=2))


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_sample_arguments(cls):
    model = cls(**FAST).fit(_X())
    for n in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="n_samples=.* must be a positive integer"):
            model.sample(n)
    with pytest.raises(ValueError, match="latent='posterior' must be 'prior', 'aggregated_po"):
        model.sample(2, latent="posterior")


@pytest.mark.parametrize("cls", CLASSES)
def test_unfitted_and_non_numeric_and_sparse(cls):
    from sklearn.exceptions import NotFittedError
    from scipy import sparse

    with pytest.raises(NotFittedError):
        cls(**FAST).transform(_X())
    with pytest.raises(NotFittedError):
        cls(**FAST).sample(2)
    with pytest.raises(ValueError, match="X must be numeric"):
        cls(**FAST).fit(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(TypeError, match="dense data is required"):
        cls(**FAST).fit(sparse.random(20, 4, density=0.5, format="csr"))
    with pytest.raises(ValueError, match="Expected 2D array"):
        cls(**FAST).fit(np.zeros(10))


def test_unknown_device():
    with pytest.raises(ValueError, match="device='tpu' is not a device torch knows"):
        GaussianVAE(**{**FAST, "device": "tpu"}).fit(_X())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU machine")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available.*device='cpu'"):
        GaussianVAE(**{**FAST, "device": "cuda"}).fit(_X())


@pytest.mark.parametrize("cls", CLASSES)
def test_callers_arrays_are_never_modified(cls):
    X = _X() * 0.8 + 0.1
    X_f = np.asfortranarray(X.astype(np.float32))
    copies = X.copy(), X_f.copy()
    tensor = torch.as_tensor(X)
    tensor_copy = tensor.clone()
    model = cls(**{**FAST, "max_iter": 3}).fit(X)
    model.partial_fit(X_f)
    for data in (X, X_f, tensor):
        model.transform(data), model.score_samples(data), model.elbo_samples(data)
    Z = model.transform(X)
    Z_copy = Z.copy()
    model.inverse_transform(Z)
    np.testing.assert_array_equal(X, copies[0])
    np.testing.assert_array_equal(X_f, copies[1])
    np.testing.assert_array_equal(Z, Z_copy)
    assert torch.equal(tensor, tensor_copy)


def test_rows_beyond_the_float_range_score_minus_infinity_with_a_warning():
    # float32 cannot hold the squared residual of a row 1e20 times the training scale: the
    # score is an honest -inf (never NaN), and the user is told why and what to do.
    X = np.random.RandomState(0).normal(size=(60, 4))
    with pytest.warns(ConvergenceWarning):
        model = GaussianVAE(n_components=2, hidden_layer_sizes=(8,), max_iter=2, device="cpu",
                            random_state=0).fit(X)
    far = np.vstack([X[:2], X[2:4] * 1e20])
    with pytest.warns(UserWarning, match=r"row\(s\) \[2, 3\] of X .*-inf.*dtype='float64'"):
        scores = model.score_samples(far)
    assert np.all(np.isfinite(scores[:2])) and np.all(scores[2:] == -np.inf)
    with pytest.warns(UserWarning, match="-inf"):
        assert np.all(model.elbo_samples(far)[2:] == -np.inf)


@pytest.mark.parametrize("dtype, huge", [("float32", 1e36), ("float64", 1e155)])
def test_impute_names_the_rows_whose_missing_entries_it_cannot_estimate(dtype, huge):
    # An observed value so far out that every importance weight underflows: the missing
    # entries of that row cannot be estimated. NaN there, with a warning naming the row.
    X = np.random.RandomState(0).normal(size=(60, 4))
    model = GaussianVAE(**{**FAST, "dtype": dtype}).fit(X)
    gappy = X[:4].copy()
    gappy[:, 3] = np.nan
    gappy[2, 0] = huge
    with pytest.warns(UserWarning, match=r"GaussianVAE.impute: the results of row\(s\) \[2\] "
                                         r"are NaN: .*cannot be estimated"):
        imputed = model.impute(gappy)
    assert np.isnan(imputed[2, 3]) and np.isfinite(np.delete(imputed, 2, axis=0)).all()
    with pytest.warns(UserWarning, match=r"row\(s\) \[2\] of X .*score -inf"):
        assert model.score_samples(gappy)[2] == -np.inf


def test_warnings_name_rows_of_the_whole_dask_array():
    # Methods run block by block on a dask array; the rows named are those of X.
    da = pytest.importorskip("dask.array")
    X = np.random.RandomState(0).normal(size=(60, 4))
    model = GaussianVAE(**FAST).fit(X)
    far = X[:6].copy()
    far[4, 0] = 1e36
    gappy = far.copy()
    gappy[:, 3] = np.nan
    with pytest.warns(UserWarning, match=r"row\(s\) \[4\] of X"):
        assert model.score_samples(da.from_array(far, chunks=(3, 4)))[4] == -np.inf
    with pytest.warns(UserWarning, match=r"impute: the results of row\(s\) \[4\] are NaN"):
        model.impute(da.from_array(gappy, chunks=(3, 4)))


@pytest.mark.parametrize("likelihood", ["poisson", "nb", "zinb"])
def test_rows_a_vae_cannot_score_score_minus_inf_and_are_outliers(likelihood):
    # float64 counts of 1e306: x log mu and log x! both overflow and their difference is NaN.
    # Such a row scores -inf (named in the warning), the most abnormal row, never an inlier.
    # (float32 cannot hold such counts at all: refused, naming dtype='float64'.)
    X = np.random.RandomState(0).poisson(5.0, size=(60, 4)).astype(float)
    far = X[:3].copy()
    far[1] = 3e38
    with pytest.raises(ValueError, match="dtype='float64'"):
        CountVAE(**FAST, likelihood=likelihood).fit(X).score_samples(far)
    far[1] = 1e306
    params = {**FAST, "likelihood": likelihood, "dtype": "float64"}
    model = CountVAE(**params).fit(X)
    with pytest.warns(UserWarning, match=r"row\(s\) \[1\] of X .*cannot be computed in float64"
                                         r".*score -inf"):
        scores = model.score_samples(far)
    assert scores[1] == -np.inf and np.isfinite(scores[[0, 2]]).all()
    with pytest.warns(UserWarning, match=r"row\(s\) \[1\]"):
        breakdown = model.score_breakdown(far)
    assert breakdown["log_likelihood"][1] == breakdown["elbo"][1] == -np.inf
    for term in breakdown.values():
        assert np.isfinite(term[[0, 2]]).all()
    detector = LatentOutlierDetector(CountVAE(**params)).fit(X)
    with pytest.warns(UserWarning, match=r"row\(s\) \[1\]"):
        np.testing.assert_array_equal(detector.predict(far)[1], -1)
    with pytest.warns(UserWarning, match=r"row\(s\) \[1\]"):
        assert detector.decision_function(far)[1] == -np.inf


def test_tiny_varying_columns_are_standardized_not_taken_as_constant():
    # A float32 column of size 1e-25 varies; its squares (1e-50) underflow, which must not
    # make its standard deviation 0 and the column "constant" (scale 1, invisible to the net).
    rng = np.random.RandomState(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    X[:, 1] *= np.float32(1e-25)
    model = GaussianVAE(**FAST).fit(X)
    np.testing.assert_allclose(model.module_.in_scale.numpy(), X.astype(np.float64).std(axis=0),
                               rtol=1e-5)
    # A truly constant column still gets scale 1.
    X[:, 2] = 3.0
    assert model.fit(X).module_.in_scale.numpy()[2] == 1.0


@pytest.mark.parametrize("cls", [GaussianVAE])
def test_subnormal_varying_columns_are_an_error(cls):
    # Values ~1e-40 are float32 subnormals: non-zero and varying, but their spread is below
    # the smallest normal float32, so a standardized column cannot be formed; say so.
    rng = np.random.RandomState(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    X[:, 2] = (rng.uniform(1, 2, size=64) * 1e-40).astype(np.float32)
    assert np.all(X[:, 2] != 0) and X[:, 2].astype(np.float64).std() > 0
    with pytest.raises(ValueError, match=r"column\(s\) \[2\].*subnormal.*Rescale"):
        cls(**FAST).fit(X)


@pytest.mark.parametrize("scale", [1e-50, 1e-44])
def test_a_float64_column_that_float32_cannot_hold_is_an_error(scale):
    # Varying float64 values of 1e-50 all become 0 in the networks' float32 (1e-44: the same
    # subnormal); the column would silently be a constant. Say so and name the fix.
    rng = np.random.RandomState(0)
    X = rng.normal(size=(64, 3))
    X[:, 1] = rng.uniform(1, 2, size=64) * scale
    with pytest.raises(ValueError, match=r"column\(s\) \[1\].*float32.*dtype='float64'"):
        GaussianVAE(**FAST).fit(X)
    model = GaussianVAE(**{**FAST, "dtype": "float64"}).fit(X)  # float64 holds them
    np.testing.assert_allclose(model.module_.in_scale.numpy()[1], X[:, 1].std(), rtol=1e-6)
    # A column of zeros and one constant in float64 are constant in float32 too: no error.
    X[:, 1] = 0.0
    X[:, 2] = 7.0
    GaussianVAE(**FAST).fit(X)
