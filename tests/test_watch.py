"""watch(RUN_DIR): following run folders as other processes write them, driven by poll()."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.fusion_search import (
    SearchConfig,
    architecture_rows,
    search_run,
    search_seeds,
)
from optfusion_lab.io import SEARCH_RUN, claim_output_folder, write_csv
from optfusion_lab.models import ModelConfig
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig
from optfusion_lab.train import Callback, TrainConfig, run_seeds
from optfusion_lab.widgets import RunWatcher, watch

SUPERNET = SupernetConfig(embed_dim=2, num_layers=1)
TRAIN = TrainConfig(epochs=2, batch_size=2048, lr_emb=3e-3, lr_nn=3e-3, device="cpu",
                    progress=False, threads=1, seed=0)
SEARCH = SearchConfig(arch_lr=0.1, history_every=3)


class PollAtEpochEnd(Callback):
    """Polls the watcher after every epoch, once the run's own files for it are written (the
    run's file writers are called before the other callbacks)."""

    def __init__(self, watcher: RunWatcher):
        self.watcher = watcher
        self.seen: list[dict] = []

    def on_epoch_end(self, state) -> None:
        monitor = self.watcher.monitor
        self.seen.append({
            "changed": self.watcher.poll(), "done": self.watcher.done,
            "status": self.watcher.status, "epochs": len(monitor.epochs),
            "weights": monitor.weights.offered if monitor.weights is not None else 0,
            "alpha_x": monitor.alpha.arrays()[0] if monitor.alpha is not None else None,
        })


@pytest.fixture(scope="module")
def teacher(teacher_dir) -> PreparedData:
    return PreparedData.open(teacher_dir)


@pytest.fixture(scope="module")
def watched_search(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("watched") / "search"
    watcher = RunWatcher(out, live=False)
    before = (watcher.poll(), watcher.status, watcher.message)
    poller = PollAtEpochEnd(watcher)
    result = search_run(out, teacher, SUPERNET, TRAIN, SEARCH, callbacks=[poller])
    return out, watcher, poller.seen, before, result


def snapshots_of(history: pd.DataFrame) -> pd.DataFrame:
    return history.groupby(["phase", "step", "when"], sort=False).size()


def test_the_figure_data_gains_points_as_the_epochs_of_a_search_appear(watched_search):
    out, watcher, seen, before, result = watched_search
    assert before[0] is False and before[1] == "waiting" and "does not exist yet" in before[2]
    assert [s["epochs"] for s in seen] == list(range(1, result.fit.epochs_run + 1))
    assert all(s["changed"] and not s["done"] and s["status"] == "running" for s in seen)
    weights = [s["weights"] for s in seen]
    assert weights == sorted(set(weights)) and weights[0] > 1  # more points at every epoch
    assert len(seen[-1]["alpha_x"]) > len(seen[0]["alpha_x"])

    assert watcher.poll() and watcher.done and watcher.status == "finished"  # result.json
    assert not watcher.poll()  # polling has stopped
    monitor = watcher.monitor
    history = result.history
    assert monitor.weights.offered == len(snapshots_of(history))
    alpha = history[history.kind == "alpha"]
    edges = list(zip(alpha.input, alpha.node, strict=True))[: len(result.network.graph.edges)]
    assert list(monitor.structure[0]) == edges == list(result.network.graph.edges)
    steps, values = monitor.alpha.arrays()
    last = alpha[alpha.step == alpha.step.max()].groupby(["input", "node"], sort=False).tail(1)
    assert steps[-1] == history.step.max() and np.allclose(values[-1], last.value)
    assert [e["valid_auc"] for e in monitor.epochs] == pytest.approx(
        result.fit.history["valid_auc"].tolist())
    figures = watcher.figures()
    assert len(figures["alpha"].data) == len(edges) and "fusion graph" in figures
    assert list(figures["metrics"].data[2].y) == pytest.approx(
        result.fit.history["valid_auc"].tolist())


def test_a_search_over_seeds_continues_the_steps_seed_after_seed(teacher, tmp_path):
    out = tmp_path / "seeds"
    watcher = RunWatcher(out, live=False)
    poller = PollAtEpochEnd(watcher)
    train = dataclasses.replace(TRAIN, epochs=1)
    results, stability = search_seeds(teacher, SUPERNET, train, SEARCH, seeds=[1, 0],
                                      out_dir=out, callbacks=[poller])
    assert [s["epochs"] for s in poller.seen] == [1, 2] and not poller.seen[-1]["done"]
    assert watcher.poll() and watcher.done and sorted(watcher.result["seeds"]) == [0, 1]
    first_steps = results[0].history.step.max()  # seed 1 ran first
    assert watcher.monitor.boundaries == [(float(first_steps), "seed 0")]
    assert [e["label"] for e in watcher.monitor.epochs] == ["one-shot seed 1", "one-shot seed 0"]
    assert watcher.monitor.epochs[1]["step"] == first_steps + results[1].history.step.max()


def test_watch_follows_a_training_run_over_epochs_and_seeds(teacher, tmp_path):
    out = tmp_path / "train"
    watcher = RunWatcher(out, live=False)
    poller = PollAtEpochEnd(watcher)
    run = run_seeds("dnn", ModelConfig(embed_dim=2, mlp_dims=(8,)), teacher, TRAIN, seeds=[0, 1],
                    out_dir=out, callbacks=[poller])
    runs = [r.epochs_run for r in run.results]
    assert [s["epochs"] for s in poller.seen] == list(range(1, sum(runs) + 1))
    assert watcher.poll() and watcher.done and watcher.status == "finished"
    monitor = watcher.monitor
    assert monitor.structure == () and monitor.alpha is None  # no architecture in a train run
    assert [e["step"] for e in monitor.epochs] == list(range(1, sum(runs) + 1))
    assert monitor.boundaries == [(runs[0] + 0.5, "seed 1")]
    assert [e["valid_auc"] for e in monitor.epochs] == pytest.approx(
        run.history["valid_auc"].tolist())
    assert watcher.figures()["metrics"].layout.xaxis.title.text == "epoch"


def test_a_missing_folder_is_waited_for_and_a_wrong_one_is_a_clear_error(tmp_path, capsys,
                                                                         teacher_dir):
    missing = tmp_path / "not-yet"
    watcher = watch(missing, live=False)  # headless: draws the current state once
    assert not watcher.done and watcher.status == "waiting"
    assert f"{missing} does not exist yet" in capsys.readouterr().out
    missing.mkdir()
    assert not watcher.poll() and "is empty" in watcher.message
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    with pytest.raises(ValueError, match="not an optfusion-lab run folder"):
        RunWatcher(tmp_path / "notes").poll()
    with pytest.raises(ValueError, match="prepared data, not a search or training run"):
        RunWatcher(teacher_dir).poll()


def write_snapshots(out, net, steps, epochs_at=()):
    """history.csv with a snapshot at each of ``steps`` (epoch-end records at ``epochs_at``)."""
    rows = []
    for step in steps:
        rows += architecture_rows(net, "one-shot", step, 1, "step")
        if step in epochs_at:
            rows += architecture_rows(net, "one-shot", step, epochs_at.index(step) + 1, "epoch")
    write_csv(out / "history.csv", pd.DataFrame(rows))


EPOCH_COLUMNS = ["phase", "seed", "epoch", "train_loss", "valid_auc", "valid_logloss",
                 "seconds", "train_seconds"]


def write_epochs(out, count):
    rows = [("one-shot", 0, e, 0.5, 0.6 + e / 100, 0.4, 1.0, 0.8) for e in range(1, count + 1)]
    write_csv(out / "epochs.csv", pd.DataFrame(rows, columns=EPOCH_COLUMNS))


def test_files_written_step_by_step_unchanged_files_and_a_reused_folder(tmp_path):
    torch.manual_seed(0)
    net = FusionNetwork(50, 3, SupernetConfig(embed_dim=2, num_layers=1))
    out = claim_output_folder(tmp_path / "run", SEARCH_RUN)
    watcher = RunWatcher(out, live=True)
    view = watcher.monitor._live_view()
    assert not watcher.poll() and watcher.message == "waiting for the first epoch"
    write_epochs(out, 1)  # epochs.csv of epoch 1 is there, its history.csv not yet
    assert not watcher.poll() and watcher.monitor.epochs == []
    write_snapshots(out, net, [0, 3, 6], epochs_at=(6,))
    assert watcher.poll() and [e["step"] for e in watcher.monitor.epochs] == [6]
    assert list(view.figures["alpha"].data[0].x) == [0, 3, 6, 6]  # the live figure moved
    reads = watcher.reads
    assert not watcher.poll() and watcher.reads == reads  # nothing changed: nothing read
    write_snapshots(out, net, [0, 3, 6, 9, 12], epochs_at=(6, 12))
    write_epochs(out, 2)
    assert watcher.poll() and list(view.figures["alpha"].data[0].x) == [0, 3, 6, 6, 9, 12, 12]
    write_snapshots(out, net, [0, 3], epochs_at=())  # a new run in the same folder
    write_epochs(out, 0)
    assert watcher.poll() and watcher.monitor.weights.offered == 2
    assert watcher.monitor.epochs == [] and not watcher.done


def test_live_watch_follows_in_a_background_thread_until_stopped(watched_search):
    out = watched_search[0]
    watcher = watch(out, live=True, interval=3600)  # one poll, then the thread waits
    assert watcher.done and watcher.status == "finished" and not watcher.watching
    assert len(watcher.monitor._view.figures["alpha"].data[0].x) > 1
    assert watcher.panel.children  # the panel, Stop watching instead of Stop
    assert watcher.monitor._view.button.description == "Stop watching"
    running = RunWatcher(out.parent / "elsewhere", interval=3600, live=True).start()
    assert running.watching
    running.panel  # noqa: B018 (builds the view)
    running.monitor._view.button.click()  # Stop watching
    assert running.wait(timeout=60) is False and not running.watching
    assert "not watching" in running.monitor.summary()
