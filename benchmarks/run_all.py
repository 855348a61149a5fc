"""Run the benchmarks and write their output, with the machine they ran on, to RESULTS.md.

Run from the repository root:  python benchmarks/run_all.py  [--quick] [--only vae linear ...]

Each script runs in its own process, one after the other (so they do not compete for the
cores), with the arguments listed in BENCHMARKS; ``--quick`` uses the smaller settings beside
them (minutes instead of about an hour, for a smoke run: the figures are then not the ones to
quote). The page records the machine (CPU model, cores, memory, GPU), the versions, the
command line of every script, its wall time and CPU, then each script's output as it printed
it.
With ``--only``, the other scripts' sections of an existing RESULTS.md are kept.
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

# name: (full arguments, quick arguments)
BENCHMARKS = {
    "linear": ([], ["--repeats", "1"]),
    "vae": ([], ["--rows", "5000", "--epochs", "2", "--score-rows", "2000"]),
    "density": (["--objective", "elbo", "--epochs", "100", "--k-eval", "500"],
                ["--objective", "elbo", "--epochs", "2", "--train-rows", "5000",
                 "--test-rows", "500", "--k-eval", "100", "--frey-components", "2",
                 "--frey-epochs", "5"]),
    "outliers": ([], ["--splits", "1"]),
    "counts": ([], ["--epochs", "10"]),
    "missing": ([], ["--rates", "0.2"]),
    "parallel": ([], ["--epochs", "2"]),
    "precision": ([], ["--datasets", "wine", "digits"]),
}


def machine():
    """A few lines naming the machine and the software the figures come from."""
    import numpy
    import sklearn
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            found = re.search(r"^model name\s*:\s*(.+)$", handle.read(), re.M)
        cpu = found.group(1) if found else cpu
    except OSError:
        pass
    memory = "unknown"
    try:
        with open("/proc/meminfo") as handle:
            kib = int(re.search(r"^MemTotal:\s*(\d+)", handle.read(), re.M).group(1))
        memory = f"{kib / 2**20:.0f} GiB"
    except (OSError, AttributeError):
        pass
    gpu = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores; memory {memory}; GPU: {gpu}",
        f"- {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"scikit-learn {sklearn.__version__}, numpy {numpy.__version__}",
    ]


def sections(text):
    """{name: section text} of an existing RESULTS.md (the ``## name`` parts)."""
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    return {part.split("\n", 1)[0].strip(): "## " + part for part in parts}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings (smoke run)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None)
    args = parser.parse_args()

    names = args.only or list(BENCHMARKS)
    kept = sections(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    cpu_line = machine()[0][2:].split(";")[0]  # each section names the CPU it ran on
    for name in names:
        arguments = BENCHMARKS[name][1 if args.quick else 0]
        command = [sys.executable, str(HERE / f"{name}.py"), *arguments]
        shown = " ".join(["python", f"benchmarks/{name}.py", *arguments])
        print(f"running {shown}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        status = "" if done.returncode == 0 else f", exit status {done.returncode}"
        output = done.stdout + (f"\n{done.stderr[-3000:]}" if done.returncode else "")
        kept[name] = (f"## {name}\n\n`{shown}` ({seconds / 60:.1f} min{status}, "
                      f"{datetime.date.today()}; {cpu_line})\n\n```\n{output.rstrip()}\n```\n\n")
    header = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/run_all.py` (see its docstring); rerun it to regenerate "
        "this page on your machine. Each section gives its command, when it ran and on which "
        "CPU; the machine of the latest run:",
        "",
        *machine(),
        "",
        "Settings: " + ("quick (smoke run: not figures to quote)" if args.quick else "full"),
        "",
    ]
    order = [name for name in BENCHMARKS if name in kept]
    RESULTS.write_text("\n".join(header) + "\n" + "".join(kept[name] for name in order))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
