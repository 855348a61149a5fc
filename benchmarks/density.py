"""Held-out density: BernoulliVAE on statically binarized MNIST against a plain torch VAE of
the same architecture given the same CPU time, and GaussianVAE on Frey faces against PPCA and
FactorAnalysisEM.

Run from the repository root:  python benchmarks/density.py  [--part mnist frey] [options]

MNIST (../shared/data/images/binarized_mnist.npz, the fixed binarization of the density
literature): every model trains on train + valid (60,000 rows) and is scored on the whole test
set (10,000 rows) by the importance-weighted estimate of log p(x) with K=``--k-eval`` draws
from its own encoder (K=5000 by default, the literature's convention). Settings of the skvae
model are the command-line options; the defaults are the ones README.md recommends. The plain
VAE is the textbook loop (same MLP widths and activation, Bernoulli logits, the ELBO, Adam with
the same learning rate and batch size, no warm-up, no schedule): it trains until its process CPU
time reaches the skvae fit's (CPU time rather than wall time, so that other load on the machine
does not decide the comparison; on an idle machine the two agree up to the thread count).

Frey faces (../shared/data/continuous/frey_faces.npz, 1965 images of 28 x 20 grey levels,
scaled to [0, 1]): a seeded 80/20 split; held-out log-density per image in nats, for PPCA
and FactorAnalysisEM (exact) and GaussianVAE (importance-weighted, K=``--k-eval``). All three
score the same scaled pixels, so their figures compare directly (the 1/255 scaling adds the
same 560 log 255 nats to each).
"""

import argparse
import pickle
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from _plain import PlainVAE
from skvae import PPCA, BernoulliVAE, FactorAnalysisEM, GaussianVAE

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def cpu_seconds():
    """CPU seconds (user + system) used by this process so far, all threads together."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------- the plain VAE
class PlainBernoulliVAE(PlainVAE):
    """The textbook VAE with a Bernoulli decoder (logits)."""

    def log_px_z(self, x, z):
        logits = self.decoder(z)
        return -nn.functional.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").sum(-1)


def train_plain(X, hidden, latent, activation, lr, batch_size, cpu_budget, seed=0):
    torch.manual_seed(seed)
    model = PlainBernoulliVAE(X.shape[1], hidden, latent, activation)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start, epochs = cpu_seconds(), 0
    while cpu_seconds() - start < cpu_budget:
        order = torch.randperm(X.shape[0])
        for i in range(0, X.shape[0], batch_size):
            loss = model.loss(X[order[i : i + batch_size]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epochs += 1
    return model, epochs, cpu_seconds() - start


# ----------------------------------------------------------------------- MNIST
def mnist(args):
    with np.load(DATA / "images" / "binarized_mnist.npz") as data:
        X = np.concatenate([data["train"], data["valid"]])[: args.train_rows].astype(np.float32)
        # The test file is sorted by digit: a subset must be drawn at random (train and valid
        # are shuffled already).
        test = data["test"]
        rows = np.random.RandomState(0).permutation(len(test))[: args.test_rows]
        X_test = test[np.sort(rows)].astype(np.float32)
    hidden = tuple(args.hidden)
    print(f"binarized MNIST: train {X.shape[0]} x {X.shape[1]}, test {X_test.shape[0]}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"skvae.BernoulliVAE(hidden_layer_sizes={hidden}, n_components={args.latent}, "
          f"activation={args.activation!r}, objective={args.objective!r}, "
          f"iwae_samples={args.iwae_samples}, kl_warmup={args.kl_warmup}, "
          f"learning_rate_init={args.lr}, batch_size={args.batch}, max_iter={args.epochs})")
    model = BernoulliVAE(
        n_components=args.latent, hidden_layer_sizes=hidden, activation=args.activation,
        objective=args.objective, iwae_samples=args.iwae_samples, kl_warmup=args.kl_warmup,
        learning_rate_init=args.lr, batch_size=args.batch, max_iter=args.epochs,
        n_importance_samples=args.k_eval, device="cpu", random_state=0,
        verbose=args.verbose,
    )
    wall, cpu = time.perf_counter(), cpu_seconds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached is the plan here
        model.fit(X)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(f"  fit: {model.n_iter_} epochs, {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU")
    if args.save:
        with open(args.save, "wb") as handle:
            pickle.dump(model, handle)
    start = time.perf_counter()
    ll = model.score_samples(X_test)
    elbo = model.elbo_samples(X_test)
    print(f"  test log p(x), K={args.k_eval}: {ll.mean():.2f} nats "
          f"(ELBO {elbo.mean():.2f}; {time.perf_counter() - start:.0f} s to score); "
          f"active units {model.n_active_components_}/{args.latent}")

    if args.no_plain:
        return
    activation = {"relu": nn.ReLU, "tanh": nn.Tanh}[args.activation]
    plain, epochs, plain_cpu = train_plain(torch.as_tensor(X), hidden, args.latent, activation,
                                           args.lr, args.batch, cpu)
    torch.manual_seed(1)
    plain_ll = plain.log_likelihood(torch.as_tensor(X_test), args.k_eval, rows=10)
    print(f"  plain VAE, same CPU time ({plain_cpu / 60:.1f} min, {epochs} epochs): "
          f"test log p(x) {plain_ll.mean():.2f} nats")
    print(f"  skvae - plain: {ll.mean() - float(plain_ll.mean()):+.2f} nats per image")


# ----------------------------------------------------------------------- Frey faces
def frey(args):
    with np.load(DATA / "continuous" / "frey_faces.npz") as data:
        X = data["X"].astype(np.float64) / 255.0
    X_train, X_test = train_test_split(X, test_size=0.2, random_state=0)
    print(f"Frey faces: train {X_train.shape[0]} x {X_train.shape[1]}, test {X_test.shape[0]}; "
          f"held-out nats per image (pixels scaled to [0, 1])")
    for k in args.frey_components:
        models = {
            "PPCA": PPCA(n_components=k),
            "FactorAnalysisEM": FactorAnalysisEM(n_components=k, max_iter=5000),
            "GaussianVAE": GaussianVAE(n_components=k, hidden_layer_sizes=(256, 128),
                                       max_iter=args.frey_epochs, n_importance_samples=args.k_eval,
                                       early_stopping=True, n_iter_no_change=30,
                                       device="cpu", random_state=0),
        }
        cells = []
        for name, model in models.items():
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X_train)
            fit_time = time.perf_counter() - start
            cells.append(f"{name} {model.score(X_test):9.1f} ({fit_time:.0f} s)")
        print(f"  k={k:>3}: " + ",  ".join(cells))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", default=["mnist", "frey"], choices=["mnist", "frey"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--activation", default="relu", choices=["relu", "tanh"])
    parser.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    parser.add_argument("--iwae-samples", type=int, default=5)
    parser.add_argument("--kl-warmup", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--k-eval", type=int, default=5000)
    parser.add_argument("--train-rows", type=int, default=60_000)
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument("--frey-components", type=int, nargs="+", default=[2, 10, 20])
    parser.add_argument("--frey-epochs", type=int, default=500)
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain torch VAE")
    parser.add_argument("--save", help="pickle the fitted BernoulliVAE to this file")
    args = parser.parse_args()
    if "mnist" in args.part:
        mnist(args)
    if "frey" in args.part:
        frey(args)


if __name__ == "__main__":
    main()
