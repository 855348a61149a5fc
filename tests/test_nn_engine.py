"""The training loop on raw tensors: warm-up, determinism, early stopping, NaN guard, verbose."""

import re

import numpy as np
import pytest
import torch

from skvae.nn import GaussianLikelihood, TrainingHistory, VAEModule, kl_weight, train_epochs
from skvae.nn._engine import load_optimizer_state, make_optimizer, snapshot

N, D, K = 96, 5, 2


@pytest.mark.parametrize(
    "warmup, beta, expected",
    [
        (0, 1.0, [1.0, 1.0, 1.0]),
        (0, 2.5, [2.5, 2.5, 2.5]),
        (4, 1.0, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]),
        (2, 4.0, [0.0, 2.0, 4.0, 4.0]),
        (3, 0.0, [0.0, 0.0, 0.0, 0.0]),
    ],
)
def test_kl_weight_is_linear_ramp_of_epoch(warmup, beta, expected):
    assert [kl_weight(e, beta, warmup) for e in range(len(expected))] == pytest.approx(expected)


def _data(seed=0):
    rng = np.random.RandomState(seed)
    z = rng.normal(size=(N, K))
    W = rng.normal(size=(K, D))
    return torch.as_tensor(z @ W + 0.1 * rng.normal(size=(N, D)), dtype=torch.float32)


def _setup(likelihood=None, seed=0, X=None):
    X = _data() if X is None else X
    generator = torch.Generator().manual_seed(seed)
    module = VAEModule(D, K, (16,), "tanh", likelihood or GaussianLikelihood(D))
    module.set_standardization(X.mean(0), X.std(0))
    module.reset_parameters(generator, X)
    return module, make_optimizer(module.parameters(), 1e-2), generator, X


def _train(module, optimizer, generator, X, history, **kwargs):
    options = dict(generator=generator, batch_size=32, max_epochs=30, beta=1.0, kl_warmup=0,
                   history=history)
    options.update(kwargs)
    return train_epochs(module, optimizer, X, **options)


def test_training_lowers_the_loss_and_is_deterministic():
    curves, states = [], []
    for _ in range(2):
        module, optimizer, generator, X = _setup()
        history = TrainingHistory()
        result = _train(module, optimizer, generator, X, history)
        assert result.status == "max_iter" and result.epochs_run == 30
        curves.append(history.loss_curve)
        states.append(snapshot(module))
    assert len(curves[0]) == 30 and history.n_epochs == 30
    assert curves[0][-1] < curves[0][0] - 1.0
    assert curves[0] == curves[1]
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name])


def _torch_version():
    return tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


def test_fused_adam_is_used_on_the_cpu_where_torch_has_it():
    # torch 2.4 brought the fused Adam kernel to the CPU; before it only the foreach one ran.
    _, optimizer, _, _ = _setup()
    fused = _torch_version() >= (2, 4)
    assert bool(optimizer.defaults["fused"]) is fused
    assert bool(optimizer.defaults["foreach"]) is not fused


def test_foreach_adam_is_the_fallback_where_fused_is_refused(monkeypatch):
    class NoFusedAdam(torch.optim.Adam):  # what torch < 2.4 does with CPU tensors
        def __init__(self, params, **options):
            if options.get("fused"):
                raise RuntimeError("`fused=True` requires all the params to be CUDA tensors")
            super().__init__(params, **options)

    monkeypatch.setattr(torch.optim, "Adam", NoFusedAdam)
    module, optimizer, generator, X = _setup()
    assert isinstance(optimizer, NoFusedAdam)
    assert not optimizer.defaults["fused"] and optimizer.defaults["foreach"] is True
    history = TrainingHistory()
    _train(module, optimizer, generator, X, history, max_epochs=3)
    assert history.loss_curve[-1] < history.loss_curve[0]


@pytest.mark.parametrize("flags", [
    {"fused": True, "foreach": None, "capturable": False},  # fused Adam, e.g. on CUDA
    {"fused": None, "foreach": True, "capturable": True},  # CUDA-graph capturable Adam
])
def test_optimizer_state_from_another_device_trains_on_the_cpu(flags):
    module, optimizer, generator, X = _setup()
    _train(module, optimizer, generator, X, TrainingHistory(), max_epochs=2)
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        group.update(flags)
    fresh = make_optimizer(module.parameters(), 1e-2)
    expected = {key: fresh.param_groups[0][key] for key in flags}
    load_optimizer_state(fresh, state)
    for group in fresh.param_groups:
        assert {key: group[key] for key in flags} == expected
    # The moments came along (the state is not reset) ...
    for param in module.parameters():
        assert torch.equal(fresh.state[param]["exp_avg"], optimizer.state[param]["exp_avg"])
    # ... and training goes on with them.
    history = TrainingHistory()
    _train(module, fresh, generator, X, history, max_epochs=2)
    assert np.all(np.isfinite(history.loss_curve))


@pytest.mark.parametrize("warmup", [0, 1, 5])
def test_stopping_counts_only_epochs_at_full_beta(warmup):
    # Epochs 0 .. warmup - 1 train at a KL weight below beta and are not compared. tol is
    # huge, so the first counted epoch sets the reference and the next one stops training.
    module, optimizer, generator, X = _setup()
    history = TrainingHistory()
    result = _train(module, optimizer, generator, X, history, kl_warmup=warmup, tol=1e9,
                    n_iter_no_change=1)
    assert result.status == "converged"
    assert history.n_epochs == warmup + 2
    if warmup:
        assert kl_weight(warmup - 1, 1.0, warmup) < 1.0 == kl_weight(warmup, 1.0, warmup)
    # Only the full-beta losses entered the comparison.
    assert history.best_loss == min(history.loss_curve[warmup:])


def test_early_stopping_restores_best_validation_weights():
    module, optimizer, generator, X = _setup()
    X_val = _data(seed=1)[:40]
    history = TrainingHistory()
    result = _train(module, optimizer, generator, X[:60], history, X_val=X_val, tol=0.0,
                    n_iter_no_change=3, max_epochs=200)
    scores = history.validation_scores
    assert len(scores) == len(history.loss_curve) == history.n_epochs
    best = int(np.argmax(scores))
    assert history.best_validation_score == scores[best]
    assert result.status == "converged" and result.epochs_run < 200
    assert len(scores) == best + 1 + 3
    final = snapshot(module)
    for name, value in history.best_state.items():
        assert torch.equal(final[name], value)


class _PoisonedGaussian(GaussianLikelihood):
    """Returns NaN from the ``poison_after``-th call of log_prob on."""

    poison_after = None
    calls = 0

    def log_prob(self, x, params, mask=None):
        self.calls += 1
        value = super().log_prob(x, params, mask)
        if self.poison_after is not None and self.calls > self.poison_after:
            value = value * float("nan")
        return value


def test_nan_in_a_later_epoch_restores_the_last_finite_weights():
    likelihood = _PoisonedGaussian(D)
    module, optimizer, generator, X = _setup(likelihood)
    history = TrainingHistory()
    _train(module, optimizer, generator, X, history, max_epochs=3)
    finite = snapshot(module)
    likelihood.poison_after = likelihood.calls + 1  # second batch of the next epoch
    result = _train(module, optimizer, generator, X, history, max_epochs=5)
    assert result.status == "diverged" and result.diverged_at == 4
    assert len(history.loss_curve) == 3 and np.all(np.isfinite(history.loss_curve))
    for name, value in snapshot(module).items():
        assert torch.equal(value, finite[name])


def test_nan_in_the_first_epoch_raises():
    likelihood = _PoisonedGaussian(D)
    likelihood.poison_after = 0
    module, optimizer, generator, X = _setup(likelihood)
    with pytest.raises(FloatingPointError, match="epoch 1"):
        _train(module, optimizer, generator, X, TrainingHistory())


def _on_step(optimizer, number, action):
    """Make the ``number``-th call of ``optimizer.step`` (counted from 1) also run ``action``."""
    original, count = optimizer.step, [0]

    def step(*args, **kwargs):
        out = original(*args, **kwargs)
        count[0] += 1
        if count[0] == number:
            action()
        return out

    optimizer.step = step


def test_non_finite_weights_after_an_epoch_are_rolled_back():
    # 96 rows in batches of 32: 3 steps per epoch. The last step of epoch 2 makes a weight
    # infinite after that epoch's (finite) loss was computed.
    module, optimizer, generator, X = _setup()
    history = TrainingHistory()
    _train(module, optimizer, generator, X, history, max_epochs=1)
    after_first = snapshot(module)
    weight = next(module.parameters())
    _on_step(optimizer, 3, lambda: weight.data.fill_(float("inf")))
    result = _train(module, optimizer, generator, X, history, max_epochs=3)
    assert result.status == "diverged" and result.diverged_at == 2
    assert history.n_epochs == len(history.loss_curve) == 1
    for name, value in snapshot(module).items():
        assert torch.equal(value, after_first[name]), name


def test_non_finite_weights_in_the_first_epoch_raise():
    module, optimizer, generator, X = _setup()
    weight = next(module.parameters())
    _on_step(optimizer, 3, lambda: weight.data.fill_(float("nan")))
    with pytest.raises(FloatingPointError, match="epoch 1"):
        _train(module, optimizer, generator, X, TrainingHistory())


def _interrupt():
    raise KeyboardInterrupt


def _trained(epochs):
    module, optimizer, generator, X = _setup()
    history = TrainingHistory()
    if epochs:
        _train(module, optimizer, generator, X, history, max_epochs=epochs)
    return module, optimizer, generator, X, history


def test_interrupt_after_finished_epochs_keeps_them():
    # Ctrl-C in the second minibatch of epoch 3 (counted from 0): the call ends as if
    # max_epochs had been 3, weights and optimizer state bit for bit.
    reference, reference_optimizer, *_ = _trained(3)
    module, optimizer, generator, X, history = _trained(0)
    _on_step(optimizer, 3 * 3 + 2, _interrupt)
    result = _train(module, optimizer, generator, X, history, max_epochs=10)
    assert result.status == "interrupted" and result.epochs_run == 3
    assert history.n_epochs == len(history.loss_curve) == 3
    for name, value in snapshot(reference).items():
        assert torch.equal(snapshot(module)[name], value), name
    for param, reference_param in zip(module.parameters(), reference.parameters()):
        assert torch.equal(optimizer.state[param]["exp_avg_sq"],
                           reference_optimizer.state[reference_param]["exp_avg_sq"])


def test_interrupt_before_an_epoch_finished_reraises_and_changes_nothing():
    module, optimizer, generator, X, history = _trained(2)
    weights = snapshot(module)
    moments = {i: optimizer.state[p]["exp_avg"].clone() for i, p in enumerate(module.parameters())}
    _on_step(optimizer, 2, _interrupt)
    with pytest.raises(KeyboardInterrupt):
        _train(module, optimizer, generator, X, history, max_epochs=5)
    assert history.n_epochs == len(history.loss_curve) == 2
    for name, value in snapshot(module).items():
        assert torch.equal(value, weights[name]), name
    for i, param in enumerate(module.parameters()):
        assert torch.equal(optimizer.state[param]["exp_avg"], moments[i])


def test_verbose_prints_one_line_per_epoch():
    module, optimizer, generator, X = _setup()
    lines = []
    _train(module, optimizer, generator, X[:60], TrainingHistory(), X_val=X[60:],
           max_epochs=4, verbose=1, print_fn=lines.append)
    assert len(lines) == 4
    pattern = r"Epoch (\d+), loss = \S+, validation ELBO = \S+, \d+\.\d\d s"
    assert [int(re.fullmatch(pattern, line).group(1)) for line in lines] == [1, 2, 3, 4]


def test_batches_are_slices_of_a_permutation_from_the_generator():
    # Two generators with the same seed give the same epoch; a different seed another one.
    results = []
    for seed in (0, 0, 1):
        module, optimizer, _, X = _setup(seed=0)
        history = TrainingHistory()
        _train(module, optimizer, torch.Generator().manual_seed(seed), X, history, max_epochs=1)
        results.append(history.loss_curve[0])
    assert results[0] == results[1] != results[2]


def test_an_interrupt_in_the_verbose_line_keeps_the_epoch_it_reports():
    # An epoch is finished once the history records it: a Ctrl-C while its line is printed
    # keeps it, weights, optimizer state and history agreeing (the call as if max_epochs=2).
    reference, reference_optimizer, *_ = _trained(2)
    module, optimizer, generator, X, history = _trained(0)
    lines = []

    def print_fn(line):
        lines.append(line)
        if len(lines) == 2:
            raise KeyboardInterrupt

    try:
        result = _train(module, optimizer, generator, X, history, max_epochs=10, verbose=1,
                        print_fn=print_fn)
    except KeyboardInterrupt:  # fail this test, not the whole session
        pytest.fail("the interrupt in the verbose line dropped the finished epochs")
    assert result.status == "interrupted" and result.interrupted and result.epochs_run == 2
    assert history.n_epochs == len(history.loss_curve) == 2
    for name, value in snapshot(reference).items():
        assert torch.equal(snapshot(module)[name], value), name
    for param, reference_param in zip(module.parameters(), reference.parameters()):
        assert torch.equal(optimizer.state[param]["exp_avg"],
                           reference_optimizer.state[reference_param]["exp_avg"])


def test_grad_mode_is_on_while_training_and_as_it_was_after():
    # An interrupt inside torch's optimizer step can leave grad mode off (torch turns it off
    # around the update); the call puts it back as it found it, and trains even under no_grad.
    module, optimizer, generator, X, history = _trained(1)

    def broken_step():
        torch.set_grad_enabled(False)
        raise KeyboardInterrupt

    original = optimizer.step
    optimizer.step = lambda *a, **k: broken_step()
    try:
        with pytest.raises(KeyboardInterrupt):
            _train(module, optimizer, generator, X, history, max_epochs=2)
        enabled = torch.is_grad_enabled()
    finally:
        torch.set_grad_enabled(True)
    assert enabled
    optimizer.step = original
    with torch.no_grad():
        result = _train(module, optimizer, generator, X, history, max_epochs=2)
        assert not torch.is_grad_enabled()
    assert result.status == "max_iter" and history.n_epochs == 3
