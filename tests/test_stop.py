"""A cooperative stop: a callback (or Ctrl-C) ends fit, a search, and runs over seeds cleanly."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DATA_SAMPLES

from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.fusion_search import SearchConfig, retrain, search, search_seeds
from optfusion_lab.models import ModelConfig, build_model
from optfusion_lab.models.supernet import SupernetConfig
from optfusion_lab.train import Callback, StopTraining, TrainConfig, fit, fit_seeds, run_seeds

CFG = TrainConfig(epochs=3, patience=5, batch_size=512, device="cpu", progress=False, threads=1)
MODEL = ModelConfig(embed_dim=4, mlp_dims=(16,), cross_layers=1)
SUPERNET = SupernetConfig(embed_dim=4, num_layers=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> PreparedData:
    out = tmp_path_factory.mktemp("stop") / "criteo"
    prepare(DATA_SAMPLES / "criteo_sample.txt.gz", out, PrepareConfig("criteo"))
    return PreparedData.open(out)


class StopAt(Callback):
    """Ask to stop at ``step`` of ``epoch`` of the ``call``-th fit it sees (1-based)."""

    def __init__(self, epoch: int, step_in_epoch: int = 2, call: int = 1, raising: bool = False):
        self.epoch, self.step_in_epoch = epoch, step_in_epoch
        self.call, self.raising = call, raising
        self.fits = 0
        self.steps_after_stop = 0
        self.asked = False

    def on_step(self, state):
        if (state.step - 1) % state.steps_per_epoch == 0 and state.epoch == 1:
            self.fits += 1  # the first step of a fit
        if self.asked:
            self.steps_after_stop += 1
        at = (state.step - 1) % state.steps_per_epoch + 1
        if self.fits == self.call and state.epoch == self.epoch and at == self.step_in_epoch:
            self.asked = True
            if self.raising:
                raise StopTraining("enough")
            state.request_stop("enough")


def model(data, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("dcn", data.num_features, data.num_fields, MODEL)


@pytest.mark.parametrize("raising", [False, True])
def test_a_callback_stops_fit_after_the_current_step_and_the_best_epoch_is_tested(data, raising):
    stop = StopAt(epoch=2, raising=raising)
    stopped_model = model(data)
    result = fit(stopped_model, data, CFG, [stop])
    assert result.stopped and result.stop_reason == "enough" and not result.interrupted
    assert stop.steps_after_stop == 0  # no step ran after the request
    assert result.epochs_run == 1 and result.best_epoch == 1  # the unfinished epoch is dropped
    one_epoch = model(data)
    reference = fit(one_epoch, data, TrainConfig(**{**CFG.__dict__, "epochs": 1}))
    assert result.test_auc == reference.test_auc and result.test_note == ""
    for key, value in one_epoch.state_dict().items():
        assert torch.equal(value, stopped_model.state_dict()[key]), key


def test_a_stop_at_epoch_end_keeps_that_epoch_and_its_checkpoint(data, tmp_path):
    class StopAtEpochEnd(Callback):
        def on_epoch_end(self, state):
            raise StopTraining(f"seen epoch {state.epoch}")

    path = tmp_path / "checkpoint.pt"
    result = fit(model(data), data, CFG, [StopAtEpochEnd()], checkpoint=path)
    assert result.stopped and result.stop_reason == "seen epoch 1" and result.epochs_run == 1
    assert torch.load(path, weights_only=True)["loop"]["epoch"] == 1
    assert 0.5 < result.test_auc < 1


def test_a_stop_before_the_first_epoch_ends_returns_without_metrics(data):
    result = fit(model(data), data, CFG, [StopAt(epoch=1)])
    assert result.stopped and result.epochs_run == 0 and len(result.history) == 0
    assert result.test_auc != result.test_auc and "first epoch" in result.test_note


def test_fit_seeds_starts_no_seed_after_a_stop_and_says_what_the_summary_covers(data, tmp_path):
    stop = StopAt(epoch=2, call=2)  # in the second seed's second epoch
    run = run_seeds("dcn", MODEL, data, CFG, [5, 6, 7], out_dir=tmp_path, callbacks=[stop])
    assert run.seeds == [5, 6] and run.requested_seeds == [5, 6, 7]
    assert run.stopped and run.stop_reason == "enough" and run.finished_seeds == [5]
    assert run.summary["test_auc"]["per_seed"] == [run.results[0].test_auc]
    assert run.summary["test_auc"]["mean"] == run.results[0].test_auc  # not NaN
    assert len(run.models) == 2 and list(run.history["seed"].unique()) == [5, 6]
    frame, summary = run  # unpacks as before
    assert list(frame["seed"]) == [5, 6] and summary is run.summary
    document = json.loads((tmp_path / "result.json").read_text())
    assert document["stopped"] and document["seeds_finished"] == [5]
    assert document["seeds_requested"] == [5, 6, 7]
    assert document["summary_covers"] == "1 finished seed(s) of 3 requested"
    assert not (tmp_path / "seed_7").exists()


def test_a_stop_ends_every_phase_of_a_search_and_every_further_seed(data):
    one_epoch = TrainConfig(**{**CFG.__dict__, "epochs": 1, "batch_size": 1024})
    sequential = SearchConfig(algorithm="sequential", history_every=5)
    result = search(data, SUPERNET, one_epoch, sequential, [StopAt(epoch=1, step_in_epoch=3)])
    assert result.stopped and list(result.phases) == ["connections"]

    seen = []
    results, stability = search_seeds(data, SUPERNET, one_epoch, SearchConfig(history_every=5),
                                      [1, 2, 3], callbacks=[StopAt(epoch=1, call=2)],
                                      on_result=lambda s, r: seen.append(s))
    assert seen == [1, 2] and [r.stopped for r in results] == [False, True]
    assert stability["seeds"] == [1] and stability["seeds_requested"] == [1, 2, 3]

    run = retrain(data, results[0].genotype, one_epoch, [0, 1], callbacks=[StopAt(epoch=1)])
    assert run.seeds == [0] and run.stopped and run.finished_seeds == []
    assert run.summary["test_auc"]["per_seed"] == []


def test_fit_seeds_with_a_stopped_first_seed_has_an_empty_summary(data):
    build = lambda: model(data)  # noqa: E731
    run = fit_seeds(build, {"model": "dcn", "model_config": {}}, data, CFG, [0, 1],
                    callbacks=[StopAt(epoch=1)])
    assert run.seeds == [0] and run.summary["test_auc"]["per_seed"] == []
