"""Outlier detection with -score_samples on the ten ADBench sets in ../shared/data/outliers.

ADBench's protocol (Han et al. 2022, Table D4): a stratified 70/30 split, each detector fitted
on the (contaminated) training part with default settings, ROC-AUC x 100 on the test part,
mean of 3 splits. Here: PPCA, FactorAnalysisEM and GaussianVAE behind a StandardScaler, and
scikit-learn's IsolationForest run in the same process on the same splits; the paper's PCA and
IForest figures are printed beside them.

Run from the repository root:  python benchmarks/outliers.py  [--splits 3]
"""

import argparse
import csv
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skvae import PPCA, FactorAnalysisEM, GaussianVAE

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "outliers"


def paper_table():
    with open(DATA / "adbench_table_d4_aucroc_unsupervised.csv") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        return {row["dataset"]: row for row in rows}


def detectors(n_features, seed):
    k = max(1, min(n_features // 4, 20))
    return {
        "PPCA": make_pipeline(StandardScaler(), PPCA(n_components=k)),
        "FactorAnalysisEM": make_pipeline(StandardScaler(), FactorAnalysisEM(n_components=k)),
        "GaussianVAE": make_pipeline(StandardScaler(), GaussianVAE(
            n_components=min(k, 8), hidden_layer_sizes=(64,), early_stopping=True,
            max_iter=100, random_state=seed)),
        "IsolationForest": IsolationForest(random_state=seed),
    }


def main(splits):
    table = paper_table()
    names = list(detectors(4, 0))
    print("ROC-AUC x 100, mean of", splits, "splits; paper: ADBench Table D4\n")
    print(f"{'data set':<12} {'n':>6} {'d':>4} " + " ".join(f"{n:>16}" for n in names)
          + f" {'paper PCA':>10} {'paper IForest':>14}")
    totals, seconds = np.zeros(len(names)), np.zeros(len(names))
    files = sorted(DATA.glob("*.npz"))
    for file in files:
        name = file.stem.split("_", 1)[1]
        with np.load(file) as data:
            X, y = data["X"].astype(np.float64), data["y"]
        aucs = np.zeros(len(names))
        for seed in range(splits):
            X_train, X_test, _, y_test = train_test_split(
                X, y, test_size=0.3, stratify=y, random_state=seed)
            for i, model in enumerate(detectors(X.shape[1], seed).values()):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    scores = model.fit(X_train).score_samples(X_test)
                seconds[i] += time.perf_counter() - start
                aucs[i] += 100 * roc_auc_score(y_test, -scores) / splits
        totals += aucs / len(files)
        print(f"{name:<12} {X.shape[0]:>6} {X.shape[1]:>4} "
              + " ".join(f"{a:>16.2f}" for a in aucs)
              + f" {table[name]['PCA']:>10} {table[name]['IForest']:>14}", flush=True)
    paper = [np.mean([float(table[f.stem.split('_', 1)[1]][c]) for f in files])
             for c in ("PCA", "IForest")]
    print(f"{'mean':<24}" + " ".join(f"{a:>16.2f}" for a in totals)
          + f" {paper[0]:>10.2f} {paper[1]:>14.2f}")
    print(f"{'seconds':<24}" + " ".join(f"{s:>16.1f}" for s in seconds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=3)
    main(parser.parse_args().splits)
