"""Devices and persistence across machines: CUDA where present, CPU fallback of a pickle."""

import pickle

import numpy as np
import pytest
import torch

from skvae import BernoulliVAE, GaussianVAE
from skvae.nn._engine import make_optimizer

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=3, random_state=0)


def _X():
    return (np.random.RandomState(0).uniform(size=(60, 5)) > 0.5).astype(float)


def _fit_as_if_on_cuda(cls):
    """A model trained on CUDA where there is one; else a CPU model that claims it was."""
    if torch.cuda.is_available():
        return cls(**FAST, device="cuda").fit(_X())
    model = cls(**FAST, device="cpu").fit(_X())
    model._device = torch.device("cuda")  # what a model fitted on a GPU records
    return model


@pytest.mark.parametrize("cls", [GaussianVAE, BernoulliVAE])
def test_cuda_pickle_loads_on_a_machine_without_cuda(cls, monkeypatch):
    model = _fit_as_if_on_cuda(cls)
    payload = pickle.dumps(model)
    if not torch.cuda.is_available():
        model._device = torch.device("cpu")
    expected_Z, expected_scores = model.transform(_X()), model.score_samples(_X())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(payload)
    assert loaded._device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in loaded.module_.parameters())
    assert all(v.device.type == "cpu" for v in loaded._reservoir.values())
    np.testing.assert_allclose(loaded.transform(_X()), expected_Z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.score_samples(_X()), expected_scores, rtol=1e-4)
    loaded.partial_fit(_X())  # the optimizer state came along and works on the CPU
    assert loaded.n_iter_ == 4


@pytest.mark.parametrize("flags", [
    {"fused": True, "foreach": None, "capturable": False},  # make_optimizer's CUDA Adam
    {"fused": None, "foreach": True, "capturable": True},  # a capturable CUDA Adam
])
def test_optimizer_state_of_a_cuda_model_trains_on_the_cpu(flags, monkeypatch):
    model = _fit_as_if_on_cuda(GaussianVAE)
    for group in model._optimizer.param_groups:
        group.update(flags)
    payload = pickle.dumps(model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(payload)
    # The loaded optimizer runs with the flags a fresh optimizer on this machine gets.
    fresh = make_optimizer(loaded.module_.parameters(), 1e-3).defaults
    for group in loaded._optimizer.param_groups:
        for key in flags:
            assert group[key] == fresh[key], key
    loaded.partial_fit(_X())
    loaded.set_params(warm_start=True, max_iter=2).fit(_X())
    assert loaded.n_iter_ == 6
    assert np.all(np.isfinite(loaded.score_samples(_X())))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", [GaussianVAE, BernoulliVAE])
def test_fit_on_cuda_matches_the_api_and_accepts_cuda_tensors(cls):
    X = _X()
    model = cls(**FAST, device="cuda").fit(torch.as_tensor(X, device="cuda"))
    assert next(model.module_.parameters()).device.type == "cuda"
    Z = model.transform(torch.as_tensor(X, device="cuda"))
    np.testing.assert_allclose(Z, model.transform(X), rtol=1e-6)
    assert isinstance(Z, np.ndarray) and np.all(np.isfinite(model.score_samples(X)))
    again = cls(**FAST, device="cuda").fit(X)
    np.testing.assert_allclose(again.transform(X), model.transform(X), rtol=1e-4, atol=1e-5)
    assert model.sample(4, latent="aggregated_posterior").shape == (4, X.shape[1])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("wide", [False, True])
def test_linear_model_streamed_on_cuda_pickles_with_its_statistics_on_the_cpu(wide):
    # partial_fit keeps the sufficient statistics (dense, or a low-rank factor on wide data)
    # inside a tuple and an object: they must be on the CPU in the pickle too.
    from skvae import PPCA

    X = np.random.RandomState(0).normal(size=(20, 40 if wide else 5))
    model = PPCA(n_components=2, device="cuda").partial_fit(X)
    state = model.__getstate__()
    count, mean, scatter = state["_stats"]
    tensors = [mean, *(v for v in vars(scatter).values() if isinstance(v, torch.Tensor))]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(loaded.partial_fit(X).score(X), model.partial_fit(X).score(X))
