"""Every script in examples/ runs in its fast mode, prints results and writes its figure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))
# The scripts that read ../shared/data; each must fall back to a bundled data set without it.
USES_SHARED_DATA = [path for path in EXAMPLES if '"shared"' in path.read_text()]

pytest.importorskip("matplotlib")


def test_examples_found():
    expected = {"quickstart.py", "resynthesis.py", "latent_space.py", "outlier_detection.py",
                "grid_search.py", "mnist_generation.py", "imputation.py"}
    assert expected <= {path.name for path in EXAMPLES}
    assert {"outlier_detection.py", "mnist_generation.py"} <= {
        path.name for path in USES_SHARED_DATA}


def _fast_env(cuda):
    """The examples pick their device with device="auto": CUDA hidden, they run on the CPU
    the figures and printed numbers were tuned on; with ``cuda``, on the GPU."""
    env = dict(os.environ, SKVAE_EXAMPLES_FAST="1", MPLBACKEND="Agg")
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


@pytest.mark.parametrize("cuda", [
    False, pytest.param(True, marks=pytest.mark.cuda)], ids=["cpu", "cuda"])
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs_in_fast_mode(script, cuda, tmp_path):
    env = _fast_env(cuda)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "an example prints its results"
    assert "Traceback" not in done.stderr
    figures = list(tmp_path.glob("*.png"))
    assert figures and all(path.stat().st_size > 1000 for path in figures), figures


@pytest.mark.slow
@pytest.mark.parametrize("script", USES_SHARED_DATA, ids=lambda path: path.stem)
def test_example_runs_without_shared_data(script, tmp_path):
    # A copy of the script two folders below tmp_path has no ../shared/data next to its repo.
    copy = tmp_path / "repo" / "examples" / script.name
    copy.parent.mkdir(parents=True)
    copy.write_text(script.read_text())
    env = _fast_env(cuda=False)
    done = subprocess.run([sys.executable, str(copy)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not found" in done.stdout, "the fallback says so"
    assert list(tmp_path.glob("*.png"))
