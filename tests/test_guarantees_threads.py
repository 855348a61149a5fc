"""Thread discipline: a parallel grid search does not oversubscribe the cores.

joblib's process workers limit the native thread pools they start with (OMP_NUM_THREADS and
threadpoolctl, to cpu_count // n_jobs each); torch's intra-op pool is one of them, and skvae
never sets the thread count itself. So GridSearchCV(n_jobs=2) on 2 cores runs 2 x 1 threads,
not 2 x 2. Inference from several threads leaves the process-wide warning filters alone.
"""

import copy
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from threadpoolctl import threadpool_limits

from skvae import PPCA, GaussianVAE


def torch_threads(estimator, X, y=None):
    """A 'score' that reports the torch threads available where the candidate was fitted."""
    return float(torch.get_num_threads())


@pytest.mark.parametrize("estimator, grid", [
    (PPCA(device="cpu"), {"n_components": [2, 4]}),  # CPU threads are the subject
    (GaussianVAE(hidden_layer_sizes=(8,), max_iter=2, device="cpu", random_state=0),
     {"n_components": [2, 3]}),
], ids=["PPCA", "GaussianVAE"])
def test_grid_search_workers_share_the_cores(estimator, grid):
    X = load_digits().data[:200] / 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=2
        search = GridSearchCV(estimator, grid, cv=2, n_jobs=2, scoring=torch_threads).fit(X)
    threads = search.cv_results_["mean_test_score"]
    assert np.all(threads <= max(1, (os.cpu_count() or 1) // 2)), threads


def test_threadpool_limits_bound_a_fit(monkeypatch):
    # The user's own limit (threadpoolctl, as scikit-learn documents it) holds inside fit:
    # the thread count is read where the model is estimated.
    seen = []
    estimate = PPCA._fit_complete

    def recording(self, *args):
        seen.append(torch.get_num_threads())
        return estimate(self, *args)

    monkeypatch.setattr(PPCA, "_fit_complete", recording)
    X = load_digits().data[:200] / 16
    with threadpool_limits(limits=1):
        PPCA(n_components=2, device="cpu").fit(X)
    assert seen == [1]


def test_inference_from_threads_leaves_the_warning_filters_alone():
    # warnings.catch_warnings saves and restores the process-wide filter list, so threads that
    # enter it together restore each other's filters: a leaked "always" would override the
    # user's own "ignore". Inference (here the first sample(latent="fitted"), which fits the
    # latent density, and read-only input) must not touch that list at all.
    X = load_digits().data[:300] / 16
    fitted = GaussianVAE(n_components=2, hidden_layer_sizes=(8,), max_iter=3, device="cpu",
                         random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=3
        fitted.fit(X)
    read_only = X.copy()
    read_only.setflags(write=False)
    n_threads = 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")  # the user's own choice, set before the threads start
        before = list(warnings.filters)
        for _ in range(3):
            model = copy.deepcopy(fitted)  # no latent density yet: the threads fit it at once
            barrier = threading.Barrier(n_threads)

            def work(i):
                barrier.wait()
                model.transform(read_only)
                return model.sample(5, latent="fitted", random_state=i)

            with ThreadPoolExecutor(max_workers=n_threads) as pool:
                draws = list(pool.map(work, range(n_threads)))
            assert all(d.shape == (5, 64) for d in draws)
            assert warnings.filters == before
        warnings.warn("the user's own warning", UserWarning)
    assert caught == []  # every warning, the threads' and the user's, was ignored
