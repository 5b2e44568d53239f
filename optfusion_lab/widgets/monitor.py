"""The live monitor of a search or a training run, and the handle of a run in the background.

In a notebook::

    monitor = LiveMonitor()
    run = monitor.start(search, data, supernet_cfg, train_cfg, search_cfg)   # returns at once
    ...
    result = run.result()   # a later cell: waits for the run (stopped or finished)

:meth:`LiveMonitor.start` calls ``search`` (or ``fit_seeds``, ``retrain``, ``run_seeds``,
``search_seeds``: any function with a ``callbacks`` argument) with the monitor added to its
callbacks. What the panel shows: the alpha of every candidate edge and the operation weights of
every fusion node over steps, the training loss and validation AUC, a progress line (phase, seed,
epoch, step, elapsed time, latest loss and validation AUC) and a **Stop** button.

Why a background thread. In JupyterLab a ``FigureWidget`` shows no update while the cell that
created it still runs, and a button click is only processed once the kernel is idle. So, where a
widget front end is present, ``start`` runs the training in a background thread and returns a
:class:`RunHandle` at once; the cell ends, the kernel is idle, the plots move and Stop works.

- **One run at a time** (per kernel): starting another while one runs raises
  :class:`RunInProgressError`; :func:`active_run` returns the handle of the run in progress (for
  example after the cell that started it was re-run and its variable is gone).
- **Stop** (the button, :meth:`LiveMonitor.stop` or :meth:`RunHandle.stop`) is the library's
  cooperative stop: the run ends after the current step, the best state so far is restored, and
  the result (marked stopped) is what :meth:`RunHandle.result` returns.
- **Waiting**: :meth:`RunHandle.result` / :meth:`RunHandle.wait` block the cell until the run
  ends. While a cell waits the kernel is busy, so the Stop button cannot be processed; the
  toolbar's **Interrupt** then stops the run the same cooperative way and ``result()`` returns
  the stopped result (a second Interrupt while it winds down leaves it stopping in the
  background and raises KeyboardInterrupt). Interrupt while no cell runs does nothing (the
  kernel is idle); use Stop.
- **Re-running the cell** that started a run while it is in progress raises
  :class:`RunInProgressError` naming the run; the run goes on.

Headless (Papermill, nbconvert, a plain ``python`` script): no widget front end is there, so
``start`` runs in the foreground, blocks until the run ends, creates no widget at all (executed
notebooks carry no widget state), and then displays static plotly figures of the same plots,
thinned to ``static_points`` points per line, and prints a one-line summary. The choice is
automatic (:func:`has_widget_frontend`); ``live=True`` / ``live=False`` or the environment
variable ``OPTFUSION_MONITOR=live|static`` force it.

Cost. The monitor reads alpha and the operation weights every ``every`` steps (one small
device-to-host copy) into fixed-size buffers (:mod:`optfusion_lab.widgets.series`), and redraws
at most ``max_updates_per_second`` times a second, sending at most ``static_points`` points per
line: the cost of an update does not grow with the length of the run. A redraw costs milliseconds,
but many times more on a loaded machine; so the next redraw also waits until the last one is at
most ``max_redraw_share`` of the time since it began (3 %), which bounds the share of the run's
time spent drawing on any machine (``benchmarks/bench_monitor.py`` measures the slowdown).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from ..train import Callback, TrainState
from .figures import alpha_figure, metrics_figure, operation_figure
from .series import SnapshotBuffer

_ACTIVE_LOCK = threading.Lock()
_ACTIVE: RunHandle | None = None


class RunInProgressError(RuntimeError):
    """A run is already in progress in this kernel (one at a time)."""


def active_run() -> RunHandle | None:
    """The handle of the run in progress in this kernel, or None."""
    with _ACTIVE_LOCK:
        return _ACTIVE if _ACTIVE is not None and not _ACTIVE.done() else None


def has_widget_frontend() -> bool:
    """True in an interactive notebook front end (JupyterLab, Notebook), False otherwise.

    ``OPTFUSION_MONITOR=live`` or ``static`` decides when set. Otherwise: an IPython kernel
    (``ZMQInteractiveShell``) whose current cell was sent by an interactive client. Papermill,
    nbconvert and nbclient execute cells with ``allow_stdin`` off (they cannot answer input());
    JupyterLab and Notebook send it on. A plain Python process or a terminal IPython has no
    widget front end.
    """
    forced = os.environ.get("OPTFUSION_MONITOR", "").strip().lower()
    if forced in ("live", "static"):
        return forced == "live"
    if forced:
        raise ValueError(f"OPTFUSION_MONITOR must be 'live' or 'static', got {forced!r}")
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    return bool(getattr(getattr(shell, "kernel", None), "_allow_stdin", False))


def _format_seconds(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{s:02d}" if hours else f"{minutes:02d}:{s:02d}"


def _unwrap(model):
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def architecture_of(model) -> tuple[tuple, np.ndarray | None, np.ndarray | None]:
    """(structure, alpha (edges,) or None, operation weights (nodes * ops,) or None) of a
    supernet; ``((), None, None)`` for any other model. One host copy per tensor."""
    net = _unwrap(model)
    mode = getattr(net, "mode", None)
    if mode not in ("search", "fixed-edges"):
        return (), None, None
    graph = net.graph
    edges = tuple(graph.edges) if mode == "search" else ()
    structure = (edges, tuple(graph.fusion_nodes), tuple(net.cfg.operations))
    alpha = net.alpha.detach().cpu().numpy() if mode == "search" else None  # (edges,)
    weights = net.operation_weights().detach().cpu().numpy().reshape(-1)  # (nodes * ops,)
    return structure, alpha, weights


def structure_of_arguments(args: tuple, kwargs: dict) -> tuple:
    """The lines a run will plot, when its arguments tell (a supernet or its config, and a
    search config): ``(edges, fusion nodes, operations)``, or ``()``."""
    from ..fusion_search import SearchConfig
    from ..models.genotype import FusionGraph
    from ..models.supernet import FusionNetwork, SupernetConfig

    values = [*args, *kwargs.values()]
    for value in values:
        if isinstance(value, FusionNetwork) and value.mode in ("search", "fixed-edges"):
            graph = value.graph
            edges = tuple(graph.edges) if value.mode == "search" else ()
            return edges, tuple(graph.fusion_nodes), tuple(value.cfg.operations)
    cfg = next((v for v in values if isinstance(v, SupernetConfig)), None)
    if cfg is None:
        return ()
    search_cfg = next((v for v in values if isinstance(v, SearchConfig)), SearchConfig())
    graph = FusionGraph(cfg.num_layers)
    edges = tuple(graph.edges) if search_cfg.design is None else ()
    return edges, tuple(graph.fusion_nodes), tuple(cfg.operations)


class LiveMonitor(Callback):
    """Plots of a search or training run that move while it runs, with a Stop button.

    Create it in one line, start a run with it (:meth:`start`), or pass it yourself as a
    callback (``search(..., callbacks=[monitor])``; then the cell blocks, and in JupyterLab the
    plots only move once it ends: prefer :meth:`start`). See the module docstring.

    ``every``: read the architecture every this many steps. ``max_updates_per_second``: redraw
    at most this often. ``max_redraw_share``: and only when the last redraw took at most this
    share of the time since it began (None: no such limit). ``capacity``: points kept per line.
    ``static_points``: points per line drawn (each live redraw, and the static figures of a
    headless run). ``live``: None decides by :func:`has_widget_frontend`.
    """

    def __init__(
        self,
        every: int = 20,
        max_updates_per_second: float = 1.0,
        capacity: int = 256,
        static_points: int = 120,
        live: bool | None = None,
        title: str = "",
        max_redraw_share: float | None = 0.03,
    ):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if max_updates_per_second <= 0:
            raise ValueError(f"max_updates_per_second must be > 0, got {max_updates_per_second}")
        self.every = every
        self.min_interval = 1.0 / max_updates_per_second
        if max_redraw_share is not None and not 0 < max_redraw_share <= 1:
            raise ValueError(f"max_redraw_share must be in (0, 1], got {max_redraw_share}")
        self.max_redraw_share = max_redraw_share
        self.capacity = capacity
        self.static_points = static_points
        self.live = has_widget_frontend() if live is None else bool(live)
        self.title = title
        self.handle: RunHandle | None = None  # the latest run started with start()
        self._view: _LiveView | None = None
        self._stop = threading.Event()
        self.reset()

    # ------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget everything shown (a new run starts)."""
        self.status = "waiting"  # waiting, running, stopping, stopped, finished, failed
        self.stop_reason = ""
        self.error = ""
        self.started = time.monotonic()
        self.elapsed = 0.0
        self.structure: tuple = ()
        self.alpha: SnapshotBuffer | None = None
        self.weights: SnapshotBuffer | None = None
        self.losses = SnapshotBuffer(1, self.capacity)
        self.epochs: list[dict] = []
        self.boundaries: list[tuple[float, str]] = []
        self.fits = 0  # fits seen (phases, seeds)
        self.offset = 0  # steps of the fits before this one
        self.step = 0  # steps so far, all fits
        self.fit_step = 0  # steps so far in this fit
        self.steps_per_epoch = 0
        self.epoch = 0
        self.epochs_total: int | None = None
        self.phase: str | None = None
        self.seed: int | None = None
        self.loss: float | None = None
        self._loss_sample: tuple | None = None  # (seed, phase, loss_step) of the last loss kept
        self.valid_auc: float | None = None
        self.best: tuple[float, int] | None = None  # (valid AUC, epoch) of the current fit
        self._model = None
        self._last_draw = -np.inf
        self._draw_interval = self.min_interval  # grows when a redraw is slow (see maybe_draw)
        self._stop.clear()
        self.version = 0  # bumped by every change a redraw would show

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def stop(self, reason: str = "Stop button") -> None:
        """Ask the run to stop after its current step (the cooperative stop)."""
        if self.status in ("finished", "stopped", "failed"):
            return
        self.stop_reason = reason
        self._stop.set()
        self.status = "stopping"
        self.redraw_status()

    def redraw_status(self) -> None:
        """Redraw the status line, progress and button now (cheap; any thread)."""
        if self._view is not None:
            self._view.draw_status(self)

    # ------------------------------------------------------------ callback

    def on_step(self, state: TrainState) -> None:
        if self._stop.is_set():
            self._ask_to_stop(state)
        self._follow(state)
        if state.step % self.every == 0:
            self.add_architecture(self.step, *architecture_of(state.model))
            read_at = state.step if state.loss_step is None else state.loss_step
            sample = (state.seed, state.phase, read_at)
            if state.loss is not None and sample != self._loss_sample:  # a new sample only
                self._loss_sample = sample
                self.losses.append(self.step - (state.step - read_at), [state.loss])
                self.loss = state.loss
        self.maybe_draw()

    def on_epoch_end(self, state: TrainState) -> None:
        self._follow(state)
        self.add_architecture(self.step, *architecture_of(state.model))
        self.add_epoch(
            {"step": self.step, "epoch": state.epoch, "train_loss": state.train_loss,
             "valid_auc": state.valid_auc, "label": self._fit_label()}
        )
        if state.best_valid_auc is not None and state.best_epoch is not None:
            self.best = (state.best_valid_auc, state.best_epoch)
        self.maybe_draw(force=True)
        if self._stop.is_set():
            self._ask_to_stop(state)

    def _ask_to_stop(self, state: TrainState) -> None:
        request = getattr(state, "request_stop", None)
        if request is not None:
            request(self.stop_reason)
        else:  # a loop without request_stop: fit keeps the best state on KeyboardInterrupt
            raise KeyboardInterrupt(self.stop_reason)

    def _fit_label(self) -> str:
        parts = []
        if self.phase:
            parts.append(self.phase)
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return " ".join(parts) or f"fit {self.fits}"

    def _follow(self, state: TrainState) -> None:
        """Progress fields from ``state``; a step counter that went back or a new model is a
        new fit (the next phase or seed): its steps continue the x axis."""
        phase, seed = getattr(state, "phase", None), getattr(state, "seed", None)
        new_fit = (self._model is not None and (state.model is not self._model
                                                or state.step < self.fit_step
                                                or phase != self.phase or seed != self.seed))
        if self._model is None or new_fit:
            if new_fit:
                self.offset += self.fit_step
            self.fits += 1
            self.phase, self.seed, self._model = phase, seed, state.model
            self.best = None
            if new_fit:
                self.boundaries.append((float(self.offset), self._fit_label()))
        if self.status == "waiting":
            self.status = "running"
        self.fit_step = state.step
        self.step = self.offset + state.step
        self.epoch, self.steps_per_epoch = state.epoch, state.steps_per_epoch
        self.epochs_total = getattr(state, "epochs", None)
        self.elapsed = time.monotonic() - self.started

    # ------------------------------------------------------------ data (also fed by watch)

    def expect(self, structure: tuple) -> None:
        """Set up the lines of ``(edges, fusion nodes, operations)`` before any snapshot."""
        if structure and structure != self.structure:
            self.structure = structure
            edges, nodes, operations = structure
            self.alpha = SnapshotBuffer(len(edges), self.capacity) if edges else None
            self.weights = SnapshotBuffer(len(nodes) * len(operations), self.capacity)
            self.version += 1

    def add_architecture(self, step: float, structure: tuple, alpha, weights) -> None:
        """One snapshot: alpha per edge and operation weights (node-major) at ``step``."""
        if not structure:
            return
        self.expect(structure)  # first snapshot, or another graph: new lines
        if self.alpha is not None and alpha is not None:
            self.alpha.append(step, alpha)
        if weights is not None:
            self.weights.append(step, weights)
        self.version += 1

    def add_epoch(self, row: dict) -> None:
        """One epoch's metrics: ``step``, ``epoch``, ``train_loss``, ``valid_auc``, ``label``."""
        self.epochs.append(row)
        self.loss = row.get("train_loss", self.loss)
        self.valid_auc = row.get("valid_auc", self.valid_auc)
        self.version += 1

    # ------------------------------------------------------------ drawing

    def maybe_draw(self, force: bool = False) -> None:
        """Redraw the live view if ``min_interval`` seconds passed since the last redraw, and the
        last redraw took at most ``max_redraw_share`` of the time since it began."""
        if self._view is None:
            return
        now = time.monotonic()
        if force or now - self._last_draw >= self._draw_interval:
            self._last_draw = now
            self._view.draw(self)
            if self.max_redraw_share is not None:
                cost = time.monotonic() - now
                self._draw_interval = max(self.min_interval, cost / self.max_redraw_share)

    def summary(self) -> str:
        """One line: what runs, where it is, the latest metrics."""
        parts = [self.title] if self.title else []
        parts.append(self.status if not self.stop_reason or self.status == "running"
                     else f"{self.status} ({self.stop_reason})")
        if self.phase:
            parts.append(f"phase {self.phase}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        if self.epoch:
            total = f"/{self.epochs_total}" if self.epochs_total else ""
            parts.append(f"epoch {self.epoch}{total}")
        if self.step:
            parts.append(f"step {self.step}")
        parts.append(f"{_format_seconds(self.elapsed)} elapsed")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.valid_auc is not None:
            parts.append(f"valid AUC {self.valid_auc:.4f}")
        if self.best is not None:
            parts.append(f"best {self.best[0]:.4f} at epoch {self.best[1]}")
        if self.error:
            parts.append(f"error: {self.error}")
        if self.handle is not None and self.handle.waiting.is_set() and not self.handle.done():
            parts.append("a cell waits for this run: the toolbar's Interrupt stops it")
        return " \u00b7 ".join(parts)

    def figures(self, max_points: int | None = None) -> dict:
        """Static plotly figures of what the monitor holds: ``alpha`` (search with learned
        edges), ``operations`` (supernets) and ``metrics``; ``max_points`` thins each line."""
        figures = {}
        if self.structure:
            edges, nodes, operations = self.structure
            if self.alpha is not None:
                figures["alpha"] = alpha_figure(*self.alpha.arrays(max_points), edges,
                                                self.boundaries)
            if self.weights is not None:
                figures["operations"] = operation_figure(*self.weights.arrays(max_points), nodes,
                                                         operations, self.boundaries)
        loss_steps, losses = self.losses.arrays(max_points)
        figures["metrics"] = metrics_figure(self.epochs, loss_steps, losses[:, 0],
                                            self.boundaries)
        return figures

    def show(self) -> None:
        """Display the live panel (in a notebook with widgets) or the static figures."""
        from IPython.display import display

        if self.live:
            display(self._live_view().box)
        else:
            for fig in self.figures(self.static_points).values():
                display(fig)

    @property
    def panel(self):
        """The live panel (an ipywidgets VBox); live monitors only."""
        if not self.live:
            raise RuntimeError("a headless monitor has no panel; use figures() or show()")
        return self._live_view().box

    def _live_view(self) -> _LiveView:
        if self._view is None:
            self._view = _LiveView(self)
            self._view.draw(self)
        return self._view

    def _repr_mimebundle_(self, **kwargs):
        if self.live:
            return self._live_view().box._repr_mimebundle_(**kwargs)
        return {"text/plain": self.summary()}

    def __repr__(self) -> str:
        return f"LiveMonitor({self.summary()})"

    # ------------------------------------------------------------ running

    def start(self, run: Callable, *args, **kwargs) -> RunHandle:
        """Call ``run(*args, **kwargs)`` with this monitor added to ``callbacks``.

        With a widget front end: in a background thread; returns its :class:`RunHandle` at
        once and displays the live panel. Headless: in the foreground; returns when the run
        has ended (a finished handle) after displaying static figures. Raises
        :class:`RunInProgressError` while another run is in progress in this kernel.
        """
        global _ACTIVE
        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), self]
        name = getattr(run, "__name__", "run")
        with _ACTIVE_LOCK:
            if _ACTIVE is not None and not _ACTIVE.done():
                raise RunInProgressError(
                    f"a run is already in progress ({_ACTIVE!r}); one run at a time: stop it "
                    "(its Stop button, or optfusion_lab.widgets.active_run().stop()) or wait "
                    "for it (active_run().result()) before starting another"
                )
            self.reset()
            handle = RunHandle(self, name)
            self.handle = _ACTIVE = handle
        # Lines known from the arguments are drawn now, from this thread, before the run; the
        # run thread then only moves points (see _LiveView).
        self.expect(structure_of_arguments(args, kwargs))
        if self.live:
            self._show_once()
            self._view.draw(self)
            thread = threading.Thread(target=handle._run, args=(run, args, kwargs),
                                      name=f"optfusion-{name}", daemon=True)
            handle._thread = thread
            thread.start()
        else:
            handle._run(run, args, kwargs)
            self._show_static()
        return handle

    def _show_once(self) -> None:
        if self._view is None:
            from IPython.display import display

            display(self._live_view().box)

    def _show_static(self) -> None:
        print(self.summary())
        try:
            from IPython import get_ipython
        except ImportError:
            return
        if get_ipython() is not None:
            from IPython.display import display

            for fig in self.figures(self.static_points).values():
                display(fig)

    def finish(self, status: str, error: str = "") -> None:
        """Mark the run ended (``finished``, ``stopped`` or ``failed``) and redraw."""
        self.status, self.error = status, error
        self.elapsed = time.monotonic() - self.started
        self.version += 1
        if self._view is not None:
            self._view.draw(self)


class RunHandle:
    """A run started by :meth:`LiveMonitor.start`; the next cells wait on it.

    ``result()`` waits and returns the run's return value (or raises its exception);
    ``wait(timeout)`` waits and says whether it ended; ``stop()`` asks it to stop; ``done()``,
    ``running`` and ``stopped`` describe it.
    """

    def __init__(self, monitor: LiveMonitor, name: str):
        self.monitor = monitor
        self.name = name
        self._future: Future = Future()
        self._thread: threading.Thread | None = None
        self.waiting = threading.Event()  # set while a cell waits on the run
        self.started_at = time.time()

    def _run(self, run: Callable, args: tuple, kwargs: dict) -> None:
        self._future.set_running_or_notify_cancel()
        try:
            value = run(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 (handed to the waiting cell)
            stopped = isinstance(error, KeyboardInterrupt) and self.monitor.stop_requested
            self.monitor.finish("stopped" if stopped else "failed", f"{type(error).__name__}: "
                                f"{error}" if not stopped else "")
            self._future.set_exception(error)
            return
        self.monitor.finish("stopped" if self.monitor.stop_requested else "finished")
        self._future.set_result(value)

    def done(self) -> bool:
        return self._future.done()

    @property
    def running(self) -> bool:
        return not self._future.done()

    @property
    def stopped(self) -> bool:
        """The run ended after a stop request."""
        return self.done() and self.monitor.stop_requested

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the run to stop after its current step; returns at once."""
        self.monitor.stop(reason)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends or ``timeout`` seconds pass; True when it has ended.

        An Interrupt (KeyboardInterrupt) while waiting stops the run cooperatively and waits for
        it to wind down; a second one raises KeyboardInterrupt and leaves it stopping.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.waiting.set()
        self.monitor.redraw_status()
        try:
            self._wait_until(deadline)
        except KeyboardInterrupt:
            if not self.done():
                self.monitor.stop("Interrupt")
                self._wait_until(None)
        finally:
            self.waiting.clear()
            self.monitor.redraw_status()
        return self.done()

    def _wait_until(self, deadline: float | None) -> None:
        # Short waits keep the waiting thread responsive to KeyboardInterrupt.
        while not self._future.done():
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if left <= 0:
                return
            try:
                self._future.exception(timeout=left)
            except FutureTimeout:
                continue

    def result(self, timeout: float | None = None):
        """The run's return value, once it has ended (stopped or finished); its exception is
        raised here. TimeoutError when ``timeout`` seconds pass first."""
        if not self.wait(timeout):
            raise TimeoutError(f"{self!r} still runs after {timeout} s")
        return self._future.result()

    def exception(self) -> BaseException | None:
        """The exception the run ended with (None while running or after a normal end)."""
        return self._future.exception() if self.done() else None

    def __repr__(self) -> str:
        return f"<RunHandle {self.name}: {self.monitor.summary()}>"


class _LiveView:
    """The ipywidgets panel of a monitor: a status line, a progress bar, Stop, three figures.

    The figures are plotly figures drawn by the page's plotly renderer (JupyterLab's plotly
    extension, ``application/vnd.plotly.v1+json``) inside ``Output`` widgets; every redraw
    replaces an Output's content with the figure's new data. Not ``FigureWidget``: anywidget
    drops every message to a widget whose JavaScript took more than 2 s to load
    (``[anywidget] Failed to initialize model.``), and plotly's is 5 MB, compiled again for
    every figure, so on a busy machine the figures stayed as they were first drawn.
    """

    def __init__(self, monitor: LiveMonitor):
        import ipywidgets as widgets

        self.widgets = widgets
        self.status = widgets.HTML()
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="epoch",
                                              layout=widgets.Layout(width="260px"))
        self.button = widgets.Button(description="Stop", icon="stop", button_style="danger",
                                     tooltip="stop the run after its current step; the best "
                                     "state so far is kept")
        self.button.add_class("optfusion-stop")
        self.button.on_click(lambda _: monitor.stop("Stop button"))
        # Per figure, the plotly JSON the page draws; a redraw replaces its lines' points.
        self.specs = self._specs(monitor)
        self.structure, self.boundaries = monitor.structure, len(monitor.boundaries)
        # VBox, not Box: in a row a figure shrinks to its content, and a plot whose legend
        # takes all the width fails to draw.
        self.outputs = {name: widgets.Output(layout=widgets.Layout(width="100%"))
                        for name in self.specs}
        self.box = widgets.VBox([
            widgets.HBox([self.button, self.progress, self.status]), *self.outputs.values(),
        ])
        self.box.add_class("optfusion-monitor")
        self.drawn_version = -1
        self._publish(self.specs)

    @staticmethod
    def _specs(monitor: LiveMonitor) -> dict:
        import plotly.graph_objects as go

        placeholder = {"height": 30, "margin": {"t": 0, "b": 0}}
        figures = monitor.figures()
        return {name: plotly_bundle(figures.get(name, go.Figure(layout=placeholder)))
                [PLOTLY_MIME] for name in ("alpha", "operations", "metrics")}

    @property
    def figures(self) -> dict:
        """The figures shown now, as plotly figures (built on demand)."""
        import plotly.graph_objects as go

        return {name: go.Figure({"data": spec["data"], "layout": spec["layout"]})
                for name, spec in self.specs.items()}

    def draw_status(self, monitor: LiveMonitor) -> None:
        self.status.value = f"<code>{monitor.summary()}</code>"
        if monitor.steps_per_epoch:
            within = (monitor.fit_step - 1) % monitor.steps_per_epoch + 1
            self.progress.value = within / monitor.steps_per_epoch
            self.progress.description = f"epoch {monitor.epoch}"
        ended = monitor.status in ("finished", "stopped", "failed")
        self.button.disabled = ended or monitor.status == "stopping"
        self.button.description = {"stopping": "Stopping", "stopped": "Stopped",
                                   "finished": "Finished", "failed": "Failed"}.get(
            monitor.status, "Stop")

    def draw(self, monitor: LiveMonitor) -> None:
        self.draw_status(monitor)
        if monitor.version == self.drawn_version:
            return
        self.drawn_version = monitor.version
        if monitor.structure != self.structure or len(monitor.boundaries) != self.boundaries:
            # New lines or new boundary marks (rare): new figures.
            self.structure, self.boundaries = monitor.structure, len(monitor.boundaries)
            self.specs = self._specs(monitor)
            self._publish(self.specs)
            return
        changed, points = {}, monitor.static_points  # the page draws every figure anew
        if monitor.alpha is not None and self.ready("alpha"):
            changed["alpha"] = _set_lines(self.specs["alpha"], *monitor.alpha.arrays(points))
        if monitor.weights is not None and self.ready("operations"):
            changed["operations"] = _set_lines(self.specs["operations"],
                                               *monitor.weights.arrays(points))
        if self.ready("metrics"):
            steps, losses = monitor.losses.arrays(points)
            epochs = monitor.epochs
            epoch_steps = [e["step"] for e in epochs]
            changed["metrics"] = _set_lines(self.specs["metrics"], [
                (steps, losses[:, 0]), (epoch_steps, [e["train_loss"] for e in epochs]),
                (epoch_steps, [e["valid_auc"] for e in epochs])])
        self.specs.update(changed)
        self._publish(changed)

    def _publish(self, specs: dict) -> None:
        for name, spec in specs.items():
            bundle = {PLOTLY_MIME: spec, "text/plain": f"<plotly figure: {name}>"}
            self.outputs[name].outputs = ({"output_type": "display_data", "metadata": {},
                                           "data": bundle},)

    def ready(self, name: str) -> bool:
        """Whether figure ``name`` has its lines (may get new points)."""
        spec = self.specs.get(name)
        return spec is not None and len(spec["data"]) > 0


PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _set_lines(spec: dict, steps, values=None) -> dict:
    """A copy of ``spec`` with new points: ``steps`` (n,) and ``values`` (n, lines) for every
    line, or ``steps`` a list of (x, y) per line (the first lines). A copy, not ``spec``
    changed in place: the Output widget sends only a value that differs from the one it holds.
    Values rounded to 5 decimals."""
    pairs = steps if values is None else [(steps, values[:, i]) for i in range(values.shape[1])]
    traces = [dict(trace) for trace in spec["data"]]
    for trace, (x, y) in zip(traces, pairs, strict=False):
        y = np.round(np.asarray(y, dtype=float), 5)
        trace["x"] = np.asarray(x).tolist()
        trace["y"] = y.tolist() if np.isfinite(y).all() else [  # JSON has no NaN
            v if np.isfinite(v) else None for v in y.tolist()]
    return {**spec, "data": traces}


def plotly_bundle(figure) -> dict:
    """The mime bundle of ``figure`` that the page's plotly renderer draws: plain JSON lists
    (every renderer reads them; plotly writes arrays base64-encoded), values rounded to 5
    decimals to keep the message small."""
    import json

    from plotly.utils import PlotlyJSONEncoder

    spec = _plain(json.loads(json.dumps(figure.to_plotly_json(), cls=PlotlyJSONEncoder)))
    title = (spec.get("layout", {}).get("title") or {}).get("text", "figure")
    return {PLOTLY_MIME: {"data": spec.get("data", []),
                                               "layout": spec.get("layout", {}),
                                               "config": {"responsive": True}},
            "text/plain": f"<plotly figure: {title}>"}


def _plain(value):
    """``value`` with plotly's typed arrays (``{"dtype", "bdata"[, "shape"]}``) as lists."""
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            import base64

            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            if "shape" in value:
                shape = value["shape"]
                array = array.reshape([int(n) for n in str(shape).split(",")]
                                      if not isinstance(shape, list) else shape)
            if array.dtype.kind == "f":
                array = np.round(array, 5)
            return array.tolist()
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
