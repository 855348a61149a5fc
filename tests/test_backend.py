"""Device, dtype and randomness helpers, on their own."""

import warnings
from unittest import mock

import numpy as np
import pytest
import torch

from skvae._backend import (
    as_tensor,
    derived_seed,
    fallback_device,
    make_generator,
    resolve_device,
    resolve_dtype,
)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with mock.patch("torch.cuda.is_available", return_value=False):
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="device='cuda:1' was requested but CUDA is not"):
            resolve_device("cuda:1")
    with mock.patch("torch.cuda.is_available", return_value=True):
        assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="device='gpu' is not a device torch knows"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="device='meta' is not supported"):
        resolve_device("meta")


def test_fallback_device():
    with mock.patch("torch.cuda.is_available", return_value=False):
        assert fallback_device(torch.device("cuda:0")) == torch.device("cpu")
    assert fallback_device(torch.device("cpu")) == torch.device("cpu")


def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype(np.float64) is torch.float64
    assert resolve_dtype(torch.float64) is torch.float64
    with pytest.raises(ValueError, match="dtype='int8' is not supported"):
        resolve_dtype("int8")


def test_generator_is_local_and_reproducible():
    torch.manual_seed(123)
    expected_global = torch.rand(3)
    torch.manual_seed(123)
    first = torch.rand(4, generator=make_generator(0, "cpu"))
    second = torch.rand(4, generator=make_generator(0, "cpu"))
    assert torch.equal(first, second)
    assert not torch.equal(first, torch.rand(4, generator=make_generator(1, "cpu")))
    assert torch.equal(torch.rand(3), expected_global)  # the global stream was not consumed


def test_as_tensor_casts_and_views_read_only_arrays_quietly():
    source = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = as_tensor(source, device="cpu", dtype=torch.float64)
    assert tensor.dtype == torch.float64 and tensor.shape == (2, 3)
    readonly = np.arange(4.0).reshape(2, 2)
    readonly.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "not writable" warning would fail here
        assert as_tensor(readonly, device="cpu", dtype=torch.float64).sum().item() == 6.0


def test_derived_seeds_are_numpys_seed_sequence_children():
    # One fitted seed, several independent uses: numpy's SeedSequence does the mixing.
    expected = np.random.SeedSequence(12345, spawn_key=(2,)).generate_state(1, np.uint64)[0]
    assert derived_seed(12345, 2) == int(expected)
    assert derived_seed(12345, 1, 0) != derived_seed(12345, 1, 1) != derived_seed(12345, 2)
    assert derived_seed(12345, 2) != derived_seed(12346, 2)
    # Every value seeds a torch.Generator; 32-bit ones seed numpy and scikit-learn.
    torch.Generator().manual_seed(derived_seed(0, 3))
    assert 0 <= derived_seed(0, 3, bits=32) < 2**32
    np.random.RandomState(derived_seed(0, 3, bits=32))
