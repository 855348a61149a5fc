"""GridSearchCV on a dask cluster of worker processes gives the serial search's results.

Needs the optional extra ``skvae[dask]`` (dask.distributed); skipped cleanly without it.
"""

import warnings

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from skvae import PPCA, GaussianVAE

distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def dask_client():
    # Worker processes, as on a real cluster: each estimator and its data are pickled to them.
    # One thread each, like joblib's own workers. No dashboard: no port to bind.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _data(n=200, d=8, seed=0):
    rng = np.random.RandomState(seed)
    z = rng.normal(size=(n, 3))
    return z @ rng.normal(size=(3, d)) + 0.3 * rng.normal(size=(n, d))


def _search(model, grid, X, n_jobs, dask):
    search = GridSearchCV(model, grid, cv=3, n_jobs=n_jobs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the few-epoch VAEs
        if dask:
            with joblib.parallel_backend("dask"):
                return search.fit(X)
        return search.fit(X)


_SPLITS = [f"split{i}_test_score" for i in range(3)] + ["mean_test_score", "rank_test_score"]


@pytest.mark.parametrize("model, grid, rtol", [
    (PPCA(device="cpu"), {"n_components": [1, 2, 3, 5]}, 1e-12),
    # Seeded fits: the same weights in a worker as here, up to the summation order of a
    # different number of torch threads.
    (GaussianVAE(hidden_layer_sizes=(16,), max_iter=3, batch_size=50, n_importance_samples=8,
                 device="cpu", random_state=0),
     {"n_components": [1, 3], "beta": [0.5, 2.0]}, 1e-5),
])
def test_grid_search_on_a_dask_cluster_matches_the_serial_search(model, grid, rtol, dask_client):
    X = _data()
    serial = _search(model, grid, X, n_jobs=1, dask=False)
    with distributed.get_task_stream(dask_client) as tasks:
        on_dask = _search(model, grid, X, n_jobs=-1, dask=True)
    # The fits ran as tasks in the cluster's worker processes, not here.
    workers = {task["worker"] for task in tasks.data}
    assert len(tasks.data) > 0 and workers <= set(dask_client.scheduler_info()["workers"])
    assert on_dask.best_params_ == serial.best_params_
    for key in _SPLITS:
        np.testing.assert_allclose(on_dask.cv_results_[key], serial.cv_results_[key], rtol=rtol,
                                   err_msg=key)
    # A search that could not tell the candidates apart would prove little.
    scores = serial.cv_results_["mean_test_score"]
    assert np.ptp(scores) > 0.1
