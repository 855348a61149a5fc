"""The CUDA code paths, checked without a GPU: generators and tensors on one device, draws
that do not depend on the device, device fallbacks on load, chunk sizes per device, staging.

What needs a real device is marked ``cuda`` (and run by benchmarks/gpu_check.sh).
"""

import pickle
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch

import skvae._base as shared

from skvae import PPCA, BernoulliVAE, CountVAE, FactorAnalysisEM, GaussianVAE
from skvae._backend import (
    _linalg_attempts,
    derived_seed,
    device_independent_normal,
    fallback_device,
    host_array,
    robust_linalg,
)
from skvae.nn._bounds import CUDA_BUDGET, DEFAULT_BUDGET, ROW_QUANTUM, chunk_rows
from skvae.vae._streaming import DeviceCopies

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=2, random_state=0, device="cpu")


def _X(n=120, d=5, seed=0):
    return np.random.RandomState(seed).normal(size=(n, d))


def _memmap(tmp_path, n=400, d=5, dtype=np.float32):
    X = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=dtype, shape=(n, d))
    X[:] = _X(n, d)
    X.flush()
    return np.load(tmp_path / "x.npy", mmap_mode="r")


# ---------------------------------------------------------------------- generator / device
_RANDOM = ("randperm", "randn", "rand", "randint")
_FROM_INPUT = ("multinomial", "bernoulli", "poisson")


@pytest.fixture
def random_calls(monkeypatch):
    """Every torch.randperm/randn/rand/randint call with a generator, and its device= (None
    when omitted: then the CPU, whatever the generator's, which crashes on CUDA)."""
    calls = []
    for name in _RANDOM:
        original = getattr(torch, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            generator = kwargs.get("generator")
            if generator is not None:
                calls.append((_name, generator.device, kwargs.get("device")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, spy)
    for name in _FROM_INPUT:  # these draw on the device of their input tensor
        original = getattr(torch, name)

        def spy(values, *args, _original=original, _name=name, **kwargs):
            generator = kwargs.get("generator")
            if generator is not None:
                calls.append((_name, generator.device, values.device))
            return _original(values, *args, **kwargs)

        monkeypatch.setattr(torch, name, spy)
    return calls


def _every_random_path():
    da = pytest.importorskip("dask.array")
    X = _X()
    counts = np.random.RandomState(0).poisson(3.0, size=(120, 5))
    GaussianVAE(**FAST).fit(da.from_array(X, chunks=(40, 5)))  # streamed: block order
    vae = GaussianVAE(**FAST, early_stopping=True, validation_fraction=0.2).fit(X)
    vae.partial_fit(X)
    for latent in ("prior", "aggregated_posterior", "fitted"):
        vae.sample(3, latent=latent)
    vae.score_samples(X)
    vae.interpolate(X[0], X[1], n_steps=3)
    BernoulliVAE(**FAST).fit(X > 0).sample(2)
    for likelihood in ("poisson", "nb", "zinb"):
        model = CountVAE(**FAST, likelihood=likelihood).fit(counts)
        model.sample(2)
        model.sample(2, library_size=7.0)
    PPCA(n_components=2, solver="em", max_iter=3, random_state=0, device="cpu").fit(X).sample(2)
    FactorAnalysisEM(n_components=2, device="cpu").fit(X).sample(2)


def test_every_random_call_draws_on_the_device_of_its_generator(random_calls):
    # On CUDA a CPU device with a CUDA generator raises "Expected a 'cpu' device type for
    # generator": each call must name the generator's device explicitly.
    _every_random_path()
    assert {name for name, _, _ in random_calls} >= {*_RANDOM, *_FROM_INPUT}
    wrong = [call for call in random_calls
             if call[2] is None or torch.device(call[2]) != call[1]]
    assert wrong == []


def test_the_streamed_block_order_names_the_generators_device(monkeypatch):
    # The fake: a generator that says it lives on CUDA; randperm must be asked for that device.
    from skvae.nn import _engine

    asked = []

    def randperm(n, *, generator, device=None):
        asked.append(device)
        return torch.arange(n)

    monkeypatch.setattr(_engine.torch, "randperm", randperm)
    source = SimpleNamespace(n_blocks=3, n_rows=3, prepared=lambda index, module: None)
    monkeypatch.setattr(_engine, "_pass", lambda *args: (torch.zeros(()), torch.zeros(())))
    generator = SimpleNamespace(device=torch.device("cuda"))
    _engine._streamed_epoch(None, None, source, generator, 1, 1.0, None)
    assert asked == [torch.device("cuda")]


# ---------------------------------------------------------------------- device-free draws
def test_importance_draws_are_the_cpu_draws_whatever_the_models_device(monkeypatch):
    model = GaussianVAE(**FAST, n_importance_samples=7).fit(_X())
    on_cpu = model._importance_draws()
    expected = torch.randn(
        (7, 2), generator=torch.Generator().manual_seed(derived_seed(model._seed, 2)),
        dtype=torch.float32)
    assert torch.equal(on_cpu, expected)
    # "On" another device: the generator is still a CPU one, the result is moved there.
    made = []
    original = torch.Generator

    def generator(device="cpu"):
        made.append(torch.device(device))
        return original(device="cpu")

    monkeypatch.setattr(torch, "Generator", generator)
    model._device = torch.device("meta")  # stands for cuda: a device this machine lacks
    elsewhere = model._importance_draws()
    assert made == [torch.device("cpu")]
    assert elsewhere.device.type == "meta" and elsewhere.shape == (7, 2)


def test_device_independent_normal_moves_the_cpu_draws():
    cpu = device_independent_normal(5, (3, 4), device="cpu", dtype=torch.float64)
    assert torch.equal(cpu, torch.randn((3, 4), generator=torch.Generator().manual_seed(5),
                                        dtype=torch.float64))
    meta = device_independent_normal(5, (3, 4), device="meta", dtype=torch.float32)
    assert meta.device.type == "meta" and meta.dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.parametrize("cls", [GaussianVAE, BernoulliVAE])
def test_a_cuda_model_scores_the_same_after_moving_to_the_cpu(cls, monkeypatch):
    X = (_X(60) > 0).astype(float)
    model = cls(**{**FAST, "device": "cuda"}).fit(X)
    on_cuda = model.score_samples(X)
    assert torch.equal(model._importance_draws().cpu(),
                       device_independent_normal(derived_seed(model._seed, 2),
                                                 (model.n_importance_samples, 2),
                                                 device="cpu", dtype=torch.float32))
    payload = pickle.dumps(model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(payload)
    np.testing.assert_allclose(loaded.score_samples(X), on_cuda, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------- loading elsewhere
def test_a_device_this_machine_lacks_falls_back(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert fallback_device(torch.device("cuda:1")) == torch.device("cuda")
    assert fallback_device(torch.device("cuda:0")) == torch.device("cuda:0")
    assert fallback_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fallback_device(torch.device("cuda:1")) == torch.device("cpu")


@pytest.mark.parametrize("make", [
    lambda: GaussianVAE(**FAST).fit(_X()),
    lambda: PPCA(n_components=2, device="cpu").fit(_X()),
])
def test_a_model_saved_on_cuda_1_loads_on_a_machine_with_one_gpu_or_none(make, monkeypatch):
    model = make()
    expected = model.score_samples(_X())
    state = model.__getstate__()
    state["_device"] = "cuda:1"  # what a model fitted on a machine's second GPU pickles
    fresh = type(model).__new__(type(model))
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with mock.patch.object(type(model), "_restore_device",
                           lambda self: chosen.append(self._device)):
        fresh.__setstate__(dict(state))
    assert chosen == [torch.device("cuda")]  # the machine's GPU, not a missing cuda:1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = type(model).__new__(type(model))
    loaded.__setstate__(dict(state))
    assert loaded._device == torch.device("cpu")
    np.testing.assert_allclose(loaded.score_samples(_X()), expected, rtol=1e-6)


# ---------------------------------------------------------------------- tensors as parameters
def test_host_array_takes_tensors_from_any_device():
    tensor = torch.tensor([1.0, 2.0], requires_grad=True)  # np.asarray refuses this one
    np.testing.assert_array_equal(host_array(tensor), [1.0, 2.0])
    assert host_array(tensor).dtype == np.float64
    on_gpu = mock.MagicMock(spec=torch.Tensor)  # the path of a CUDA tensor: .cpu() first
    on_gpu.detach.return_value.cpu.return_value.numpy.return_value = np.array([3.0])
    np.testing.assert_array_equal(host_array(on_gpu), [3.0])
    on_gpu.detach.return_value.cpu.assert_called_once()


def test_noise_variance_init_and_library_size_accept_tensors():
    X = _X()
    init = torch.full((5,), 0.5, requires_grad=True)
    from_tensor = FactorAnalysisEM(n_components=2, device="cpu", noise_variance_init=init)
    from_array = FactorAnalysisEM(n_components=2, device="cpu", noise_variance_init=np.full(5, .5))
    np.testing.assert_allclose(from_tensor.fit(X).noise_variance_,
                               from_array.fit(X).noise_variance_)
    counts = np.random.RandomState(0).poisson(3.0, size=(120, 5))
    model = CountVAE(**FAST).fit(counts)
    library = torch.tensor([4.0, 9.0], requires_grad=True)
    np.testing.assert_array_equal(model.sample(2, random_state=1, library_size=library),
                                  model.sample(2, random_state=1, library_size=[4.0, 9.0]))


# ---------------------------------------------------------------------- eigh fallback
def test_linalg_falls_back_to_float64_then_the_cpu():
    meta = torch.empty(3, 3, device="meta")
    assert _linalg_attempts(meta) == [(torch.float32, meta.device),
                                      (torch.float64, meta.device),
                                      (torch.float64, torch.device("cpu"))]
    A = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    seen = []

    def eigh(M):
        seen.append(M.dtype)
        if M.dtype == torch.float32:
            raise torch.linalg.LinAlgError("the algorithm failed to converge")
        return _eigh(M)

    values, vectors = robust_linalg(eigh, A)
    assert seen == [torch.float32, torch.float64]
    assert values.dtype == vectors.dtype == torch.float32
    np.testing.assert_allclose(values, [1.0, 3.0], rtol=1e-6)


_eigh = torch.linalg.eigh


def test_a_device_solver_error_is_retried_but_a_cpu_bug_is_not():
    def solver(M):  # a device solver that fails in float32 with a plain RuntimeError
        if M.dtype == torch.float32:
            raise RuntimeError("cusolver error: CUSOLVER_STATUS_INTERNAL_ERROR")
        return M.sum(0), M

    A = torch.eye(3, device="meta")  # stands for a CUDA matrix
    values, vectors = robust_linalg(solver, A)
    assert values.device.type == vectors.device.type == "meta"
    assert values.dtype == torch.float32

    def broken(M):
        raise RuntimeError("a bug, not a convergence failure")

    with pytest.raises(RuntimeError, match="a bug"):
        robust_linalg(broken, torch.eye(3))


@pytest.mark.parametrize("make", [
    lambda: PPCA(n_components=2, dtype="float32", device="cpu"),
    lambda: FactorAnalysisEM(n_components=2, dtype="float32", device="cpu"),
])
def test_a_float32_eigh_that_fails_is_redone_in_float64(make, monkeypatch):
    X = _X()
    X[:, 4] = X[:, 3]  # a singular covariance
    expected = make().fit(X)

    def failing(M, *args, **kwargs):
        if M.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.eigh: the algorithm failed to converge")
        return _eigh(M, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", failing)
    model = make().fit(X)
    # Only the eigendecompositions ran in float64: the same model to float32's EM tolerance.
    np.testing.assert_allclose(model.score(X), expected.score(X), atol=1e-3)  # nats per row
    np.testing.assert_allclose(model.get_covariance(), expected.get_covariance(), atol=2e-3)
    assert np.all(np.isfinite(model.score_samples(X)))


# ---------------------------------------------------------------------- chunk sizes
def _module(d=784, hidden=(64,)):
    from skvae.nn import GaussianLikelihood, VAEModule

    return VAEModule(d, 2, hidden, "relu", GaussianLikelihood(d))


@pytest.mark.parametrize("K", [1, 5, 100, 5000])
def test_chunk_rows_per_device_are_fixed_multiples_of_the_quantum(K, monkeypatch):
    from skvae.nn import _bounds

    module = _module()
    cpu = chunk_rows(module, K)
    monkeypatch.setattr(_bounds, "device_of", lambda m: torch.device("cuda"))
    cuda = chunk_rows(module, K)
    for rows in (cpu, cuda):
        assert rows % ROW_QUANTUM == 0 and rows >= ROW_QUANTUM
    assert cpu == max(ROW_QUANTUM, min(1024, DEFAULT_BUDGET // (K * 784)) // 64 * 64)
    assert cuda == max(ROW_QUANTUM, min(16384, CUDA_BUDGET // (K * 784)) // 64 * 64)
    if K == 100:  # the case: 13 rows a step on the CPU budget, launch-bound on a GPU
        assert cuda >= 512


def test_linear_inference_chunks_are_larger_on_cuda():
    from skvae.linear._base import _chunk_bytes

    assert _chunk_bytes(torch.device("cpu")) == 4 * 2**20
    assert _chunk_bytes(torch.device("cuda")) >= 64 * 2**20


# ---------------------------------------------------------------------- streaming to a GPU
def test_staged_copies_equal_plain_ones_and_own_their_memory():
    copies = DeviceCopies("cpu", torch.float32, staged=True, pin_memory=False)
    blocks = [np.arange(12.0).reshape(4, 3), np.ones((2, 3), np.float32),
              np.arange(6).reshape(2, 3), np.full((4, 3), 7.0)]
    out = [copies(block) for block in blocks]
    for block, tensor in zip(blocks, out):  # each survives the refills of the buffer
        assert tensor.dtype == torch.float32
        np.testing.assert_array_equal(tensor.numpy(), block.astype(np.float32))
    plain = DeviceCopies("cpu", torch.float64)
    assert not plain.staged and not plain.pin_memory
    assert DeviceCopies("cuda", torch.float32).staged  # the CUDA default, built lazily


def test_a_streamed_vae_fit_goes_through_the_staged_copies(tmp_path, monkeypatch):
    from skvae.vae import _base, _streaming

    monkeypatch.setattr(_streaming, "STREAM_BLOCK_BYTES", 2048)
    X = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                  shape=(400, 5))
    X[:] = _X(400)
    X.flush()
    made = []

    def copies(device, dtype):
        made.append(DeviceCopies(device, dtype, staged=True, pin_memory=False))
        return made[-1]

    plain = GaussianVAE(**FAST).fit(X)
    monkeypatch.setattr(_base, "DeviceCopies", copies)
    staged = GaussianVAE(**FAST).fit(X)
    assert len(made) == 1 and made[0]._buffer is not None
    np.testing.assert_array_equal(staged.loss_curve_, plain.loss_curve_)


def test_a_linear_fit_of_a_memmap_off_the_cpu_streams_it_in_blocks(tmp_path, monkeypatch):
    from skvae.linear import _base

    X = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64,
                                  shape=(3000, 6))
    X[:] = _X(3000, 6)
    X.flush()
    X = np.load(tmp_path / "x.npy", mmap_mode="r")
    expected = PPCA(n_components=2, device="cpu").fit(np.asarray(X))
    monkeypatch.setattr(_base.BaseLinearGaussian, "_streams_memmap", lambda self: True)
    monkeypatch.setattr(shared, "DEVICE_BLOCK_BYTES", 1000 * 6 * 8)
    seen = []
    original = PPCA._check_input

    def check_input(self, X, **kwargs):
        seen.append(X.shape[0])
        return original(self, X, **kwargs)

    monkeypatch.setattr(PPCA, "_check_input", check_input)
    model = PPCA(n_components=2, device="cpu").fit(X)
    assert seen == [1000, 1000, 1000]  # never the whole memmap at once
    np.testing.assert_allclose(model.components_, expected.components_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.noise_variance_, expected.noise_variance_, rtol=1e-9)
    gappy = np.lib.format.open_memmap(tmp_path / "g.npy", mode="w+", dtype=np.float64,
                                      shape=(3000, 6))
    gappy[:] = X
    gappy[5, 2] = np.nan  # EM with gaps needs every row at each iteration: copied whole
    seen.clear()
    assert np.isfinite(PPCA(n_components=2, device="cpu", max_iter=5).fit(gappy).score(X))
    assert seen[-1] == 3000


@pytest.mark.parametrize("make", [
    lambda: PPCA(n_components=2, device="cpu"),
    lambda: GaussianVAE(**FAST),
])
def test_inference_on_a_memmap_off_the_cpu_reads_it_in_blocks(make, tmp_path, monkeypatch):
    X = _memmap(tmp_path, n=1000, d=6, dtype=np.float64)
    model = make().fit(np.asarray(X))
    expected = {"score_samples": model.score_samples(np.asarray(X)),
                "transform": model.transform(np.asarray(X), return_std=True)}
    monkeypatch.setattr(shared, "_streams_to_device",
                        lambda model, X: isinstance(X, np.memmap))  # as on a GPU
    monkeypatch.setattr(shared, "DEVICE_BLOCK_BYTES", 300 * 6 * 8)
    seen = []
    original = type(model)._check_input

    def check_input(self, X, **kwargs):
        seen.append(X.shape[0])
        return original(self, X, **kwargs)

    monkeypatch.setattr(type(model), "_check_input", check_input)
    np.testing.assert_allclose(model.score_samples(X), expected["score_samples"], rtol=1e-12)
    assert seen == [300, 300, 300, 100]
    for got, want in zip(model.transform(X, return_std=True), expected["transform"]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_only_a_large_memmap_on_a_gpu_model_is_read_in_blocks(tmp_path):
    X = _memmap(tmp_path, n=100, d=6, dtype=np.float64)
    on_gpu = SimpleNamespace(_device=torch.device("cuda"))
    assert not shared._streams_to_device(on_gpu, X)  # one block's worth: as an array
    assert not shared._streams_to_device(SimpleNamespace(_device=torch.device("cpu")), X)
    assert not shared._streams_to_device(on_gpu, np.asarray(X))
    big = SimpleNamespace(ndim=2, nbytes=shared.DEVICE_BLOCK_BYTES + 1)
    assert not shared._streams_to_device(on_gpu, big)  # not a memmap


# ---------------------------------------------------------------------- the cuda marker
def test_the_cuda_marker_skips_by_marker_not_by_name(monkeypatch):
    # "cuda" in a test's name or in a folder's name is a keyword too: tests of the CPU
    # fallback such as test_cuda_pickle_loads_on_a_machine_without_cuda must still run.
    import conftest

    def item(marked, keywords):
        marker = object() if marked else None
        return SimpleNamespace(keywords=keywords, added=[],
                               get_closest_marker=lambda name: marker if name == "cuda" else None,
                               add_marker=lambda m, self=None: None)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    items = [item(False, {"test_cuda_pickle": 1, "cuda": 1}), item(True, {"cuda": 1})]
    added = []
    for one in items:
        one.add_marker = lambda m, _one=one: added.append(_one)
    conftest.pytest_collection_modifyitems(None, items)
    assert added == [items[1]]


# ---------------------------------------------------------------------- on a real GPU
@pytest.mark.cuda
def test_pinned_staging_on_cuda_gives_the_blocks(tmp_path):
    copies = DeviceCopies("cuda", torch.float32)
    assert copies.staged and copies.pin_memory
    blocks = [np.arange(12.0).reshape(4, 3), np.full((6, 3), 2.0, np.float32), _X(4, 3)]
    out = [copies(block) for block in blocks]
    assert copies._buffer.is_pinned()
    for block, tensor in zip(blocks, out):
        assert tensor.device.type == "cuda"
        np.testing.assert_array_equal(tensor.cpu().numpy(), block.astype(np.float32))


@pytest.mark.cuda
def test_streamed_fits_run_on_cuda(tmp_path, monkeypatch):
    from skvae.linear import _base
    from skvae.vae import _streaming

    X = _memmap(tmp_path)
    monkeypatch.setattr(_streaming, "STREAM_BLOCK_BYTES", 2048)  # many blocks: randperm
    model = GaussianVAE(**{**FAST, "device": "cuda"}).fit(X)
    assert model.n_iter_ == 2 and np.all(np.isfinite(model.score_samples(X)))
    monkeypatch.setattr(shared, "DEVICE_BLOCK_BYTES", 100 * 5 * 4)
    seen = []
    original = PPCA._check_input

    def check_input(self, X, **kwargs):
        seen.append(X.shape[0])
        return original(self, X, **kwargs)

    monkeypatch.setattr(PPCA, "_check_input", check_input)
    on_gpu = PPCA(n_components=2, device="cuda").fit(X)
    assert seen == [100] * 4
    np.testing.assert_allclose(on_gpu.get_covariance(),
                               PPCA(n_components=2, device="cpu").fit(np.asarray(X))
                               .get_covariance(), rtol=1e-6, atol=1e-9)
