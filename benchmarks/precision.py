"""What dtype="float32" costs the linear models: float32 against float64 log p(x), per row.

    python benchmarks/precision.py [--components 5] [--datasets wine digits ...]

Each model is fitted twice on the same rows, with dtype="float64" (the default) and
dtype="float32", and both score the training rows; the table gives, per data set and model,
the largest difference of log p(x) over the rows (nats), the largest relative difference
(|difference| / |float64 log p(x)|), the median difference and the difference of the mean
log-likelihood (``score``). Each data set is used raw (as loaded) and standardized
(StandardScaler). The sets are scikit-learn's bundled wine, breast cancer and digits, the
Frey faces and the ADBench shuttle set (../shared/data, see its README; a missing file is
skipped). A column that is constant in the data has its noise variance at the floor, which
is 1e-6 (float32) or 1e-12 (float64) times the mean variance, so each such column alone moves
log p(x) by 0.5 ln(1e6) = 6.9 nats between the two: the script counts them.
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from skvae import PPCA, FactorAnalysisEM

# ../shared/data from the repository root (the first folder above it that has one).
DATA = next((up / "shared" / "data" for up in Path(__file__).resolve().parents[1].parents
             if (up / "shared" / "data").is_dir()), Path("../shared/data"))
DATASETS = ["wine", "breast_cancer", "digits", "frey_faces", "shuttle"]


def load(name):
    """The rows of one data set as float64, or None when its file is absent."""
    if name == "wine":
        return load_wine().data
    if name == "breast_cancer":
        return load_breast_cancer().data
    if name == "digits":
        return load_digits().data
    path = DATA / {"frey_faces": "continuous/frey_faces.npz",
                   "shuttle": "outliers/32_shuttle.npz"}[name]
    if not path.exists():
        return None
    return np.load(path)["X"].astype(np.float64)


def compare(model, X, n_components):
    """Differences of the float32 model's log p(x) from the float64 model's, per row."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exact = model(n_components=n_components, device="cpu").fit(X).score_samples(X)
        single = model(n_components=n_components, device="cpu",
                       dtype="float32").fit(X).score_samples(X)
    difference = np.abs(single - exact)
    return (difference.max(), (difference / np.abs(exact)).max(), np.median(difference),
            single.mean() - exact.mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=5)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=DATASETS)
    args = parser.parse_args()

    start = time.perf_counter()
    print(f"n_components={args.components}; log p(x) of the training rows, float32 fit and "
          "score against float64 (nats per row)")
    print(f"{'data':>14} {'scaling':>8} {'n x d':>11} {'const':>5} {'model':>16} "
          f"{'max |diff|':>10} {'max rel':>8} {'median':>8} {'mean diff':>9}")
    for name in args.datasets:
        X = load(name)
        if X is None:
            print(f"{name:>14}  skipped: file not found under {DATA}")
            continue
        constant = int((X.std(axis=0) == 0).sum())
        for scaling, data in (("raw", X), ("std", StandardScaler().fit_transform(X))):
            for model in (PPCA, FactorAnalysisEM):
                worst, relative, median, mean = compare(model, data, args.components)
                shape = f"{X.shape[0]}x{X.shape[1]}"
                print(f"{name:>14} {scaling:>8} {shape:>11} {constant:>5} {model.__name__:>16} "
                      f"{worst:>10.2e} {relative:>8.1e} {median:>8.1e} {mean:>+9.1e}")
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
