"""Every script in examples/ runs in its fast mode, prints results and writes its figure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))

pytest.importorskip("matplotlib")


def test_examples_found():
    expected = {"quickstart.py", "resynthesis.py", "latent_space.py", "outlier_detection.py",
                "grid_search.py", "mnist_generation.py", "imputation.py"}
    assert expected <= {path.name for path in EXAMPLES}


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs_in_fast_mode(script, tmp_path):
    env = dict(os.environ, SKVAE_EXAMPLES_FAST="1", MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "an example prints its results"
    assert "Traceback" not in done.stderr
    figures = list(tmp_path.glob("*.png"))
    assert figures and all(path.stat().st_size > 1000 for path in figures), figures
