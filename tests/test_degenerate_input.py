"""Issue 15, section 6: degenerate data and the messages that explain it.

Negative-stride views, constant columns, NaN beside huge values, pandas columns that are not
numbers, and messages that must be true for the value that triggered them.
"""

import warnings

import numpy as np
import pytest

from skvae import PPCA, BernoulliVAE, CountVAE, FactorAnalysisEM, GaussianVAE, LatentOutlierDetector

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

VAE = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=2, n_importance_samples=4,
           device="cpu", random_state=0)


def _data(kind, n=40, d=5, seed=0):
    rng = np.random.RandomState(seed)
    if kind == "counts":
        return rng.poisson(3.0, size=(n, d)).astype(float)
    if kind == "binary":
        return (rng.uniform(size=(n, d)) > 0.5).astype(float)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d))


ESTIMATORS = [
    (PPCA(n_components=2, device="cpu"), "real"),
    (PPCA(n_components=2, solver="em", device="cpu", random_state=0), "real"),
    (FactorAnalysisEM(n_components=2, device="cpu"), "real"),
    (GaussianVAE(**VAE), "real"),
    (BernoulliVAE(**VAE), "binary"),
    (CountVAE(**VAE), "counts"),
]
IDS = ["ppca", "ppca-em", "fa", "gaussian", "bernoulli", "count"]


@pytest.mark.parametrize("estimator, kind", ESTIMATORS, ids=IDS)
@pytest.mark.parametrize("view", [lambda X: X[::-1], np.flip, lambda X: X[:, ::-1]],
                         ids=["rows", "flip", "columns"])
def test_negative_stride_views_are_accepted_by_every_method(estimator, kind, view):
    X = _data(kind)
    flipped = view(X)
    assert any(s < 0 for s in flipped.strides)
    same = np.ascontiguousarray(flipped)
    model = estimator.fit(flipped)
    reference = type(estimator)(**estimator.get_params()).fit(same)
    np.testing.assert_allclose(model.score_samples(same), reference.score_samples(same),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.score_samples(flipped), model.score_samples(same),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.transform(flipped), model.transform(same), rtol=1e-5,
                               atol=1e-6)
    Z = model.transform(same)
    np.testing.assert_allclose(model.inverse_transform(Z[::-1]), model.inverse_transform(Z)[::-1],
                               rtol=1e-5, atol=1e-6)
    assert np.isfinite(model.score(flipped))
    np.testing.assert_array_equal(model.impute(flipped), same)
    if hasattr(model, "elbo_samples"):
        np.testing.assert_allclose(model.elbo_samples(flipped), model.elbo_samples(same),
                                   rtol=1e-5, atol=1e-5)
        model.score_breakdown(flipped)
    model.partial_fit(flipped)
    detector = LatentOutlierDetector(type(estimator)(**estimator.get_params())).fit(flipped)
    assert detector.predict(flipped).shape == (X.shape[0],)


def test_negative_stride_parameters_are_accepted():
    X = _data("real")
    FactorAnalysisEM(n_components=2, device="cpu", noise_variance_init=np.ones(10)[::2]).fit(X)
    model = CountVAE(**VAE).fit(_data("counts"))
    assert model.sample(3, library_size=np.array([10.0, 20.0, 30.0])[::-1]).shape == (3, 5)


# ---- messages that are true for the value that triggered them

def test_an_offset_float32_cannot_resolve_is_not_blamed_on_tiny_values():
    X = _data("real") + 1e12  # float32's spacing at 1e12 is 65536: every column one value
    with pytest.raises(ValueError) as error:
        GaussianVAE(**VAE).fit(X)
    message = str(error.value)
    assert "below 1.18e-38" not in message and "smallest normal" not in message
    assert "column(s) [0, 1, 2, 3, 4]" in message and "1e+12" in message
    assert "dtype='float64'" in message and "StandardScaler" in message
    GaussianVAE(**{**VAE, "dtype": "float64"}).fit(X)  # float64 resolves them


def test_tiny_float64_values_are_still_named_as_tiny():
    X = _data("real")
    X[:, 1] = np.random.RandomState(1).uniform(1, 2, size=X.shape[0]) * 1e-50
    with pytest.raises(ValueError, match=r"column\(s\) \[1\].*below 1.18e-38.*dtype='float64'"):
        GaussianVAE(**VAE).fit(X)


@pytest.mark.parametrize("value, shown", [(1 + 1e-7, "1.0000001"), (-1e-7, "-1e-07"),
                                          (1.5, "1.5")])
def test_bernoulli_names_the_value_outside_the_unit_interval(value, shown):
    X = _data("binary")
    X[2, 3] = value
    with pytest.raises(ValueError) as error:
        BernoulliVAE(**VAE).fit(X)
    message = str(error.value)
    assert "outside [0, 1]" in message and shown in message, message
    assert "values in [0, 1]" not in message


@pytest.mark.parametrize("value", [np.inf, 1e39])
def test_count_vae_infinity_message_suggests_neither_nan_nor_a_scaler(value):
    X = _data("counts")
    X[0, 0] = value
    with pytest.raises(ValueError) as error:
        CountVAE(**VAE).fit(X)
    message = str(error.value)
    assert "NaN" not in message and "StandardScaler" not in message, message
    if value == np.inf:
        assert "infinity" in message
    else:
        assert "dtype='float64'" in message


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysisEM, GaussianVAE])
def test_infinity_message_offers_nan_only_where_nan_is_missing(cls):
    X = _data("real")
    X[0, 0] = np.inf
    params = VAE if cls is GaussianVAE else dict(n_components=2, device="cpu")
    with pytest.raises(ValueError, match="contains infinity.*NaN.*missing"):
        cls(**params).fit(X)
    with pytest.raises(ValueError) as error:
        PPCA(n_components=2, solver="eigh", device="cpu").fit(X)
    assert "contains infinity" in str(error.value) and "NaN" not in str(error.value)


def test_values_beyond_float32_say_so_only_in_float32():
    X = _data("real")
    X[0, 0] = 1e39
    with pytest.raises(ValueError, match=r"beyond 3.4e\+38.*float32.*dtype='float64'"):
        GaussianVAE(**VAE).fit(X)
    X[0, 0] = np.inf
    with pytest.raises(ValueError) as error:
        GaussianVAE(**{**VAE, "dtype": "float64"}).fit(X)
    assert "float32" not in str(error.value)


# ---- pandas columns that are not plain numbers

pd = pytest.importorskip("pandas")


def _frame(X):
    return pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])


@pytest.mark.parametrize("estimator, kind", ESTIMATORS, ids=IDS)
def test_pd_na_in_an_object_column_is_a_missing_value(estimator, kind):
    X = _data(kind)
    frame = _frame(X)
    frame["f1"] = frame["f1"].astype(object)
    frame.loc[3, "f1"] = pd.NA
    expected = X.copy()
    expected[3, 1] = np.nan
    if estimator._nan_policy() is not None:  # CountVAE: NaN is refused, with the reason
        with pytest.raises(ValueError, match="contains NaN"):
            estimator.fit(frame)
        return
    model = estimator.fit(frame)
    assert list(model.feature_names_in_) == list(frame.columns)
    reference = type(estimator)(**estimator.get_params()).fit(_frame(expected))
    np.testing.assert_allclose(model.score_samples(frame),
                               reference.score_samples(_frame(expected)), rtol=1e-6, atol=1e-6)
    imputed = model.impute(frame)
    assert np.isfinite(imputed).all() and imputed[0, 1] == X[0, 1]


@pytest.mark.parametrize("estimator, kind", ESTIMATORS, ids=IDS)
@pytest.mark.parametrize("column, what", [
    (lambda n: pd.date_range("2020-01-01", periods=n), "dates or durations"),
    (lambda n: pd.to_timedelta(np.arange(n), unit="s"), "dates or durations"),
    (lambda n: pd.period_range("2020-01-01", periods=n, freq="D"), "dates or durations"),
    (lambda n: np.array(["a"] * n, dtype=object), "non-numeric"),
], ids=["datetime", "timedelta", "period", "text"])
def test_columns_of_dates_or_text_are_errors_naming_x_and_the_column(estimator, kind, column,
                                                                      what):
    X = _data(kind)
    frame = _frame(X)
    frame["when"] = column(X.shape[0])
    with pytest.raises(ValueError, match=rf"X column 'when' .*{what}"):
        estimator.fit(frame)
    model = type(estimator)(**estimator.get_params()).fit(_frame(X).assign(when=X[:, 0]))
    for method in ("transform", "score_samples"):
        with pytest.raises(ValueError, match=rf"X column 'when' .*{what}"):
            getattr(model, method)(frame)


# ---- NaN beside a huge value in the linear models

@pytest.mark.parametrize("cls", [PPCA, FactorAnalysisEM])
@pytest.mark.parametrize("dtype, huge, fits", [("float64", 1e150, True), ("float64", 1e160, False),
                                               ("float32", 1e17, True), ("float32", 1e20, False)])
def test_nan_beside_a_huge_value_fits_or_says_why(cls, dtype, huge, fits):
    X = _data("real", n=60, d=4)
    X[0, 0] = np.nan
    X[1, 1] = huge
    model = cls(n_components=1, device="cpu", dtype=dtype)
    if fits:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X)
            scores = model.score_samples(X)
        assert np.all(np.isfinite(scores)) and np.all(np.isfinite(model.noise_variance_))
        return
    with pytest.raises(ValueError, match=r"X is too large in magnitude.*Rescale X") as error:
        model.fit(X)
    assert ("dtype='float64'" in str(error.value)) == (dtype == "float32")
    X[0, 0] = 0.0  # complete rows: the same error
    with pytest.raises(ValueError, match=r"X is too large in magnitude"):
        cls(n_components=1, device="cpu", dtype=dtype).fit(X)


# ---- columns constant in the training data

def _constant_messages(caught, what):
    return [str(w.message) for w in caught if what in str(w.message)]


def _with_constant_column(kind):
    X = _data(kind)
    X[:, 2] = {"real": 3.0, "binary": 0.0, "counts": 0.0}[kind]
    return X


@pytest.mark.parametrize("estimator, kind", ESTIMATORS, ids=IDS)
def test_constant_columns_warn_at_fit_and_their_rows_at_scoring(estimator, kind):
    X = _with_constant_column(kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = estimator.fit(X)
    fit_messages = _constant_messages(caught, "constant in the training data")
    assert len(fit_messages) == 1 and "column(s) [2]" in fit_messages[0], fit_messages
    assert "VarianceThreshold" in fit_messages[0]

    test = X[:6].copy()
    test[[1, 4], 2] = 1.0  # off the training value in the constant column
    methods = ["score_samples", "score"] + (
        ["elbo_samples", "score_breakdown"] if hasattr(model, "elbo_samples") else [])
    for method in methods:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            getattr(model, method)(test)
        messages = _constant_messages(caught, "held in every training row")
        assert len(messages) == 1, (method, messages)  # once per call
        assert "row(s) [1, 4] of X" in messages[0] and "column(s) [2]" in messages[0]
    with warnings.catch_warnings(record=True) as caught:  # rows at the training value: silent
        warnings.simplefilter("always")
        model.score_samples(X[:6])
    assert not _constant_messages(caught, "held in every training row")


def test_constant_columns_are_named_by_feature_name_and_tracked_over_partial_fit():
    X = _with_constant_column("real")
    frame = pd.DataFrame(X, columns=list("abcde"))
    with pytest.warns(UserWarning, match=r"column\(s\) \['c'\] .*constant"):
        PPCA(n_components=2, device="cpu").fit(frame)
    model = PPCA(n_components=2, device="cpu")
    with pytest.warns(UserWarning, match="constant in the training data"):
        model.partial_fit(X[:20])
    Y = X[20:].copy()
    Y[0, 2] = 4.0  # the column varies once all chunks are seen
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.partial_fit(Y)
        model.score_samples(Y)
    assert not _constant_messages(caught, "constant in the training data")
    assert not _constant_messages(caught, "held in every training row")


def test_a_covariate_column_is_not_a_modeled_constant_and_names_keep_x_columns():
    X = _with_constant_column("real")
    X[:, 0] = np.arange(X.shape[0]) % 2  # a batch covariate
    model = GaussianVAE(**VAE, covariates=[0])
    with pytest.warns(UserWarning, match=r"column\(s\) \[2\] .*constant"):
        model.fit(X)
    test = X[:3].copy()
    test[2, 2] = -1.0
    with pytest.warns(UserWarning, match=r"row\(s\) \[2\] of X .*column\(s\) \[2\]"):
        model.score_samples(test)


def test_rows_off_a_constant_column_are_named_in_the_whole_dask_array():
    # A dask array is scored block by block; the warning names rows of the whole X.
    da = pytest.importorskip("dask.array")
    X = _with_constant_column("real")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GaussianVAE(**VAE).fit(X)
    test = X[:9].copy()
    test[7, 2] = -1.0
    with pytest.warns(UserWarning, match=r"row\(s\) \[7\] of X .*column\(s\) \[2\]"):
        model.score_samples(da.from_array(test, chunks=(3, test.shape[1])))


# ---- partial_fit's first chunk

@pytest.mark.parametrize("n_components, need", [(None, 3), (1, 3), (2, 4), (4, 6)])
def test_ppca_first_chunk_needs_n_components_plus_two_rows_and_says_so(n_components, need):
    X = _data("real", n=60, d=6)
    with pytest.raises(ValueError, match=rf"first partial_fit chunk of PPCA needs at least "
                                         rf"{need} rows.*got {need - 1}"):
        PPCA(n_components=n_components, device="cpu").partial_fit(X[: need - 1])
    model = PPCA(n_components=n_components, device="cpu").partial_fit(X[:need])
    model.partial_fit(X[need : need + 1])  # later chunks: any size
    assert model.n_features_in_ == 6


def test_factor_analysis_first_chunk_needs_two_rows():
    X = _data("real", n=60, d=6)
    model = FactorAnalysisEM(n_components=3, device="cpu").partial_fit(X[:2])
    model.partial_fit(X[2:3])
    assert np.isfinite(model.score(X))


def test_em_partial_fit_matches_fit_to_the_stopping_rule(wine):
    # What the partial_fit docstring states: merged statistics equal to rounding, and EM that
    # stops where its rule says, so the gap shrinks with tol (1.5e-4 and 2e-5 measured).
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler().fit_transform(wine)
    for tol, bound in ((1e-5, 1e-3), (1e-7, 1e-4)):
        params = dict(n_components=5, device="cpu", tol=tol, max_iter=5000)
        whole = FactorAnalysisEM(**params).fit(X)
        chunked = FactorAnalysisEM(**params)
        for chunk in np.array_split(X, 4):
            chunked.partial_fit(chunk)
        assert abs(whole.score(X) - chunked.score(X)) < bound


def test_many_constant_columns_are_named_first_ten_and_counted():
    X = np.hstack([_data("real", n=30, d=3), np.ones((30, 12))])
    with pytest.warns(UserWarning, match=r"12 column\(s\) \[3, 4, 5, 6, 7, 8, 9, 10, 11, 12\] "
                                         r"and 2 more of X are constant"):
        FactorAnalysisEM(n_components=2, device="cpu").fit(X)


@pytest.mark.parametrize("estimator", [PPCA(n_components=2, device="cpu"), GaussianVAE(**VAE)],
                         ids=["ppca", "gaussian"])
def test_constant_columns_of_a_stream_are_found_over_all_its_blocks(estimator):
    da = pytest.importorskip("dask.array")
    X = _with_constant_column("real")
    with pytest.warns(UserWarning, match=r"1 column\(s\) \[2\] of X are constant"):
        estimator.fit(da.from_array(X, chunks=(10, 5)))
    X[25, 2] = 5.0  # one block differs: not constant over the stream
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        type(estimator)(**estimator.get_params()).fit(da.from_array(X, chunks=(10, 5)))
    assert not _constant_messages(caught, "constant in the training data")
