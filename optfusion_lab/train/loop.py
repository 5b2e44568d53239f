"""The training loop: :func:`fit` trains one model with early stopping and tests its best epoch.

The loop is the reference's (DESIGN.md section 3): Adam with two parameter groups (see
:mod:`.optim`), BCE with logits, validation AUC and LogLoss after every epoch, early stopping on
validation AUC, and the best epoch's weights restored before the test evaluation. Everything
else lives in helpers named after it: the device-side loss sum and divergence check
(:class:`LossMeter`), checkpoints and RNG states (:mod:`.checkpoint`), callbacks
(:mod:`.events`), metrics (:mod:`.metrics`) and distributed set-up (:func:`distributed_model`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.loader import BatchLoader
from optfusion_lab.distributed import distributed_rank_and_size

from .checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint, seed_everything
from .config import HISTORY_COLUMNS, TrainConfig
from .device import autocast, keep_freed_memory, resolve_device, synchronize
from .events import Callback, EventStream, TrainState
from .metrics import as_tensor, count_parameters, evaluate
from .optim import Optimizer, learning_rates, make_optimizer


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, epoch: int, batch: int, learning_rates: Mapping[str, float]):
        self.step = step
        self.epoch = epoch
        self.batch = batch
        self.learning_rates = dict(learning_rates)
        rates = ", ".join(f"{name} {lr:g}" for name, lr in self.learning_rates.items())
        super().__init__(
            f"training diverged: non-finite loss at step {step} (epoch {epoch}, batch {batch}) "
            f"with learning rates {rates}; try lower learning rates"
        )


@dataclass
class FitResult:
    """What :func:`fit` returns; the model itself holds the best epoch's weights."""

    history: pd.DataFrame  # one row per epoch: HISTORY_COLUMNS
    best_epoch: int  # 1-based epoch with the best validation AUC (0: no epoch finished, or
    # the starting weights were kept, with TrainConfig.validate_start)
    best_valid_auc: float
    test_auc: float  # at the best epoch
    test_logloss: float
    epochs_run: int
    train_seconds: float  # training steps only (no evaluation)
    samples_per_second: float  # training samples / train_seconds
    num_parameters: int
    device: str
    stopped: bool = False  # ended early by request_stop, StopTraining or KeyboardInterrupt
    stop_reason: str = ""  # why (empty when the run ended by itself; with stopped False, why a
    # callback ended it early as finished: TrainState.end_early)
    test_note: str = ""  # why the test metrics are NaN, when they are
    resumed_from_epoch: int | None = None  # epochs already done in the checkpoint resumed from

    @property
    def interrupted(self) -> bool:
        """Stopped by KeyboardInterrupt (Ctrl-C)."""
        return self.stopped and self.stop_reason == "KeyboardInterrupt"

    def scalars(self) -> dict[str, float | int | str]:
        """Every field but the history."""
        names = [f.name for f in dataclasses.fields(self) if f.name != "history"]
        return {name: getattr(self, name) for name in names}


@dataclass
class LoopState:
    """Everything of the training loop that a checkpoint must carry between epochs."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    rows: list = dataclasses.field(default_factory=list)  # per-epoch history rows
    best_auc: float = -math.inf
    best_epoch: int = 0
    best_state: dict | None = None  # state_dict of the best epoch
    epochs_without_gain: int = 0
    train_seconds: float = 0.0
    samples: int = 0  # training samples seen, all ranks together

    def finished(self, cfg: TrainConfig) -> bool:
        return self.epoch >= cfg.epochs or self.epochs_without_gain >= cfg.patience

    def end_epoch(self, row: dict, model: nn.Module) -> bool:
        """Record a finished epoch's ``row``; keep the model's state when it is the best so far
        (early stopping counts the others). Return whether it improved."""
        self.rows.append(row)
        self.epoch = row["epoch"]
        self.train_seconds += row["train_seconds"]
        improved = row["valid_auc"] > self.best_auc
        if improved:
            self.best_auc, self.best_epoch = row["valid_auc"], row["epoch"]
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.epochs_without_gain = 0
        else:
            self.epochs_without_gain += 1
        return improved


class LossMeter:
    """The epoch's loss sum and a non-finite-loss flag, kept on the device.

    The step loop never synchronises with the device for them: :meth:`check` reads the flag
    (every ``nan_check_every`` steps and at epoch end) and raises with the first bad step.
    """

    def __init__(self, device: torch.device, step: int):
        self.sum = torch.zeros((), dtype=torch.float64, device=device)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)
        self.step = torch.full((), step, dtype=torch.long, device=device)

    def start_epoch(self) -> None:
        self.sum.zero_()

    def add(self, loss: torch.Tensor, batch_size: int) -> None:
        self.step += 1
        nonfinite = ~torch.isfinite(loss)
        self.first_bad = torch.where(nonfinite & ~self.bad, self.step, self.first_bad)
        self.bad |= nonfinite
        self.sum += loss.double() * batch_size

    def check(self, steps_per_epoch: int, rates: Mapping[str, float]) -> None:
        if bool(self.bad):  # the only sync of the step loop
            step = int(self.first_bad)
            epoch, batch = (step - 1) // steps_per_epoch + 1, (step - 1) % steps_per_epoch + 1
            raise TrainingDivergedError(step, epoch, batch, rates)


def fit(
    model: nn.Module,
    data: PreparedData,
    cfg: TrainConfig,
    callbacks: EventStream | Sequence[Callback] = (),
    optimizer: Optimizer | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    fingerprint: Mapping | None = None,
    *,
    phase: str = "",
) -> FitResult:
    """Train ``model`` on ``data``'s train split with early stopping on valid AUC; test the best.

    ``result = fit(model, data, TrainConfig(epochs=3), callbacks=[MyMonitor()])``

    The caller builds the model (seed it first for a reproducible init, as ``fit_seeds`` does);
    ``fit`` moves it to the device, reseeds with ``cfg.seed`` (dropout, batch order), and leaves
    it on the device with the best epoch's weights loaded. ``optimizer`` replaces the default
    :func:`make_optimizer` (the one-shot search passes a ``JointOptimizer``); its parameter
    groups need a ``name``. Every parameter in ``model.state_dict()`` (architecture parameters
    included) is restored from the best epoch. ``phase`` names the fit for callbacks (a search
    phase).

    With ``checkpoint``, the whole loop state (weights, optimizer, best epoch so far, history,
    callback states that define ``state_dict``, RNG states, epoch) is written there atomically
    after every epoch (see :mod:`.checkpoint`); ``resume=True`` continues from it (on CPU the
    result is identical to an uninterrupted run). ``fingerprint`` (plain JSON values: data and
    options) is stored with it, and resuming with another fingerprint is a ValueError.

    A callback can end the run: ``state.request_stop(reason)`` or ``raise StopTraining(reason)``;
    a KeyboardInterrupt (Ctrl-C) takes the same path. ``fit`` then ends after the current step
    (an unfinished epoch is dropped), restores the best epoch so far, evaluates the test split
    when at least one epoch finished (otherwise the test metrics are NaN and ``test_note`` says
    why), keeps the checkpoint of the last finished epoch, and returns a result with
    ``stopped=True`` and ``stop_reason``. Under torch.distributed, request the stop on every rank.
    ``state.end_early(reason)`` (an algorithm's own rule) ends the fit the same way, except that
    the unfinished epoch is validated and counts for the best epoch, and the result is a
    finished one (``stopped=False``, ``stop_reason`` says why it ended early).

    Under ``torch.distributed`` (launched by torchrun, see :mod:`optfusion_lab.distributed`)
    the model is wrapped in DistributedDataParallel, each rank trains on its shard of the data,
    every rank evaluates the whole validation split (identical models, identical decisions), and
    only rank 0 writes the checkpoint.
    Raises :class:`TrainingDivergedError` when the loss becomes NaN or infinite.
    """
    _check_data(data)
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.keep_freed_memory:
        keep_freed_memory()
    stream = EventStream.of(callbacks)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    with torch_threads(cfg.threads):
        return _fit(model, data, cfg, device, stream, optimizer, checkpoint, resume,
                    dict(fingerprint or {}), phase)


def _fit(model, data, cfg, device, stream, optimizer, checkpoint, resume, fingerprint, phase):
    seed_everything(cfg.seed)
    model.to(device)
    optimizer = optimizer if optimizer is not None else make_optimizer(model, cfg)
    rates = learning_rates(optimizer)
    trained, rank, world_size = distributed_model(model, device)
    if cfg.compile:
        trained = torch.compile(trained)  # the training steps only; evaluation stays eager
    loader = training_loader(data, cfg, device, rank, world_size)
    x_valid, y_valid = data.arrays("valid")
    x_valid = as_tensor(x_valid)
    loop, resumed_from = LoopState(), None
    if resume and checkpoint is not None and checkpoint.is_file():
        loop = resume_loop(checkpoint, fingerprint, model, optimizer, stream.members, device)
        resumed_from = loop.epoch
    if cfg.validate_start and loop.epoch == 0 and loop.best_state is None:  # "epoch 0"
        start = evaluate(model, x_valid, y_valid, cfg.eval_batch_size, device, cfg.amp)
        loop.best_auc, loop.best_epoch = start["auc"], 0
        loop.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = start_state(model, cfg, loop, len(loader), phase, rates)
    stream.attach(state)
    losses, started = LossMeter(device, loop.step), time.perf_counter()
    stream.emit("on_fit_start", state)
    try:
        while not loop.finished(cfg) and not state.stop_requested:
            epoch, epoch_started = loop.epoch + 1, time.perf_counter()
            loader.set_epoch(epoch - 1)
            model.train()
            losses.start_epoch()
            synchronize(device)
            train_started = time.perf_counter()
            rows = 0  # training rows of this epoch so far (this rank)
            for x, y in progress_bar(loader, epoch, cfg, rank):
                loss = train_step(trained, optimizer, x, y, cfg.amp)
                loop.step += 1
                rows += len(y)
                losses.add(loss, len(y))
                if loop.step % cfg.nan_check_every == 0:
                    losses.check(len(loader), rates)
                if stream.callbacks:
                    step_state(state, epoch, loop.step, loss, cfg, stream.needs_loss, started)
                    stream.emit("on_step", state)
                    if state.stop_requested:
                        break  # stopped: the unfinished epoch is dropped (no validation, no
                        # checkpoint); ended early: it is validated as a (shorter) epoch
            synchronize(device)
            losses.check(len(loader), rates)
            if state.stop_requested and not state.ended_early:
                break
            train_seconds = time.perf_counter() - train_started
            loop.samples += rows * world_size
            metrics = evaluate(model, x_valid, y_valid, cfg.eval_batch_size, device, cfg.amp)
            row = epoch_row(epoch, float(losses.sum) / max(1, rows), metrics,
                            time.perf_counter() - epoch_started, train_seconds)
            improved = loop.end_epoch(row, model)
            report_epoch(row, improved, cfg, rank)
            epoch_state(state, loop, row, started)
            stream.emit("on_epoch_end", state)
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer, loop, stream.members, fingerprint)
    except KeyboardInterrupt:  # Ctrl-C takes the path of a requested stop
        state.request_stop("KeyboardInterrupt")
    finally:
        stream.attach(None)
    result = finish(model, data, cfg, device, loop, state, resumed_from)
    stream.emit("on_fit_end", state, result)
    return result


# --- the helpers the loop calls, in the order it calls them ---------------------------------


def _check_data(data: PreparedData) -> None:
    missing = [s for s in ("train", "valid", "test") if s not in data.meta["splits"]]
    if missing:
        raise ValueError(
            f"{data.directory}: training needs train/valid/test splits, this dataset has "
            f"{data.meta['splits']} (a --vocab-from encoding is for prediction only)"
        )
    if not data.meta.get("labelled", True):
        raise ValueError(f"{data.directory}: training needs labels, this dataset has none")


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's CPU thread count set to ``threads`` inside the block (None: unchanged)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def distributed_model(model: nn.Module, device: torch.device) -> tuple[nn.Module, int, int]:
    """(the module to train, rank, world size): DistributedDataParallel under torchrun."""
    rank, world_size = distributed_rank_and_size()
    if world_size == 1:
        return model, rank, world_size
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids), rank, world_size


def training_loader(
    data: PreparedData, cfg: TrainConfig, device: torch.device, rank: int, world_size: int
) -> BatchLoader:
    """Batches of the train split (this rank's shard), reshuffled per epoch with cfg.seed."""
    x_train, y_train = data.arrays("train")
    on_device = cfg.data_on_device and device.type == "cuda"
    return BatchLoader(x_train, y_train, cfg.batch_size, shuffle=cfg.shuffle, seed=cfg.seed,
                       device=device, on_device=on_device, rank=rank,
                       world_size=world_size)


def resume_loop(path: Path, fingerprint, model, optimizer, callbacks, device) -> LoopState:
    """Load a checkpoint into the model, optimizer, callbacks and RNGs; return its loop state."""
    document = load_checkpoint(path, fingerprint)
    restore_checkpoint(document, model, optimizer, callbacks)
    loop = LoopState(**document["loop"])
    if loop.best_state is not None:
        loop.best_state = {k: v.to(device) for k, v in loop.best_state.items()}
    return loop


def start_state(model, cfg: TrainConfig, loop: LoopState, steps_per_epoch: int, phase: str,
                rates: dict) -> TrainState:
    best = loop.best_state is not None
    return TrainState(model, epoch=loop.epoch, step=loop.step, steps_per_epoch=steps_per_epoch,
                      epochs=cfg.epochs, total_steps=cfg.epochs * steps_per_epoch, seed=cfg.seed,
                      phase=phase, learning_rates=dict(rates), history=loop.rows,
                      best_epoch=loop.best_epoch if best else None,
                      best_valid_auc=loop.best_auc if best else None)


def progress_bar(loader: BatchLoader, epoch: int, cfg: TrainConfig, rank: int):
    return tqdm(loader, total=len(loader), desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                disable=not cfg.progress or rank != 0)


def train_step(model: nn.Module, optimizer: Optimizer, x, y, amp: bool) -> torch.Tensor:
    """One optimizer step on a batch; return the (device) loss, detached."""
    with autocast(x.device, amp):
        logits = model(x)  # (B,)
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def step_state(state: TrainState, epoch: int, step: int, loss: torch.Tensor, cfg: TrainConfig,
               every_step: bool, started: float) -> None:
    """Update ``state`` after a step; the loss is read from the device on sampled steps only."""
    state.epoch, state.step = epoch, step
    state.elapsed_seconds = time.perf_counter() - started
    if every_step or step % cfg.log_every == 0:
        state.loss, state.loss_step = float(loss), step


def epoch_row(epoch: int, train_loss: float, metrics: Mapping[str, float], seconds: float,
              train_seconds: float) -> dict:
    """One row of the history (HISTORY_COLUMNS)."""
    values = (epoch, train_loss, metrics["auc"], metrics["logloss"], seconds, train_seconds)
    return dict(zip(HISTORY_COLUMNS, values, strict=True))


def report_epoch(row: dict, improved: bool, cfg: TrainConfig, rank: int) -> None:
    if cfg.progress and rank == 0:
        tqdm.write(f"epoch {row['epoch']}: train loss {row['train_loss']:.5f}, valid AUC "
                   f"{row['valid_auc']:.5f}, LogLoss {row['valid_logloss']:.5f}"
                   + (" *" if improved else ""))


def epoch_state(state: TrainState, loop: LoopState, row: dict, started: float) -> None:
    state.epoch, state.step = row["epoch"], loop.step
    state.elapsed_seconds = time.perf_counter() - started
    state.train_loss, state.valid_auc = row["train_loss"], row["valid_auc"]
    state.valid_logloss = row["valid_logloss"]
    state.best_epoch, state.best_valid_auc = loop.best_epoch, loop.best_auc


def finish(model, data, cfg, device, loop: LoopState, state: TrainState, resumed_from):
    """Restore the best epoch, test it (when an epoch finished) and build the FitResult."""
    test, test_note = {"auc": math.nan, "logloss": math.nan}, ""
    if loop.best_state is not None:
        model.load_state_dict(loop.best_state)
        x_test, y_test = data.arrays("test")
        test = evaluate(model, x_test, y_test, cfg.eval_batch_size, device, cfg.amp)
    else:
        test_note = "no test evaluation: stopped before the first epoch ended"
    return FitResult(
        history=pd.DataFrame(loop.rows, columns=list(HISTORY_COLUMNS)),
        best_epoch=loop.best_epoch,
        best_valid_auc=loop.best_auc if loop.best_state is not None else math.nan,
        test_auc=test["auc"],
        test_logloss=test["logloss"],
        epochs_run=len(loop.rows),
        train_seconds=loop.train_seconds,
        samples_per_second=loop.samples / loop.train_seconds if loop.train_seconds else math.nan,
        num_parameters=count_parameters(model),
        device=str(device),
        stopped=state.stop_requested and not state.ended_early,
        stop_reason=state.stop_reason,
        test_note=test_note,
        resumed_from_epoch=resumed_from,
    )
