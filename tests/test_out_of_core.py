"""Data beyond memory: numpy memmaps and dask arrays are fitted and scored chunk by chunk.

Linear models take one pass over the rows for their exact sufficient statistics, so a fit
from a memmap or a dask array equals the in-memory fit (to rounding) while holding only one
chunk of rows beyond the d x d statistics. Memory is measured in a fresh subprocess: the peak
of the anonymous resident memory (``RssAnon``, sampled every millisecond while the call
runs; a memmap's pages are file-backed and the kernel may drop them at will, so they are not
what runs a machine out of memory) and, for dask arrays, the resident-set high-water mark.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from skvae import PPCA, FactorAnalysisEM, GaussianVAE

from _memory import PEAK_ANONYMOUS_RISE

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20
da = pytest.importorskip("dask.array")


def low_rank_rows(n, d, seed=0):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, 3)) @ rng.normal(size=(3, d)) + rng.normal(size=(n, d))


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysisEM])
@pytest.mark.parametrize("chunks", [(97, 12), (250, 5)], ids=["row-chunks", "column-chunks"])
def test_fit_on_a_dask_array_equals_the_in_memory_fit(cls, chunks):
    X = low_rank_rows(1000, 12)
    expected = cls(n_components=3).fit(X)
    model = cls(n_components=3).fit(da.from_array(X, chunks=chunks))
    np.testing.assert_allclose(model.get_covariance(), expected.get_covariance(), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(model.mean_, expected.mean_, rtol=1e-12, atol=1e-12)
    assert model.n_features_in_ == 12


def test_methods_take_dask_arrays_and_match_numpy():
    X = low_rank_rows(600, 8)
    X[::7, 2] = np.nan
    model = PPCA(n_components=3, device="cpu").fit(X)  # compares bits
    lazy = da.from_array(X, chunks=(128, 8))
    np.testing.assert_array_equal(model.score_samples(lazy), model.score_samples(X))
    np.testing.assert_array_equal(model.impute(lazy), model.impute(X))
    mean, std = model.transform(lazy, return_std=True)
    expected_mean, expected_std = model.transform(X, return_std=True)
    np.testing.assert_array_equal(mean, expected_mean)
    np.testing.assert_array_equal(std, expected_std)
    assert model.score(lazy) == model.score(X)
    vae = GaussianVAE(n_components=2, hidden_layer_sizes=(8,), max_iter=2, device="cpu",
                      random_state=0).fit(np.nan_to_num(X))
    np.testing.assert_allclose(vae.score_samples(lazy), vae.score_samples(X), rtol=1e-6)


def test_a_dask_array_with_nan_is_refused_with_the_fix():
    X = low_rank_rows(300, 6)
    X[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"contains NaN.*X\.compute\(\)"):
        PPCA(n_components=2, device="cpu").fit(da.from_array(X, chunks=(100, 6)))
    with pytest.raises(ValueError, match="minimum of 2"):
        PPCA(n_components=1, device="cpu").fit(da.from_array(X[:1], chunks=(1, 6)))


def test_a_float32_memmap_fits_like_its_float64_copy(tmp_path):
    X = low_rank_rows(3000, 10).astype(np.float32)
    path = tmp_path / "X.f32"
    mapped = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    mapped[:] = X
    mapped.flush()
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)
    for cls in (PPCA, FactorAnalysisEM):
        from_map = cls(n_components=3).fit(mapped)
        from_copy = cls(n_components=3).fit(X.astype(np.float64))
        np.testing.assert_allclose(from_map.get_covariance(), from_copy.get_covariance(),
                                   rtol=1e-10, atol=1e-12)


_SCRIPT = textwrap.dedent("""
    import json, sys, threading, time, warnings
    sys.path.insert(0, {root!r})
    warnings.simplefilter("ignore")
    import numpy as np
    from skvae import PPCA

    {measure}

    kind, n, d, path = {case!r}
    rng = np.random.RandomState(0)
    W = rng.normal(size=(3, d))
    if kind == "memmap":
        X = np.memmap(path, dtype=np.float32, mode="w+", shape=(n, d))
        for i in range(0, n, 50_000):
            rows = min(50_000, n - i)
            X[i : i + rows] = rng.normal(size=(rows, 3)) @ W + rng.normal(size=(rows, d))
        X.flush()
        del X
        X = np.memmap(path, dtype=np.float32, mode="r", shape=(n, d))
    else:
        import dask.array as da
        state = da.random.RandomState(0)
        X = state.standard_normal((n, 3), chunks=(10_000, 3)) @ da.from_array(W) \\
            + state.standard_normal((n, d), chunks=(10_000, d))  # blocks of 7.6 MiB
    PPCA(n_components=3, device="cpu").fit(np.asarray(X[:2000]))  # warm up code paths
    model, rise = peak_anonymous_rise(lambda: PPCA(n_components=3, device="cpu").fit(X))
    print(json.dumps({{"rise": rise, "x_bytes": n * d * (4 if kind == "memmap" else 8),
                      "noise": float(model.noise_variance_)}}))
""")


@pytest.mark.parametrize("kind, n, d", [("memmap", 600_000, 100), ("dask", 300_000, 100)])
def test_fit_holds_one_chunk_not_the_data(kind, n, d, tmp_path):
    # Stated cap: 64 MiB of anonymous memory above the start, whatever n (X is 229 MiB here;
    # a float64 copy of the memmap would be 458 MiB).
    try:
        open("/proc/self/status").close()
    except OSError as error:
        pytest.skip(f"no /proc here ({error})")
    script = _SCRIPT.format(root=str(ROOT), case=(kind, n, d, str(tmp_path / "X.f32")),
                            measure=PEAK_ANONYMOUS_RISE)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["x_bytes"] > 3 * 64 * MiB
    assert report["rise"] < 64 * MiB, report  # measured: see the report
    assert 0.9 < report["noise"] < 1.1  # the model's noise variance is 1
