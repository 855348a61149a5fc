"""Wall time of GridSearchCV with n_jobs=1 against n_jobs=2 (and -1), same grid, same data.

Run from the repository root:  python benchmarks/parallel.py  [--epochs 20]

joblib's worker processes start with their native thread pools limited to
cpu_count // n_jobs threads (torch's included), so a parallel search does not oversubscribe
the cores: the speed-up is bounded by how well one thread per worker uses a core compared
with the serial search's cpu_count threads. Each search is timed once after a warm-up
search that starts the worker pool; the scores of the searches are compared too (they must
agree: every fit is seeded).
"""

import argparse
import os
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from skvae import PPCA, GaussianVAE


def timed_search(estimator, grid, X, n_jobs):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached is the plan here
        search = GridSearchCV(estimator, grid, cv=3, n_jobs=n_jobs).fit(X)
    return time.perf_counter() - start, search.cv_results_["mean_test_score"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    X = load_digits().data / 16
    cases = {
        "PPCA": (PPCA(), {"n_components": [2, 4, 8, 16, 24, 32]}),
        "GaussianVAE": (GaussianVAE(hidden_layer_sizes=(64, 32), max_iter=args.epochs,
                                    device="cpu", random_state=0),
                        {"n_components": [2, 4, 8], "beta": [0.5, 1.0]}),
    }
    print(f"digits {X.shape[0]} x {X.shape[1]}, cv=3, {os.cpu_count()} cores")
    print(f"{'model':<12} {'candidates':>10} {'n_jobs=1':>9} {'n_jobs=2':>9} {'n_jobs=-1':>10} "
          f"{'speed-up (2)':>13} {'same scores':>12}")
    for name, (estimator, grid) in cases.items():
        timed_search(estimator, grid, X[:200], 2)  # start the worker pool
        serial, scores = timed_search(estimator, grid, X, 1)
        two, scores_two = timed_search(estimator, grid, X, 2)
        every, scores_every = timed_search(estimator, grid, X, -1)
        same = np.allclose(scores, scores_two, rtol=1e-5) and np.allclose(scores, scores_every,
                                                                           rtol=1e-5)
        print(f"{name:<12} {len(scores):>10} {serial:>8.2f}s {two:>8.2f}s {every:>9.2f}s "
              f"{serial / two:>12.2f}x {str(same):>12}")


if __name__ == "__main__":
    main()
