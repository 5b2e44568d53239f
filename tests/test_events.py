"""One event stream: what callbacks see, a failing monitor dropped once, files after each epoch."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
import torch
from conftest import DATA_SAMPLES

from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.fusion_search import SearchConfig, search
from optfusion_lab.models import ModelConfig, build_model
from optfusion_lab.models.supernet import SupernetConfig
from optfusion_lab.train import (
    Callback,
    EventStream,
    StopTraining,
    TrainConfig,
    TrainState,
    fit,
    run_seeds,
)

CFG = TrainConfig(epochs=2, patience=5, batch_size=512, device="cpu", progress=False, threads=1,
                  log_every=5, lr_emb=2e-3, lr_nn=1e-3, seed=3)
MODEL = ModelConfig(embed_dim=4, mlp_dims=(16,), cross_layers=1)
SUPERNET = SupernetConfig(embed_dim=4, num_layers=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> PreparedData:
    out = tmp_path_factory.mktemp("events") / "criteo"
    prepare(DATA_SAMPLES / "criteo_sample.txt.gz", out, PrepareConfig("criteo"))
    return PreparedData.open(out)


def model(data):
    torch.manual_seed(0)
    return build_model("dcn", data.num_features, data.num_fields, MODEL)


class Recorder(Callback):
    def __init__(self):
        self.events: list[str] = []
        self.steps: list[dict] = []
        self.epochs: list[dict] = []
        self.result = None

    def on_fit_start(self, state):
        self.events.append("start")

    def on_step(self, state):
        self.steps.append({"step": state.step, "loss": state.loss, "loss_step": state.loss_step,
                           "elapsed": state.elapsed_seconds})
        self.last = state

    def on_epoch_end(self, state):
        self.events.append("epoch")
        self.epochs.append({"epoch": state.epoch, "valid_auc": state.valid_auc,
                            "rows": len(state.history)})

    def on_fit_end(self, state, result):
        self.events.append("end")
        self.result = result


def test_the_state_carries_what_a_monitor_shows(data):
    recorder = Recorder()
    result = fit(model(data), data, CFG, [recorder])
    state: TrainState = recorder.last
    assert recorder.events == ["start", "epoch", "epoch", "end"] and recorder.result is result
    assert (state.seed, state.phase, state.epochs) == (3, "", 2)
    assert state.total_steps == 2 * state.steps_per_epoch
    assert state.learning_rates == {"embedding": 2e-3, "network": 1e-3}
    assert [e["rows"] for e in recorder.epochs] == [1, 2]
    assert [e["valid_auc"] for e in recorder.epochs] == list(result.history["valid_auc"])
    # the loss is read from the device on every 5th step only, and stays until the next one
    assert recorder.steps[0]["loss"] is None and recorder.steps[4]["loss_step"] == 5
    assert {s["loss_step"] for s in recorder.steps[4:]} <= set(range(5, 1000, 5))
    assert all(s["loss"] > 0 for s in recorder.steps[4:])
    elapsed = [s["elapsed"] for s in recorder.steps]
    assert elapsed == sorted(elapsed) and elapsed[-1] > 0


class Broken(Callback):
    def __init__(self):
        self.calls = 0

    def on_step(self, state):
        self.calls += 1
        raise ZeroDivisionError("a monitor bug")


def test_a_failing_monitor_is_reported_once_dropped_and_the_run_goes_on(data):
    broken, recorder = Broken(), Recorder()
    with pytest.warns(RuntimeWarning, match="Broken raised in on_step .*a monitor bug") as caught:
        result = fit(model(data), data, CFG, [broken, recorder])
    assert len([w for w in caught if "Broken" in str(w.message)]) == 1
    assert broken.calls == 1 and len(recorder.steps) == 2 * recorder.last.steps_per_epoch
    plain = fit(model(data), data, CFG)
    assert result.test_auc == plain.test_auc  # the monitor changed nothing


def test_a_monitor_dropped_in_one_phase_stays_dropped_in_the_next(data):
    broken = Broken()
    one_epoch = TrainConfig(**{**CFG.__dict__, "epochs": 1, "batch_size": 2048})
    stream = EventStream([broken])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = search(data, SUPERNET, one_epoch, SearchConfig(algorithm="sequential"), stream)
    assert list(result.phases) == ["connections", "operations"] and not result.stopped
    assert broken.calls == 1 and len([w for w in caught if "Broken" in str(w.message)]) == 1
    assert [type(cb) for cb, _ in stream.dropped] == [Broken]


def test_an_essential_callback_error_ends_the_run(data):
    class Essential(Broken):
        essential = True

    with pytest.raises(ZeroDivisionError):
        fit(model(data), data, CFG, [Essential()])


def test_architecture_snapshots_and_epochs_come_through_one_stream(data, tmp_path):
    class Monitor(Callback):
        def __init__(self):
            self.snapshots, self.phases, self.files = [], [], []

        def on_architecture(self, frame):
            self.snapshots.append(frame)

        def on_epoch_end(self, state):
            self.phases.append(state.phase)  # the run files already hold this epoch
            self.files.append((len(pd.read_csv(tmp_path / "epochs.csv")),
                               len(pd.read_csv(tmp_path / "history.csv"))))

    monitor, seen = Monitor(), []
    cfg = TrainConfig(**{**CFG.__dict__, "batch_size": 2048})
    result = search(data, SUPERNET, cfg, SearchConfig(history_every=2), [monitor],
                    listeners=[seen.append], live_dir=tmp_path)
    assert monitor.phases == ["one-shot", "one-shot"]
    pd.testing.assert_frame_equal(pd.concat(monitor.snapshots, ignore_index=True),
                                  result.history)
    assert len(seen) == len(monitor.snapshots)
    assert [f[0] for f in monitor.files] == [1, 2]  # epochs.csv: one row per finished epoch
    assert monitor.files[0][1] < monitor.files[1][1] == len(result.history)
    epochs = pd.read_csv(tmp_path / "epochs.csv")
    assert list(epochs.columns[:2]) == ["phase", "seed"] and list(epochs["epoch"]) == [1, 2]


def test_a_run_over_seeds_writes_its_history_after_every_epoch(data, tmp_path):
    class Reader(Callback):
        def __init__(self):
            self.rows = []

        def on_epoch_end(self, state):
            frame = pd.read_csv(tmp_path / "history.csv")
            self.rows.append(list(zip(frame["seed"], frame["epoch"], strict=True)))

    reader = Reader()
    run_seeds("dcn", MODEL, data, CFG, [0, 1], out_dir=tmp_path, callbacks=[reader])
    assert reader.rows == [[(0, 1)], [(0, 1), (0, 2)], [(0, 1), (0, 2), (1, 1)],
                           [(0, 1), (0, 2), (1, 1), (1, 2)]]
    assert not list(tmp_path.glob(".*tmp*"))  # no scratch file is left


def test_stop_training_from_an_architecture_listener_stops_the_search(data):
    def stop(frame):
        if (frame["when"] == "epoch").any():
            raise StopTraining("seen an epoch")

    cfg = TrainConfig(**{**CFG.__dict__, "epochs": 3, "batch_size": 2048})
    result = search(data, SUPERNET, cfg, SearchConfig(), listeners=[stop])
    assert result.stopped and result.stop_reason == "seen an epoch"
    assert result.fit.epochs_run == 1
