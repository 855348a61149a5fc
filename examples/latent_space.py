"""
Two-dimensional latent spaces of digits: PPCA, FactorAnalysisEM and GaussianVAE
===============================================================================

Fits PPCA, FactorAnalysisEM and GaussianVAE with ``n_components=2`` to 70% of the 8x8 digits
(grey levels plus uniform noise, / 17, so every pixel is continuous) and plots the codes
``transform`` gives for the held-out 30%, coloured by digit. The two linear models share one
latent space up to a rotation and a per-feature noise model; the VAE's nonlinear decoder can
bend the space so that the classes separate further.

Two figures per model are printed: the held-out log-likelihood per image (in nats, exact for
the linear models, importance-weighted for the VAE) and how well the classes separate in the
latent space, measured by the accuracy of a 5-nearest-neighbour classifier trained on the
codes of the training images and tested on those of the held-out ones (chance is about 10%).
Both are unsupervised fits: the labels are used only to colour the points and to score the
classifier.

Run: ``python examples/latent_space.py [--out latent_space.png] [--epochs 300]``
"""

import argparse
import os
import time
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from skvae import PPCA, FactorAnalysisEM, GaussianVAE  # noqa: E402

# SKVAE_EXAMPLES_FAST=1: a small version that runs in seconds (the tests and the docs use it).
FAST = os.environ.get("SKVAE_EXAMPLES_FAST") == "1"


def load_data(seed=0):
    """Digits as continuous data: grey levels 0..16 plus uniform noise, / 17, split 70/30."""
    digits = load_digits()
    rng = np.random.RandomState(seed)
    X = (digits.data + rng.uniform(size=digits.data.shape)) / 17.0
    return train_test_split(X, digits.target, test_size=0.3, random_state=seed,
                            stratify=digits.target)


def main():
    parser = argparse.ArgumentParser(
        description="Two-dimensional latent spaces of digits by PPCA, FactorAnalysisEM and "
                    "GaussianVAE")
    parser.add_argument("--out", default="latent_space.png", help="where to write the figure")
    parser.add_argument("--epochs", type=int, default=5 if FAST else 300,
                        help="largest number of VAE epochs (early stopping may end sooner)")
    parser.add_argument("--neighbours", type=int, default=5,
                        help="k of the k-nearest-neighbour classifier in the latent space")
    args = parser.parse_args()
    if FAST:  # a few epochs cannot converge, and say so; the full run does not hide it
        warnings.simplefilter("ignore", ConvergenceWarning)

    X_train, X_test, y_train, y_test = load_data()
    print(f"digits: {len(X_train)} training and {len(X_test)} held-out images of "
          f"{X_train.shape[1]} pixels, 2 latent dimensions\n")
    models = {
        "PPCA": PPCA(n_components=2),
        "FactorAnalysisEM": FactorAnalysisEM(n_components=2),
        # Small networks suit 64 pixels; early stopping on a held-out tenth of the training rows.
        "GaussianVAE": GaussianVAE(n_components=2, hidden_layer_sizes=(128, 64),
                                   learning_rate_init=3e-3, early_stopping=True,
                                   n_iter_no_change=10, max_iter=args.epochs, random_state=0),
    }
    print(f"{'model':<18}{'held-out log p(x)':>19}{'kNN accuracy':>14}{'fit (s)':>9}")
    codes = {}
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(X_train)
        seconds = time.perf_counter() - start
        Z_train, Z_test = model.transform(X_train), model.transform(X_test)
        knn = KNeighborsClassifier(n_neighbors=args.neighbours).fit(Z_train, y_train)
        accuracy = knn.score(Z_test, y_test)
        codes[name] = Z_test
        print(f"{name:<18}{model.score(X_test):>19.2f}{accuracy:>14.3f}{seconds:>9.2f}")
    vae = models["GaussianVAE"]
    print(f"\nGaussianVAE: {vae.n_iter_} epochs of at most {args.epochs}, "
          f"{vae.n_active_components_} of 2 components active")

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, (name, Z) in zip(axes, codes.items()):
        points = ax.scatter(Z[:, 0], Z[:, 1], c=y_test, cmap="tab10", s=9, vmin=-0.5,
                            vmax=9.5)
        for digit in range(10):  # label each class at the median of its codes
            x, y = np.median(Z[y_test == digit], axis=0)
            ax.text(x, y, str(digit), fontsize=13, weight="bold", ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.7, lw=0))
        ax.set(title=f"{name}: held-out digits", xlabel="z1", ylabel="z2")
    figure.colorbar(points, ax=axes, ticks=range(10), label="digit", fraction=0.02)
    figure.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"figure written to {args.out}")


if __name__ == "__main__":
    main()
