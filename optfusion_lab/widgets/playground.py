"""The playground panel: choose data and search settings with widgets, press Run, watch.

In a notebook::

    playground = Playground()
    playground            # the panel: data sample, shallow block, layers, operations, alpha init,
                          # arch_lr, epochs, and Run
    # after a run, in a later cell
    playground.result     # the SearchResult of the last run that ended

**Run** prepares the chosen embedded sample (``data_samples/``) into ``cache_dir`` on first use
(:func:`optfusion_lab.experiments.prepared_data`; later runs reuse it), builds the search's
configurations from the ``tiny`` search preset with the chosen values
(:func:`optfusion_lab.experiments.search_configs`) and starts
:func:`~optfusion_lab.fusion_search.search` through :meth:`LiveMonitor.start
<optfusion_lab.widgets.LiveMonitor.start>`: with a widget front end the monitor's panel
appears under the controls and moves while the search runs in the background (its Stop button
ends it, the best state kept); headless (``live=False`` or
``OPTFUSION_MONITOR=static``) the click blocks until the search ends and static figures are
drawn. One run at a time, as for the monitor: Run while a run goes is refused with a message.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..names import ALL_OPERATIONS, OPERATIONS, SHALLOW_BLOCKS
from .monitor import LiveMonitor, RunInProgressError, has_widget_frontend

PLAYGROUND_DATASETS = ("teacher", "criteo", "avazu", "kdd12")  # the embedded samples


class Playground:
    """A panel of search settings with a Run button that starts a monitored search.

    ``Playground(cache_dir="runs/playground")``

    ``cache_dir``: where the samples are prepared (once each). ``samples_dir``: the embedded
    samples (default: the repository's ``data_samples/``). ``device``, ``threads``: as in
    :class:`~optfusion_lab.train.TrainConfig`. ``every``: the monitor reads the architecture
    every this many steps (and the search records it as often). ``live``: None decides by
    :func:`~optfusion_lab.widgets.has_widget_frontend`.

    The controls are attributes (``dataset``, ``shallow``, ``layers``, ``operations``,
    ``alpha_init``, ``arch_lr``, ``epochs``, ``run_button``); :meth:`configs` gives the
    configurations they describe, :meth:`run` does what the button does. After a run:
    ``handle`` (its :class:`~optfusion_lab.widgets.RunHandle`; ``handle.result()`` waits for a
    run in progress), ``result`` (the SearchResult of the last run that ended) and
    ``configs_used`` (the configurations it ran with).
    """

    def __init__(
        self,
        cache_dir: str | Path = "runs/playground",
        *,
        samples_dir: str | Path | None = None,
        device: str = "auto",
        threads: int | None = None,
        every: int = 5,
        live: bool | None = None,
    ):
        import ipywidgets as widgets

        self.cache_dir = Path(cache_dir)
        self.samples_dir = samples_dir
        self.device, self.threads, self.every = device, threads, every
        self.live = has_widget_frontend() if live is None else bool(live)
        self.monitor = LiveMonitor(every=every, live=self.live, title="playground")
        self.handle = None
        self.result = None
        self.configs_used: tuple | None = None
        self.message = ""

        style = {"description_width": "90px"}
        wide = widgets.Layout(width="330px")
        self.dataset = widgets.Dropdown(options=PLAYGROUND_DATASETS, value="teacher",
                                        description="data sample", style=style, layout=wide)
        self.shallow = widgets.Dropdown(options=SHALLOW_BLOCKS, value="cross",
                                        description="shallow block", style=style, layout=wide)
        self.layers = widgets.IntSlider(value=3, min=1, max=4, description="layers L",
                                        style=style, layout=wide)
        self.operations = widgets.SelectMultiple(options=ALL_OPERATIONS, value=OPERATIONS,
                                                 rows=len(ALL_OPERATIONS),
                                                 description="operations", style=style,
                                                 layout=wide)
        self.alpha_init = widgets.FloatSlider(value=0.5, min=-1.0, max=1.0, step=0.05,
                                              description="alpha init", style=style, layout=wide)
        self.arch_lr = widgets.FloatLogSlider(value=0.1, base=10, min=-3, max=0, step=0.1,
                                              description="arch_lr", readout_format=".3f",
                                              style=style, layout=wide)
        self.epochs = widgets.IntSlider(value=3, min=1, max=20, description="epochs",
                                        style=style, layout=wide)
        self.run_button = widgets.Button(description="Run", icon="play", button_style="success",
                                         tooltip="prepare the sample if needed and start the "
                                         "search with the live monitor")
        self.run_button.on_click(lambda _: self.run())
        self.status = widgets.HTML()
        self.output = widgets.Output()  # the monitor's panel and messages appear here
        controls = [self.dataset, self.shallow, self.layers, self.operations, self.alpha_init,
                    self.arch_lr, self.epochs]
        self.box = widgets.VBox([
            widgets.HBox([widgets.VBox(controls[:4]), widgets.VBox(controls[4:])]),
            widgets.HBox([self.run_button, self.status]),
            self.output,
        ])
        self.box.add_class("optfusion-playground")

    # ------------------------------------------------------------ what Run does

    def data(self):
        """The chosen sample, prepared into ``cache_dir/<dataset>`` on first use."""
        from ..experiments import prepared_data

        name = self.dataset.value
        return prepared_data(name, self.cache_dir / name, samples_dir=self.samples_dir)

    def configs(self):
        """(SupernetConfig, TrainConfig, SearchConfig) of the chosen values (the ``tiny``
        search preset for everything the panel does not set)."""
        from ..experiments import search_configs

        if not self.operations.value:
            raise ValueError("choose at least one operation")
        return search_configs(
            preset="tiny", num_layers=self.layers.value, shallow=self.shallow.value,
            operations=tuple(self.operations.value), alpha_init=self.alpha_init.value,
            arch_lr=self.arch_lr.value, epochs=self.epochs.value, history_every=self.every,
            device=self.device, threads=self.threads,
        )

    def run(self):
        """Start a search with the chosen values (what Run does); return its RunHandle, or
        None when it could not start (the reason is shown under the button and in
        ``message``)."""
        from ..fusion_search import search

        def playground_search(data, supernet_cfg, train_cfg, search_cfg, callbacks):
            result = search(data, supernet_cfg, train_cfg, search_cfg, callbacks=callbacks)
            self.result = result
            return result

        try:
            configs = self.configs()
            self._say("preparing the data sample ...")
            data = self.data()
            self._say(f"searching on {self.dataset.value} ...")
            self.configs_used = configs
            # Live: the panel goes under the controls. Headless: the static figures go to the
            # notebook itself (an Output widget would keep them in the widget state).
            with self.output if self.live else contextlib.nullcontext():
                self.handle = self.monitor.start(playground_search, data, *configs)
        except (RunInProgressError, ValueError, FileNotFoundError) as error:
            self._say(str(error), error=True)
            return None
        failed = self.handle.exception() if self.handle.done() else None
        if failed is not None:
            self._say(f"the search failed: {type(failed).__name__}: {failed}", error=True)
        else:
            self._say("" if self.live else self.monitor.summary())
        return self.handle

    def _say(self, text: str, error: bool = False) -> None:
        self.message = text
        colour = "#b00" if error else "#555"
        self.status.value = f'<span style="color:{colour}">{text}</span>' if text else ""

    # ------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<Playground {self.message or self.monitor.summary()}>"
