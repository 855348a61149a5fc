"""GaussianVAE training and scoring speed against a plain PyTorch loop of the same model.

Run from the repository root:  python benchmarks/vae.py  [--epochs 5] [--rows 20000]

Data: the first rows of the statically binarized MNIST training set
(../shared/data/images/binarized_mnist.npz), as float32 in {0, 1}, 784 features.
Model: encoder 784-256-128 -> latent 16, mirrored decoder, ReLU, Gaussian likelihood with a
learned variance per feature, Adam(lr=1e-3). For each batch size the script reports the
median epoch time of

- skvae.GaussianVAE (the per-epoch seconds of its verbose lines),
- the plain loop with torch.optim.Adam's default step and with fused=True,
- PyOD's VAE when pyod is installed (skipped otherwise),

and the time of score_samples with K=100 importance samples on 10,000 rows, for GaussianVAE
and for a plain chunked loop computing the same estimate.
"""

import argparse
import contextlib
import io
import math
import re
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _plain import PlainVAE
from skvae import GaussianVAE

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "images"
HIDDEN, LATENT, LR = (256, 128), 16, 1e-3


def load_rows(n_rows):
    with np.load(DATA / "binarized_mnist.npz") as data:
        return data["train"][:n_rows].astype(np.float32)


# ----------------------------------------------------------------------- the plain loop
class PlainGaussianVAE(PlainVAE):
    """The textbook VAE with a Gaussian decoder of learned per-feature variance."""

    def __init__(self, d):
        super().__init__(d, HIDDEN, LATENT)
        self.log_var_x = nn.Parameter(torch.zeros(d))

    def log_px_z(self, x, z):
        mean = self.decoder(z)
        return -0.5 * (((x - mean) ** 2) / self.log_var_x.exp() + self.log_var_x
                       + math.log(2 * math.pi)).sum(-1)


def plain_epoch_times(X, batch_size, epochs, fused):
    torch.manual_seed(0)
    model = PlainGaussianVAE(X.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=fused or None)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(X.shape[0])
        for i in range(0, X.shape[0], batch_size):
            loss = model.loss(X[order[i : i + batch_size]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times, model


# ----------------------------------------------------------------------- skvae
def skvae_epoch_times(X, batch_size, epochs):
    model = GaussianVAE(n_components=LATENT, hidden_layer_sizes=HIDDEN, batch_size=batch_size,
                        max_iter=epochs, learning_rate_init=LR, device="cpu", random_state=0,
                        verbose=1)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    times = [float(t) for t in re.findall(r", (\d+\.\d+) s$", buffer.getvalue(), re.M)]
    return times, model


def pyod_epoch_time(X, batch_size, epochs):
    try:
        from pyod.models.vae import VAE
    except ImportError:
        return None
    model = VAE(encoder_neuron_list=list(HIDDEN), decoder_neuron_list=list(HIDDEN[::-1]),
                latent_dim=LATENT, batch_size=batch_size, epoch_num=epochs, verbose=0)
    start = time.perf_counter()
    model.fit(X)
    return (time.perf_counter() - start) / epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--score-rows", type=int, default=10_000)
    args = parser.parse_args()

    X = load_rows(args.rows)
    Xt = torch.as_tensor(X)
    print(f"data: {X.shape[0]} x {X.shape[1]}, encoder {HIDDEN}, latent {LATENT}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"median epoch time over {args.epochs} epochs (seconds)")
    print(f"{'batch':>6} {'GaussianVAE':>12} {'plain':>8} {'plain fused':>12} {'PyOD':>8} "
          f"{'vs plain':>9} {'vs fused':>9}")
    fitted = None
    for batch_size in (128, 1024):
        ours, fitted_now = skvae_epoch_times(X, batch_size, args.epochs)
        plain, _ = plain_epoch_times(Xt, batch_size, args.epochs, fused=False)
        fused, plain_model = plain_epoch_times(Xt, batch_size, args.epochs, fused=True)
        pyod = pyod_epoch_time(X, batch_size, args.epochs)
        ours, plain, fused = (statistics.median(t) for t in (ours, plain, fused))
        pyod_text = "skipped" if pyod is None else f"{pyod:.3f}"
        print(f"{batch_size:>6} {ours:>12.3f} {plain:>8.3f} {fused:>12.3f} {pyod_text:>8} "
              f"{ours / plain:>8.2f}x {ours / fused:>8.2f}x")
        if batch_size == 128:
            fitted, fitted_plain = fitted_now, plain_model

    rows = X[: args.score_rows]
    times, plain_times = [], []
    for _ in range(2):  # alternated, so a drift in machine speed hits both alike
        start = time.perf_counter()
        scores = fitted.score_samples(rows)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        fitted_plain.log_likelihood(torch.as_tensor(rows))
        plain_times.append(time.perf_counter() - start)
    ours, plain = statistics.median(times), statistics.median(plain_times)
    print(f"score_samples, K=100, {len(rows)} rows: GaussianVAE {ours:.2f} s, plain loop "
          f"{plain:.2f} s ({ours / plain:.2f}x); mean score {scores.mean():.1f} nats")


if __name__ == "__main__":
    main()
