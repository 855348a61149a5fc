"""Load: inference streams over rows in chunks, and linear fits stream over the data.

Peak memory is measured in a fresh subprocess from the kernel's resident-set high-water mark
(``VmHWM`` in /proc/self/status, reset between measurements by writing 5 to
/proc/self/clear_refs), which sees torch's allocations, unlike tracemalloc. For each case the
script builds X in place, fits (on a few rows for inference cases), warms the method up on a
few rows, resets the mark, runs the method on all rows and reports how far the mark rose above
the resident set before the call.

Stated bound: the rise is at most the output plus a fixed allowance, far below one n x d
temporary (the size of X, which each case makes larger than the allowance):

- linear models, 24 MiB: their kernels go over 1024-row (scores) or 4096-row chunks;
- VAEs, 64 MiB: inference chunks hold up to 2**22 activations (16 MiB per float32 layer);
  a VAE's transform may also hold 5 outputs' worth of n x k arrays (measured: 94.5 MiB rise
  for a 19.1 MiB output on 1,000,000 x 50, X being 190.7 MiB).

The default run measures 200,000 x 40 (linear) and 200,000 x 100 (VAE) inputs in one subprocess;
the 1,000,000-row versions (X up to 400 MB; PPCA and FactorAnalysisEM fits on 1,000,000 x 50)
are marked slow: run them with ``pytest -m slow``.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20
VAES = {"gaussian_vae", "bernoulli_vae"}
SLACK = {"ppca": 24 * MiB, "fa": 24 * MiB, "gaussian_vae": 64 * MiB, "bernoulli_vae": 64 * MiB}

_SCRIPT = textwrap.dedent("""
    import json, sys, time, warnings
    sys.path.insert(0, {root!r})
    warnings.simplefilter("ignore")
    import numpy as np
    from skvae import PPCA, FactorAnalysisEM, GaussianVAE, BernoulliVAE

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    vae = dict(n_components=5, hidden_layer_sizes=(32,), max_iter=1, device="cpu",
               random_state=0, n_importance_samples=4)
    models = {{
        "ppca": lambda: PPCA(n_components=5, device="cpu"),
        "fa": lambda: FactorAnalysisEM(n_components=5, device="cpu", max_iter=100),
        "gaussian_vae": lambda: GaussianVAE(**vae),
        "bernoulli_vae": lambda: BernoulliVAE(**vae),
    }}

    def measure(kind, method, n, d, dtype):
        rng = np.random.RandomState(0)
        W = rng.normal(size=(5, d))
        X = np.empty((n, d), dtype=dtype)
        for i in range(0, n, 50_000):  # filled in place: no n x d temporary
            rows = min(50_000, n - i)
            block = rng.normal(size=(rows, 5)) @ W + rng.normal(size=(rows, d))
            X[i : i + rows] = (block > 0) if kind == "bernoulli_vae" else block
        model = models[kind]()
        if method == "fit":
            model.fit(X[:1000])  # warm up code paths and thread pools
            model = models[kind]()
        else:
            model.fit(X[:5000])
            getattr(model, method)(X[:10])
        reset_peak()
        before = rss("VmRSS")
        start = time.perf_counter()
        out = getattr(model, method)(X)
        seconds = time.perf_counter() - start
        rise = rss("VmHWM") - before
        if method == "fit":
            out_bytes = 0
            assert np.all(np.isfinite(model.components_))
        else:
            out_bytes = out.nbytes
            assert out.shape[0] == n and np.all(np.isfinite(out))
        return {{"rise": rise, "out_bytes": out_bytes, "x_bytes": X.nbytes, "seconds": seconds}}

    for case in {cases!r}:
        print(json.dumps([list(case), measure(*case)]), flush=True)
""")


def run_cases(cases):
    try:
        open("/proc/self/clear_refs", "w").close()
    except OSError as error:
        pytest.skip(f"cannot reset the peak resident set here ({error})")
    script = _SCRIPT.format(root=str(ROOT), cases=[tuple(c) for c in cases])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("[")]
    return {tuple(case): report for case, report in reports}


def assert_streams(kind, report, method=None):
    slack = SLACK[kind]
    # A VAE's transform holds n x k arrays besides its output (mean and log-variance, their
    # chunk parts before torch.cat, the std): up to 5 outputs' worth, still O(n k), not O(n d).
    out_bytes = report["out_bytes"] * (5 if method == "transform" and kind in VAES else 1)
    assert report["x_bytes"] > slack  # so that an n x d temporary cannot hide
    assert report["rise"] <= out_bytes + slack, (
        f"peak memory rose by {report['rise'] / MiB:.1f} MiB, more than the output "
        f"allowance ({out_bytes / MiB:.1f} MiB) + {slack / MiB:.0f} MiB; X is "
        f"{report['x_bytes'] / MiB:.1f} MiB"
    )


def _cases(linear_rows, vae_rows, d_linear, d_vae):
    """(kind, method, n, d, input dtype) and the marks each needs.

    Input in each model's computing dtype (float64 linear, float32 VAE): a whole-input cast is
    a copy of X by design, not a failure to stream.
    """
    return [
        (("ppca", "score_samples", linear_rows, d_linear, "float64"), []),
        (("ppca", "transform", linear_rows, d_linear, "float64"), []),
        (("fa", "score_samples", linear_rows, d_linear, "float64"), []),
        (("fa", "transform", linear_rows, d_linear, "float64"), []),
        (("ppca", "fit", linear_rows, d_linear, "float64"), []),
        (("fa", "fit", linear_rows, d_linear, "float64"), []),
        (("gaussian_vae", "score_samples", vae_rows, d_vae, "float32"), []),
        (("gaussian_vae", "transform", vae_rows, d_vae, "float32"), []),
        (("bernoulli_vae", "score_samples", vae_rows, d_vae, "float32"), []),
    ]


DEFAULT = _cases(200_000, 200_000, 40, 100)
LARGE = _cases(1_000_000, 1_000_000, 50, 50)


def _params(cases):
    return [pytest.param(case, marks=marks, id=f"{case[0]}-{case[1]}") for case, marks in cases]


@pytest.fixture(scope="module")
def default_reports():
    return run_cases([case for case, _ in DEFAULT])


@pytest.fixture(scope="module")
def large_reports():
    return run_cases([case for case, _ in LARGE])


@pytest.mark.parametrize("case", _params(DEFAULT))
def test_streams_on_a_few_hundred_thousand_rows(case, default_reports):
    report = default_reports[case]
    print(case, {k: round(v / MiB, 1) if k != "seconds" else round(v, 2) for k, v in report.items()})
    assert_streams(case[0], report, case[1])


@pytest.mark.slow
@pytest.mark.parametrize("case", _params(LARGE))
def test_streams_on_a_million_rows(case, large_reports):
    report = large_reports[case]
    assert_streams(case[0], report, case[1])
    if case[1] == "fit":  # PPCA / FactorAnalysisEM on 1,000,000 x 50
        assert report["seconds"] < 120
