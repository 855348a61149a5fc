"""
Outlier detection on the ADBench data sets with LatentOutlierDetector
=====================================================================

A row that a density model finds unlikely is a candidate outlier. ``LatentOutlierDetector``
turns any skvae model into a scikit-learn outlier detector: ``score_samples`` is the fitted
model's log-likelihood (higher is more normal) and ``predict`` returns -1 for the rows below a
threshold set from the training scores, as ``IsolationForest`` does.

This example follows the protocol of the ADBench benchmark (Han et al., NeurIPS 2022, Table
D4) on its ten classical data sets: a stratified 70/30 split, each detector fitted without
labels on the contaminated training part with fixed settings, and the ROC-AUC (x 100) of its
outlier score on the test part, averaged over ``--splits`` splits (one by default, to keep
the run short; the paper averages three). The detectors are
``LatentOutlierDetector`` around PPCA and around GaussianVAE, both behind a StandardScaler,
and scikit-learn's ``IsolationForest`` on the same splits; the paper's figures for its PCA
and IForest detectors are printed and plotted beside them.

The data sets are read from ``../shared/data/outliers`` next to the repository. Where they are
absent, the example says so and runs a stand-in task on scikit-learn's digits instead: the
images of one digit as inliers, with a tenth as many images of another digit mixed in as
outliers.

Run: ``python examples/outlier_detection.py [--splits 3] [--out outlier_detection.png]``
"""

import argparse
import csv
import os
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skvae import PPCA, GaussianVAE, LatentOutlierDetector  # noqa: E402

# SKVAE_EXAMPLES_FAST=1: a small version that runs in seconds (the tests and the docs use it).
FAST = os.environ.get("SKVAE_EXAMPLES_FAST") == "1"
try:
    EXAMPLES = Path(__file__).resolve().parent
except NameError:  # sphinx-gallery runs the script without __file__, from its own folder
    EXAMPLES = Path.cwd()
# ../shared/data next to the repository; it may be absent (e.g. on CI): see the fallback.
DATA = EXAMPLES.parents[1] / "shared" / "data" / "outliers"
PAPER = DATA / "adbench_table_d4_aucroc_unsupervised.csv"
# The two smallest sets in fast mode.
FAST_SETS = ("breastw", "cardio")


def adbench_sets():
    """{name: (X, y)} of the ADBench sets found in DATA (y = 1 for outliers), by file order."""
    sets = {}
    for file in sorted(DATA.glob("*.npz")):
        name = file.stem.split("_", 1)[1]
        if not FAST or name in FAST_SETS:
            with np.load(file) as data:
                sets[name] = data["X"].astype(np.float64), data["y"].astype(int)
    return sets


def digits_sets(seed=0):
    """Stand-in tasks: all images of one digit, plus a tenth as many of another as outliers."""
    digits = load_digits()
    rng = np.random.RandomState(seed)
    sets = {}
    for inlier, outlier in ((0, 6), (1, 7), (3, 8)):
        inliers = digits.data[digits.target == inlier]
        others = digits.data[digits.target == outlier]
        picked = others[rng.choice(len(others), size=len(inliers) // 10, replace=False)]
        X = np.vstack([inliers, picked])
        # Uniform noise makes every pixel continuous (some are constant within one digit).
        X = X + rng.uniform(size=X.shape)
        y = np.r_[np.zeros(len(inliers), int), np.ones(len(picked), int)]
        sets[f"{inlier} vs {outlier}s"] = X, y
    return sets


def paper_table():
    """{data set: {detector: ROC-AUC x 100}} of the paper's Table D4, or {} without it."""
    if not PAPER.exists():
        return {}
    with open(PAPER) as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        return {row["dataset"]: row for row in rows}


def detectors(n_features, seed, epochs):
    """The detectors compared, with fixed settings (no tuning on the labels)."""
    k = max(1, min(n_features // 4, 20))
    return {
        "PPCA": LatentOutlierDetector(make_pipeline(StandardScaler(), PPCA(n_components=k))),
        "GaussianVAE": LatentOutlierDetector(make_pipeline(StandardScaler(), GaussianVAE(
            n_components=min(k, 8), hidden_layer_sizes=(64,), early_stopping=True,
            max_iter=epochs, random_state=seed))),
        "IsolationForest": IsolationForest(random_state=seed),
    }


def main():
    parser = argparse.ArgumentParser(
        description="Outlier detection on the ADBench sets: LatentOutlierDetector around PPCA "
                    "and GaussianVAE beside IsolationForest")
    parser.add_argument("--splits", type=int, default=1,
                        help="number of random 70/30 splits averaged (the paper's: 3)")
    parser.add_argument("--epochs", type=int, default=5 if FAST else 100,
                        help="largest number of VAE epochs (early stopping may end sooner)")
    parser.add_argument("--out", default="outlier_detection.png", help="where to write the figure")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)  # a few epochs, on purpose in fast mode

    sets = adbench_sets() if DATA.is_dir() else {}
    paper = paper_table()
    if sets:
        print(f"ADBench sets from {DATA}" + (" (fast mode: the two smallest)" if FAST else ""))
    else:
        print(f"{DATA} not found: running the stand-in task on scikit-learn's digits instead "
              "(one digit as inliers, a tenth as many of another as outliers)")
        sets = digits_sets()
    names = list(detectors(4, 0, 1))
    print(f"ROC-AUC x 100 of the outlier score on the 30% test part, mean of {args.splits} "
          "split(s)\n")
    print(f"{'data set':<12}{'n':>7}{'d':>5}{'outliers':>10}"
          + "".join(f"{name:>17}" for name in names)
          + f"{'paper PCA':>11}{'paper IForest':>15}")

    aucs = {name: [] for name in names}
    seconds = dict.fromkeys(names, 0.0)
    flagged = []  # what PPCA's predict() says on the test rows, pooled over the splits
    for set_name, (X, y) in sets.items():
        row = dict.fromkeys(names, 0.0)
        for seed in range(args.splits):
            X_train, X_test, _, y_test = train_test_split(
                X, y, test_size=0.3, stratify=y, random_state=seed)
            for name, model in detectors(X.shape[1], seed, args.epochs).items():
                start = time.perf_counter()
                model.fit(X_train)
                scores = model.score_samples(X_test)  # higher = more normal, for all three
                seconds[name] += time.perf_counter() - start
                row[name] += 100 * roc_auc_score(y_test, -scores) / args.splits
                if name == "PPCA":
                    flagged.append((model.predict(X_test) == -1, y_test == 1))
        for name in names:
            aucs[name].append(row[name])
        reference = paper.get(set_name, {})
        print(f"{set_name:<12}{len(X):>7}{X.shape[1]:>5}{y.mean():>10.1%}"
              + "".join(f"{row[name]:>17.1f}" for name in names)
              + f"{reference.get('PCA', '-'):>11}{reference.get('IForest', '-'):>15}")
    paper_means = [np.mean([float(paper[s][c]) for s in sets]) if all(s in paper for s in sets)
                   else np.nan for c in ("PCA", "IForest")]
    shown = [f"{value:.2f}" if np.isfinite(value) else "-" for value in paper_means]
    print(f"{'mean':<34}" + "".join(f"{np.mean(aucs[name]):>17.1f}" for name in names)
          + f"{shown[0]:>11}{shown[1]:>15}")
    print(f"{'fit + score (s)':<34}" + "".join(f"{seconds[name]:>17.1f}" for name in names))

    predicted = np.concatenate([p for p, _ in flagged])
    actual = np.concatenate([a for _, a in flagged])
    print(f"\nPPCA detector's predict() (contamination='auto', Tukey's fence on the training "
          f"log-likelihoods), all test rows pooled:\n  flags {predicted.mean():.1%} of the rows "
          f"({actual.mean():.1%} are outliers); precision {actual[predicted].mean():.1%}, "
          f"recall {predicted[actual].mean():.1%}")

    labels = list(sets) + ["mean"]
    width = 0.8 / len(names)
    positions = np.arange(len(labels))
    figure, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(labels) + 2), 4.6))
    for i, name in enumerate(names):
        heights = aucs[name] + [np.mean(aucs[name])]
        ax.bar(positions + (i - (len(names) - 1) / 2) * width, heights, width, label=name)
    # The paper's figures sit on the bars of the same method: its PCA on PPCA's, its IForest
    # on IsolationForest's.
    for column, ours, marker in (("PCA", "PPCA", "_"), ("IForest", "IsolationForest", "x")):
        values = [float(paper[s][column]) if s in paper else np.nan for s in sets]
        values.append(paper_means[0 if column == "PCA" else 1])
        if not np.all(np.isnan(values)):
            shift = (names.index(ours) - (len(names) - 1) / 2) * width
            ax.scatter(positions + shift, values, marker=marker, s=120, color="black",
                       zorder=3, label=f"paper's {column}")
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set_xticks(positions, labels, rotation=30, ha="right")
    ax.set_yticks(range(0, 101, 20))
    ax.set(ylabel="ROC-AUC x 100 (test part)", ylim=(0, 114),
           title=f"Outlier detection, mean of {args.splits} split(s)")
    ax.legend(ncol=5, fontsize=8, loc="upper center")
    figure.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"figure written to {args.out}")


if __name__ == "__main__":
    main()
