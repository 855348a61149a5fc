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
from dataclasses import dataclass, field, replace

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
    "worsened" (finite, but ended far above its best loss) or "interrupted".

    ``interrupted`` is also True when a KeyboardInterrupt came after training had ended (while
    the call restored its best weights), which were then restored all the same. For
    "worsened", ``best_epoch`` is the epoch whose starting weights came back (None: the
    weights the call started from), ``best_loss`` their loss, ``last_loss`` the last epoch's,
    and ``measure`` what was compared ("loss", or "validation loss" with validation rows).
    """

    status: str
    epochs_run: int
    diverged_at: int = None
    best_epoch: int = None
    best_loss: float = None
    last_loss: float = None
    measure: str = "loss"
    interrupted: bool = False


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
    """One epoch over the prepared rows ``data``: (mean loss over the rows, first batch's loss)."""
    total, first = _pass(module, optimizer, data, generator, batch_size, weight, objective)
    return float(total) / data[0].shape[0], first


def _streamed_epoch(module, optimizer, source, generator, batch_size, weight, objective):
    """One epoch over the blocks of ``source``: blocks in a random order, rows shuffled within
    each block; (the row-weighted mean loss over the blocks, the first batch's loss)."""
    total, first = 0.0, None
    for index in torch.randperm(source.n_blocks, generator=generator,
                                device=generator.device).tolist():
        data = source.prepared(index, module)
        block, block_first = _pass(module, optimizer, data, generator, batch_size, weight,
                                   objective)
        total += float(block)
        first = block_first if first is None else first
        del data  # one block in memory at a time
    return total / source.n_rows, first


def _pass(module, optimizer, data, generator, batch_size, weight, objective):
    """One shuffled pass of minibatch steps over the prepared rows ``data``: the sum over the
    rows of the loss and the first batch's mean loss, at the weights the pass started from
    (tensors, not synchronized). ``optimizer=None`` only evaluates, without gradients."""
    inputs, targets, covariates, masks = data
    n = inputs.shape[0]
    order = torch.randperm(n, generator=generator, device=inputs.device)
    total = torch.zeros((), dtype=inputs.dtype, device=inputs.device)
    first = None
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        u = inputs.index_select(0, index)
        x = u if targets is inputs else targets.index_select(0, index)
        c = None if covariates is None else covariates.index_select(0, index)
        with torch.set_grad_enabled(optimizer is not None):
            if masks is None:  # the call of old: objectives written before masks keep working
                loss = -objective(module, u, x, generator, weight, c).mean()
            else:
                m = masks.index_select(0, index)
                loss = -objective(module, u, x, generator, weight, c, mask=m).mean()
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        first = loss.detach() if first is None else first
        total.add_(loss.detach(), alpha=u.shape[0])
    return total, first


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

    A call that ends far above its start or its best epoch (a loss that explodes and stays
    finite: :meth:`_Loop.unless_worsened`) gets those weights back and returns "worsened".

    An epoch is finished once ``history`` records it (all its fields at once). A
    ``KeyboardInterrupt`` anywhere puts the weights and optimizer state of an unfinished epoch
    back as they were when it began; with no finished epoch in the call it is raised again
    (the call changed nothing), else the call returns "interrupted" (best validation weights
    restored). Grad mode is on while training and as it was before once the call returns or
    raises (an interrupt inside torch's optimizer step can leave it off).

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
    if streamed and (X_val is not None or C is not None or mask is not None):
        raise ValueError("a BlockSource carries its own covariates and masks; "
                         "validation rows are not supported with one")
    grad = torch.is_grad_enabled()
    try:
        # Standardized and row-major once, not once per minibatch.
        data = X if streamed else (*module.prepare(X, mask), C, mask)
        loop = _Loop(module, optimizer, data, history, generator=generator,
                     batch_size=batch_size, beta=beta, kl_warmup=kl_warmup, tol=tol,
                     n_iter_no_change=n_iter_no_change, verbose=verbose, print_fn=print_fn,
                     streamed=streamed, objective=ELBO() if objective is None else objective,
                     X_val=X_val, C_val=C_val, mask_val=mask_val)
    except BaseException:
        torch.set_grad_enabled(grad)  # an interrupt can skip the exit of prepare's no_grad
        raise
    return loop.call(max_epochs, grad)


class _Loop:
    """One call of :func:`train_epochs`: its settings, and what it tracks beside ``history``."""

    def __init__(self, module, optimizer, data, history, **settings):
        self.module, self.optimizer, self.data, self.history = module, optimizer, data, history
        vars(self).update(settings)
        self.first_epoch = history.n_epochs
        self.val_eps = None
        if self.X_val is not None:
            if history.validation_scores is None:
                history.validation_scores = []
            self.val_eps = torch.randn((self.X_val.shape[0], module.n_components),
                                       generator=self.generator, device=self.X_val.device,
                                       dtype=self.X_val.dtype)
        self.running = None  # the number of the epoch running (counted from 0)
        self.at_start = None  # (weights, optimizer state) when the running epoch began
        self.origin = None  # (weights, their loss: validation, else the first batch's)
        # Without a validation set, (loss, the weights its epoch started from, epoch number,
        # KL weight) of this call's best training epoch: its loss is measured along the epoch,
        # from those weights on (the step after the last batch may already have thrown them
        # far away).
        self.best_train = None

    def call(self, max_epochs, grad):
        """The epochs, then the end of the call (best weights back), with grad mode on and
        put back to ``grad``; see :func:`train_epochs`.

        One protected region from the first epoch to the return: a KeyboardInterrupt during
        the epochs ends them (the unfinished one undone), one at the end runs the end once
        more (restoring weights is idempotent), a second one propagates.
        """
        result = None
        torch.set_grad_enabled(True)
        for attempt in range(2):
            try:
                if result is None:
                    result = self.epochs(max_epochs)
                ended = result if result.status == "diverged" else self.end(result)
                torch.set_grad_enabled(grad)
                return ended
            except KeyboardInterrupt:
                if attempt == 0 and result is None:
                    self.undo_unfinished()
                if attempt == 1 or self.history.n_epochs == self.first_epoch:
                    torch.set_grad_enabled(grad)
                    raise
                result = result or TrainingResult(
                    "interrupted", self.history.n_epochs - self.first_epoch)
                result = replace(result, interrupted=True)
            except BaseException:
                torch.set_grad_enabled(grad)
                raise

    def epochs(self, max_epochs):
        for run in range(max_epochs):
            result = self.epoch(run)
            if result is not None:
                return result
        return TrainingResult("max_iter", max_epochs)

    def epoch(self, run):
        """Run one epoch and record it; a :class:`TrainingResult` if the call ends there."""
        module, history = self.module, self.history
        self.at_start = None  # first: the last epoch's must never undo the epoch it began
        epoch = self.running = history.n_epochs
        weight = kl_weight(epoch, self.beta, self.kl_warmup)
        started = time.perf_counter()
        self.at_start = snapshot(module), copy.deepcopy(self.optimizer.state_dict())
        if self.origin is None and self.X_val is not None:
            self.origin = self.at_start[0], -self.validation_score()
        module.train()
        epoch_of = _streamed_epoch if self.streamed else _epoch
        loss, first = epoch_of(module, self.optimizer, self.data, self.generator,
                               self.batch_size, weight, self.objective)
        if self.origin is None:
            self.origin = self.at_start[0], float(first)
        score = None
        finite = math.isfinite(loss) and _finite_parameters(module)
        if self.X_val is not None and finite:
            score = self.validation_score()
            finite = math.isfinite(score)
        if not finite:
            return self.diverged(epoch)
        vars(history).update(self.recorded(epoch, loss, score))  # the epoch is finished
        if self.X_val is None and (self.best_train is None or loss < self.best_train[0]):
            self.best_train = (loss, self.at_start[0], history.n_epochs, weight)
        if self.verbose:
            shown = "" if score is None else f", validation ELBO = {score:.6g}"
            self.print_fn(f"Epoch {history.n_epochs}, loss = {loss:.6g}{shown}, "
                          f"{time.perf_counter() - started:.2f} s")
        if (self.n_iter_no_change is not None
                and history.no_improvement_count >= self.n_iter_no_change):
            return TrainingResult("converged", run + 1)
        return None

    def validation_score(self):
        with torch.no_grad():
            return float(mean_elbo(self.module, self.X_val, self.val_eps, C=self.C_val,
                                   mask=self.mask_val))

    def recorded(self, epoch, loss, score):
        """The fields of ``history`` once epoch ``epoch`` is finished (``history`` unchanged)."""
        history = self.history
        new = {"n_epochs": epoch + 1, "loss_curve": [*history.loss_curve, loss]}
        if score is not None:
            new["validation_scores"] = [*history.validation_scores, score]
        if self.n_iter_no_change is None or epoch < self.kl_warmup:
            return new  # trained below full beta (warm-up): the objective is still changing
        if score is not None:
            improved = score > history.best_validation_score + self.tol
            if score > history.best_validation_score:
                new["best_validation_score"] = score
                new["best_state"] = snapshot(self.module)
        else:
            improved = loss < history.best_loss - self.tol
        new["best_loss"] = min(history.best_loss, loss)
        new["no_improvement_count"] = 0 if improved else history.no_improvement_count + 1
        return new

    def diverged(self, epoch):
        """The end of a call whose epoch ``epoch`` became non-finite: the best weights back."""
        restore = self.history.best_state
        if restore is None and self.history.loss_curve:
            restore = self.at_start[0]
        if restore is None:
            raise FloatingPointError(f"non-finite loss or weights in epoch {epoch + 1}")
        self.module.load_state_dict(restore)
        return TrainingResult("diverged", epoch - self.first_epoch, diverged_at=epoch + 1)

    def undo_unfinished(self):
        """After a KeyboardInterrupt: the weights and optimizer state of an epoch that had not
        finished back as they were when it began."""
        if self.at_start is not None and self.history.n_epochs == self.running:
            self.module.load_state_dict(self.at_start[0])
            self.optimizer.load_state_dict(self.at_start[1])

    def end(self, result):
        """The best validation weights back, unless the call went astray (then its best)."""
        if self.history.best_state is not None:
            self.module.load_state_dict(self.history.best_state)
        worsened = self.unless_worsened()
        if worsened is None:
            return result
        return replace(worsened, epochs_run=result.epochs_run, interrupted=result.interrupted)

    def unless_worsened(self):
        """None, or a "worsened" result once the best weights of a call gone astray are back.

        A call went astray when the loss of the weights it ends with is more than
        ``_WORSENED_FACTOR`` (|best| + 1) nats per row above the best loss it saw: that of its
        best epoch, or that of the weights it started from (a learning rate so high that the
        loss explodes within the first epoch, to 1e10 or 1e25, and stays finite leaves no good
        epoch). A KL warm-up or minibatch noise opens far smaller gaps. With validation rows
        the losses are exact validation losses (negative ELBO); without, the loss of the
        starting weights is read from the call's first minibatch and, when that says the call
        went astray, measured on all the rows before anything is concluded.
        """
        history = self.history
        if history.n_epochs == self.first_epoch:
            return None
        if self.X_val is not None:
            kept = (history.best_validation_score if history.best_state is not None
                    else history.validation_scores[-1])
            if _astray(-kept, self.origin[1]):
                return self.back_to(None, self.origin, -kept, "validation loss")
            return None
        if self.best_train is None:
            return None
        last = history.loss_curve[-1]
        loss, weights, epoch, weight = self.best_train
        if _astray(loss, self.origin[1]):  # the first minibatch says: worse than the start
            start = self.measured(self.origin[0], weight)
            if _astray(loss, start):
                return self.back_to(None, (self.origin[0], start), last, "loss")
        if _astray(last, loss):
            return self.back_to(epoch, (weights, loss), last, "loss")
        return None

    def back_to(self, epoch, best, last, measure):
        """Restore the weights ``best[0]`` (loss ``best[1]``) of a call gone astray."""
        self.module.load_state_dict(best[0])
        return TrainingResult("worsened", 0, best_epoch=epoch, best_loss=best[1],
                              last_loss=last, measure=measure)

    def measured(self, weights, weight):
        """Mean loss over all training rows of ``weights`` at KL weight ``weight``, on a copy
        of the network and of the generator (neither this call's module nor stream moves)."""
        probe = copy.deepcopy(self.module)
        probe.load_state_dict(weights)
        generator = torch.Generator(device=self.generator.device)
        generator.set_state(self.generator.get_state())
        if self.streamed:
            return _streamed_epoch(probe, None, self.data, generator, self.batch_size, weight,
                                   self.objective)[0]
        total, _ = _pass(probe, None, self.data, generator, self.batch_size, weight,
                         self.objective)
        return float(total) / self.data[0].shape[0]


def _astray(loss, best):
    """Whether ``loss`` lies more than ``_WORSENED_FACTOR`` (|best| + 1) above ``best``."""
    return loss - best > _WORSENED_FACTOR * (abs(best) + 1.0)
