"""Training, evaluation and early stopping of one model on one prepared dataset.

The loop is the reference's (DESIGN.md section 3): Adam with two parameter groups (embedding
tables: ``lr_emb`` / ``l2_emb``; everything else: ``lr_nn`` / ``l2_nn``; coupled L2 through Adam's
``weight_decay``), BCE with logits, validation AUC and LogLoss after every epoch, early stopping
on validation AUC, and the best epoch's weights restored before the test evaluation.

- :func:`fit` trains one model; :func:`run_seeds` builds and trains a model per seed, summarises
  the metrics (mean, sample std) and optionally writes a run directory (:func:`write_run` layout).
- Progress is reported through :class:`Callback` objects (``on_step``, ``on_epoch_end``), so a
  notebook can plot live without touching the loop.
- The step loop never synchronises with the device: the epoch's loss sum and a non-finite-loss
  flag stay on the device; the flag is read every ``nan_check_every`` steps and at epoch end.
- On CPU a run is deterministic for a given seed (same seed, same metrics). On CUDA some kernels
  (embedding backward) use atomics, so runs agree closely but not bit for bit.

Run directory (:func:`run_seeds` with ``out_dir``)::

    RUN_DIR/model.pt            best weights of the first seed (a plain state_dict)
    RUN_DIR/seed_<s>/model.pt   best weights of every seed, when there is more than one
    RUN_DIR/history.csv         one row per (seed, epoch)
    RUN_DIR/seeds.csv           one row per seed (the tidy frame run_seeds returns)
    RUN_DIR/result.json         model, data, configs, versions, and mean/std/per_seed metrics
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import platform
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from optfusion_lab import __version__
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.loader import BatchLoader
from optfusion_lab.distributed import distributed_rank_and_size
from optfusion_lab.io import (  # write_atomic and write_json: re-exported from the one writer
    TRAINING_RUN,
    claim_output_folder,
    write_atomic,
    write_json,
)
from optfusion_lab.models import ModelConfig, build_model
from optfusion_lab.names import DEVICES

SUMMARY_METRICS = (
    "test_auc",
    "test_logloss",
    "best_valid_auc",
    "epochs_run",
    "train_seconds",
    "samples_per_second",
)
HISTORY_COLUMNS = ("epoch", "train_loss", "valid_auc", "valid_logloss", "seconds", "train_seconds")
RESULT_FORMAT_VERSION = 1


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained; stored in result.json as ``asdict(cfg)``."""

    epochs: int = 5  # an upper bound: the reference trains up to 5 epochs with early stopping
    batch_size: int = 4096  # the reference batch size on every dataset
    lr_emb: float = 1e-3  # Adam learning rate of the embedding tables
    l2_emb: float = 0.0  # Adam weight_decay (coupled L2) of the embedding tables
    lr_nn: float = 1e-3  # Adam learning rate of every other parameter
    l2_nn: float = 0.0  # Adam weight_decay (coupled L2) of every other parameter
    patience: int = 1  # stop after this many epochs without a better valid AUC (reference 1)
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"
    amp: bool = False  # bf16 autocast of the forward pass; CUDA only, ignored on CPU
    shuffle: bool = True  # reshuffle every epoch (seed + epoch); False = the stored order
    eval_batch_size: int = 16384  # batch size of evaluation and prediction (no backward pass)
    nan_check_every: int = 100  # read the device's non-finite-loss flag every this many steps
    threads: int | None = None  # torch CPU threads during fit; None keeps torch's default
    seed: int = 0  # seeds torch, numpy, random and the batch order
    progress: bool = True  # tqdm progress bars; False for quiet runs and tests
    data_on_device: bool = True  # CUDA only: hold the training split in GPU memory

    def __post_init__(self) -> None:
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "patience": self.patience,
            "eval_batch_size": self.eval_batch_size,
            "nan_check_every": self.nan_check_every,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("lr_emb", "lr_nn"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("l2_emb", "l2_nn"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None or >= 1, got {self.threads}")


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


# --- callbacks --------------------------------------------------------------------------------


class StopTraining(Exception):  # noqa: N818 (a request, not an error)
    """Raise from a callback to end the run cleanly; the same as ``state.request_stop(reason)``."""

    def __init__(self, reason: str = ""):
        super().__init__(reason)
        self.reason = reason


@dataclass
class TrainState:
    """What a callback sees. Metrics are None until they exist (valid ones at epoch end only)."""

    model: nn.Module  # the model being trained (on the training device)
    epoch: int  # 1-based epoch
    step: int  # optimizer steps taken so far in this fit (1-based after the first step)
    steps_per_epoch: int  # batches per epoch
    loss: float | None = None  # this step's loss; only for callbacks with needs_loss = True
    train_loss: float | None = None  # epoch mean of the training loss (epoch end)
    valid_auc: float | None = None  # validation AUC (epoch end)
    valid_logloss: float | None = None  # validation LogLoss (epoch end)
    best_epoch: int | None = None  # best epoch so far (epoch end)
    best_valid_auc: float | None = None  # its validation AUC (epoch end)
    stop_requested: bool = False  # set by request_stop (or a StopTraining from a callback)
    stop_reason: str = ""

    def request_stop(self, reason: str = "") -> None:
        """End the run after the current step (or epoch end): the best state so far is kept,
        tested when an epoch finished, and no further phase or seed starts."""
        if not self.stop_requested:
            self.stop_requested = True
            self.stop_reason = reason or "stop requested by a callback"


class Callback:
    """Base class of training callbacks; override what you need.

    ``needs_loss = True`` makes every step's loss available as ``state.loss``; it costs one
    device synchronisation per step, so it is off by default.
    """

    needs_loss: bool = False

    def on_step(self, state: TrainState) -> None:
        """After every optimizer step."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After every epoch's validation (before early stopping decides)."""


# --- building blocks --------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seeding the legacy global RNG is the point here)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for cuda without one is a ValueError.

    CUDA resolves to the current device (``cuda:LOCAL_RANK`` under torchrun, see
    :func:`optfusion_lab.distributed.init_from_env`).
    """
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu")
    return torch.device("cuda", torch.cuda.current_device()) if name == "cuda" else torch.device(
        "cpu"
    )


def embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of every embedding table of ``model`` (``nn.Embedding`` modules).

    This is ``model.embedding`` plus, for DeepFM and xDeepFM, the first-order term's per-feature
    weight table: it is an embedding of width 1, as sparse as the main table (each row is updated
    only by the batches that contain its feature), so it takes the embedding learning rate and L2.
    The first-order bias is a dense scalar and stays with the network.
    """
    seen: set[int] = set()
    params = []
    for module in model.modules():
        if isinstance(module, nn.Embedding | nn.EmbeddingBag):
            for p in module.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
    if not params:
        raise ValueError(f"{type(model).__name__} has no embedding table (nn.Embedding)")
    return params


def param_groups(
    model: nn.Module, cfg: TrainConfig, parameters: Iterable[nn.Parameter] | None = None
) -> list[dict]:
    """Adam groups: 0 = embedding tables (lr_emb, l2_emb), 1 = the rest (lr_nn, l2_nn).

    ``parameters`` restricts the groups to a subset (e.g. a supernet's ``weight_parameters()``);
    by default every parameter of ``model`` that requires a gradient is included, each once.
    """
    candidates = model.parameters() if parameters is None else parameters
    unique = {id(p): p for p in candidates}  # each parameter once, in first-seen order
    wanted = [p for p in unique.values() if p.requires_grad]
    wanted_ids = {id(p) for p in wanted}
    embedding = [p for p in embedding_parameters(model) if id(p) in wanted_ids]
    embedding_ids = {id(p) for p in embedding}
    network = [p for p in wanted if id(p) not in embedding_ids]
    return [
        {"name": "embedding", "params": embedding, "lr": cfg.lr_emb, "weight_decay": cfg.l2_emb},
        {"name": "network", "params": network, "lr": cfg.lr_nn, "weight_decay": cfg.l2_nn},
    ]


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, parameters: Iterable[nn.Parameter] | None = None
) -> torch.optim.Adam:
    """Adam over :func:`param_groups` (coupled L2 via weight_decay, as the reference)."""
    return torch.optim.Adam(param_groups(model, cfg, parameters))


class JointOptimizer:
    """Several optimizers stepped on one backward pass.

    The one-shot search is single-level and joint: every training batch gives one loss and one
    backward pass, then both the weight optimizer and the architecture optimizer step.
    """

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> list[dict]:
        return [o.state_dict() for o in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for o, state in zip(self.optimizers, states, strict=True):
            o.load_state_dict(state)


Optimizer = torch.optim.Optimizer | JointOptimizer


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _as_tensor(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        return features
    return torch.from_numpy(np.array(features, dtype=np.int32, copy=True))  # memmap -> RAM


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    features: np.ndarray | torch.Tensor,
    batch_size: int = 16384,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> np.ndarray:
    """Click probabilities (n,) float64 of ``features`` (n, F), in eval mode, in batches.

    ``device`` defaults to the device of the model's parameters. The model's train/eval mode is
    restored afterwards.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = _as_tensor(features)
    was_training = model.training
    model.eval()
    try:
        logits = []
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device, non_blocking=True)
            with autocast(device, amp):
                logits.append(model(batch).float())  # (B,)
        if not logits:
            return np.zeros(0, dtype=np.float64)
        probs = torch.sigmoid(torch.cat(logits))  # (n,), one transfer below
        return probs.cpu().numpy().astype(np.float64)
    finally:
        model.train(was_training)


def binary_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC and LogLoss (scikit-learn); a split with one class only is a clear ValueError."""
    from sklearn.metrics import log_loss, roc_auc_score

    labels = np.asarray(labels, dtype=np.float64)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"AUC needs both classes, but all {len(labels)} labels are equal")
    return {
        "auc": float(roc_auc_score(labels, probs)),
        "logloss": float(log_loss(labels, probs, labels=[0.0, 1.0])),
    }


def evaluate(
    model: nn.Module,
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    batch_size: int = 16384,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """``{"auc", "logloss"}`` of ``model`` on one split (no_grad, eval mode)."""
    return binary_metrics(labels, predict_proba(model, features, batch_size, device, amp))


# --- fit --------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What :func:`fit` returns; the model itself holds the best epoch's weights."""

    history: pd.DataFrame  # one row per epoch: HISTORY_COLUMNS
    best_epoch: int  # 1-based epoch with the best validation AUC
    best_valid_auc: float
    test_auc: float  # at the best epoch
    test_logloss: float
    epochs_run: int
    train_seconds: float  # training steps only (no evaluation)
    samples_per_second: float  # training samples / train_seconds
    num_parameters: int
    device: str
    stopped: bool = False  # ended early by request_stop, StopTraining or KeyboardInterrupt
    stop_reason: str = ""  # why (empty when the run ended by itself)
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


def _check_data(data: PreparedData) -> None:
    missing = [s for s in ("train", "valid", "test") if s not in data.meta["splits"]]
    if missing:
        raise ValueError(
            f"{data.directory}: training needs train/valid/test splits, this dataset has "
            f"{data.meta['splits']} (a --vocab-from encoding is for prediction only)"
        )
    if not data.meta.get("labelled", True):
        raise ValueError(f"{data.directory}: training needs labels, this dataset has none")


def fit(
    model: nn.Module,
    data: PreparedData,
    cfg: TrainConfig,
    callbacks: Sequence[Callback] = (),
    optimizer: Optimizer | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    fingerprint: Mapping | None = None,
) -> FitResult:
    """Train ``model`` on ``data``'s train split with early stopping on valid AUC; test the best.

    The caller builds the model (seed it first for a reproducible init, as :func:`run_seeds`
    does); ``fit`` moves it to the device, reseeds with ``cfg.seed`` (dropout, batch order), and
    leaves it on the device with the best epoch's weights loaded. ``optimizer`` replaces the
    default :func:`make_optimizer` (the one-shot search passes a :class:`JointOptimizer`); its
    parameter groups need a ``name``. Every parameter in ``model.state_dict()`` (architecture
    parameters included) is restored from the best epoch.

    With ``checkpoint``, the whole loop state (weights, optimizer, best epoch so far, history,
    callback states that define ``state_dict``, RNG states, epoch) is written there atomically
    after every epoch, readable with ``torch.load(weights_only=True)``; ``resume=True`` continues
    from it (on CPU the result is identical to an uninterrupted run). ``fingerprint`` (plain JSON
    values: data and options) is stored with it, and resuming with another fingerprint is a
    ValueError.

    A callback can end the run: ``state.request_stop(reason)`` or ``raise StopTraining(reason)``;
    a KeyboardInterrupt (Ctrl-C) takes the same path. ``fit`` then ends after the current step
    (an unfinished epoch is dropped), restores the best epoch so far, evaluates the test split
    when at least one epoch finished (otherwise the test metrics are NaN and ``test_note`` says
    why), keeps the checkpoint of the last finished epoch, and returns a result with
    ``stopped=True`` and ``stop_reason``. Under torch.distributed, request the stop on every rank.

    Under ``torch.distributed`` (launched by torchrun, see :mod:`optfusion_lab.distributed`)
    the model is wrapped in DistributedDataParallel, each rank trains on its shard of the data,
    every rank evaluates the whole validation split (identical models, identical decisions), and
    only rank 0 writes the checkpoint.
    Raises :class:`TrainingDivergedError` when the loss becomes NaN or infinite.
    """
    _check_data(data)
    device = resolve_device(cfg.device)
    previous_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _fit(model, data, cfg, device, tuple(callbacks), optimizer,
                    Path(checkpoint) if checkpoint else None, resume, dict(fingerprint or {}))
    finally:
        torch.set_num_threads(previous_threads)


CHECKPOINT_FORMAT = "optfusion-checkpoint"


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


def _rng_state() -> dict:
    numpy_state = np.random.get_state()  # noqa: NPY002 (the legacy global RNG seed_everything sets)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)),
                  *numpy_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }  # fmt: skip


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: Path, model, optimizer, loop: LoopState, callbacks, fingerprint) -> None:
    """Write the loop state atomically (rank 0 only under torch.distributed)."""
    cpu = lambda state: {k: v.detach().cpu() for k, v in state.items()}  # noqa: E731
    document = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "fingerprint": fingerprint,
        "loop": {**dataclasses.asdict(dataclasses.replace(loop, best_state=None)),
                 "best_state": cpu(loop.best_state) if loop.best_state else None},
        "model": cpu(model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks],
        "rng": _rng_state(),
    }  # fmt: skip
    write_atomic(path, lambda p: torch.save(document, p))


def load_checkpoint(path: Path, fingerprint: Mapping) -> dict:
    """Read a checkpoint (no code can run: ``weights_only=True``) and check its fingerprint."""
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an optfusion-lab checkpoint")
    stored = document["fingerprint"]
    if stored != dict(fingerprint):
        keys = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) !=
                      fingerprint.get(k))  # fmt: skip
        details = "; ".join(f"{k}: {stored.get(k)!r} then, {fingerprint.get(k)!r} now"
                            for k in keys[:4])  # fmt: skip
        raise ValueError(f"{path}: the checkpoint was written with other data or options "
                         f"({details}); start a new run directory or drop --resume")  # fmt: skip
    return document


def _fit(
    model: nn.Module,
    data: PreparedData,
    cfg: TrainConfig,
    device: torch.device,
    callbacks: tuple[Callback, ...],
    optimizer: Optimizer | None,
    checkpoint: Path | None,
    resume: bool,
    fingerprint: dict,
) -> FitResult:
    seed_everything(cfg.seed)
    model.to(device)
    optimizer = optimizer if optimizer is not None else make_optimizer(model, cfg)
    learning_rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    rank, world_size = distributed_rank_and_size()
    trained = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                          else None)  # fmt: skip

    x_train, y_train = data.arrays("train")
    loader = BatchLoader(
        x_train,
        y_train,
        cfg.batch_size,
        shuffle=cfg.shuffle,
        seed=cfg.seed,
        device=device,
        on_device=cfg.data_on_device and device.type == "cuda",
        rank=rank,
        world_size=world_size,
    )
    x_valid, y_valid = data.arrays("valid")
    x_valid = _as_tensor(x_valid)
    steps_per_epoch = len(loader)
    needs_loss = any(cb.needs_loss for cb in callbacks)

    loop = LoopState()
    resumed_from_epoch = None
    if resume and checkpoint is not None and checkpoint.is_file():
        document = load_checkpoint(checkpoint, fingerprint)
        model.load_state_dict(document["model"])
        optimizer.load_state_dict(document["optimizer"])
        loop = LoopState(**document["loop"])
        resumed_from_epoch = loop.epoch
        for cb, state in zip(callbacks, document["callbacks"], strict=False):
            if state is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(state)
        _set_rng_state(document["rng"])
        if loop.best_state is not None:
            loop.best_state = {k: v.to(device) for k, v in loop.best_state.items()}

    # Non-finite loss detection without a per-step sync: flag and first bad step live on device.
    bad = torch.zeros((), dtype=torch.bool, device=device)
    first_bad = torch.zeros((), dtype=torch.long, device=device)
    step_counter = torch.full((), loop.step, dtype=torch.long, device=device)

    def check_finite() -> None:
        if bool(bad):  # the only sync of the step loop
            step = int(first_bad)
            epoch, batch = (step - 1) // steps_per_epoch + 1, (step - 1) % steps_per_epoch + 1
            raise TrainingDivergedError(step, epoch, batch, learning_rates)

    state = TrainState(model, loop.epoch, loop.step, steps_per_epoch)

    def notify(event: str) -> None:
        for cb in callbacks:
            try:
                getattr(cb, event)(state)
            except StopTraining as request:
                state.request_stop(request.reason)

    try:
        while not loop.finished(cfg) and not state.stop_requested:
            epoch = loop.epoch + 1
            epoch_started = time.perf_counter()
            loader.set_epoch(epoch - 1)
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            _synchronize(device)
            train_started = time.perf_counter()
            bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}",
                       leave=False, disable=not cfg.progress or rank != 0)  # fmt: skip
            for x, y in bar:
                with autocast(device, cfg.amp):
                    logits = trained(x)  # (B,)
                loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

                loop.step += 1
                step_counter += 1
                value = loss.detach()
                nonfinite = ~torch.isfinite(value)
                first_bad = torch.where(nonfinite & ~bad, step_counter, first_bad)
                bad |= nonfinite
                loss_sum += value.double() * len(y)
                if loop.step % cfg.nan_check_every == 0:
                    check_finite()
                if callbacks:
                    state.epoch, state.step = epoch, loop.step
                    state.loss = float(value) if needs_loss else None
                    notify("on_step")
                    if state.stop_requested:
                        break  # the unfinished epoch is dropped: no validation, no checkpoint
            bar.close()
            _synchronize(device)
            check_finite()
            if state.stop_requested:
                break
            epoch_train_seconds = time.perf_counter() - train_started
            loop.train_seconds += epoch_train_seconds
            loop.samples += loader.num_rows * world_size

            metrics = evaluate(model, x_valid, y_valid, cfg.eval_batch_size, device, cfg.amp)
            train_loss = float(loss_sum) / max(1, loader.num_rows)
            improved = metrics["auc"] > loop.best_auc
            if improved:
                loop.best_auc, loop.best_epoch = metrics["auc"], epoch
                loop.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                loop.epochs_without_gain = 0
            else:
                loop.epochs_without_gain += 1
            loop.rows.append({
                "epoch": epoch,
                "train_loss": train_loss,
                "valid_auc": metrics["auc"],
                "valid_logloss": metrics["logloss"],
                "seconds": time.perf_counter() - epoch_started,
                "train_seconds": epoch_train_seconds,
            })  # fmt: skip
            loop.epoch = epoch
            if cfg.progress and rank == 0:
                tqdm.write(
                    f"epoch {epoch}: train loss {train_loss:.5f}, valid AUC {metrics['auc']:.5f}, "
                    f"LogLoss {metrics['logloss']:.5f}" + (" *" if improved else "")
                )
            state.epoch, state.step, state.loss = epoch, loop.step, None
            state.train_loss, state.valid_auc = train_loss, metrics["auc"]
            state.valid_logloss = metrics["logloss"]
            state.best_epoch, state.best_valid_auc = loop.best_epoch, loop.best_auc
            notify("on_epoch_end")
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer, loop, callbacks, fingerprint)
    except KeyboardInterrupt:  # Ctrl-C takes the path of a requested stop
        state.request_stop("KeyboardInterrupt")

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
        samples_per_second=(loop.samples / loop.train_seconds if loop.train_seconds > 0
                            else math.nan),  # fmt: skip
        num_parameters=count_parameters(model),
        device=str(device),
        stopped=state.stop_requested,
        stop_reason=state.stop_reason,
        test_note=test_note,
        resumed_from_epoch=resumed_from_epoch,
    )


# --- several seeds and the run directory ------------------------------------------------------


def summarize(values: Sequence[float]) -> dict:
    """``{"mean", "std", "per_seed"}``; std is the *sample* std (ddof=1), 0.0 for one value
    (NaN mean and std for none)."""
    per_seed = [v.item() if isinstance(v, np.generic) else v for v in values]
    array = np.asarray(per_seed, dtype=np.float64)
    if len(array) == 0:
        return {"mean": math.nan, "std": math.nan, "per_seed": []}
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "per_seed": per_seed}


@dataclass
class SeedsResult:
    """What :func:`fit_seeds` (and ``run_seeds``, ``retrain``) return.

    ``models[i]`` holds seed ``seeds[i]``'s best weights (on the CPU) and ``results[i]`` its
    :class:`FitResult` (``results[i].history``: its epochs). When a run is stopped, the seed it
    stopped in is the last one; ``summary`` covers the finished seeds only. Unpacks as
    ``frame, summary = fit_seeds(...)``.
    """

    seeds: list[int]  # the seeds that ran, in order (a stop leaves out the later ones)
    requested_seeds: list[int]
    models: list[nn.Module]
    results: list[FitResult]
    frame: pd.DataFrame  # one row per seed that ran (FitResult.scalars() and "seed")
    summary: dict[str, dict]  # SUMMARY_METRICS over the finished seeds: {"mean", "std", ...}

    @property
    def stopped(self) -> bool:
        return any(r.stopped for r in self.results)

    @property
    def stop_reason(self) -> str:
        return next((r.stop_reason for r in self.results if r.stopped), "")

    @property
    def finished_seeds(self) -> list[int]:
        """The seeds whose fit ended by itself (the summary covers these)."""
        return [s for s, r in zip(self.seeds, self.results, strict=True) if not r.stopped]

    @property
    def history(self) -> pd.DataFrame:
        """Every seed's epochs in one frame (``seed`` + HISTORY_COLUMNS)."""
        return seed_histories(self.seeds, self.results)

    def __iter__(self):
        return iter((self.frame, self.summary))


def run_seeds(
    model_name: str,
    model_cfg: ModelConfig,
    data: PreparedData,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    out_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    metadata: Mapping | None = None,
) -> SeedsResult:
    """Build and fit the baseline ``model_name`` once per seed; see :func:`fit_seeds`."""
    return fit_seeds(
        lambda: build_model(model_name, data.num_features, data.num_fields, model_cfg),
        {"model": model_name, "model_config": asdict(model_cfg)},
        data,
        train_cfg,
        seeds,
        out_dir,
        callbacks,
        metadata,
    )


def fit_seeds(
    build: Callable[[], nn.Module],
    description: Mapping,
    data: PreparedData,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    out_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    metadata: Mapping | None = None,
) -> SeedsResult:
    """Build a model with ``build()`` and fit it once per seed; return a :class:`SeedsResult`.

    For each seed ``s``: every RNG is seeded with ``s``, a fresh model is built, and
    :func:`fit` runs with ``train_cfg`` whose ``seed`` is replaced by ``s``. The frame has one
    row per seed; the summary maps each of ``SUMMARY_METRICS`` to ``{"mean", "std", "per_seed"}``
    (sample std, ddof=1; 0.0 for a single seed). A stop (a callback's request or Ctrl-C) ends
    the seed it happens in and starts no further seed; the summary then covers the finished
    seeds only, and result.json says so. With ``out_dir``, the run directory described in the
    module docstring is written; ``description`` (at least ``model`` and ``model_config``) and
    ``metadata`` go into result.json as they are.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("run_seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    out = claim_output_folder(out_dir, TRAINING_RUN) if out_dir is not None else None
    results, models = [], []
    for i, seed in enumerate(seeds):
        seed_everything(seed)
        model = build()
        result = fit(model, data, dataclasses.replace(train_cfg, seed=seed), callbacks)
        if out is not None:
            state = model.state_dict()
            if len(seeds) > 1:
                save_state_dict(state, out / f"seed_{seed}" / "model.pt")
            if i == 0:
                save_state_dict(state, out / "model.pt")
        results.append(result)
        models.append(model.to("cpu"))  # the accelerator holds one model at a time
        if result.stopped:
            break
    ran = seeds[: len(results)]
    frame, summary = summarize_seeds(ran, results)
    if out is not None:
        write_run(out, ran, results, description, data, train_cfg, metadata,
                  requested_seeds=seeds)  # fmt: skip
    return SeedsResult(ran, seeds, models, results, frame, summary)


def summarize_seeds(seeds: Sequence[int], results: Sequence[FitResult]):
    """(per-seed frame, summary of ``SUMMARY_METRICS`` as ``{"mean", "std", "per_seed"}``);
    the summary covers the seeds whose fit was not stopped."""
    frame = pd.DataFrame([{"seed": s, **r.scalars()} for s, r in zip(seeds, results, strict=True)])
    finished = frame[~frame["stopped"].astype(bool)]
    summary = {metric: summarize(finished[metric].tolist()) for metric in SUMMARY_METRICS}
    return frame, summary


def seed_histories(seeds: Sequence[int], results: Sequence[FitResult]) -> pd.DataFrame:
    """The epochs of every seed in one frame: ``seed`` + HISTORY_COLUMNS."""
    frames = [r.history.assign(seed=s) for s, r in zip(seeds, results, strict=True)]
    return pd.concat(frames, ignore_index=True)[["seed", *HISTORY_COLUMNS]]


def write_run(
    out: Path,
    seeds: Sequence[int],
    results: Sequence[FitResult],
    description: Mapping,
    data: PreparedData,
    train_cfg: TrainConfig,
    metadata: Mapping | None = None,
    history_name: str = "history.csv",
    requested_seeds: Sequence[int] | None = None,
) -> dict:
    """Write the epoch history (``history_name``), seeds.csv and result.json of fitted seeds;
    return the result document."""
    frame, summary = summarize_seeds(seeds, results)
    history = seed_histories(seeds, results)
    write_atomic(out / history_name, lambda p: history.to_csv(p, index=False))
    write_atomic(out / "seeds.csv", lambda p: frame.to_csv(p, index=False))
    document = result_document(description, data, train_cfg, seeds, frame, summary, metadata)
    finished = [s for s, r in zip(seeds, results, strict=True) if not r.stopped]
    stop_reason = next((r.stop_reason for r in results if r.stopped), "")
    requested = list(requested_seeds) if requested_seeds is not None else list(seeds)
    document["seeds_requested"] = requested
    document["seeds_finished"] = finished
    document["stopped"] = bool(stop_reason)
    document["stop_reason"] = stop_reason
    document["summary_covers"] = (f"{len(finished)} finished seed(s) of {len(requested)} "
                                  f"requested")  # fmt: skip
    write_json(out / "result.json", document)
    return document


def result_document(
    description: Mapping,
    data: PreparedData,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    frame: pd.DataFrame,
    summary: Mapping[str, dict],
    metadata: Mapping | None = None,
) -> dict:
    """The content of result.json (see :func:`fit_seeds`)."""
    import sklearn

    return {
        "format_version": RESULT_FORMAT_VERSION,
        **description,
        "dataset": data.meta["dataset"],
        "data_dir": str(Path(data.directory).resolve()),
        "data_source_sha256": data.meta.get("source", {}).get("sha256"),
        "num_fields": data.num_fields,
        "num_features": data.num_features,
        "seeds": list(seeds),
        "device": str(frame["device"].iloc[0]),
        "train_config": asdict(train_cfg),
        "num_parameters": int(frame["num_parameters"].iloc[0]),
        "best_epoch": [int(e) for e in frame["best_epoch"]],
        **{metric: dict(summary[metric]) for metric in SUMMARY_METRICS},
        "std_convention": "sample standard deviation over seeds (ddof=1); 0.0 for one seed",
        "versions": {
            "optfusion_lab": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "sklearn": sklearn.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
        "metadata": dict(metadata) if metadata else {},
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Save a state_dict (moved to CPU) atomically; ``torch.load(weights_only=True)`` reads it."""
    cpu_state = {k: v.detach().cpu() for k, v in state.items()}
    write_atomic(Path(path), lambda p: torch.save(cpu_state, p))


def model_config_from_dict(values: Mapping) -> ModelConfig:
    """Rebuild a ModelConfig from ``asdict`` output read back from JSON (lists -> tuples)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown ModelConfig fields {unknown}")
    return ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def build_run_model(result: Mapping) -> nn.Module:
    """A fresh model of the kind a run's result.json describes: a baseline, or the derived
    OptFusion model of a ``retrain`` run (``optfusion-hard`` / ``optfusion-soft``)."""
    num_features, num_fields = int(result["num_features"]), int(result["num_fields"])
    if result["model"] in ("optfusion-hard", "optfusion-soft"):
        from optfusion_lab.models.genotype import Genotype
        from optfusion_lab.models.supernet import FusionNetwork

        config = result["model_config"]
        genotype = Genotype.from_dict(config["genotype"])
        return FusionNetwork.from_genotype(genotype, num_features, num_fields, config["selection"])
    return build_model(result["model"], num_features, num_fields,
                       model_config_from_dict(result["model_config"]))  # fmt: skip


def load_run(
    run_dir: str | Path, seed: int | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """The trained model of a run directory (eval mode, on ``device``) and its result.json.

    ``seed`` None loads ``model.pt`` (the first seed); otherwise ``seed_<seed>/model.pt``.
    """
    run_dir = Path(run_dir)
    result_path = run_dir / "result.json"
    if not result_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no result.json)")
    result = json.loads(result_path.read_text())
    if seed is None or (len(result["seeds"]) == 1 and seed == result["seeds"][0]):
        weights = run_dir / "model.pt"
    elif seed in result["seeds"]:
        weights = run_dir / f"seed_{seed}" / "model.pt"
    else:
        raise ValueError(f"{run_dir}: no seed {seed}; the run has seeds {result['seeds']}")
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir}: {weights.relative_to(run_dir)} missing")
    model = build_run_model(result)
    state = torch.load(weights, map_location=device, weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    return model, result


__all__ = [
    "Callback",
    "FitResult",
    "TrainConfig",
    "TrainState",
    "TrainingDivergedError",
    "binary_metrics",
    "embedding_parameters",
    "evaluate",
    "fit",
    "fit_seeds",
    "JointOptimizer",
    "load_run",
    "make_optimizer",
    "param_groups",
    "predict_proba",
    "resolve_device",
    "run_seeds",
    "save_state_dict",
    "SeedsResult",
    "StopTraining",
    "write_json",
    "seed_everything",
    "summarize",
]
