"""
Choosing n_components and beta of a GaussianVAE with GridSearchCV
=================================================================

Every skvae model's ``score`` is the mean held-out log-likelihood per row, so scikit-learn's
``GridSearchCV`` selects its hyperparameters with no scorer to write: here a
``Pipeline`` of a ``StandardScaler`` and a ``GaussianVAE`` on the breast cancer data (569
tumours, 30 features), searched over ``n_components`` x ``beta`` by cross-validation on 75% of
the rows. The log-likelihood is that of the standardized data, in nats per row; higher is
better.

``beta`` weighs the KL term of the training objective. Above 1 it pushes each latent component
towards the prior, and components that carry too little information about the data to pay
for their KL cost collapse onto it (posterior collapse): the fitted ``n_active_components_``
counts those that still vary with the input. Each cell of the grid is therefore also refitted
on the whole 75% to show how many of its components stay active, and scored on the held-out
25%.

Run: ``python examples/grid_search.py [--out grid_search.png] [--cv 3]``
"""

import argparse
import os
import time
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skvae import GaussianVAE  # noqa: E402

# SKVAE_EXAMPLES_FAST=1: a small version that runs in seconds (the tests and the docs use it).
FAST = os.environ.get("SKVAE_EXAMPLES_FAST") == "1"


def main():
    parser = argparse.ArgumentParser(
        description="GridSearchCV over n_components x beta of a GaussianVAE in a Pipeline")
    parser.add_argument("--out", default="grid_search.png", help="where to write the figure")
    parser.add_argument("--cv", type=int, default=2 if FAST else 3, help="cross-validation folds")
    parser.add_argument("--epochs", type=int, default=5 if FAST else 200,
                        help="largest number of VAE epochs (early stopping may end sooner)")
    args = parser.parse_args()
    if FAST:  # a few epochs cannot converge, and say so; the full run does not hide it
        warnings.simplefilter("ignore", ConvergenceWarning)

    X, _ = load_breast_cancer(return_X_y=True)
    X_train, X_test = train_test_split(X, test_size=0.25, random_state=0)
    pipeline = Pipeline([
        ("scale", StandardScaler()),
        ("vae", GaussianVAE(hidden_layer_sizes=(64, 32), learning_rate_init=3e-3,
                            early_stopping=True, max_iter=args.epochs, random_state=0)),
    ])
    grid = {"vae__n_components": [2, 8] if FAST else [2, 4, 8, 16],
            "vae__beta": [0.5, 4.0] if FAST else [0.5, 1.0, 2.0, 4.0]}
    print(f"breast cancer: {len(X_train)} rows searched by {args.cv}-fold cross-validation, "
          f"{len(X_test)} held out; {len(grid['vae__n_components'])} x "
          f"{len(grid['vae__beta'])} grid\n")
    start = time.perf_counter()
    search = GridSearchCV(pipeline, grid, cv=args.cv).fit(X_train)
    print(f"GridSearchCV: {time.perf_counter() - start:.1f} s; best {search.best_params_}, "
          f"cross-validated log-likelihood {search.best_score_:.2f} nats per row, "
          f"held-out {search.score(X_test):.2f}\n")

    ks, betas = grid["vae__n_components"], grid["vae__beta"]
    cv_scores = np.full((len(ks), len(betas)), np.nan)
    active = np.zeros((len(ks), len(betas)), dtype=int)
    print(f"{'n_components':>12}{'beta':>6}{'CV log p(x)':>13}{'(std)':>7}{'held-out':>10}"
          f"{'active':>8}")
    results = search.cv_results_
    for i, params in enumerate(results["params"]):
        row, col = ks.index(params["vae__n_components"]), betas.index(params["vae__beta"])
        cv_scores[row, col] = results["mean_test_score"][i]
        refit = clone(pipeline).set_params(**params).fit(X_train)
        active[row, col] = refit.named_steps["vae"].n_active_components_
        print(f"{ks[row]:>12}{betas[col]:>6}{cv_scores[row, col]:>13.2f}"
              f"{results['std_test_score'][i]:>7.2f}{refit.score(X_test):>10.2f}"
              f"{active[row, col]:>5} / {ks[row]}")

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    shown = np.where(np.isfinite(cv_scores), cv_scores, np.nan)
    floor = np.nanpercentile(shown, 10)  # keep one poor cell from flattening the colours
    image = axes[0].imshow(np.maximum(shown, floor), cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=axes[0], label="log-likelihood (nats per row)")
    axes[0].set_title(f"{args.cv}-fold cross-validated log p(x)")
    best = (ks.index(search.best_params_["vae__n_components"]),
            betas.index(search.best_params_["vae__beta"]))
    image = axes[1].imshow(active / np.array(ks)[:, None], cmap="magma", vmin=0, vmax=1,
                           aspect="auto")
    figure.colorbar(image, ax=axes[1], label="fraction of components active")
    axes[1].set_title("n_active_components_ of each refit")
    box = dict(boxstyle="round,pad=0.2", fc="white", alpha=0.7, lw=0)  # readable on any colour
    for row in range(len(ks)):
        for col in range(len(betas)):
            text = f"{cv_scores[row, col]:.1f}" + ("\nbest" if (row, col) == best else "")
            axes[0].text(col, row, text, ha="center", va="center", fontsize=9, bbox=box)
            axes[1].text(col, row, f"{active[row, col]} / {ks[row]}", ha="center",
                         va="center", fontsize=9, bbox=box)
    for ax in axes:
        ax.set_xticks(range(len(betas)), [str(b) for b in betas])
        ax.set_yticks(range(len(ks)), [str(k) for k in ks])
        ax.set(xlabel="beta", ylabel="n_components")
    figure.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"figure written to {args.out}")


if __name__ == "__main__":
    main()
