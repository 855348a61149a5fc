"""
Generating binarized MNIST digits with a BernoulliVAE
=====================================================

Fits a ``BernoulliVAE`` (each pixel a Bernoulli variable given the latent code) to binarized
MNIST, the fixed binarization used in the density-estimation literature, and shows what the
fitted model does:

- ``sample`` with ``latent="prior"`` (z drawn from N(0, I)), ``"aggregated_posterior"`` (z
  drawn from q(z | x) of a random training image) and ``"fitted"`` (z drawn from a Gaussian
  mixture fitted to the training codes), each as decoded means (``return_mean=True``: the
  pixel probabilities, smooth) and as draws from p(x | z) (binary, speckled: what the model's
  likelihood actually describes);
- reconstructions of held-out images, ``inverse_transform(transform(X))``;
- ``interpolate`` between the codes of two held-out images.

It prints the held-out log-likelihood (importance-weighted, in nats per image; higher is
better) beside the ELBO and a baseline of independent pixels. Fewer training images (20,000
of the 50,000; ``--train-rows 50000`` for all) and epochs than the literature's keep the run
short on a CPU: expect several nats below the published figures.

The data are read from ``../shared/data/images/binarized_mnist.npz`` next to the repository.
Where the file is absent, the example says so and uses scikit-learn's 8x8 digits thresholded
at 8/16 instead.

Run: ``python examples/mnist_generation.py [--train-rows 20000] [--epochs 30]``
"""

import argparse
import os
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from skvae import BernoulliVAE  # noqa: E402

# SKVAE_EXAMPLES_FAST=1: a small version that runs in seconds (the tests and the docs use it).
FAST = os.environ.get("SKVAE_EXAMPLES_FAST") == "1"
try:
    EXAMPLES = Path(__file__).resolve().parent
except NameError:  # sphinx-gallery runs the script without __file__, from its own folder
    EXAMPLES = Path.cwd()
# ../shared/data next to the repository; it may be absent (e.g. on CI): see the fallback.
MNIST = EXAMPLES.parents[1] / "shared" / "data" / "images" / "binarized_mnist.npz"
LATENTS = ("prior", "aggregated_posterior", "fitted")


def load_data(train_rows, test_rows):
    """(X_train, X_test) in {0, 1}: binarized MNIST, or digits thresholded at 8/16 without it."""
    if MNIST.exists():
        with np.load(MNIST) as data:
            print(f"binarized MNIST from {MNIST}")
            # The test images are stored sorted by digit: score a random subset of them.
            rows = np.random.RandomState(0).permutation(len(data["test"]))[:test_rows]
            return (data["train"][:train_rows].astype(np.float64),
                    data["test"][rows].astype(np.float64))
    print(f"{MNIST} not found: using scikit-learn's 8x8 digits thresholded at 8/16 instead")
    X = (load_digits().data >= 8).astype(np.float64)
    return train_test_split(X, test_size=0.3, random_state=0)


def show_row(axes, images, side, title):
    for ax, image in zip(axes, images):
        ax.imshow(image.reshape(side, side), cmap="gray_r", vmin=0, vmax=1)
    axes[0].set_title(title, loc="left", fontsize=9)


def main():
    parser = argparse.ArgumentParser(
        description="Generating binarized MNIST digits with a BernoulliVAE")
    parser.add_argument("--out", default="mnist_generation.png", help="where to write the figure")
    parser.add_argument("--train-rows", type=int, default=2000 if FAST else 20000,
                        help="training images (at most 50,000)")
    parser.add_argument("--test-rows", type=int, default=300 if FAST else 2000,
                        help="held-out images scored (at most 10,000)")
    parser.add_argument("--epochs", type=int, default=3 if FAST else 30, help="training epochs")
    parser.add_argument("--n-components", type=int, default=16, help="latent dimensions")
    args = parser.parse_args()
    if FAST:  # a few epochs cannot converge, and say so; the full run does not hide it
        warnings.simplefilter("ignore", ConvergenceWarning)

    X_train, X_test = load_data(args.train_rows, args.test_rows)
    side = int(round(np.sqrt(X_train.shape[1])))
    print(f"{len(X_train)} training and {len(X_test)} held-out images of {side}x{side} pixels\n")

    start = time.perf_counter()
    vae = BernoulliVAE(n_components=args.n_components, hidden_layer_sizes=(256, 128),
                       max_iter=args.epochs, random_state=0).fit(X_train)
    print(f"BernoulliVAE(n_components={args.n_components}), {vae.n_iter_} epochs in "
          f"{time.perf_counter() - start:.1f} s; {vae.n_active_components_} of "
          f"{args.n_components} components active")

    p = np.clip(X_train.mean(axis=0), 1e-3, 1 - 1e-3)
    independent = (X_test * np.log(p) + (1 - X_test) * np.log1p(-p)).sum(axis=1).mean()
    start = time.perf_counter()
    score = vae.score(X_test)
    seconds = time.perf_counter() - start
    Z_test = vae.transform(X_test)
    reconstructions = vae.inverse_transform(Z_test)
    wrong = np.mean((reconstructions > 0.5) != (X_test > 0.5))
    print(f"\n{'held-out, nats per image':<48}{'log p(x)':>10}")
    print(f"{'independent pixels (training frequencies)':<48}{independent:>10.2f}")
    print(f"{'BernoulliVAE ELBO':<48}{vae.elbo_samples(X_test).mean():>10.2f}")
    print(f"{'BernoulliVAE importance-weighted, K=' + str(vae.n_importance_samples):<48}"
          f"{score:>10.2f}   ({seconds:.1f} s)")
    print(f"\nreconstructions of held-out images: {wrong:.2%} of the pixels wrong "
          "(probability on the wrong side of 0.5)")

    n = 10
    figure, axes = plt.subplots(9, n, figsize=(n * 0.9, 9 * 1.12),
                                gridspec_kw={"hspace": 0.45, "wspace": 0.08})
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for i, latent in enumerate(LATENTS):
        means = vae.sample(n, random_state=1, return_mean=True, latent=latent)
        draws = vae.sample(n, random_state=1, latent=latent)  # the same z, then x ~ p(x | z)
        show_row(axes[2 * i], means, side, f'sample(latent="{latent}", return_mean=True)')
        show_row(axes[2 * i + 1], draws, side, f'sample(latent="{latent}"): draws of x | z')
    show_row(axes[6], X_test[:n], side, "held-out images")
    show_row(axes[7], reconstructions[:n], side, "inverse_transform(transform(X))")
    first, second = X_test[0], X_test[np.argmax(Z_test @ Z_test[0] < 0)]
    show_row(axes[8], vae.interpolate(first, second, n_steps=n), side,
             "interpolate(two held-out images), slerp")
    figure.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"figure written to {args.out}")


if __name__ == "__main__":
    main()
