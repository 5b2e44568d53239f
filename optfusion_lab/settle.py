"""Ending a search once its architecture has settled (ours, not the paper's).

The derived genotype of a search supernet is its active edges (``alpha > 0``) and each fusion
node's argmax operation. Both are sign and argmax patterns of two small tensors, so whether the
genotype changed in a step is one comparison of :func:`architecture_signature` vectors, without
deriving a :class:`~optfusion_lab.models.genotype.Genotype`.

:class:`SettleCounter` counts the steps over which that signature has not changed. The count
lives on the parameters' device and is read back (a device synchronisation) only when it could
have reached the window: after a read of ``c`` at step ``r`` the count at step ``t`` is at most
``c + (t - r)``, so the next read is at ``t = r + steps - c``. Detection is exact (the step at
which the count reaches the window); while the genotype keeps changing that is one read per
window instead of one per step.

:class:`SettledArchitecture` is the search's callback: ``SearchConfig(settle_steps=N)`` (CLI
``--stop-when-settled N``) adds one to every search phase. When the signature has not changed
for ``N`` steps of the phase, it ends the phase with ``state.end_early(reason)``: the unfinished
epoch is validated, the best validation epoch is restored (the paper's rule; its genotype is
the one derived) and tested, and the run's files are written as for a search that ended by
itself. Each phase counts from its own start: in the sequential search the ``connections`` phase
ends when its edges have settled and the ``operations`` phase then starts (and can settle too);
one-shot and bilevel have one phase. The window is in optimizer steps (weight steps; in the
bilevel search each is followed by one architecture step).
"""

from __future__ import annotations

import torch

from .train import Callback, TrainState


def architecture_signature(alpha: torch.Tensor | None, beta: torch.Tensor | None) -> torch.Tensor:
    """The derived genotype as one integer vector on the parameters' device: 1 or 0 per edge
    (``alpha > 0``; none for fixed edges, ``alpha`` None), then the argmax operation of each
    fusion node (a row of ``beta``, shape (fusion nodes, operations))."""
    parts = []
    if alpha is not None:
        parts.append((alpha.detach() > 0).long())  # (edges,)
    if beta is not None:
        parts.append(beta.detach().argmax(dim=-1))  # (fusion nodes,)
    if not parts:
        raise ValueError("an architecture signature needs alpha or beta")
    return torch.cat(parts)


def network_signature(net) -> torch.Tensor:
    """:func:`architecture_signature` of a search-mode or fixed-edges ``FusionNetwork``."""
    alpha = net.alpha if net.mode == "search" else None
    return architecture_signature(alpha, getattr(net, "beta", None))


class SettleCounter:
    """Steps over which an architecture signature has not changed (see the module docstring).

    ``counter.start(signature, step)`` at a phase start, then ``counter.update(signature, step)``
    after every step: True at the first step at which the signature has been the same for the
    last ``steps`` steps (``settled_step`` keeps that step). A change resets the count to 0.
    """

    def __init__(self, steps: int):
        if steps < 1:
            raise ValueError(f"the settle window must be at least 1 step, got {steps}")
        self.steps = steps
        self.previous: torch.Tensor | None = None  # the signature after the last step
        self.count: torch.Tensor | None = None  # unchanged steps so far (on the device)
        self.known, self.known_step = 0, 0  # the count last read back, and its step
        self.step = 0  # the last step seen
        self.reads = 0  # read-backs of the count (device synchronisations)
        self.settled_step: int | None = None

    def start(self, signature: torch.Tensor, step: int = 0) -> None:
        self.previous = signature
        self.count = torch.zeros((), dtype=torch.long, device=signature.device)
        self.known, self.known_step, self.step = 0, step, step
        self.settled_step = None

    def update(self, signature: torch.Tensor, step: int) -> bool:
        if self.previous is None or self.count is None:
            raise RuntimeError("SettleCounter.update before start")
        if self.previous.device != signature.device:  # restored from a checkpoint on the CPU
            self.previous, self.count = self.previous.to(signature.device), self.count.to(
                signature.device)
        same = (signature == self.previous).all()  # () bool, on the device: no read-back
        self.count = (self.count + 1) * same  # a change resets the count to 0
        self.previous, self.step = signature, step
        if self.settled_step is not None:
            return True
        if self.known + (step - self.known_step) < self.steps:
            return False  # the count cannot have reached the window yet: no read-back
        self.known, self.known_step = int(self.count), step
        self.reads += 1
        if self.known >= self.steps:
            self.settled_step = step
            return True
        return False

    def state_dict(self) -> dict:
        started = self.previous is not None and self.count is not None
        return {"steps": self.steps, "started": started,
                "previous": self.previous.tolist() if started else [],
                "count": int(self.count) if started else 0, "step": self.step,
                "settled_step": self.settled_step}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.step, self.settled_step = state["steps"], state["step"], state[
            "settled_step"]
        if state["started"]:
            self.previous = torch.tensor(state["previous"], dtype=torch.long)
            self.count = torch.tensor(state["count"], dtype=torch.long)
        self.known, self.known_step = state["count"], state["step"]


class SettledArchitecture(Callback):
    """Ends a search phase once the derived genotype has not changed for ``steps`` steps
    (``SearchConfig.settle_steps``): ``state.end_early``, so the phase finishes as early
    stopping would and the search goes on (see the module docstring)."""

    essential = True  # part of the search's algorithm: its failure is the search's failure

    def __init__(self, steps: int):
        self.counter = SettleCounter(steps)
        self.restored = False  # loaded from a checkpoint: on_fit_start keeps that state

    @property
    def settled_step(self) -> int | None:
        """The step of the phase at which the architecture settled (None: it did not)."""
        return self.counter.settled_step

    def reason(self) -> str:
        return (f"settled: the derived genotype (active edges, argmax operations) has not changed "
                f"for {self.counter.steps} steps (step {self.counter.settled_step})")

    def on_fit_start(self, state: TrainState) -> None:
        if self.restored:  # a resumed phase continues its count (or ends, if it had settled)
            self.restored = False
            if self.counter.settled_step is not None:
                state.end_early(self.reason())
            return
        self.counter.start(network_signature(state.model), state.step)

    def on_step(self, state: TrainState) -> None:
        if self.counter.update(network_signature(state.model), state.step):
            state.end_early(self.reason())

    # A fit checkpoint keeps the count, so a resumed phase settles where it would have.
    def state_dict(self) -> dict:
        return self.counter.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.counter.load_state_dict(state)
        self.restored = True
