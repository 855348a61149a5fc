"""Divergence that stays finite: a learning rate so high that the loss explodes in the first
epoch (1e10 to 1e30 nats per row) and stays there warns and keeps the best weights seen, the
ones the call started from; an honest KL warm-up and noisy minibatches do not warn."""

import copy
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skvae import GaussianVAE
from skvae.nn import ELBO, GaussianLikelihood, TrainingHistory, VAEModule, train_epochs
from skvae.nn._engine import make_optimizer, snapshot

SETTINGS = dict(n_components=2, hidden_layer_sizes=(8,), max_iter=20, device="cpu",
                random_state=0)


def _X(n=200, d=6):
    return np.random.RandomState(0).normal(size=(n, d))


def _no_divergence_claimed(fit):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fit()
    claims = [str(w.message) for w in caught if "diverged" in str(w.message)]
    assert not claims, claims
    return model


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_loss_that_explodes_in_the_first_epoch_warns_and_keeps_the_start(early_stopping):
    # learning_rate_init=100: the first epoch's loss is ~1e17 nats per row, every later one
    # ~1e12 to 1e16; the best epoch is itself absurd, so comparing epochs alone saw nothing
    # and the fit ended with a score of -1.4e12 (-8.4 at the default rate), silently.
    X = _X()
    model = GaussianVAE(learning_rate_init=100, early_stopping=early_stopping, **SETTINGS)
    measure = "validation loss" if early_stopping else "loss"
    with pytest.warns(ConvergenceWarning,
                      match=rf"diverged: the {measure} rose from \S+ \(at the start\) to \S+e\+"
                            r".*initial ones.*learning_rate_init=100 \(e\.g\. to 10\)"):
        model.fit(X)
    assert max(model.loss_curve_) > 1e10  # it did explode
    untrained = GaussianVAE(max_iter=1, learning_rate_init=1e-12, **{
        k: v for k, v in SETTINGS.items() if k != "max_iter"}).fit(X)
    assert model.score(X) == pytest.approx(untrained.score(X), abs=1.0)
    assert model.score(X) > -15.0


def test_a_partial_fit_that_explodes_keeps_the_model_it_started_from():
    X = _X()
    good = GaussianVAE(**SETTINGS)
    with pytest.warns(ConvergenceWarning, match="maximum iterations"):
        good.fit(X)
    before = good.score(X)
    model = copy.deepcopy(good).set_params(learning_rate_init=100)
    with pytest.warns(ConvergenceWarning, match=r"loss rose from .*\(at the start\)"):
        model.partial_fit(X)
    assert model.n_iter_ == good.n_iter_ + 1 and model.loss_curve_[-1] > 1e6
    for name, value in good.module_.state_dict().items():
        assert torch.equal(model.module_.state_dict()[name], value), name
    assert model.score(X) == before


def test_an_honest_kl_warm_up_is_not_divergence():
    # The loss rises while the KL weight climbs from 0 to beta=4 (a gap of the size of the
    # KL term): that is the objective changing, not training going astray.
    model = _no_divergence_claimed(lambda: GaussianVAE(
        beta=4.0, kl_warmup=8, max_iter=16, **{k: v for k, v in SETTINGS.items()
                                                if k != "max_iter"}).fit(_X()))
    curve = model.loss_curve_
    assert curve[-1] > min(curve) + 1.0  # it did rise


def test_noisy_minibatches_are_not_divergence():
    # One row per minibatch, heavy-tailed rows: the first minibatch's loss (which stands for
    # the starting weights) is one row's, far from the epoch's mean.
    X = np.random.RandomState(1).standard_t(1.5, size=(40, 6))
    _no_divergence_claimed(lambda: GaussianVAE(batch_size=1, max_iter=4, **{
        k: v for k, v in SETTINGS.items() if k != "max_iter"}).fit(X))


def _engine_setup(learning_rate, X):
    generator = torch.Generator().manual_seed(0)
    module = VAEModule(X.shape[1], 2, (8,), "tanh", GaussianLikelihood(X.shape[1]))
    module.set_standardization(X.mean(0), X.std(0))
    module.reset_parameters(generator, X)
    return module, make_optimizer(module.parameters(), learning_rate), generator


def test_the_engine_goes_back_to_the_start_of_a_call_that_exploded():
    X = torch.as_tensor(_X(), dtype=torch.float32)
    module, optimizer, generator = _engine_setup(100.0, X)
    start = snapshot(module)
    result = train_epochs(module, optimizer, X, generator=generator, batch_size=32,
                          max_epochs=5, beta=1.0, kl_warmup=0, history=TrainingHistory())
    assert result.status == "worsened" and result.best_epoch is None
    assert result.best_loss < 20 and result.last_loss > 1e6
    for name, value in snapshot(module).items():
        assert torch.equal(value, start[name]), name


class _FirstBatchLooksPerfect(ELBO):
    """The ELBO, except that the first minibatch of a call reports a loss of 0."""

    def __init__(self):
        self.calls = 0

    def __call__(self, module, u, x, generator, weight, c=None, **kwargs):
        self.calls += 1
        value = super().__call__(module, u, x, generator, weight, c, **kwargs)
        return value * 0.0 if self.calls == 1 else value


def test_a_first_minibatch_far_below_the_rest_is_checked_on_all_rows(monkeypatch):
    # The first minibatch is only a screen: ~140 nats per row afterwards against 0 in it
    # looks like a call gone astray, and the loss of the starting weights measured on all
    # rows (~140) clears it. The weights trained are kept.
    from skvae.nn import _engine

    measured, original = [], _engine._Loop.measured
    monkeypatch.setattr(_engine._Loop, "measured",
                        lambda self, *a: measured.append(original(self, *a)) or measured[-1])
    X = torch.as_tensor(_X(d=100), dtype=torch.float32)
    module, optimizer, generator = _engine_setup(1e-3, X)
    history = TrainingHistory()
    result = train_epochs(module, optimizer, X, generator=generator, batch_size=32,
                          max_epochs=3, beta=1.0, kl_warmup=0, history=history,
                          objective=_FirstBatchLooksPerfect())
    assert min(history.loss_curve) > 100.0
    assert len(measured) == 1 and measured[0] > 100.0
    assert result.status == "max_iter"
