"""The playground panel without a browser: set the widgets, click Run, get a search result."""

from __future__ import annotations

import pytest

from optfusion_lab.fusion_search import SearchResult
from optfusion_lab.widgets import Playground


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("playground")


def choose(playground: Playground) -> None:
    playground.dataset.value = "teacher"
    playground.shallow.value = "crossv2"
    playground.layers.value = 1
    playground.operations.value = ("add", "prod")
    playground.alpha_init.value = 0.25
    playground.arch_lr.value = 0.05
    playground.epochs.value = 1


def test_run_headless_searches_with_the_chosen_values(cache, monkeypatch):
    monkeypatch.setenv("OPTFUSION_MONITOR", "static")
    playground = Playground(cache, device="cpu", threads=1)
    assert not playground.live and playground.result is None
    choose(playground)
    playground.run_button.click()  # headless: blocks until the search ends
    assert playground.handle.done() and not playground.handle.stopped, playground.message
    result = playground.result
    assert isinstance(result, SearchResult) and result is playground.handle.result()
    supernet_cfg, train_cfg, search_cfg = playground.configs_used
    assert (supernet_cfg.shallow, supernet_cfg.num_layers, supernet_cfg.operations,
            supernet_cfg.alpha_init) == ("crossv2", 1, ("add", "prod"), 0.25)
    assert train_cfg.epochs == 1 and search_cfg.arch_lr == pytest.approx(0.05)
    assert result.network.cfg == supernet_cfg and result.fit.epochs_run == 1
    assert (cache / "teacher" / "meta.json").is_file()  # prepared on demand, into the cache
    assert playground.monitor.status == "finished" and "finished" in playground.message
    assert len(playground.monitor.figures()["alpha"].data) == len(result.network.graph.edges)


def test_a_choice_that_cannot_run_is_a_message_under_the_button(cache, monkeypatch):
    monkeypatch.setenv("OPTFUSION_MONITOR", "static")
    playground = Playground(cache)
    playground.operations.value = ()
    playground.run_button.click()
    assert playground.handle is None and playground.result is None
    assert "choose at least one operation" in playground.message
    assert "choose at least one operation" in playground.status.value


def test_run_live_starts_the_search_in_the_background_with_the_monitor(cache):
    playground = Playground(cache, device="cpu", threads=1, live=True)
    choose(playground)
    playground.run_button.click()  # returns at once; the search runs in a thread
    handle = playground.handle
    result = handle.result(timeout=600)
    assert playground.result is result and playground.monitor.status == "finished"
    assert playground.monitor._view is not None  # the live panel was built (in the output)
    alpha = playground.monitor._view.figures["alpha"].data
    assert len(alpha) == len(result.network.graph.edges) and len(alpha[0].x) > 1
