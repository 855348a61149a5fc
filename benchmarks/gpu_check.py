"""One run on a GPU machine: does every CUDA path work, and how fast is it (issue 20, part 2).

Run from the repository root (benchmarks/gpu_check.sh does, with a time limit):

    python benchmarks/gpu_check.py                 # on a machine with CUDA
    python benchmarks/gpu_check.py --cpu-dry-run   # the same checks on the CPU, tiny sizes

Sections, each timed and reported as ok / FAIL:

1. tests: every test marked ``cuda`` (``pytest -m cuda``);
2. smoke: every estimator and feature on CUDA (counts with each likelihood, NaN, covariates,
   early stopping, IWAE, float64, every ``sample(latent=...)``, streamed fits of a dask array
   and a memmap, CUDA tensors into every method), each result finite and on the host;
3. pickles: fitted on CUDA, loaded in a subprocess with CUDA hidden (``CUDA_VISIBLE_DEVICES=""``)
   and scored there to float rounding; and back (fitted on the CPU, loaded on CUDA);
4. determinism: two same-seed CUDA fits compared;
5. syncs: one epoch and one ``score_samples`` under ``torch.cuda.set_sync_debug_mode("warn")``
   (the host syncs counted; reported, not failed);
6. speed: VAE epoch at batch 128 and 1024 on CUDA against the CPU (2 threads, the machine
   of benchmarks/RESULTS.md); ``score_samples`` K=100 on 10,000 x 784; PPCA and
   FactorAnalysisEM fits at 50,000 x 784.

It prints a compact report (and writes it as JSON with ``--json PATH``) and exits non-zero
when any check failed. ``--cpu-dry-run`` runs sections 2 to 6 on the CPU with small sizes (no
pytest, no sync mode): it checks the script itself where there is no GPU.
"""

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from skvae import (  # noqa: E402
    PPCA,
    BernoulliVAE,
    CountVAE,
    FactorAnalysisEM,
    GaussianVAE,
    LatentOutlierDetector,
)

RESULTS = []  # (section, name, ok, seconds, detail)


def check(section, name):
    """Decorator: run the check, record ok/FAIL, its seconds and its detail (a str)."""

    def wrap(function):
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                detail = function()
            ok = True
        except Exception:  # a failed check is reported, the others still run
            ok, detail = False, traceback.format_exc(limit=4).strip().splitlines()[-1]
            print(traceback.format_exc(), file=sys.stderr)
        RESULTS.append((section, name, ok, time.perf_counter() - start, detail or ""))
        print(f"[{'ok' if ok else 'FAIL'}] {section}: {name} ({RESULTS[-1][3]:.1f} s)"
              f"{' - ' + str(detail) if detail else ''}", flush=True)
        return function

    return wrap


def _finite(*arrays):
    for a in arrays:
        a = np.asarray(a)
        assert isinstance(a, np.ndarray) and np.all(np.isfinite(a)), "non-finite output"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------- sections
def _pytest(*args, timeout):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0:
        print(done.stdout[-6000:], done.stderr[-3000:], file=sys.stderr)
        raise AssertionError(f"pytest rc={done.returncode}: {tail}")
    return tail


def run_tests():
    @check("tests", "pytest -m cuda tests/")
    def _():
        return _pytest("-m", "cuda", "tests/", timeout=300)

    # These also run without a GPU, but on one they fit on CUDA for real.
    @check("tests", "pytest tests/test_vae_device.py tests/test_device_paths.py")
    def _():
        return _pytest("-m", "not slow", "tests/test_vae_device.py",
                       "tests/test_device_paths.py", timeout=120)


def run_smoke(device, small):
    rng = np.random.RandomState(0)
    n, d = (300, 12) if small else (2000, 50)
    X = rng.normal(size=(n, 3)) @ rng.normal(size=(3, d)) + 0.3 * rng.normal(size=(n, d))
    gappy = X.copy()
    gappy[rng.uniform(size=X.shape) < 0.1] = np.nan
    binary = (X > 0).astype(float)
    counts = rng.poisson(np.exp(np.clip(X / 3, -2, 2))).astype(float)
    tensor = torch.as_tensor(X, device=device)
    vae = dict(n_components=2, hidden_layer_sizes=(16,), max_iter=3, n_importance_samples=8,
               device=device, random_state=0)

    for cls in (PPCA, FactorAnalysisEM):
        @check("smoke", f"{cls.__name__}: every method, NaN, tensors, partial_fit")
        def _(cls=cls):
            model = cls(n_components=3, device=device).fit(tensor)
            Z, S = model.transform(tensor, return_std=True)
            _finite(Z, S, model.score_samples(tensor), model.inverse_transform(Z),
                    model.sample(5, random_state=0), model.get_covariance(), model.score(tensor))
            np.testing.assert_allclose(model.transform(X), Z, rtol=1e-6, atol=1e-8)
            _finite(model.fit(gappy).impute(gappy), model.score_samples(gappy))
            streamed = cls(n_components=3, device=device)
            streamed.partial_fit(X[: n // 2]).partial_fit(tensor[n // 2:])
            np.testing.assert_allclose(streamed.score(X), cls(n_components=3, device=device)
                                       .fit(X).score(X), rtol=1e-5)
            if cls is FactorAnalysisEM:
                init = torch.ones(d, device=device)
                _finite(cls(n_components=2, noise_variance_init=init, device=device)
                        .fit(X).noise_variance_)
            cpu = cls(n_components=3, device="cpu").fit(X)
            np.testing.assert_allclose(cls(n_components=3, device=device).fit(X).score(X),
                                       cpu.score(X), rtol=1e-6)

    for cls, data in ((GaussianVAE, X), (BernoulliVAE, binary)):
        @check("smoke", f"{cls.__name__}: tensors into every method, every latent")
        def _(cls=cls, data=data):
            t = torch.as_tensor(data, device=device)
            model = cls(**vae).fit(t)
            Z, S = model.transform(t, return_std=True)
            _finite(Z, S, model.score_samples(t), model.elbo_samples(t),
                    model.inverse_transform(Z), model.score(t),
                    *model.score_breakdown(t).values())
            np.testing.assert_allclose(model.transform(data), Z, rtol=1e-6, atol=1e-6)
            for latent in ("prior", "aggregated_posterior", "fitted"):
                _finite(model.sample(4, latent=latent, random_state=1),
                        model.sample(4, latent=latent, return_mean=True))
            _finite(model.interpolate(data[0], data[1], n_steps=4),
                    model.apply_attribute(data[:3], model.attribute_vector(data[:5], data[5:10])))
            model.partial_fit(t)
            model.set_params(warm_start=True, max_iter=1).fit(t)
            _finite(model.score_samples(data))

    @check("smoke", "GaussianVAE: NaN (impute), early stopping, IWAE, float64")
    def _():
        model = GaussianVAE(**vae).fit(gappy)
        _finite(model.impute(torch.as_tensor(gappy, device=device)), model.score_samples(gappy))
        _finite(GaussianVAE(**vae, early_stopping=True, validation_fraction=0.2)
                .fit(X).validation_scores_)
        _finite(GaussianVAE(**vae, objective="iwae", iwae_samples=4).fit(X).score_samples(X))
        model = GaussianVAE(**vae, dtype="float64").fit(X)
        assert next(model.module_.parameters()).dtype == torch.float64
        _finite(model.score_samples(X), model.sample(3))

    @check("smoke", "GaussianVAE: covariates (one-hot and numeric)")
    def _():
        Xc = np.column_stack([X, rng.randint(3, size=n)])
        t = torch.as_tensor(Xc, device=device)
        for encoding in ("onehot", "numeric"):
            model = GaussianVAE(**vae, covariates=[-1], covariate_encoding=encoding).fit(t)
            _finite(model.transform(t), model.score_samples(t),
                    model.sample(3, covariates=1), model.inverse_transform(
                        model.transform(Xc[:4]), covariates=Xc[:4]))

    for likelihood in ("poisson", "nb", "zinb"):
        @check("smoke", f"CountVAE likelihood={likelihood}, library sizes as tensors")
        def _(likelihood=likelihood):
            t = torch.as_tensor(counts, device=device)
            model = CountVAE(**vae, likelihood=likelihood).fit(t)
            _finite(model.transform(t), model.score_samples(t), model.sample(3),
                    model.sample(2, library_size=torch.tensor([5.0, 50.0], device=device)))

    @check("smoke", "LatentOutlierDetector over a VAE and PPCA")
    def _():
        for inner in (GaussianVAE(**vae), PPCA(n_components=2, device=device)):
            detector = LatentOutlierDetector(inner).fit(X)
            labels = detector.predict(torch.as_tensor(X, device=device))
            assert set(np.unique(labels)) <= {-1, 1}
            _finite(detector.decision_function(X), detector.score_samples(X))

    @check("smoke", "streamed fits: dask array and memmap (VAE and PPCA)")
    def _():
        import dask.array as da

        from skvae.vae import _streaming

        GaussianVAE(**vae).fit(da.from_array(X, chunks=(n // 4, d)))
        PPCA(n_components=2, device=device).fit(da.from_array(X, chunks=(n // 4, d)))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "x.npy"
            big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
            big[:] = X
            big.flush()
            mm = np.load(path, mmap_mode="r")
            saved = _streaming.STREAM_BLOCK_BYTES
            _streaming.STREAM_BLOCK_BYTES = mm.nbytes // 4  # four blocks
            try:
                model = GaussianVAE(**vae).fit(mm)
            finally:
                _streaming.STREAM_BLOCK_BYTES = saved
            _finite(model.score_samples(mm))
            np.testing.assert_allclose(PPCA(n_components=2, device=device).fit(mm).score(X),
                                       PPCA(n_components=2, device="cpu").fit(X).score(X),
                                       rtol=1e-5)


_LOAD_AND_SCORE = """
import pickle, sys, numpy as np, torch
sys.path.insert(0, {root!r})
model = pickle.load(open({path!r}, "rb"))
X = np.load({data!r})
assert model._device.type == {expect!r}, model._device
np.save({out!r}, np.concatenate([model.score_samples(X), model.transform(X).ravel()]))
pickle.dump(model, open({path!r} + ".back", "wb"))  # saved again where CUDA is hidden
"""


def run_pickles(device):
    rng = np.random.RandomState(1)
    X = rng.normal(size=(200, 8))
    hidden = dict(os.environ, CUDA_VISIBLE_DEVICES="")

    def round_trip(model, rows, env, expect):
        with tempfile.TemporaryDirectory() as folder:
            path, data, out = (str(Path(folder) / name) for name in ("m.pkl", "x.npy", "o.npy"))
            with open(path, "wb") as f:
                pickle.dump(model, f)
            np.save(data, rows)
            script = _LOAD_AND_SCORE.format(root=str(ROOT), path=path, data=data, out=out,
                                            expect=expect)
            done = subprocess.run([sys.executable, "-c", script], env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            with open(path + ".back", "rb") as f:
                return np.load(out), pickle.load(f)

    for cls in (GaussianVAE, BernoulliVAE, PPCA):
        @check("pickles", f"{cls.__name__}: {device.type} -> CPU with CUDA hidden -> back")
        def _(cls=cls):
            kwargs = dict(n_components=2, device=device)
            if cls is not PPCA:
                kwargs.update(hidden_layer_sizes=(16,), max_iter=3, random_state=0)
            data = (X > 0).astype(float) if cls is BernoulliVAE else X
            model = cls(**kwargs).fit(data)
            here = np.concatenate([model.score_samples(data), model.transform(data).ravel()])
            there, back = round_trip(model, data, hidden, "cpu")
            np.testing.assert_allclose(there, here, rtol=1e-5, atol=1e-4)
            # And back: saved again on the CPU, loaded here, scored the same; its device
            # parameter is kept, so a clone fits on this machine's device again.
            again = np.concatenate([back.score_samples(data), back.transform(data).ravel()])
            np.testing.assert_allclose(again, here, rtol=1e-5, atol=1e-4)
            refit = clone(back).fit(data)
            assert refit._device.type == device.type, refit._device
            return f"max |diff| {np.max(np.abs(there - here)):.2e}"


def run_determinism(device):
    X = np.random.RandomState(2).normal(size=(500, 20))

    for cls in (GaussianVAE, PPCA):
        @check("determinism", f"{cls.__name__}: two same-seed fits on {device.type}")
        def _(cls=cls):
            kwargs = dict(n_components=3, device=device)
            if cls is GaussianVAE:
                kwargs.update(hidden_layer_sizes=(32,), max_iter=5, random_state=0)
            else:
                kwargs.update(solver="em", max_iter=20, random_state=0)
            a, b = cls(**kwargs).fit(X), cls(**kwargs).fit(X)
            sa, sb = a.score_samples(X), b.score_samples(X)
            same = np.array_equal(sa, sb) and np.array_equal(a.transform(X), b.transform(X))
            np.testing.assert_allclose(sa, sb, rtol=1e-4, atol=1e-4)
            return "bit-identical" if same else f"max |diff| {np.max(np.abs(sa - sb)):.2e}"


def run_syncs(device):
    X = np.random.RandomState(3).uniform(size=(4096, 784)).astype(np.float32)

    @check("syncs", "one epoch and one score_samples under set_sync_debug_mode('warn')")
    def _():
        model = GaussianVAE(n_components=16, hidden_layer_sizes=(256, 128), max_iter=1,
                            batch_size=1024, device=device, random_state=0).fit(X)
        counts = {}
        for name, call in (("fit, 1 epoch", lambda: model.set_params(warm_start=True).fit(X)),
                           ("score_samples", lambda: model.score_samples(X))):
            torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    call()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            counts[name] = sum("synchroniz" in str(w.message) for w in caught)
        return ", ".join(f"{k}: {v} syncs" for k, v in counts.items())


def _epoch_seconds(device, X, batch_size, epochs):
    model = GaussianVAE(n_components=16, hidden_layer_sizes=(256, 128), max_iter=1,
                        batch_size=batch_size, device=device, random_state=0)
    model.fit(X[:batch_size * 4])  # warm-up: kernels, allocator
    model.set_params(warm_start=True, max_iter=1)
    model.fit(X)  # and one whole epoch (a new thread count's pool starts slowly)
    times = []
    for _ in range(epochs):
        _sync(torch.device(device))
        start = time.perf_counter()
        model.fit(X)
        _sync(torch.device(device))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_speed(device, small):
    rng = np.random.RandomState(4)
    n_vae = 2000 if small else 20000
    X = (rng.uniform(size=(n_vae, 784)) < 0.3).astype(np.float32)
    threads = torch.get_num_threads()

    for batch in (128, 1024):
        @check("speed", f"VAE epoch, {n_vae} x 784, batch {batch}: {device.type} vs CPU")
        def _(batch=batch):
            here = _epoch_seconds(device, X, batch, 1 if small else 3)
            # The CPU epoch on a quarter of the rows, times 4 (an epoch is linear in rows).
            torch.set_num_threads(2)
            try:
                cpu = 4 * _epoch_seconds("cpu", X[: n_vae // 4], batch, 1)
            finally:
                torch.set_num_threads(threads)
            return f"{here:.3f} s vs {cpu:.3f} s on 2 CPU threads: {cpu / here:.1f}x"

    @check("speed", f"score_samples K=100 on {1000 if small else 10000} x 784")
    def _():
        rows = X[: 1000 if small else 10000]
        model = GaussianVAE(n_components=16, hidden_layer_sizes=(256, 128), max_iter=1,
                            n_importance_samples=100, device=device, random_state=0).fit(X[:2000])
        model.score_samples(rows[:64])  # warm-up
        _sync(torch.device(device))
        start = time.perf_counter()
        scores = model.score_samples(rows)
        _sync(torch.device(device))
        _finite(scores)
        return f"{time.perf_counter() - start:.3f} s"

    n_lin = 5000 if small else 50000
    Y = rng.normal(size=(n_lin, 40)) @ rng.normal(size=(40, 784)) + rng.normal(size=(n_lin, 784))
    for cls in (PPCA, FactorAnalysisEM):
        @check("speed", f"{cls.__name__} fit, {n_lin} x 784, 20 components")
        def _(cls=cls):
            cls(n_components=20, device=device).fit(Y[:2000])  # warm-up
            _sync(torch.device(device))
            start = time.perf_counter()
            model = cls(n_components=20, device=device).fit(Y)
            _sync(torch.device(device))
            seconds = time.perf_counter() - start
            _finite(model.score_samples(Y[:1000]))
            return f"{seconds:.3f} s ({model.n_iter_} iterations)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="the smoke, pickle, determinism and speed parts, on the CPU, small")
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="sections to leave out (tests smoke pickles determinism syncs speed)")
    args = parser.parse_args(argv)
    dry = args.cpu_dry_run
    if not dry and not torch.cuda.is_available():
        print("CUDA is not available: run on a GPU machine, or pass --cpu-dry-run.")
        return 2
    device = torch.device("cpu" if dry else "cuda")
    name = "CPU (dry run)" if dry else torch.cuda.get_device_name(0)
    print(f"skvae GPU check on {name}; torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    sections = [("tests", lambda: run_tests()), ("smoke", lambda: run_smoke(device, dry)),
                ("pickles", lambda: run_pickles(device)),
                ("determinism", lambda: run_determinism(device)),
                ("syncs", lambda: run_syncs(device)), ("speed", lambda: run_speed(device, dry))]
    for section, run in sections:
        if section in args.skip or (dry and section in ("tests", "syncs")):
            continue
        run()
    failed = [r for r in RESULTS if not r[2]]
    print(f"\n== report: {len(RESULTS) - len(failed)}/{len(RESULTS)} ok on {name} in "
          f"{time.perf_counter() - start:.0f} s")
    for section, check_name, ok, seconds, detail in RESULTS:
        print(f"{'ok  ' if ok else 'FAIL'} {section:12s} {check_name}: {detail}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": name, "torch": torch.__version__, "dry_run": dry,
            "results": [dict(zip(("section", "name", "ok", "seconds", "detail"), r))
                        for r in RESULTS]}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
