"""The minibatch training loop shared by every VAE: Adam, KL warm-up, early stopping, NaN guard,
Ctrl-C.

The data live on the device as one tensor, standardized and made row-major once per call
(``VAEModule.prepare``); an epoch is one pass over a permutation drawn from the caller's
generator, each minibatch an ``index_select`` of contiguous rows. The only host<->device sync
per epoch is reading the epoch's loss, which is also when a non-finite loss is detected.
Rows beyond memory come as a :class:`BlockSource` instead: each block is prepared the same
way when its turn comes, and read back once per block.
"""

import copy
import math
import time
from dataclasses import dataclass, field

import torch

from ._bounds import mean_elbo
from ._objectives import ELBO

# A run whose last loss ends this many times (|best| + 1) above its best epoch went astray.
_WORSENED_FACTOR = 100.0


def kl_weight(epoch, beta, warmup):
    """Weight of the KL term in epoch ``epoch`` (counted from 0).

    Rises linearly from 0 at epoch 0 to ``beta`` at epoch ``warmup`` and stays there;
    ``warmup=0`` means ``beta`` from the start.
    """
    if warmup <= 0:
        return float(beta)
    return float(beta) * min(1.0, epoch / warmup)


def make_optimizer(parameters, learning_rate):
    """Adam with the fused kernel where torch has one for these tensors, else ``foreach``."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=learning_rate, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(parameters, lr=learning_rate, foreach=True)


# Flags that say how Adam's step runs, not what it has learned: they belong to the machine.
_KERNEL_FLAGS = ("fused", "foreach", "capturable")


def load_optimizer_state(optimizer, state):
    """Load a state dict saved elsewhere (another device or torch) into ``optimizer``.

    ``load_state_dict`` also takes the saved param groups' kernel flags: a fused or
    capturable optimizer saved on CUDA would then step with a kernel this machine's tensors
    may not support (fused CPU Adam needs torch >= 2.4; capturable needs an accelerator).
    The moments and step counts are loaded; the flags stay those ``optimizer`` was built with.
    """
    flags = [{key: group[key] for key in _KERNEL_FLAGS if key in group}
             for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, flags):
        for key in _KERNEL_FLAGS:
            if key in own:
                group[key] = own[key]
            else:
                group.pop(key, None)


def _finite_parameters(module):
    """Whether every parameter of ``module`` is finite (one host sync)."""
    checks = [torch.isfinite(p).all() for p in module.parameters()]
    return bool(torch.stack(checks).all()) if checks else True


def snapshot(module):
    """A detached copy of the module's parameters and buffers."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


@dataclass
class TrainingHistory:
    """What the loop remembers between calls (fit, warm start, partial_fit).

    ``n_epochs`` is the warm-up clock; ``loss_curve`` holds the training loss (negative
    beta-ELBO per row, at the epoch's KL weight); ``validation_scores`` the mean validation
    ELBO (beta = 1) per epoch, or None without a validation set.
    """

    loss_curve: list = field(default_factory=list)
    validation_scores: list = None
    best_loss: float = math.inf
    best_validation_score: float = -math.inf
    no_improvement_count: int = 0
    n_epochs: int = 0
    best_state: dict = None


@dataclass
class TrainingResult:
    """How a call of :func:`train_epochs` ended: "converged", "max_iter", "diverged",
    "worsened" (finite, but ended far above its best loss) or "interrupted"."""

    status: str
    epochs_run: int
    diverged_at: int = None
    best_epoch: int = None  # "worsened": the epoch whose starting weights came back, its loss
    best_loss: float = None
    last_loss: float = None


class BlockSource:
    """Training rows read block by block, for data that do not fit in memory.

    ``n_rows`` is the number of rows of all blocks together; ``n_blocks`` how many blocks
    there are; ``prepared(i, module)`` reads block ``i`` and returns it as :func:`_epoch`
    takes it: ``(inputs, targets, covariates, masks)`` (see ``VAEModule.prepare``). Only the
    block being trained on is in memory. Subclasses define ``prepared``.
    """

    n_rows = 0
    n_blocks = 0

    def prepared(self, index, module):
        raise NotImplementedError


def _epoch(module, optimizer, data, generator, batch_size, weight, objective):
    return float(_pass(module, optimizer, data, generator, batch_size, weight, objective)) / (
        data[0].shape[0])


def _streamed_epoch(module, optimizer, source, generator, batch_size, weight, objective):
    """One epoch over the blocks of ``source``: blocks in a random order, rows shuffled within
    each block; the loss is the row-weighted mean over the blocks (the mean over all rows)."""
    total = 0.0
    order = torch.randperm(source.n_blocks, generator=generator, device=generator.device)
    for index in order.tolist():
        data = source.prepared(index, module)
        total += float(_pass(module, optimizer, data, generator, batch_size, weight, objective))
        del data  # one block in memory at a time
    return total / source.n_rows


def _pass(module, optimizer, data, generator, batch_size, weight, objective):
    """One shuffled pass of minibatch steps over the prepared rows ``data``: the sum over the
    rows of the loss (a tensor, not synchronized)."""
    inputs, targets, covariates, masks = data
    n = inputs.shape[0]
    order = torch.randperm(n, generator=generator, device=inputs.device)
    total = torch.zeros((), dtype=inputs.dtype, device=inputs.device)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        u = inputs.index_select(0, index)
        x = u if targets is inputs else targets.index_select(0, index)
        c = None if covariates is None else covariates.index_select(0, index)
        if masks is None:  # the call of old: objectives written before masks keep working
            loss = -objective(module, u, x, generator, weight, c).mean()
        else:
            m = masks.index_select(0, index)
            loss = -objective(module, u, x, generator, weight, c, mask=m).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total.add_(loss.detach(), alpha=u.shape[0])
    return total


def train_epochs(
    module,
    optimizer,
    X,
    *,
    generator,
    batch_size,
    max_epochs,
    beta,
    kl_warmup,
    history,
    X_val=None,
    tol=0.0,
    n_iter_no_change=None,
    verbose=0,
    print_fn=print,
    objective=None,
    C=None,
    C_val=None,
    mask=None,
    mask_val=None,
):
    """Train ``module`` on ``X`` for up to ``max_epochs`` epochs, updating ``history``.

    ``X`` is a tensor of rows, or a :class:`BlockSource` for rows read block by block (then
    each epoch visits the blocks in an order drawn from ``generator`` and shuffles the rows
    within each; ``X_val``, ``C`` and ``mask`` must be None, the source gives covariates and
    masks with each block).

    Stopping: once the KL weight has reached ``beta`` (from epoch ``kl_warmup`` on), an epoch
    that does not improve the best validation ELBO by more than ``tol`` (or, without ``X_val``,
    the best training loss by more than ``tol``) counts as no improvement; ``n_iter_no_change``
    of them in a row end training ("converged"). With ``X_val`` the best weights are restored at the end.

    A non-finite loss, validation score or weight is detected at the end of the epoch it
    appears in: the weights of the best validation epoch, else of the last finite epoch, are
    restored and the call returns "diverged" (the optimizer state is left as it is: the caller
    replaces it). If no finite epoch exists to go back to, ``FloatingPointError`` is raised
    (the caller turns it into a clear error).

    Without ``X_val``, a call whose last epoch ends far above its best training loss (see
    :func:`_unless_worsened`) gets back the weights that best epoch started from and returns
    "worsened".

    A ``KeyboardInterrupt`` during an epoch puts the weights and the optimizer state back as
    they were when that epoch began. If no epoch of this call had finished, it is raised
    again, so the call changes nothing; otherwise the best validation weights (if any) are
    restored and the call returns "interrupted". Returns a :class:`TrainingResult`.

    Each minibatch step maximizes ``objective`` (default: :class:`ELBO`; see
    ``skvae.nn._objectives``) at the epoch's KL weight; the validation score is the ELBO at
    ``beta = 1`` whatever the objective. ``C`` and ``C_val`` are the covariates of the rows of
    ``X`` and ``X_val`` for a module that conditions on some. ``mask`` and ``mask_val`` (bool,
    shaped like ``X`` and ``X_val``, True where observed) train on the observed entries only:
    the objective and the validation ELBO are then bounds of log p(x_obs), and the unobserved
    entries of X (NaN allowed) are never read.
    """
    streamed = isinstance(X, BlockSource)
    batch_size = max(1, min(int(batch_size), X.n_rows if streamed else X.shape[0]))
    objective = ELBO() if objective is None else objective
    if streamed:
        if X_val is not None or C is not None or mask is not None:
            raise ValueError("a BlockSource carries its own covariates and masks; "
                             "validation rows are not supported with one")
        data = X
    else:
        # Standardized and row-major once, not once per minibatch.
        data = (*module.prepare(X, mask), C, mask)
    val_eps = None
    if X_val is not None:
        if history.validation_scores is None:
            history.validation_scores = []
        val_eps = torch.randn(
            (X_val.shape[0], module.n_components),
            generator=generator,
            device=X_val.device,
            dtype=X_val.dtype,
        )
    has_finite_epoch = len(history.loss_curve) > 0
    # Without a validation set, the weights this call's best training epoch started from
    # (its loss is measured along the epoch, from them on; the step after the last batch may
    # already have thrown them far away): kept so a run that ends far above its best loss (a
    # learning rate that is too high) can go back.
    best_train = None
    for run in range(max_epochs):
        epoch = history.n_epochs
        weight = kl_weight(epoch, beta, kl_warmup)
        started = time.perf_counter()
        at_start = None
        try:
            at_start = snapshot(module), copy.deepcopy(optimizer.state_dict())
            module.train()
            epoch_of = _streamed_epoch if streamed else _epoch
            loss = epoch_of(module, optimizer, data, generator, batch_size, weight, objective)
            score = None
            finite = math.isfinite(loss) and _finite_parameters(module)
            if X_val is not None and finite:
                with torch.no_grad():
                    score = float(mean_elbo(module, X_val, val_eps, C=C_val, mask=mask_val))
                finite = math.isfinite(score)
        except KeyboardInterrupt:
            if at_start is not None:
                module.load_state_dict(at_start[0])
                optimizer.load_state_dict(at_start[1])
            if run == 0:
                raise
            if history.best_state is not None:
                module.load_state_dict(history.best_state)
            return TrainingResult("interrupted", run)
        if not finite:
            restore = history.best_state
            if restore is None and has_finite_epoch:
                restore = at_start[0]
            if restore is None:
                raise FloatingPointError(f"non-finite loss or weights in epoch {epoch + 1}")
            module.load_state_dict(restore)
            return TrainingResult("diverged", run, diverged_at=epoch + 1)
        has_finite_epoch = True
        history.n_epochs += 1
        history.loss_curve.append(loss)
        if score is not None:
            history.validation_scores.append(score)
        if verbose:
            shown = "" if score is None else f", validation ELBO = {score:.6g}"
            print_fn(
                f"Epoch {history.n_epochs}, loss = {loss:.6g}{shown}, "
                f"{time.perf_counter() - started:.2f} s"
            )
        if X_val is None and (best_train is None or loss < best_train[0]):
            best_train = (loss, at_start[0], history.n_epochs)
        if n_iter_no_change is None or epoch < kl_warmup:
            continue  # trained below full beta (warm-up): the objective is still changing
        if score is not None:
            improved = score > history.best_validation_score + tol
            if score > history.best_validation_score:
                history.best_validation_score = score
                history.best_state = snapshot(module)
        else:
            improved = loss < history.best_loss - tol
        history.best_loss = min(history.best_loss, loss)
        history.no_improvement_count = 0 if improved else history.no_improvement_count + 1
        if history.no_improvement_count >= n_iter_no_change:
            if history.best_state is not None:
                module.load_state_dict(history.best_state)
            return _unless_worsened(module, history, best_train,
                                    TrainingResult("converged", run + 1))
    if history.best_state is not None:
        module.load_state_dict(history.best_state)
    return _unless_worsened(module, history, best_train, TrainingResult("max_iter", max_epochs))


def _unless_worsened(module, history, best_train, result):
    """``result``, or "worsened" with the weights the best epoch started from restored if
    training went astray.

    Training went astray when the last epoch's loss is more than ``_WORSENED_FACTOR``
    (|best| + 1) nats per row above the best epoch of the call (a learning rate so high that
    the loss explodes and stays finite, ~1e30): the gap a KL warm-up opens is far smaller.
    """
    if best_train is None:
        return result
    best, state, epoch = best_train
    last = history.loss_curve[-1]
    if not last - best > _WORSENED_FACTOR * (abs(best) + 1.0):
        return result
    module.load_state_dict(state)
    return TrainingResult("worsened", result.epochs_run, best_epoch=epoch, best_loss=best,
                          last_loss=last)
