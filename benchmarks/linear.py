"""PPCA and FactorAnalysisEM against scikit-learn's PCA and FactorAnalysis, side by side.

For each data set, in one process on the same float64 arrays:
- PPCA.fit against PCA(svd_solver="covariance_eigh").fit (medians of --repeats runs, alternated);
- PPCA.score_samples (Woodbury, O(n d k)) against PCA.score_samples (full precision, O(n d^2));
- FactorAnalysisEM.fit against FactorAnalysis.fit, with the mean log-likelihood each reaches.

Data: binarized MNIST from ../shared/data/images (50,000 x 784; 20,000 x 784; and 20,000 x 200,
the 200 most variable pixels). Run from the repository root:

    python benchmarks/linear.py [--repeats 5] [--device auto]
"""

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA, FactorAnalysis
from sklearn.exceptions import ConvergenceWarning

from skvae import PPCA, FactorAnalysisEM

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"


def load_sets():
    train = np.load(DATA / "binarized_mnist.npz")["train"].astype(np.float64)
    top200 = np.argsort(train[:20000].var(axis=0))[::-1][:200]
    return [
        ("50,000 x 784", train[:50000]),
        ("20,000 x 784", train[:20000]),
        ("20,000 x 200", np.ascontiguousarray(train[:20000][:, top200])),
    ]


# Seconds of rest before each timed call. After a call, OpenBLAS (numpy, scipy) keeps its
# worker threads spinning for about 0.1 s, and torch's OpenMP threads spin briefly too; a call
# that starts inside that window shares the cores with them and can run 2-10x slower (measured
# here on 2 cores: PPCA.score_samples 0.065 s alone, 0.16 s right after PCA.score_samples).
# A user's calls rarely follow each other that closely, so each library is timed at rest.
IDLE = 0.3


def side_by_side(reference, ours, repeats):
    """Median seconds of ``reference()`` and ``ours()``, alternated after one untimed call each.

    Alternating spreads any drift of the machine's speed over both; the untimed calls take
    one-off costs (first allocations, lazy imports) out of the medians.
    """
    results = (reference(), ours())
    times = ([], [])
    for _ in range(repeats):
        for function, kept in zip((reference, ours), times):
            time.sleep(IDLE)
            start = time.perf_counter()
            function()
            kept.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1]), results


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main(repeats, device, k):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device={device}, "
          f"k={k}, medians of {repeats} alternated runs (factor analysis: 1 run each)\n")
    rows = []
    for name, X in load_sets():
        n = X.shape[0]
        t_pca, t_ppca, (pca, ppca) = side_by_side(
            lambda: PCA(n_components=k, svd_solver="covariance_eigh").fit(X),
            lambda: PPCA(n_components=k, device=device).fit(X), repeats)
        t_pca_score, t_ppca_score, (pca_scores, ppca_scores) = side_by_side(
            lambda: pca.score_samples(X), lambda: ppca.score_samples(X), repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            # FactorAnalysis takes seconds: one run of each, the fast one after its own warm-up.
            t_fa, fa = timed(lambda: FactorAnalysis(n_components=k, random_state=0).fit(X))
            FactorAnalysisEM(n_components=k, device=device).fit(X)
            time.sleep(IDLE)
            t_fa_em, fa_em = timed(lambda: FactorAnalysisEM(n_components=k, device=device).fit(X))
        ll_fa, ll_fa_em = fa.score(X), fa_em.score(X)
        rows.append((name, t_pca, t_ppca, t_pca_score, t_ppca_score, t_fa, t_fa_em))
        print(f"== {name}")
        print(f"  fit            PCA(covariance_eigh) {t_pca:7.3f} s   PPCA {t_ppca:7.3f} s   "
              f"PCA/PPCA = {t_pca / t_ppca:5.2f}x")
        print(f"  score_samples  PCA {t_pca_score:7.3f} s   PPCA {t_ppca_score:7.3f} s   "
              f"PCA/PPCA = {t_pca_score / t_ppca_score:5.1f}x   "
              f"(mean log p: PCA {pca_scores.mean():.3f}, PPCA {ppca_scores.mean():.3f})")
        print(f"  factor analysis  FactorAnalysis {t_fa:7.2f} s ({fa.n_iter_} iterations, "
              f"mean log p {ll_fa:.4f})   FactorAnalysisEM {t_fa_em:6.2f} s ({fa_em.n_iter_} "
              f"iterations, mean log p {ll_fa_em:.4f})   time ratio {t_fa / t_fa_em:5.1f}x, "
              f"likelihood gain {ll_fa_em - ll_fa:+.4f} nats/sample\n")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--k", type=int, default=32)
    arguments = parser.parse_args()
    main(arguments.repeats, arguments.device, arguments.k)
