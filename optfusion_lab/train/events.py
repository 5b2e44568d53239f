"""One event stream for training and search: the state callbacks see, and how they are called.

A :class:`Callback` overrides the events it wants:

- ``on_fit_start(state)``: before the first step of a fit (after a resume, if any);
- ``on_step(state)``: after every optimizer step (``state.loss`` is refreshed every
  ``TrainConfig.log_every`` steps, the only steps that read the loss from the device);
- ``on_epoch_end(state)``: after every epoch's validation (``state.history`` has the epoch);
- ``on_architecture(frame)``: a search's alpha / operation-weight snapshot, a tidy DataFrame
  (every ``SearchConfig.history_every`` steps, at every phase start and every epoch end);
- ``on_fit_end(state, result)``: after the test evaluation, with the :class:`FitResult`.

Any callback can end the run: ``state.request_stop(reason)`` or ``raise StopTraining(reason)``.
A callback that is part of an algorithm can also end a fit as early stopping does:
``state.end_early(reason)`` (the fit finishes normally, see :meth:`TrainState.end_early`).
A monitor's exception never kills a run: :class:`EventStream` reports it once (a warning naming
the callback, the event and the error) and drops that callback for the rest of the run. A
callback that is part of an algorithm (the bilevel architecture step, the architecture history)
sets ``essential = True``: its exceptions end the run as any error would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn


class StopTraining(Exception):  # noqa: N818 (a request, not an error)
    """Raise from a callback to end the run cleanly; the same as ``state.request_stop(reason)``."""

    def __init__(self, reason: str = ""):
        super().__init__(reason)
        self.reason = reason


@dataclass
class TrainState:
    """What a callback sees, updated in place during a fit. Metrics are None until they exist."""

    model: nn.Module  # the model being trained (on the training device)
    epoch: int = 0  # 1-based epoch being trained (0 before the first step)
    step: int = 0  # optimizer steps taken so far in this fit
    steps_per_epoch: int = 0  # batches per epoch
    epochs: int = 0  # the epoch budget of this fit (TrainConfig.epochs)
    total_steps: int = 0  # epochs * steps_per_epoch: the most steps this fit can take
    seed: int = 0  # TrainConfig.seed of this fit
    phase: str = ""  # the search phase ("one-shot", "connections", ...); "" for plain training
    elapsed_seconds: float = 0.0  # wall time since this fit started (evaluation included)
    learning_rates: dict[str, float] = dataclasses.field(default_factory=dict)  # per group
    loss: float | None = None  # the latest sampled training loss (see TrainConfig.log_every)
    loss_step: int | None = None  # the step that loss belongs to
    train_loss: float | None = None  # mean training loss of the last finished epoch
    valid_auc: float | None = None  # validation AUC of the last finished epoch
    valid_logloss: float | None = None  # validation LogLoss of the last finished epoch
    best_epoch: int | None = None  # best epoch so far
    best_valid_auc: float | None = None  # its validation AUC
    history: list[dict] = dataclasses.field(default_factory=list)  # finished epochs' rows
    stop_requested: bool = False  # set by request_stop (or a StopTraining from a callback)
    stop_reason: str = ""
    ended_early: bool = False  # set by end_early: the stop ends the fit as finished, not stopped

    def request_stop(self, reason: str = "") -> None:
        """End the run after the current step (or epoch end): the best state so far is kept,
        tested when an epoch finished, and no further phase or seed starts."""
        if not self.stop_requested or self.ended_early:  # a stop outranks an early end
            self.stop_requested, self.ended_early = True, False
            self.stop_reason = reason or "stop requested by a callback"

    def end_early(self, reason: str) -> None:
        """End the fit after the current step as early stopping would: the unfinished epoch is
        validated (it counts for the best epoch), the best state is restored and tested, and
        the fit counts as finished (``FitResult.stopped`` False, ``stop_reason`` says why), so
        a search's next phase or a run's next seed still starts. For an algorithm's own rule
        (e.g. the settled-architecture stop of a search); a monitor asks for a stop instead."""
        if not self.stop_requested:
            self.stop_requested, self.ended_early = True, True
            self.stop_reason = reason


class Callback:
    """Base class of training callbacks; override what you need (see the module docstring).

    ``needs_loss = True`` reads every step's loss from the device into ``state.loss`` (one
    device synchronisation per step, so it is off by default). ``essential = True`` makes the
    callback's exceptions end the run instead of dropping the callback.
    """

    needs_loss: bool = False
    essential: bool = False

    def on_fit_start(self, state: TrainState) -> None:
        """Before the first step of a fit."""

    def on_step(self, state: TrainState) -> None:
        """After every optimizer step."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After every epoch's validation (before early stopping decides)."""

    def on_architecture(self, frame) -> None:
        """A search's new alpha / operation-weight snapshot (tidy DataFrame)."""

    def on_fit_end(self, state: TrainState, result) -> None:
        """After the test evaluation, with the fit's FitResult."""


class EventStream:
    """The callbacks of a run, called in order; a failing monitor is reported once and dropped.

    One stream serves every fit of a search (all phases) or of a run over seeds, so a dropped
    callback stays dropped. ``StopTraining`` from any callback becomes a stop request of the
    current fit (:meth:`attach`), or of the next one when none is running.
    """

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.members: list[Callback] = list(callbacks)  # every callback, in order (checkpoints)
        self.callbacks: list[Callback] = list(self.members)  # those still called
        self.dropped: list[tuple[Callback, str]] = []  # (callback, what it raised)
        self.state: TrainState | None = None  # the running fit's state
        self.pending_stop: str | None = None  # a stop asked for while no fit was running

    @classmethod
    def of(cls, callbacks: EventStream | Iterable[Callback]) -> EventStream:
        """``callbacks`` itself when it is a stream, else a new stream over them."""
        return callbacks if isinstance(callbacks, EventStream) else cls(callbacks)

    @contextlib.contextmanager
    def first(self, *callbacks: Callback):
        """Call ``callbacks`` before the others inside the block (an algorithm's own, e.g. one
        search phase's architecture step)."""
        self.members[:0] = callbacks
        self.callbacks[:0] = callbacks
        try:
            yield self
        finally:
            self.members = [c for c in self.members if not any(c is cb for cb in callbacks)]
            self.callbacks = [c for c in self.callbacks if not any(c is cb for cb in callbacks)]

    @property
    def needs_loss(self) -> bool:
        return any(cb.needs_loss for cb in self.callbacks)

    def listens(self, event: str) -> bool:
        """Whether some callback overrides ``event`` (so its argument is worth building)."""
        return any(getattr(type(cb), event) is not getattr(Callback, event)
                   for cb in self.callbacks)

    def attach(self, state: TrainState | None) -> None:
        """Make ``state`` the running fit's state (a pending stop request applies to it);
        None when the fit ends."""
        self.state = state
        if state is not None and self.pending_stop is not None:
            state.request_stop(self.pending_stop)
            self.pending_stop = None

    def request_stop(self, reason: str) -> None:
        if self.state is not None:
            self.state.request_stop(reason)
        elif self.pending_stop is None:
            self.pending_stop = reason or "stop requested by a callback"

    def emit(self, event: str, *args) -> None:
        """Call ``event(*args)`` on every callback."""
        for cb in list(self.callbacks):
            try:
                getattr(cb, event)(*args)
            except StopTraining as request:
                self.request_stop(request.reason)
            except Exception as error:
                if cb.essential:
                    raise
                self.drop(cb, event, error)

    def drop(self, cb: Callback, event: str, error: Exception) -> None:
        self.callbacks = [c for c in self.callbacks if c is not cb]  # members keep it
        message = f"{type(error).__name__}: {error}"
        self.dropped.append((cb, message))
        warnings.warn(
            f"callback {type(cb).__name__} raised in {event} ({message}); it is dropped for the "
            "rest of the run, which goes on",
            RuntimeWarning,
            stacklevel=3,
        )
