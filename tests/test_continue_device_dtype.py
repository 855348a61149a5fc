"""A fit that continues (partial_fit, a VAE's warm start) follows a changed ``device`` or
``dtype``: the fitted state moves there first; a device this machine lacks raises the usual
clear error and leaves the model as it was. They used to be ignored silently."""

import copy

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skvae import PPCA, FactorAnalysisEM, GaussianVAE

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SETTINGS = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=3, batch_size=32,
                n_importance_samples=4, device="cpu", random_state=0)


def _X(n=96, d=5):
    rng = np.random.RandomState(0)
    return rng.normal(size=(n, 2)) @ rng.normal(size=(2, d)) + 0.3 * rng.normal(size=(n, d))


def _continue(model, method, X):
    if method == "warm_start":
        return model.set_params(warm_start=True).fit(X)
    return model.partial_fit(X)


def _vae_state(model):
    return (model.n_iter_, list(model.loss_curve_), model._device, model._dtype,
            {k: v.clone() for k, v in model.module_.state_dict().items()})


@pytest.mark.parametrize("method", ["warm_start", "partial_fit"])
def test_continuing_a_vae_on_a_missing_gpu_raises_the_usual_error(method, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = GaussianVAE(**SETTINGS).fit(_X())
    before, network = _vae_state(model), model.module_
    model.set_params(device="cuda")
    with pytest.raises(ValueError, match="device='cuda' was requested but CUDA is not "
                                         "available.*device='cpu'"):
        _continue(model, method, _X())
    state = _vae_state(model)
    assert state[:4] == before[:4] and model.module_ is network
    for name, value in before[4].items():
        assert torch.equal(state[4][name], value)


@pytest.mark.parametrize("source", ["memory", "dask"])
@pytest.mark.parametrize("method", ["warm_start", "partial_fit"])
@pytest.mark.parametrize("old, new", [("float32", "float64"), ("float64", "float32")])
def test_continuing_a_vae_in_another_dtype_casts_its_state(old, new, method, source):
    X = _X()
    if source == "dask":
        X = pytest.importorskip("dask.array").from_array(X, chunks=(48, 5))
    model = GaussianVAE(**{**SETTINGS, "dtype": old}).fit(X)
    same = copy.deepcopy(model)
    _continue(model.set_params(dtype=new), method, X)
    _continue(same, method, X)  # the same epochs in the old dtype
    dtype = getattr(torch, new)
    assert model._dtype == dtype and model.n_iter_ == same.n_iter_
    assert all(p.dtype == dtype for p in model.module_.parameters())
    assert all(s["exp_avg"].dtype == dtype for s in model._optimizer.state.values())
    # the sample of training codes too (its keys stay float64)
    assert model._reservoir["keys"].dtype == torch.float64
    assert all(v.dtype == dtype for k, v in model._reservoir.items() if k != "keys")
    assert model.transform(np.asarray(X, dtype=np.float32)).dtype == np.float32
    # The epochs before agree; the new ones continue from the same weights (their noise is
    # drawn in the new dtype, another stream, so they agree only statistically).
    assert model.loss_curve_[:3] == same.loss_curve_[:3]
    np.testing.assert_allclose(model.loss_curve_, same.loss_curve_, rtol=0.1)
    np.testing.assert_allclose(model.score(np.asarray(X)), same.score(np.asarray(X)),
                               rtol=0.1)
    drawn = model.sample(4, random_state=0, latent="aggregated_posterior")
    assert np.all(np.isfinite(drawn))


# Factor analysis' EM in float32 ends 0.5% (0.04 nats per row) from its float64 run here.
@pytest.mark.parametrize("cls, rtol", [(PPCA, 1e-4), (FactorAnalysisEM, 1e-2)])
def test_a_linear_partial_fit_follows_a_changed_dtype_and_refuses_a_missing_gpu(cls, rtol,
                                                                                monkeypatch):
    X = _X()
    model = cls(n_components=2, device="cpu").partial_fit(X[:48])
    stats = model._stats
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model.set_params(device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        model.partial_fit(X[48:])
    assert model._stats is stats and model._device == torch.device("cpu")
    model.set_params(device="cpu", dtype="float32").partial_fit(X[48:])
    assert model._dtype == torch.float32 and model._stats[1].dtype == torch.float32
    # As the same chunks in float64 (factor analysis' partial_fit equals its fit only to
    # the stopping rule), to float32's precision.
    chunked = cls(n_components=2, device="cpu").partial_fit(X[:48]).partial_fit(X[48:])
    np.testing.assert_allclose(model.score_samples(X), chunked.score_samples(X), rtol=rtol)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_continuing_on_another_device_moves_the_model():
    X = _X()
    vae = GaussianVAE(**SETTINGS).fit(X)
    vae.set_params(device="cuda").partial_fit(X)
    assert all(p.device.type == "cuda" for p in vae.module_.parameters())
    assert vae._reservoir["keys"].device.type == "cuda" and vae.n_iter_ == 4
    vae.set_params(device="cpu", warm_start=True).fit(X)
    assert all(p.device.type == "cpu" for p in vae.module_.parameters())
    assert np.all(np.isfinite(vae.score_samples(X)))
    ppca = PPCA(n_components=2, device="cpu").partial_fit(X[:48])
    ppca.set_params(device="cuda").partial_fit(X[48:])
    assert ppca._stats[1].device.type == "cuda"
    np.testing.assert_allclose(ppca.score_samples(X),
                               PPCA(n_components=2, device="cpu").fit(X).score_samples(X),
                               rtol=1e-8)
