"""Memory and scale of the linear models: wide data, many rows, dtypes of the outputs.

Peak memory is measured in a fresh Python process: the peak resident set size (VmHWM, reset
through /proc/self/clear_refs) is read before and after the call under test, so the figure
counts torch's CPU allocations as well as numpy's. The process also caps its address space
a little above what it holds before the call, so a regression fails fast instead of taking
the machine's memory.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from pathlib import Path

import skvae
from sklearn.base import clone
from sklearn.decomposition import PCA

from skvae import PPCA, FactorAnalysisEM
from skvae.linear._moments import LowRankScatter

MiB = 2**20

_MEASURE = """
import json, resource, sys
import numpy as np
import torch

torch.set_num_threads(1)

def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024

def measure(call, cap_bytes):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size to the current one
    before = _status("VmHWM")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_status("VmSize") + cap_bytes, hard))
    try:
        result = call()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    return result, _status("VmHWM") - before
"""


def _run(script, tmp_path):
    """Run ``script`` (which prints one JSON line) after the measuring helpers; parse it."""
    if not _can_measure():
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    code = _MEASURE + textwrap.dedent(script)
    # The child imports the skvae under test, wherever the parent found it.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(skvae.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _can_measure():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _wide(n, d, seed=0):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, 4)) @ rng.normal(size=(4, d)) * 3 + rng.normal(size=(n, d))


# ---------------------------------------------------------------------- wide data (n << d)
def test_ppca_on_wide_data_needs_no_d_by_d_matrix(tmp_path):
    n, d, k = 60, 30_000, 5
    np.save(tmp_path / "X.npy", _wide(n, d))
    result = _run(f"""
        from skvae import PPCA
        X = np.load("X.npy")
        model, peak = measure(lambda: PPCA(n_components={k}, device="cpu").fit(X), 1024 * 2**20)
        np.savez("fitted.npz", components=model.components_, noise=model.noise_variance_,
                 score=model.score(X), mean=model.mean_)
        print(json.dumps({{"peak": peak}}))
        """, tmp_path)
    # d x d in float64 is 7.2 GB; the data itself is 14 MB.
    assert result["peak"] < 40 * n * d * 8 < d * d * 8 / 10
    fitted = np.load(tmp_path / "fitted.npz")
    X = np.load(tmp_path / "X.npy")
    pca = PCA(n_components=k, svd_solver="full").fit(X)
    # The same axes as PCA (up to sign); PCA's n - 1 variance and its noise averaged over
    # n - k directions, so the ML closed form is rebuilt from PCA's spectrum instead.
    axes = fitted["components"] / np.linalg.norm(fitted["components"], axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(np.sum(axes * pca.components_, axis=1)), 1.0, atol=1e-10)
    eigvals = pca.singular_values_**2 / n
    sigma2 = (np.sum(X.var(axis=0)) - eigvals[:k].sum()) / (d - k)
    np.testing.assert_allclose(float(fitted["noise"]), sigma2, rtol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(fitted["components"], axis=1) ** 2,
                               eigvals[:k] - sigma2, rtol=1e-10)
    np.testing.assert_allclose(fitted["mean"], pca.mean_, rtol=1e-12, atol=1e-12)


def test_factor_analysis_and_gappy_ppca_on_wide_data_need_no_d_by_d_matrix(tmp_path):
    n, d = 40, 20_000
    X = _wide(n, d, seed=1)
    np.save(tmp_path / "X.npy", X)
    gappy = X.copy()
    gappy[np.random.RandomState(2).uniform(size=X.shape) < 0.05] = np.nan
    np.save(tmp_path / "gappy.npy", gappy)
    result = _run("""
        import warnings
        from skvae import PPCA, FactorAnalysisEM
        X, gappy = np.load("X.npy"), np.load("gappy.npy")
        fa, fa_peak = measure(lambda: FactorAnalysisEM(n_components=3, device="cpu").fit(X),
                              1024 * 2**20)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a few EM iterations are enough to measure
            ppca, ppca_peak = measure(
                lambda: PPCA(n_components=3, max_iter=5, device="cpu").fit(gappy), 1024 * 2**20)
        print(json.dumps({"fa_peak": fa_peak, "ppca_peak": ppca_peak,
                          "fa_monotone": bool(np.all(np.diff(fa.loglike_) >= 0)),
                          "ppca_finite": bool(np.isfinite(ppca.score(gappy)))}))
        """, tmp_path)
    assert result["fa_peak"] < 40 * n * d * 8 < d * d * 8 / 10
    assert result["ppca_peak"] < 40 * n * d * 8
    assert result["fa_monotone"] and result["ppca_finite"]


@pytest.mark.parametrize("model, rtol", [
    (FactorAnalysisEM(n_components=3, tol=1e-10), 1e-7),
    (PPCA(n_components=3, solver="em", max_iter=6, random_state=0), 1e-9),
    (PPCA(n_components=3), 1e-10),
], ids=["fa", "ppca-em", "ppca"])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_low_rank_statistics_give_the_dense_fit(model, rtol, monkeypatch):
    """On n < d the solvers work from a factor of the scatter; forcing it dense changes nothing.

    EM paths differ by rounding only, so they are run to a tight tolerance (or for a fixed
    number of iterations) before comparing.
    """
    X = _wide(40, 200, seed=4)
    low_rank = clone(model).set_params(device="cpu").fit(X)
    assert isinstance(low_rank._stats[2], LowRankScatter)
    monkeypatch.setattr(type(model), "_keeps_factor", lambda self, rows, d, whole: False)
    dense = clone(model).set_params(device="cpu").fit(X)
    assert not isinstance(dense._stats[2], LowRankScatter)
    covariance = dense.get_covariance()
    np.testing.assert_allclose(low_rank.get_covariance(), covariance, rtol=rtol,
                               atol=rtol * np.abs(covariance).max())
    np.testing.assert_allclose(low_rank.score(X), dense.score(X), rtol=rtol)


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysisEM])
def test_partial_fit_on_wide_chunks_equals_fit(cls):
    """Chunks merge exactly as a low-rank factor while rows < d, then as a dense scatter."""
    X = _wide(150, 100, seed=3)
    streamed = cls(n_components=3, device="cpu", tol=1e-9)
    for start, stop in ((0, 40), (40, 80), (80, 150)):
        streamed.partial_fit(X[start:stop])
        low_rank = stop + (start > 0) * (start // 40) < 100
        assert isinstance(streamed._stats[2], LowRankScatter) == low_rank
        whole = cls(n_components=3, device="cpu", tol=1e-9).fit(X[:stop])
        np.testing.assert_allclose(streamed.get_covariance(), whole.get_covariance(),
                                   rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(streamed.mean_, whole.mean_, rtol=1e-12)


# ---------------------------------------------------------------------- many rows
@pytest.mark.parametrize("method", ["transform", "score_samples", "impute"])
def test_inference_on_many_rows_works_in_bounded_chunks(method, tmp_path):
    """float32 rows into a float64 model: cast chunk by chunk, never as one n x d copy."""
    n, d = 200_000, 50
    X = np.random.RandomState(5).normal(size=(n, d)).astype(np.float32)
    X[::1000, 3] = np.nan  # impute needs gaps; the others then take their missing-data path
    np.save(tmp_path / "X.npy", X)
    result = _run(f"""
        from skvae import PPCA
        X = np.load("X.npy")
        model = PPCA(n_components=5, device="cpu").fit(np.nan_to_num(X[:2000]).astype(float))
        model.{method}(X[:2000])  # warm up: libraries loaded on first use count as memory
        out, peak = measure(lambda: model.{method}(X), 2048 * 2**20)
        print(json.dumps({{"peak": peak, "nbytes": out.nbytes, "dtype": str(out.dtype)}}))
        """, tmp_path)
    # Beyond the output, less than the float32 input itself (40 MB): one float64 copy would be
    # 80 MB (the whole-array paths took 80 to 160 MB); the rest is chunks and allocator slack.
    assert result["peak"] < result["nbytes"] + X.nbytes
    assert result["dtype"] == ("float64" if method == "score_samples" else "float32")


# ---------------------------------------------------------------------- outputs
@pytest.mark.parametrize("cls", [PPCA, FactorAnalysisEM])
def test_transform_std_is_an_ordinary_array(cls, wine):
    X = wine.copy()
    X[0, 2] = np.nan  # one row with its own posterior covariance
    model = cls(n_components=3, device="cpu").fit(wine)
    for data in (wine, X):
        _, std = model.transform(data, return_std=True)
        assert std.flags.c_contiguous and std.flags.writeable and std.flags.owndata
        assert std.strides[0] == std.shape[1] * std.itemsize
        expected = std[5].copy()
        std[1] = 0.0
        np.testing.assert_array_equal(std[5], expected)


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysisEM])
@pytest.mark.parametrize("model_dtype", ["float32", "float64"])
@pytest.mark.parametrize("input_dtype", [np.float32, np.float64, np.int64])
def test_output_dtypes_follow_the_input(cls, model_dtype, input_dtype, wine):
    X = np.round(wine[:60]).astype(input_dtype)
    gappy = X.astype(np.float32 if input_dtype == np.float32 else np.float64)
    gappy[0, 1] = np.nan
    model = cls(n_components=3, device="cpu", dtype=model_dtype).fit(wine)
    out = np.float32 if input_dtype == np.float32 else np.float64
    Z = model.transform(X)
    outputs = {
        "transform": (Z, out),
        "transform std": (model.transform(X, return_std=True)[1], out),
        "inverse_transform": (model.inverse_transform(Z), out),
        "impute": (model.impute(gappy), out),
        "score_samples": (model.score_samples(X), np.float64),
        "sample": (model.sample(4), np.float64),
    }
    for name, (value, dtype) in outputs.items():
        assert value.dtype == dtype, name
    assert type(model.score(X)) is float
    assert model.__sklearn_tags__().transformer_tags.preserves_dtype == ["float64", "float32"]
