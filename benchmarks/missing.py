"""Imputation RMSE of the VAEs against PPCA.impute and sklearn's IterativeImputer, MCAR gaps.

    python benchmarks/missing.py [--rates 0.2 0.5] [--datasets digits breast_cancer] [--seed 0]

Each data set is scaled as stated below, entries are removed completely at random at each
rate, every imputer is fitted on the gappy matrix, and the RMSE over the removed entries is
printed (in the scaled units). Mean imputation is the baseline.
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer

from skvae import PPCA, BernoulliVAE, GaussianVAE

# The VAE settings of the comparison (MIWAE-like: IWAE objective, mask-aware encoder).
VAE_SETTINGS = dict(hidden_layer_sizes=(64, 64), activation="tanh", objective="iwae",
                    iwae_samples=5, max_iter=100, batch_size=64, n_importance_samples=100,
                    device="cpu")


def load(name):
    """The data set, scaled: digits / 16 (in [0, 1]); breast cancer standardized."""
    if name == "digits":
        return load_digits().data / 16.0
    X = load_breast_cancer().data
    return (X - X.mean(0)) / X.std(0)


def mcar(X, rate, seed):
    """A copy of X with a fraction ``rate`` of its entries set to NaN (no row left empty)."""
    rng = np.random.RandomState(seed)
    gappy = X.copy()
    gone = rng.uniform(size=X.shape) < rate
    empty = gone.all(axis=1)
    gone[empty, rng.randint(X.shape[1], size=empty.sum())] = False
    gappy[gone] = np.nan
    return gappy, gone


def rmse(imputed, X, gone):
    return float(np.sqrt(np.mean((imputed[gone] - X[gone]) ** 2)))


def imputers(name, seed, n_components):
    yield "mean", lambda G: np.where(np.isnan(G), np.nanmean(G, axis=0), G)
    yield f"PPCA(n_components={n_components})", lambda G: PPCA(
        n_components=n_components, device="cpu").fit(G).impute(G)
    yield "IterativeImputer()", lambda G: IterativeImputer(random_state=seed).fit_transform(G)
    yield "GaussianVAE", lambda G: GaussianVAE(
        n_components=n_components, random_state=seed, **VAE_SETTINGS).fit(G).impute(G)
    if name == "digits":
        yield "BernoulliVAE", lambda G: BernoulliVAE(
            n_components=n_components, random_state=seed, **VAE_SETTINGS).fit(G).impute(G)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer"])
    parser.add_argument("--rates", nargs="+", type=float, default=[0.2, 0.5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-components", type=int, default=10)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    for name in args.datasets:
        X = load(name)
        for rate in args.rates:
            G, gone = mcar(X, rate, args.seed)
            for label, impute in imputers(name, args.seed, args.n_components):
                started = time.perf_counter()
                value = rmse(impute(G), X, gone)
                print(f"{name:14s} {rate:4.0%} {label:26s} RMSE {value:.4f} "
                      f"({time.perf_counter() - started:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
