"""Notebook widgets: the live monitor of a search or training run, following a run folder, and
the playground panel (ipywidgets and plotly; a headless fallback draws static figures).

- :class:`LiveMonitor`: alpha and operation-weight plots that move while a run goes, progress,
  the latest loss and validation AUC, and a Stop button (the cooperative stop).
- :func:`watch`: the same panel following a run folder written by another process (the CLI on a
  GPU machine, another kernel), from its per-epoch files.
- :class:`Playground`: choose data and search settings with widgets, press Run, watch.
"""

from .monitor import (
    LiveMonitor,
    RunHandle,
    RunInProgressError,
    active_run,
    has_widget_frontend,
)
from .playground import Playground
from .watcher import RunWatcher, watch

__all__ = [
    "LiveMonitor",
    "Playground",
    "RunHandle",
    "RunInProgressError",
    "RunWatcher",
    "active_run",
    "has_widget_frontend",
    "watch",
]
