"""
Resynthesis with a VAE: better samples, interpolation, attributes
=================================================================

Fits a BernoulliVAE to 70% of the 8x8 digits (grey levels / 16, in [0, 1]) and compares its
samples (decoded means) drawn with ``latent="prior"``, ``"aggregated_posterior"`` and
``"fitted"`` against the 30% held-out digits, with three measures:

- precision: the fraction of generated images whose nearest held-out image is closer than the
  median distance from a held-out image to its nearest other held-out image (the typical gap
  between real digits; in the spirit of Kynkaanniemi et al. 2019). Higher = more samples
  look like some real digit.
- recall: the same with the roles swapped, the fraction of held-out images that have a
  generated image that close. Higher = the samples cover more of the real digits.
- Frechet distance in pixel space between the Gaussians fitted to the generated and the
  held-out images (FID without the Inception network). Lower = closer first and second
  moments. Decoded means are smoother than real digits, which costs every method here.

Each figure is the mean over ``--repeats`` sampling seeds of as many samples as held-out rows.
Writes one figure: samples of each kind, a slerp interpolation, and an attribute vector
(the mean code of the 7s minus that of the 1s) added to held-out 1s.

Run: ``python examples/resynthesis.py [--out resynthesis.png] [--epochs 60]``
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402

from skvae import BernoulliVAE  # noqa: E402

LATENTS = ("prior", "aggregated_posterior", "fitted")
# SKVAE_EXAMPLES_FAST=1: a small version that runs in seconds (the tests and the docs use it).
FAST = os.environ.get("SKVAE_EXAMPLES_FAST") == "1"


def sample_quality(samples, real):
    """(precision, recall, Frechet distance) of generated rows against real rows."""
    real_gaps = NearestNeighbors(n_neighbors=2).fit(real).kneighbors(real)[0][:, 1]
    threshold = np.median(real_gaps)
    to_real = NearestNeighbors(n_neighbors=1).fit(real).kneighbors(samples)[0][:, 0]
    to_samples = NearestNeighbors(n_neighbors=1).fit(samples).kneighbors(real)[0][:, 0]
    mean_gap = samples.mean(0) - real.mean(0)
    cov_s, cov_r = np.cov(samples.T), np.cov(real.T)
    # tr sqrt(C_s C_r) = sum of the square roots of the eigenvalues of C_s^1/2 C_r C_s^1/2,
    # computed with symmetric eigendecompositions: stable though the blank border pixels make
    # both covariances singular.
    values, vectors = np.linalg.eigh(cov_s)
    root_s = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_s @ cov_r @ root_s), 0, None)).sum()
    frechet = mean_gap @ mean_gap + np.trace(cov_s) + np.trace(cov_r) - 2 * cross
    return np.mean(to_real < threshold), np.mean(to_samples < threshold), frechet


def main():
    parser = argparse.ArgumentParser(description="Resynthesis with a VAE on digits")
    parser.add_argument("--out", default="resynthesis.png")
    parser.add_argument("--epochs", type=int, default=5 if FAST else 60)
    parser.add_argument("--repeats", type=int, default=1 if FAST else 3)
    args = parser.parse_args()

    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data / 16, digits.target, test_size=0.3, random_state=0
    )
    start = time.perf_counter()
    model = BernoulliVAE(n_components=8, hidden_layer_sizes=(128,), max_iter=args.epochs,
                         device="cpu", random_state=0).fit(X_train)
    print(f"BernoulliVAE fitted in {time.perf_counter() - start:.1f} s, "
          f"{model.n_active_components_} active components of 8")

    print(f"{'latent':22s} {'precision':>9s} {'recall':>7s} {'Frechet':>8s}")
    reference = sample_quality(X_train[: len(X_test)], X_test)
    print(f"{'(real training rows)':22s} {reference[0]:9.3f} {reference[1]:7.3f} "
          f"{reference[2]:8.3f}")
    samples = {}
    for latent in LATENTS:
        runs = []
        for seed in range(args.repeats):
            draws = model.sample(len(X_test), random_state=seed, return_mean=True, latent=latent)
            runs.append(sample_quality(draws, X_test))
            samples.setdefault(latent, draws)
        precision, recall, frechet = np.mean(runs, axis=0)
        print(f"{latent:22s} {precision:9.3f} {recall:7.3f} {frechet:8.3f}")

    ones, sevens = X_train[y_train == 1], X_train[y_train == 7]
    to_seven = model.attribute_vector(ones, sevens)
    test_ones = X_test[y_test == 1][:4]
    strengths = (0.0, 0.5, 1.0, 1.5)
    edited = [model.apply_attribute(test_ones, to_seven, strength=s) for s in strengths]
    path = model.interpolate(X_test[y_test == 0][0], X_test[y_test == 6][0], n_steps=8)

    figure, axes = plt.subplots(9, 8, figsize=(8, 9.6))
    for ax in axes.ravel():
        ax.axis("off")
    for row, latent in enumerate(LATENTS):
        for col in range(16):
            ax = axes[2 * row + col // 8, col % 8]
            ax.imshow(samples[latent][col].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        axes[2 * row, 0].set_title(f'latent="{latent}"', loc="left", fontsize=9)
    for col in range(8):
        axes[6, col].imshow(path[col].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
    axes[6, 0].set_title("interpolate(a 0, a 6), slerp", loc="left", fontsize=9)
    # Two rows of four edited 1s side by side: each 1 at strengths 0, 0.5, 1, 1.5.
    for i, digit in enumerate(range(4)):
        for j in range(len(strengths)):
            ax = axes[7 + i // 2, 4 * (i % 2) + j]
            ax.imshow(edited[j][digit].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
    axes[7, 0].set_title("apply_attribute(1s, 7s - 1s, strength=0, 0.5, 1, 1.5)", loc="left",
                         fontsize=9)
    figure.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"figure written to {args.out}")


if __name__ == "__main__":
    main()
