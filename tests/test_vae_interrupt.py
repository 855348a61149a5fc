"""Ctrl-C during a VAE fit: the old model intact, or a consistent model of the finished epochs.

An interrupt before any epoch of the call finished raises and leaves the estimator as it was
(its network and optimizer state included); one after raises nothing and publishes the model
of the finished epochs (weights, optimizer state, ``n_iter_``, ``loss_curve_``, the training
row sample, the diagnostics), with a ConvergenceWarning. Checked for ``fit``, warm start and
``partial_fit``, in memory and streamed (a dask array), at every kind of interrupt point.
"""

import contextlib
import copy
import io
import os
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

import skvae
from skvae import GaussianVAE
from skvae.vae._base import BaseVAE

da = pytest.importorskip("dask.array")

# 96 rows in batches of 32: 3 optimizer steps per epoch.
SETTINGS = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=4, batch_size=32,
                n_importance_samples=4, device="cpu", random_state=0)
METHODS = ["fit", "warm_start", "partial_fit"]
SOURCES = ["memory", "dask"]


def _X():
    rng = np.random.RandomState(0)
    return rng.normal(size=(96, 2)) @ rng.normal(size=(2, 5)) + 0.1 * rng.normal(size=(96, 5))


def _source(kind):
    return _X() if kind == "memory" else da.from_array(_X(), chunks=(48, 5))


def _start(method):
    """The estimator a call of ``method`` starts from, and the call itself."""
    model = GaussianVAE(**SETTINGS)
    if method == "fit":
        return model, lambda m, X: m.fit(X)
    with pytest.warns(ConvergenceWarning):
        model.fit(_X())
    if method == "warm_start":
        model.set_params(warm_start=True)
        return model, lambda m, X: m.fit(X)
    return model, lambda m, X: m.partial_fit(X)


def _reference(model, method, epochs, X):
    """``model`` (a copy) after an uninterrupted call of ``method`` that runs ``epochs``."""
    model = copy.deepcopy(model)
    if method == "partial_fit":
        assert epochs == 1
        return model.partial_fit(X)
    return model.set_params(max_iter=epochs, verbose=0).fit(X)


def _state(model):
    """What a fitted VAE is, as plain values (copies)."""
    if not hasattr(model, "module_"):
        return None
    optimizer = model._optimizer.state_dict()["state"]
    return {
        "n_iter_": model.n_iter_,
        "loss_curve_": list(model.loss_curve_),
        "weights": {k: v.clone() for k, v in model.module_.state_dict().items()},
        "moments": {(i, k): v.clone() for i, s in optimizer.items() for k, v in s.items()},
        "kl_per_component_": model.kl_per_component_.copy(),
        "latent_activity_": model.latent_activity_.copy(),
        "aggregated": model.sample(5, random_state=0, latent="aggregated_posterior"),
    }


def _assert_same(state, expected):
    assert (state is None) == (expected is None)
    if state is None:
        return
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, dict):
            assert value.keys() == state[key].keys(), key
            for name, tensor in value.items():
                assert torch.equal(state[key][name], tensor), (key, name)
        else:
            np.testing.assert_array_equal(state[key], value, err_msg=key)


@contextlib.contextmanager
def _no_interrupt():
    """Fail (not end the test session, as pytest does) when the block raises KeyboardInterrupt."""
    try:
        yield
    except KeyboardInterrupt:
        pytest.fail("the call raised KeyboardInterrupt instead of keeping the finished epochs")


class _RaisingStdout(io.StringIO):
    """A stdout whose write of the ``line``-th epoch line raises KeyboardInterrupt."""

    def __init__(self, line):
        super().__init__()
        self.line, self.lines = line, 0

    def write(self, text):
        if text.startswith("Epoch"):
            self.lines += 1
            if self.lines == self.line:
                raise KeyboardInterrupt
        return super().write(text)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("method", METHODS)
def test_an_interrupt_in_the_verbose_line_keeps_the_epoch_it_reports(method, source,
                                                                    monkeypatch):
    # The epoch is finished when its line is printed: the model keeps it, and agrees with
    # itself (it used to keep advanced weights with a rolled-back n_iter_ and loss_curve_).
    model, call = _start(method)
    line = 1 if method == "partial_fit" else 2
    expected = _state(_reference(model, method, line, _source(source)))
    model.set_params(verbose=1)
    monkeypatch.setattr(sys, "stdout", _RaisingStdout(line))
    with _no_interrupt(), pytest.warns(ConvergenceWarning, match="interrupted by the user"):
        assert call(model, _source(source)) is model
    monkeypatch.undo()
    _assert_same(_state(model), expected)


def _hooks(source):
    hooks = [(BaseVAE, "_set_latent_diagnostics"), (GaussianVAE, "_after_fit"),
             (BaseVAE, "_report")]
    if source == "memory":
        hooks.append((BaseVAE, "_update_reservoir"))
    return hooks


def _raise_in(monkeypatch, owner, name, times):
    """Make the first ``times`` calls of ``owner.name`` raise KeyboardInterrupt."""
    original, calls = getattr(owner, name), [0]

    def hooked(*args, **kwargs):
        calls[0] += 1
        if calls[0] <= times:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, hooked)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("method", METHODS)
def test_an_interrupt_after_the_last_epoch_keeps_every_epoch(method, source, monkeypatch):
    # Ctrl-C in the bookkeeping after training (the sample of the training rows, the latent
    # diagnostics, the likelihood's attributes, the warnings): the epochs are all kept, and
    # the model is the one an uninterrupted call gives.
    for owner, name in _hooks(source):
        model, call = _start(method)
        epochs = 1 if method == "partial_fit" else SETTINGS["max_iter"]
        expected = _state(_reference(model, method, epochs, _source(source)))
        _raise_in(monkeypatch, owner, name, times=1)
        with _no_interrupt(), pytest.warns(ConvergenceWarning, match="interrupted by the user"):
            call(model, _source(source))
        monkeypatch.undo()
        _assert_same(_state(model), expected)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("method", METHODS)
def test_a_second_interrupt_leaves_the_model_as_it_was(method, source, monkeypatch):
    # Ctrl-C twice after training abandons the call: the estimator is the one before it,
    # network and optimizer state included (a warm start used to train them in place).
    for owner, name in _hooks(source):
        model, call = _start(method)
        before, network = _state(model), getattr(model, "module_", None)
        _raise_in(monkeypatch, owner, name, times=2)
        with pytest.raises(KeyboardInterrupt):
            call(model, _source(source))
        monkeypatch.undo()
        _assert_same(_state(model), before)
        assert getattr(model, "module_", None) is network


@pytest.mark.parametrize("method", METHODS)
def test_an_interrupt_inside_the_optimizer_step_leaves_grad_mode_on(method, monkeypatch):
    # torch's optimizer step turns grad mode off and back on around its update; an interrupt
    # in between left it off for the whole process, and every later fit failed.
    model, call = _start(method)

    def step(self, *args, **kwargs):
        torch.set_grad_enabled(False)  # where the interrupt can leave torch
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    try:
        with pytest.raises(KeyboardInterrupt):
            call(model, _X())
        enabled = torch.is_grad_enabled()
    finally:
        torch.set_grad_enabled(True)  # whatever happens, not the other tests' problem
    monkeypatch.undo()
    assert enabled
    assert GaussianVAE(**{**SETTINGS, "max_iter": 1}).fit(_X()).n_iter_ == 1


_PACKAGE = os.path.dirname(skvae.__file__)


def _interrupt_at_line(number):
    """A trace function that raises KeyboardInterrupt at the ``number``-th line of skvae's
    code run (once: Python unsets a trace function that raises); its ``count`` of lines."""
    count = [0]

    def local(frame, event, arg):
        if event == "line":
            count[0] += 1
            if count[0] == number:
                raise KeyboardInterrupt
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(_PACKAGE) else None

    return tracer, count


def _traced(call, model, X, number):
    """(whether ``call(model, X)`` raised, lines run), the call interrupted at line
    ``number``; grad mode must be on after it, whatever happened."""
    tracer, count = _interrupt_at_line(number)
    sys.settrace(tracer)
    try:
        call(model, X)
        raised = False
    except KeyboardInterrupt:
        raised = True
    finally:
        sys.settrace(None)
        enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)  # not the other tests' problem
    # An interrupt just before a ``with torch.no_grad()`` block exits skips the exit.
    assert enabled, f"grad mode left off by an interrupt at line {number}"
    return raised, count[0]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("method", METHODS)
def test_an_interrupt_at_any_line_gives_the_old_model_or_the_finished_epochs(method, source):
    # A KeyboardInterrupt at a random line of skvae's code (seeded) stands for Ctrl-C at a
    # random moment: either the call raises and the estimator is as it was (only before its
    # first epoch finished), or it returns the model of the epochs it finished, equal to an
    # uninterrupted call of that length. (Scanned at every line once: no exception.)
    start, call = _start(method)
    _, total = _traced(call, copy.deepcopy(start), _source(source), number=0)
    before, references = _state(start), {}
    rng = np.random.RandomState(METHODS.index(method))
    strata = 8  # one random line in each eighth of the call: early and late lines both
    numbers = ((np.arange(strata) + rng.uniform(size=strata)) * total / strata).astype(int) + 1
    outcomes = []
    for number in numbers:
        model = copy.deepcopy(start)
        raised, _ = _traced(call, model, _source(source), number)
        outcomes.append(raised)
        if raised:
            _assert_same(_state(model), before)
            continue
        epochs = model.n_iter_ - (0 if method == "fit" else start.n_iter_)
        assert epochs >= 1
        if epochs not in references:
            references[epochs] = _state(_reference(start, method, epochs, _source(source)))
        expected = dict(references[epochs])
        state = _state(model)
        # Keys drawn for the row sample may differ when the interrupt hit their draw.
        state.pop("aggregated"), expected.pop("aggregated")
        _assert_same(state, expected)
    # Both ends were reached, and once an epoch had finished no later line lost it.
    assert outcomes[0] and not outcomes[-1]
    assert outcomes == sorted(outcomes, reverse=True)
