"""Follow a run folder written by another process: ``watch(RUN_DIR)``.

A search or training run started elsewhere (``optfusion-lab search`` on a GPU machine, another
kernel) rewrites its per-epoch files atomically after every epoch, so a reader always sees
whole files; :func:`watch` reads them and shows the monitor's panel (the same figures, from
:mod:`optfusion_lab.widgets.figures`, fed into the same fixed-size buffers)::

    watcher = watch("runs/search/teacher")   # a live panel, polled in the background
    watcher.stop()                            # stop watching (the run itself goes on)

What a run folder holds after every epoch:

- a search (``optfusion-lab search``, :func:`~optfusion_lab.fusion_search.search_run`, or
  ``search(live_dir=...)``): ``epochs.csv`` (every phase's epochs so far) and ``history.csv``
  (the tidy alpha / operation-weight snapshots so far, steps counted over the whole search),
  plus its checkpoint; ``result.json`` once it has finished (a stopped search writes none);
- a search over seeds (``search --seeds``): one such folder per ``seed_<s>/``, run one after
  another; ``stability.json`` at the end;
- a training run (``optfusion-lab train`` / ``retrain``, :func:`~optfusion_lab.train.fit_seeds`
  with ``out_dir``): ``history.csv`` (one row per seed and epoch so far); ``result.json`` at
  the end (``"stopped"`` says whether a stop ended it).

The x axis is the step for a search (a seed continues where the previous one ended, with a
dotted mark where a seed or a phase begins) and the epoch for a training run (its files hold no
steps). Polling stats every file (modification time, size, inode) and reads only the files that
changed, and of them feeds only the rows not seen yet; a file that is shorter than before (the
folder was reused for a new run) starts the view afresh. A folder that does not exist yet, or
holds no epoch yet, is waited for. The run has ended when ``result.json`` is there (for a
search over seeds: ``stability.json``, or every requested seed's ``result.json``); polling
stops then.

- **Live** (a widget front end, see :func:`~optfusion_lab.widgets.has_widget_frontend`):
  ``watch`` polls once, shows the panel and returns; a background thread polls every
  ``interval`` seconds until the run ends, ``timeout`` passes or **Stop watching** is pressed
  (:meth:`RunWatcher.stop`). :meth:`RunWatcher.wait` blocks a later cell until then.
- **Headless** (Papermill, a plain script): ``watch`` draws the folder's current state once, as
  static figures, and returns; with ``timeout=SECONDS`` it first follows the run until it ends
  or that time passes. Either way an executed notebook holds no widget state.

Tests and scripts drive it by hand: ``RunWatcher(RUN_DIR).poll()`` reads what changed and says
whether anything new was shown.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import MARKER, SEARCH_RUN, TRAINING_RUN, output_kind
from .monitor import LiveMonitor, has_widget_frontend

SEED_PREFIX = "seed_"


class _FolderMonitor(LiveMonitor):
    """A monitor fed from files: its Stop button stops watching, not the run."""

    def __init__(self, watcher: RunWatcher, **options):
        self.watcher = watcher
        self.x_title = "step"
        super().__init__(**options)

    def stop(self, reason: str = "Stop button") -> None:
        self.watcher.stop()

    def summary(self) -> str:
        line = super().summary()
        if self.watcher.message:
            line += f" \u00b7 {self.watcher.message}"
        return line

    def figures(self, max_points: int | None = None) -> dict:
        figures = super().figures(max_points)
        if self.x_title != "step":
            figures["metrics"].update_xaxes(title_text=self.x_title)
        return figures


@dataclass
class _Fit:
    """One search folder being followed (the run itself, or one seed of a search over seeds)."""

    path: Path
    label: str  # "seed 3" in a search over seeds, else ""
    offset: float  # steps of the seeds before this one
    snapshots: int = 0  # architecture snapshots fed so far
    epochs: int = 0  # rows of epochs.csv fed so far
    last_step: float = 0.0
    phase: str | None = None
    epoch_steps: dict = field(default_factory=dict)  # (phase, epoch) -> step of its epoch end


class RunWatcher:
    """Follows the run folder ``run_dir``; build it with :func:`watch` (or directly, and call
    :meth:`poll` yourself).

    ``status`` is ``waiting`` (no folder or no epoch yet), ``running``, ``finished`` or
    ``stopped`` (the run's own result says a stop ended it); ``done`` is True once the run has
    ended; ``message`` says what is awaited. :meth:`figures` gives the static figures of what
    was read, the ``monitor`` holds the data (its ``alpha``, ``weights`` and ``epochs``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        interval: float = 2.0,
        capacity: int = 256,
        static_points: int = 120,
        live: bool | None = None,
    ):
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.directory = Path(run_dir)
        self.interval = interval
        self.monitor = _FolderMonitor(self, capacity=capacity, static_points=static_points,
                                      live=live, title=str(self.directory))
        self.message = ""
        self.reads = 0  # files read so far (only changed files are read)
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one poll at a time (the thread and a cell)
        self._start_over()

    def _start_over(self) -> None:
        self.monitor.reset()
        self.monitor.elapsed = 0.0
        self.kind: str | None = None
        self.done = False
        self.result: dict | None = None  # result.json (or stability.json) once the run ended
        self._seen: dict[Path, tuple] = {}  # file -> (mtime_ns, size, inode) when last read
        self._fits: dict[Path, _Fit] = {}
        self._train_rows = 0
        self.message = f"waiting for {self.directory}"

    # ------------------------------------------------------------ polling

    @property
    def status(self) -> str:
        return self.monitor.status

    @property
    def watching(self) -> bool:
        """True while a background thread follows the run."""
        return self._thread is not None and self._thread.is_alive()

    def poll(self) -> bool:
        """Read the files that changed since the last poll; True when something new was shown.

        ``RunWatcher("runs/search/teacher").poll()``
        """
        with self._lock:
            if self.done:
                return False
            version, message = self.monitor.version, self.message
            try:
                self._poll()
            except _StartedOver:  # the folder was reused for a new run: read it afresh
                self._start_over()
                self._poll()
            changed = self.monitor.version != version
            if changed:
                self.monitor.maybe_draw(force=True)
            elif self.message != message:
                self.monitor.redraw_status()
            return changed

    def _poll(self) -> None:
        if not self.directory.is_dir():
            self.message = (f"{self.directory} does not exist yet: waiting for the run to "
                            "start (or check the path)")
            return
        if self.kind is None:
            self.kind = self._kind()
            if self.kind is None:
                return
        self._read_all()
        self._check_done()

    def _kind(self) -> str | None:
        kind = output_kind(self.directory)
        if kind in (SEARCH_RUN, TRAINING_RUN):
            self.message = "waiting for the first epoch"
            return kind
        if kind is not None:
            raise ValueError(f"{self.directory} holds an optfusion-lab {kind.replace('-', ' ')}, "
                             "not a search or training run")
        entries = [e.name for e in self.directory.iterdir() if not e.name.startswith(".")]
        if entries:
            raise ValueError(f"{self.directory} is not an optfusion-lab run folder (no "
                             f"{MARKER}; it holds {', '.join(sorted(entries)[:3])}...)")
        self.message = f"{self.directory} is empty: waiting for the run to start"
        return None

    def _changed(self, path: Path) -> bool:
        """Whether ``path`` exists and changed since it was last read (then it counts as read)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if self._seen.get(path) == signature:
            return False
        self._seen[path] = signature
        self.reads += 1
        return True

    # ------------------------------------------------------------ search folders

    def _search_folders(self) -> list[tuple[Path, str]]:
        """(folder, label) of every search to follow, in the order they ran."""
        seeds = []
        for path in self.directory.glob(f"{SEED_PREFIX}*"):
            suffix = path.name[len(SEED_PREFIX):]
            if path.is_dir() and suffix.lstrip("-").isdigit():
                try:  # a seed's folder is marked once, when its search starts
                    started = (path / MARKER).stat().st_mtime_ns
                except FileNotFoundError:
                    continue
                seeds.append((started, int(suffix), path))
        if not seeds:
            return [(self.directory, "")]
        return [(path, f"seed {seed}") for _, seed, path in sorted(seeds)]

    def _poll_search(self) -> None:
        previous = None
        for path, label in self._search_folders():
            fit = self._fits.get(path)
            if fit is None:
                offset = previous.offset + previous.last_step if previous is not None else 0.0
                fit = self._fits[path] = _Fit(path, label, offset)
                if previous is not None:
                    self.monitor.boundaries.append((offset, label))
                    self.monitor.version += 1
            self._read_architecture(fit)
            self._read_epochs(fit)
            previous = fit

    def _read_architecture(self, fit: _Fit) -> None:
        path = fit.path / "history.csv"
        if not self._changed(path):
            return
        frame = _read_csv(path, dtype={"input": str, "operation": str, "phase": str})
        frame = frame.fillna({"input": "", "operation": ""})
        starts = np.zeros(0, dtype=np.int64)  # (snapshots,) the first row of each snapshot
        if len(frame):
            keys = frame[["phase", "step", "when"]]
            starts = np.flatnonzero((keys != keys.shift()).any(axis=1).to_numpy())
        if len(starts) < fit.snapshots:
            raise _StartedOver
        if len(starts) == 0:
            return
        width = len(frame) // len(starts)
        if width * len(starts) != len(frame) or np.any(np.diff(starts) != width):
            raise ValueError(f"{path}: snapshots of unequal size; not an architecture history")
        first = frame.iloc[:width]
        alpha_rows = first["kind"].to_numpy() == "alpha"
        edges = tuple(zip(first["input"][alpha_rows], first["node"][alpha_rows], strict=True))
        weights = first[~alpha_rows]
        structure = (edges, tuple(dict.fromkeys(weights["node"])),
                     tuple(dict.fromkeys(weights["operation"])))
        values = frame["value"].to_numpy(dtype=np.float64).reshape(len(starts), width)
        heads = frame.iloc[starts]
        monitor = self.monitor
        for i in range(fit.snapshots, len(starts)):
            phase, step, epoch, when = (heads["phase"].iat[i], float(heads["step"].iat[i]),
                                        int(heads["epoch"].iat[i]), heads["when"].iat[i])
            x = fit.offset + step
            if fit.phase is not None and phase != fit.phase:
                monitor.boundaries.append((x, " ".join(filter(None, [phase, fit.label]))))
            fit.phase, fit.last_step = phase, step
            if when == "epoch":
                fit.epoch_steps[(phase, epoch)] = x
            monitor.add_architecture(x, structure, values[i, alpha_rows] if edges else None,
                                     values[i, ~alpha_rows])
        fit.snapshots = len(starts)
        monitor.step, monitor.phase = int(fit.offset + fit.last_step), fit.phase

    def _read_epochs(self, fit: _Fit) -> None:
        path = fit.path / "epochs.csv"
        if not self._changed(path):
            return
        frame = _read_csv(path, dtype={"phase": str})
        if len(frame) < fit.epochs:
            raise _StartedOver
        for row in frame.iloc[fit.epochs:].itertuples(index=False):
            step = fit.epoch_steps.get((row.phase, int(row.epoch)))
            if step is None:  # history.csv of this epoch not written yet: next poll
                self._seen.pop(path, None)
                break
            label = " ".join(filter(None, [row.phase, fit.label]))
            self._add_epoch(row, step, label)
            fit.epochs += 1
            self.monitor.seed = int(row.seed) if fit.label else None

    def _add_epoch(self, row, step: float, label: str) -> None:
        monitor = self.monitor
        first_of_fit = not monitor.epochs or monitor.epochs[-1]["label"] != label
        monitor.add_epoch({"step": step, "epoch": int(row.epoch), "train_loss": row.train_loss,
                           "valid_auc": row.valid_auc, "label": label})
        monitor.epoch = int(row.epoch)
        monitor.elapsed += float(row.seconds)
        if first_of_fit or monitor.best is None or row.valid_auc > monitor.best[0]:
            monitor.best = (float(row.valid_auc), int(row.epoch))
        monitor.status = "running" if monitor.status == "waiting" else monitor.status
        self.message = ""

    # ------------------------------------------------------------ training folders

    def _poll_training(self) -> None:
        path = self.directory / "history.csv"
        if not self._changed(path):
            return
        frame = _read_csv(path)
        if len(frame) < self._train_rows:
            raise _StartedOver
        monitor = self.monitor
        monitor.x_title = "epoch"
        for row in frame.iloc[self._train_rows:].itertuples(index=False):
            label = f"seed {int(row.seed)}"
            x = float(len(monitor.epochs) + 1)  # epochs over every seed so far
            if monitor.epochs and monitor.epochs[-1]["label"] != label:
                monitor.boundaries.append((x - 0.5, label))
            self._add_epoch(row, x, label)
            monitor.seed, monitor.step = int(row.seed), 0
        self._train_rows = len(frame)

    # ------------------------------------------------------------ the end

    def _check_done(self) -> None:
        result_path = self.directory / "result.json"
        if self.kind == SEARCH_RUN and self._search_folders()[0][1]:  # a search over seeds
            documents = {p: _read_json(p / "result.json") for p in self._fits}
            stability = _read_json(self.directory / "stability.json")
            requested = next((d.get("metadata", {}).get("arguments", {}).get("seeds")
                              for d in documents.values() if d), None)
            finished = {int(p.name[len(SEED_PREFIX):]) for p, d in documents.items() if d}
            if stability is None and not (requested and set(requested) <= finished):
                return
            self._read_all()  # the final files (written before result.json)
            self._end(stability or {"seeds": sorted(finished)}, stopped=False)
            return
        document = _read_json(result_path)
        if document is None:
            return
        self._read_all()  # the final files (written before result.json)
        self._end(document, stopped=bool(document.get("stopped")))

    def _read_all(self) -> None:
        """Read every file that changed since the last poll."""
        if self.kind == TRAINING_RUN:
            self._poll_training()
        else:
            self._poll_search()

    def _end(self, document: dict, stopped: bool) -> None:
        monitor = self.monitor
        self.done, self.result = True, document
        monitor.status = "stopped" if stopped else "finished"
        monitor.stop_reason = document.get("stop_reason", "") if stopped else ""
        if document.get("collapse"):
            monitor.stop_reason = f"no genotype: {document['collapse']}"
        self.message = ""
        monitor.version += 1
        self._halt.set()

    # ------------------------------------------------------------ following

    def follow(self, timeout: float | None = None) -> bool:
        """Poll every ``interval`` seconds, here, until the run ends, ``timeout`` seconds pass
        or :meth:`stop` is called; True when the run has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.poll()
        while not self.done and not self._halt.is_set():
            wait = self.interval if deadline is None else min(self.interval,
                                                              deadline - time.monotonic())
            if wait <= 0 or self._halt.wait(wait):
                break
            self.poll()
        if not self.done and deadline is not None and time.monotonic() >= deadline:
            self.message = f"stopped watching after {timeout:g} s; the run may go on"
            self.monitor.redraw_status()
        return self.done

    def start(self, timeout: float | None = None) -> RunWatcher:
        """Follow the run in a background thread (see :meth:`follow`); returns at once."""
        if self.watching:
            return self
        self._halt.clear()
        self._thread = threading.Thread(target=self._follow_quietly, args=(timeout,),
                                        name=f"optfusion-watch-{self.directory.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def _follow_quietly(self, timeout: float | None) -> None:
        try:
            self.follow(timeout)
        except Exception as error:  # noqa: BLE001 (shown on the panel; the kernel goes on)
            self.message = f"watching failed: {type(error).__name__}: {error}"
            self.monitor.version += 1
            self.monitor.maybe_draw(force=True)

    def stop(self) -> None:
        """Stop watching (the run itself is not touched); returns at once."""
        self._halt.set()
        if not self.done:
            self.message = "not watching (watch again to follow the run)"
            self.monitor.redraw_status()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background thread ends (the run ended, its timeout passed or
        :meth:`stop`); True when the run has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.done

    # ------------------------------------------------------------ showing

    def figures(self, max_points: int | None = None) -> dict:
        """Static plotly figures of what was read (``alpha``, ``operations``, ``metrics``, and
        the found ``fusion graph`` once a search has ended); ``max_points`` thins each line."""
        figures = self.monitor.figures(max_points)
        if self.done and self.kind == SEARCH_RUN:
            from ..viz import from_run

            try:
                figures["fusion graph"] = from_run(self.directory).diagram()
            except (FileNotFoundError, ValueError):
                pass  # a collapsed search, or no history
        return figures

    def show(self) -> None:
        """Display the live panel, or (headless) the summary line and the static figures."""
        if self.monitor.live:
            from IPython.display import display

            display(self.panel)
        else:
            self._show_static()

    @property
    def panel(self):
        """The live panel: the monitor's, with **Stop watching** (live watchers only)."""
        view = self.monitor._live_view()
        button = view.button
        button.description, button.icon = "Stop watching", "eye-slash"
        button.tooltip = "stop reading the run folder; the run itself goes on"
        button.button_style = ""
        view.progress.layout.display = "none"  # the files hold no position within an epoch
        return view.box

    def _show_static(self) -> None:
        print(self.monitor.summary())
        try:
            from IPython import get_ipython
        except ImportError:
            return
        if get_ipython() is not None:
            from IPython.display import display

            for fig in self.figures(self.monitor.static_points).values():
                display(fig)

    def _repr_mimebundle_(self, **kwargs):
        if self.monitor.live:
            return self.panel._repr_mimebundle_(**kwargs)
        return {"text/plain": self.monitor.summary()}

    def __repr__(self) -> str:
        return f"<RunWatcher {self.monitor.summary()}>"


class _StartedOver(Exception):  # noqa: N818 (a signal between methods)
    """A file got shorter: the folder was reused for a new run."""


def _read_csv(path: Path, **options) -> pd.DataFrame:
    """A CSV file as a frame; an empty file is an empty frame."""
    try:
        return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def watch(
    run_dir: str | Path,
    *,
    interval: float = 2.0,
    timeout: float | None = None,
    live: bool | None = None,
    capacity: int = 256,
    static_points: int = 120,
) -> RunWatcher:
    """Follow the search or training run folder ``run_dir`` written by another process.

    ``watcher = watch("runs/search/teacher")``

    Live (a widget front end): shows the panel and follows the run in a background thread,
    polling every ``interval`` seconds until it ends, ``timeout`` seconds pass or Stop watching
    is pressed; returns at once. Headless: draws the current state once as static figures and
    returns; with ``timeout`` it follows the run first (blocking) until it ends or that time
    passes. ``live`` None decides by :func:`~optfusion_lab.widgets.has_widget_frontend`
    (``OPTFUSION_MONITOR=live|static`` forces it). See the module docstring.
    """
    live = has_widget_frontend() if live is None else bool(live)
    watcher = RunWatcher(run_dir, interval=interval, capacity=capacity,
                         static_points=static_points, live=live)
    if live:
        watcher.poll()  # the lines known now are drawn from this thread
        watcher.show()
        if not watcher.done:
            watcher.start(timeout)
        return watcher
    if timeout is not None:
        watcher.follow(timeout)
    else:
        watcher.poll()
    watcher.show()
    return watcher


__all__ = ["RunWatcher", "watch"]
