"""Device and dtype resolution, array <-> tensor conversion, generators from ``random_state``.

Nothing here knows about estimators; the estimators call these helpers so that every model
resolves ``device="auto"``, casts input and seeds its randomness the same way.
"""

import numpy as np
import torch
from sklearn.utils import check_random_state

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device):
    """Turn the ``device`` parameter into a ``torch.device``, checking that it exists here.

    ``"auto"`` means the current CUDA device when CUDA is available, else the CPU.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device={device!r} is not a device torch knows. Use 'auto', 'cpu', 'cuda', "
            "'cuda:N' or a torch.device."
        ) from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(
            f"device={device!r} is not supported: skvae runs on 'cpu' or 'cuda[:N]'. "
            "Use device='auto' to pick CUDA when it is available."
        )
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine. "
            "Use device='cpu', or device='auto' to fall back to the CPU."
        )
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} does not exist: this machine has "
            f"{torch.cuda.device_count()} CUDA device(s), numbered from 0."
        )
    return resolved


def resolve_dtype(dtype):
    """``"float32"``/``"float64"`` (or the numpy/torch equivalent) -> ``torch.dtype``."""
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    name = np.dtype(dtype).name if not isinstance(dtype, torch.dtype) else str(dtype)
    if name in _DTYPES:
        return _DTYPES[name]
    raise ValueError(f"dtype={dtype!r} is not supported; use 'float32' or 'float64'.")


def fallback_device(device):
    """The device to use for a model loaded on this machine: CPU when CUDA has gone, the
    current CUDA device when the one it was saved on (``cuda:1``, say) does not exist here."""
    if device is None or device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        return torch.device("cuda")
    return device


def host_array(value, dtype=np.float64):
    """A C-contiguous numpy array of a user's array-like (a negative-stride view and a torch
    tensor on any device included)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=dtype)


def _linalg_attempts(A):
    """(dtype, device) to try in turn for a decomposition of ``A``: as given, then float64 on
    its device, then float64 on the CPU (cuSOLVER's float32 kernels can fail to converge on
    a singular matrix that LAPACK in float64 decomposes)."""
    attempts = [(A.dtype, A.device), (torch.float64, A.device), (torch.float64,
                                                                 torch.device("cpu"))]
    return list(dict.fromkeys(attempts))


def robust_linalg(function, A):
    """``function(A)`` (``torch.linalg.eigh``, say), retried in float64, then on the CPU, when
    it fails to converge (or, off the CPU, when the device's solver raises: cuSOLVER reports
    some failures as a plain RuntimeError); the results come back in A's dtype and device."""
    error = None
    for dtype, device in _linalg_attempts(A):
        try:
            result = function(A.to(device=device, dtype=dtype))
        except RuntimeError as caught:
            if device.type == "cpu" and not isinstance(caught, torch.linalg.LinAlgError):
                raise
            error = error or caught
            continue
        if isinstance(result, torch.Tensor):
            return result.to(device=A.device, dtype=A.dtype)
        return tuple(part.to(device=A.device, dtype=A.dtype) for part in result)
    raise error


def as_tensor(X, *, device, dtype):
    """A tensor view or copy of ``X`` on ``device``; skvae never writes to the caller's memory.

    A read-only array (a memory map, say) is viewed through DLPack, which marks it read-only
    instead of warning as ``torch.as_tensor`` does; where this numpy or torch cannot, it is
    copied. No warning filter is touched: those are process-wide, and changing them from
    several threads at once (``warnings.catch_warnings``) leaks filters. torch cannot view an
    array with a negative stride (``X[::-1]``, ``np.flip(X)``): that one is copied.
    """
    if isinstance(X, torch.Tensor):
        return X.detach().to(device=device, dtype=dtype)
    X = np.asarray(X)
    if min(X.strides, default=0) < 0:  # torch views no negative stride (DLPack aborts)
        X = X.copy()
    if X.flags.writeable:
        return torch.as_tensor(X, device=device).to(dtype=dtype)
    try:
        tensor = torch.from_dlpack(X)
    except (BufferError, RuntimeError, TypeError, ValueError):
        tensor = torch.from_numpy(np.array(X))
    return tensor.to(device=device, dtype=dtype)


def to_numpy(tensor, dtype=None):
    """A numpy array with its own memory from a tensor on any device."""
    array = tensor.detach().cpu().numpy()
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return array


def seed_from(random_state):
    """One integer seed drawn from ``random_state`` (None, int or RandomState)."""
    rng = check_random_state(random_state)
    return int(rng.randint(np.iinfo(np.int32).max))


def derived_seed(seed, *key, bits=64):
    """A seed for one use of the integer ``seed``, named by ``key`` (non-negative ints).

    numpy's ``SeedSequence`` mixes them (the seed of child ``key`` of ``SeedSequence(seed)``),
    so different keys give statistically independent streams from one fitted seed. ``bits=64``
    suits ``torch.Generator.manual_seed``; ``bits=32`` numpy's and scikit-learn's
    ``random_state``.
    """
    dtype = {64: np.uint64, 32: np.uint32}[bits]
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, dtype)[0])


def device_independent_normal(seed, shape, *, device, dtype):
    """Standard normal draws of ``shape`` that are the same numbers on every device.

    A CUDA generator gives other numbers than a CPU one for the same seed, so draws that are
    part of a fitted model (the importance draws every score shares) come from a CPU generator
    and are then moved: a model fitted on a GPU scores the same on a CPU, to float rounding.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    draws = torch.randn(shape, generator=generator, device="cpu", dtype=dtype)
    return draws.to(device)


def make_generator(random_state, device):
    """A local ``torch.Generator`` on ``device`` seeded from ``random_state``.

    The global torch RNG is never touched. An int ``random_state`` gives the same stream every
    time; ``None`` draws a fresh seed from numpy's global state, as scikit-learn does.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(seed_from(random_state))
    return generator
