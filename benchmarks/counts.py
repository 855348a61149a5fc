"""Held-out log-likelihood of count models on real count data: Poisson, NB, ZINB and a
Gaussian VAE on log1p(x), made comparable as a probability mass function.

Run from the repository root:  python benchmarks/counts.py  [--epochs 150] [--data pbmc digits]

Data (both real counts, read from files that pip packages ship, nothing downloaded):

- ``pbmc``: scanpy's bundled ``10x_pbmc68k_reduced.h5ad`` (700 PBMCs x 765 genes, 10x
  Genomics). Its ``raw.X`` holds log1p(counts / n_counts * 1e4); with the stored per-cell
  ``n_counts`` the UMI counts are expm1(raw.X) * n_counts / 1e4, integers up to rounding of
  the stored values (largest deviation 0.08), so they are rounded. Needs h5py and the scanpy
  wheel's files (``pip install --no-deps scanpy`` is enough: scanpy is not imported).
- ``digits``: scikit-learn's ``load_digits`` (1797 x 64): the number of 'on' pixels (0..16)
  in each 4x4 block of a 32x32 bitmap.

Rows are split 80/20 (seeded); every model is fitted on the same training rows and scored on
the held-out rows with K=``--importance`` importance samples.

How the Gaussian is made comparable. GaussianVAE models y = log1p(x) with a density; a
density is not a probability, so its log p(y) cannot be set against the count models'
log P(x). Here the Gaussian decoder is turned into a distribution on the counts by
integrating it over the bin of each count: P(x_j | z) = Phi(b_j+1) - Phi(b_j) with the bin
[log1p(x_j), log1p(x_j + 1)), except x_j = 0 which takes (-inf, log 2), so that the bins
cover the real line and P(. | z) sums to one over the non-negative integers. log P(x) is then
estimated with the same importance-weighted formula and the same encoder q(z | log1p(x)) as
the GaussianVAE's own score: an honest, proper pmf for the Gaussian model, scored like the
others.

What the count models score: log P(x | l), l = sum_j x_j the observed library size (scVI's
convention). The library is given to them, not priced. The script prints, as the size of
that advantage, the mean held-out log P(l) of a negative binomial fitted (by moments) to the
training totals: subtracting it from the count models' figures is what pricing l would
roughly cost.
"""

import argparse
import importlib.util
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from skvae import CountVAE, GaussianVAE


def load_pbmc():
    """UMI counts (700 x 765) from scanpy's bundled pbmc68k_reduced, or None without it."""
    spec = importlib.util.find_spec("scanpy")
    if spec is None or importlib.util.find_spec("h5py") is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "10x_pbmc68k_reduced.h5ad"
    if not path.exists():
        return None
    import h5py
    from scipy import sparse

    with h5py.File(path, "r") as f:
        g = f["raw.X"]
        shape = tuple(g.attrs["h5sparse_shape"])
        raw = sparse.csr_matrix((g["data"][:], g["indices"][:], g["indptr"][:]), shape=shape)
        n_counts = f["obs"]["n_counts"].astype(np.float64)
    counts = np.expm1(raw.toarray().astype(np.float64)) * n_counts[:, None] / 1e4
    return np.round(counts)


def load_digit_counts():
    """'On' pixels (0..16) per 4x4 block of the digits bitmaps (1797 x 64)."""
    return load_digits().data.astype(np.float64)


def gaussian_binned_log_pmf(model, X, n_importance, seed=0):
    """Importance-weighted log P(x) of a GaussianVAE fitted on log1p(X), its density binned
    on the counts (see the module docstring)."""
    module = model.module_
    lik = module.likelihood
    dtype = next(module.parameters()).dtype
    x = torch.as_tensor(X, dtype=torch.float64)
    lo = torch.log1p(x)
    hi = torch.log1p(x + 1.0)
    lo = torch.where(x == 0, torch.full_like(lo, -math.inf), lo)
    loc, scale = module.in_loc.double(), module.in_scale.double()
    lo, hi = (lo - loc) / scale, (hi - loc) / scale  # bins in the likelihood's units
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn((n_importance, model.n_components_), generator=g, dtype=torch.float64)
    out = np.empty(X.shape[0])
    with torch.no_grad():
        for start in range(0, X.shape[0], 256):
            rows = slice(start, start + 256)
            y = torch.log1p(x[rows]).to(dtype)
            mean, logvar = module.encode(y)
            mean, logvar = mean.double(), logvar.double()
            z = mean + torch.exp(0.5 * logvar) * eps[:, None, :]
            params = module.decode(z.to(dtype))
            f = lik.mean(params).double()
            s = torch.sqrt(lik.variance(params).double())
            a, b = (lo[rows] - f) / s, (hi[rows] - f) / s
            # log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b))); for a
            # bin in the upper tail (a > 0) both Phi round to 1, so use the mirror image
            # Phi(-a) - Phi(-b) there, whose logs keep their precision.
            upper_tail = a > 0
            hi_t = torch.where(upper_tail, -a, b)
            lo_t = torch.where(upper_tail, -b, a)
            top, bottom = torch.special.log_ndtr(hi_t), torch.special.log_ndtr(lo_t)
            log_bin = top + torch.log(-torch.expm1(bottom - top))
            log_px = log_bin.sum(-1)
            log_ratio = -0.5 * (z.square().sum(-1) - eps[:, None, :].square().sum(-1)
                                - logvar.sum(-1))
            lw = log_px + log_ratio
            out[start : start + 256] = (torch.logsumexp(lw, 0) - math.log(n_importance)).numpy()
    return out


def library_log_pmf(train_totals, test_totals):
    """Held-out log P(l) under an NB (or Poisson when underdispersed) fitted by moments."""
    m, v = train_totals.mean(), train_totals.var()
    if v <= m:
        return stats.poisson.logpmf(test_totals, m)
    n = m * m / (v - m)
    return stats.nbinom.logpmf(test_totals, n, n / (n + m))


def evaluate(X, *, epochs, n_components, hidden, importance, seed=0, verbose=True):
    """Held-out mean log-likelihoods (nats per row) of the four models on X."""
    X_train, X_test = train_test_split(X, test_size=0.2, random_state=seed)
    common = dict(n_components=n_components, hidden_layer_sizes=hidden, max_iter=epochs,
                  batch_size=128, n_importance_samples=importance, device="cpu",
                  random_state=seed)
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for kind in ("poisson", "nb", "zinb"):
            t0 = time.perf_counter()
            model = CountVAE(likelihood=kind, **common).fit(X_train)
            results[kind] = float(model.score(X_test))
            if verbose:
                print(f"  CountVAE({kind!r}): {results[kind]:.2f} nats/row "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
        t0 = time.perf_counter()
        gauss = GaussianVAE(**common).fit(np.log1p(X_train))
        results["gaussian_log1p_binned"] = float(
            gaussian_binned_log_pmf(gauss, X_test, importance, seed).mean())
        # For reference only: the density of y = log1p(x) changed back to x, log p(y) -
        # sum_j log(1 + x_j), a density on the real line at the integer points, not a pmf.
        results["gaussian_log1p_density_at_x"] = float(
            (gauss.score_samples(np.log1p(X_test)) - np.log1p(X_test).sum(1)).mean())
    if verbose:
        print(f"  GaussianVAE on log1p, binned pmf: {results['gaussian_log1p_binned']:.2f} "
              f"nats/row ({time.perf_counter() - t0:.0f} s)", flush=True)
    results["library_log_pmf"] = float(
        library_log_pmf(X_train.sum(1), X_test.sum(1)).mean())
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--importance", type=int, default=100)
    parser.add_argument("--data", nargs="+", default=["pbmc", "digits"])
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    for name in args.data:
        X = load_pbmc() if name == "pbmc" else load_digit_counts()
        if X is None:
            print(f"{name}: skipped (needs h5py and scanpy's files)")
            continue
        print(f"{name}: {X.shape[0]} x {X.shape[1]} counts, mean library {X.sum(1).mean():.0f}",
              flush=True)
        hidden = (128,) if name == "pbmc" else (64,)
        res = evaluate(X, epochs=args.epochs, n_components=10, hidden=hidden,
                       importance=args.importance)
        for key, value in res.items():
            print(f"  {key:>30}: {value:10.2f}")


if __name__ == "__main__":
    main()
