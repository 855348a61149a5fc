"""
Quickstart: latent variable models on digits, scored on held-out data
=====================================================================

Fits PPCA, FactorAnalysisEM and GaussianVAE on 8x8 digits (and BernoulliVAE on binarized
ones), prints each model's held-out log-likelihood per image in nats, and writes one figure:
held-out log-likelihood against n_components, and digits with half their pixels missing,
filled in by PPCA's conditional mean.

Run: ``python examples/quickstart.py [--out quickstart.png]``
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.decomposition import PCA, FactorAnalysis  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import skvae  # noqa: E402
from skvae import PPCA, FactorAnalysisEM  # noqa: E402


# SKVAE_EXAMPLES_FAST=1: a small version that runs in seconds (the tests and the docs use it).
FAST = os.environ.get("SKVAE_EXAMPLES_FAST") == "1"


def load_data(seed=0):
    """Digits as a continuous density problem: grey levels 0..16 plus uniform noise, / 17.

    Dequantizing keeps every pixel continuous (no column is constant in one split and not in
    the other), so log-densities are finite and comparable across models.
    """
    digits = load_digits()
    rng = np.random.RandomState(seed)
    X = (digits.data + rng.uniform(size=digits.data.shape)) / 17.0
    return train_test_split(X, digits.target, test_size=0.3, random_state=seed)


def timed_fit(model, X):
    start = time.perf_counter()
    model.fit(X)
    return model, time.perf_counter() - start


def main(out):
    X_train, X_test, y_train, y_test = load_data()
    print(f"digits: {X_train.shape[0]} training and {X_test.shape[0]} held-out images of "
          f"{X_train.shape[1]} pixels\n")
    print(f"{'model':<34}{'k':>4}{'held-out log p(x)':>20}{'fit (s)':>10}")

    ks = [2, 8] if FAST else [2, 4, 8, 16, 32]
    curves = {"PPCA": [], "FactorAnalysisEM": []}
    for k in ks:
        for name, model in (("PPCA", PPCA(n_components=k)),
                            ("FactorAnalysisEM", FactorAnalysisEM(n_components=k))):
            model, seconds = timed_fit(model, X_train)
            curves[name].append(model.score(X_test))
            print(f"{name:<34}{k:>4}{curves[name][-1]:>20.2f}{seconds:>10.2f}")
    for k in (8,) if FAST else (8, 32):
        pca, seconds = timed_fit(PCA(n_components=k), X_train)
        print(f"{'sklearn PCA (n-1 estimates)':<34}{k:>4}{pca.score(X_test):>20.2f}{seconds:>10.2f}")
        fa, seconds = timed_fit(FactorAnalysis(n_components=k, random_state=0), X_train)
        print(f"{'sklearn FactorAnalysis':<34}{k:>4}{fa.score(X_test):>20.2f}{seconds:>10.2f}")

    vae_scores = {}
    # Small networks suit 64 pixels; early stopping on a held-out tenth of the training rows.
    small = dict(hidden_layer_sizes=(64, 32), learning_rate_init=3e-3, early_stopping=True,
                 n_iter_no_change=5, max_iter=5 if FAST else 400, random_state=0)
    vae = skvae.GaussianVAE(n_components=8, **small)
    vae, seconds = timed_fit(vae, X_train)
    vae_scores["GaussianVAE"] = vae.score(X_test)
    print(f"{'GaussianVAE (importance-weighted)':<34}{8:>4}{vae_scores['GaussianVAE']:>20.2f}"
          f"{seconds:>10.2f}")
    print(f"{'GaussianVAE (ELBO)':<34}{8:>4}{vae.elbo_samples(X_test).mean():>20.2f}"
          f"{'':>10}   ({vae.n_iter_} epochs, early stopping)")

    # Binary images: pixels above half intensity, a Bernoulli VAE against independent pixels.
    # Pixels that never (or always) light up in training are dropped: no model can learn a
    # probability for them, and skvae warns about such constant columns.
    B_train, B_test = (X_train > 0.5).astype(float), (X_test > 0.5).astype(float)
    varies = B_train.std(axis=0) > 0
    B_train, B_test = B_train[:, varies], B_test[:, varies]
    p = np.clip(B_train.mean(axis=0), 1e-3, 1 - 1e-3)
    independent = (B_test * np.log(p) + (1 - B_test) * np.log1p(-p)).sum(axis=1).mean()
    bvae, seconds = timed_fit(
        skvae.BernoulliVAE(n_components=8, **small), B_train)
    print(f"\nbinary digits ({B_train.shape[1]} pixels that vary), held-out log p(x): "
          f"independent pixels {independent:.2f}, "
          f"BernoulliVAE {bvae.score(B_test):.2f} ({seconds:.1f} s)")

    # Imputation: hide half of each held-out image, fill it from the other half.
    rng = np.random.RandomState(1)
    hidden = rng.uniform(size=X_test.shape) < 0.5
    gappy = np.where(hidden, np.nan, X_test)
    ppca = PPCA(n_components=16).fit(X_train)
    filled = ppca.impute(gappy)
    rmse = np.sqrt(np.mean((filled[hidden] - X_test[hidden]) ** 2))
    rmse_mean = np.sqrt(np.mean((X_train.mean(axis=0)[np.nonzero(hidden)[1]]
                                 - X_test[hidden]) ** 2))
    print(f"\nPPCA(16) imputes 50% hidden pixels with RMSE {rmse:.3f} "
          f"(training-mean imputation: {rmse_mean:.3f})")

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
    for name, values in curves.items():
        axes[0].plot(ks, values, marker="o", label=name)
    for name, value in vae_scores.items():
        axes[0].scatter([8], [value], marker="*", s=160, color="crimson", label=f"{name} (k=8)",
                        zorder=3)
    axes[0].set(xscale="log", xlabel="n_components", ylabel="held-out log-likelihood (nats/image)",
                title="Held-out likelihood on digits")
    axes[0].set_xticks(ks, [str(k) for k in ks])
    axes[0].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[0].legend()
    axes[1].axis("off")
    axes[1].set_title("Held-out digits: half the pixels hidden (orange), PPCA fills them in")
    rows = [X_test[:6], np.ma.masked_where(hidden[:6], X_test[:6]), filled[:6]]
    labels = ["original", "observed", "imputed"]
    cmap = plt.get_cmap("gray_r").with_extremes(bad="#f4a261")  # hidden pixels in orange
    for r, (images, label) in enumerate(zip(rows, labels)):
        for c, image in enumerate(images):
            ax = figure.add_axes([0.47 + c * 0.085, 0.62 - r * 0.27, 0.08, 0.22])
            ax.imshow(image.reshape(8, 8), cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    figure.savefig(out, dpi=120, bbox_inches="tight")
    print(f"figure written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Quickstart: latent variable models on digits")
    parser.add_argument("--out", default="quickstart.png", help="where to write the figure")
    main(parser.parse_args().out)
