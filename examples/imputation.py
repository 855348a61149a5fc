"""
Imputing missing values: latent variable models against scikit-learn's imputers
===============================================================================

PPCA, FactorAnalysisEM and GaussianVAE all fit on data with missing entries (NaN) and fill
them with ``impute``: the conditional mean E[x_missing | x_observed] under the fitted model,
exact for the two linear Gaussian models, estimated by importance sampling for the VAE (as
in MIWAE). This example removes 10%, 30% and 50% of the entries completely at random (MCAR)
from two real data sets, fits every method on the gappy matrix, and prints the root mean
squared error over the removed entries (lower is better) beside scikit-learn's
``SimpleImputer`` (column means), ``KNNImputer`` and ``IterativeImputer``:

- breast cancer (569 tumours, 30 features), standardized: strongly correlated features,
  where a low-rank Gaussian model is close to the truth;
- digits (1,797 images, 64 pixels), grey levels / 16.

No row is left with every entry missing. The latent models use ``n_components`` 5 for breast
cancer and 10 for digits; the VAE is trained on the importance-weighted bound (IWAE, as in
MIWAE) and, having seen NaN in ``fit``, its encoder also reads which entries are missing.

Run: ``python examples/imputation.py [--out imputation.png] [--epochs 100]``
"""

import argparse
import os
import time
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.experimental import enable_iterative_imputer  # noqa: E402, F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skvae import PPCA, FactorAnalysisEM, GaussianVAE  # noqa: E402

# SKVAE_EXAMPLES_FAST=1: a small version that runs in seconds (the tests and the docs use it).
FAST = os.environ.get("SKVAE_EXAMPLES_FAST") == "1"


def load_sets(rows):
    """{name: (X, n_components)}: breast cancer standardized, digits / 16; first ``rows`` rows."""
    cancer = StandardScaler().fit_transform(load_breast_cancer().data)
    digits = load_digits().data / 16.0
    return {"breast cancer (standardized)": (cancer[:rows], 5),
            "digits / 16": (digits[:rows], 10)}


def mcar(X, rate, seed):
    """A copy of X with a fraction ``rate`` of its entries set to NaN (no row left empty)."""
    rng = np.random.RandomState(seed)
    gone = rng.uniform(size=X.shape) < rate
    empty = np.flatnonzero(gone.all(axis=1))
    gone[empty, rng.randint(X.shape[1], size=len(empty))] = False
    return np.where(gone, np.nan, X), gone


def imputers(k, seed, epochs):
    """{name: function from the gappy matrix to the filled one}; each fits on the gappy data."""
    em = dict(n_components=k, max_iter=30 if FAST else 1000)
    vae = dict(hidden_layer_sizes=(64, 64), activation="tanh", objective="iwae",
               iwae_samples=5, batch_size=64, max_iter=epochs, random_state=seed)
    return {
        "SimpleImputer": lambda G: SimpleImputer().fit_transform(G),
        "KNNImputer": lambda G: KNNImputer().fit_transform(G),
        "IterativeImputer": lambda G: IterativeImputer(
            max_iter=3 if FAST else 10, random_state=seed).fit_transform(G),
        "PPCA": lambda G: PPCA(**em).fit(G).impute(G),
        "FactorAnalysisEM": lambda G: FactorAnalysisEM(**em).fit(G).impute(G),
        "GaussianVAE": lambda G: GaussianVAE(n_components=k, **vae).fit(G).impute(G),
    }


def main():
    parser = argparse.ArgumentParser(
        description="Imputation RMSE of PPCA, FactorAnalysisEM and GaussianVAE against "
                    "scikit-learn's imputers")
    parser.add_argument("--out", default="imputation.png", help="where to write the figure")
    parser.add_argument("--rates", type=float, nargs="+",
                        default=[0.1, 0.5] if FAST else [0.1, 0.3, 0.5],
                        help="fractions of the entries removed")
    parser.add_argument("--epochs", type=int, default=5 if FAST else 100,
                        help="VAE training epochs")
    parser.add_argument("--rows", type=int, default=200 if FAST else None,
                        help="use only the first ROWS rows of each data set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if FAST:  # a few epochs cannot converge, and say so; the full run does not hide it
        warnings.simplefilter("ignore", ConvergenceWarning)

    sets = load_sets(args.rows)
    names = list(imputers(2, 0, 1))
    print("RMSE over the removed entries (MCAR), in the units of the scaled data; lower is "
          "better\n")
    print(f"{'data':<30}{'missing':>8}" + "".join(f"{name:>17}" for name in names))
    errors = {data: {name: [] for name in names} for data in sets}
    seconds = dict.fromkeys(names, 0.0)
    for data, (X, k) in sets.items():
        for rate in args.rates:
            G, gone = mcar(X, rate, args.seed)
            for name, impute in imputers(k, args.seed, args.epochs).items():
                start = time.perf_counter()
                filled = impute(G)
                seconds[name] += time.perf_counter() - start
                assert np.array_equal(filled[~gone], X[~gone])  # observed entries kept
                errors[data][name].append(np.sqrt(np.mean((filled[gone] - X[gone]) ** 2)))
            print(f"{data:<30}{rate:>8.0%}"
                  + "".join(f"{errors[data][name][-1]:>17.3f}" for name in names), flush=True)
    print(f"{'seconds, all fits':<38}" + "".join(f"{seconds[name]:>17.1f}" for name in names))

    figure, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.2))
    styles = {"SimpleImputer": ":", "KNNImputer": "--", "IterativeImputer": "-."}
    for ax, (data, (X, k)) in zip(axes, sets.items()):
        for name in names:
            label = name if name in styles else f"{name}.impute"
            ax.plot(np.array(args.rates) * 100, errors[data][name], styles.get(name, "-"),
                    marker="o", label=label)
        ax.set(title=f"{data}: {X.shape[0]} x {X.shape[1]}, n_components={k}",
               xlabel="entries missing (%)", ylabel="RMSE of the imputed entries")
        ax.set_xticks(np.array(args.rates) * 100)
    # The legend inside the figure's own area: the docs' gallery saves the figure as drawn,
    # without bbox_inches="tight", and would cut off a legend placed below it.
    figure.subplots_adjust(bottom=0.22)
    figure.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=6,
                  fontsize=8, bbox_to_anchor=(0.5, 0.0))
    figure.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"figure written to {args.out}")


if __name__ == "__main__":
    main()
