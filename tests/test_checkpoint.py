"""Checkpoints: atomic, code-free, resumable to the identical result; interrupts keep the best."""

from __future__ import annotations

import pytest
import torch
from conftest import DATA_SAMPLES

from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.models import ModelConfig, build_model
from optfusion_lab.train import Callback, TrainConfig, fit, load_checkpoint

CFG = TrainConfig(epochs=3, patience=5, batch_size=512, device="cpu", progress=False, threads=1)
MODEL = ModelConfig(embed_dim=4, mlp_dims=(16,), cross_layers=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> PreparedData:
    out = tmp_path_factory.mktemp("ckpt") / "criteo"
    prepare(DATA_SAMPLES / "criteo_sample.txt.gz", out, PrepareConfig("criteo"))
    return PreparedData.open(out)


def model(data):
    torch.manual_seed(0)
    return build_model("dcn", data.num_features, data.num_fields, MODEL)


class InterruptAt(Callback):
    """Raise KeyboardInterrupt at the first step of ``epoch`` (as Ctrl-C would)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_step(self, state):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


class StepCounter(Callback):
    """A callback with state, which a checkpoint must carry."""

    def __init__(self):
        self.steps = 0

    def on_step(self, state):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_resume_after_an_interrupt_equals_an_uninterrupted_run(data, tmp_path):
    full_model, full_counter = model(data), StepCounter()
    full = fit(full_model, data, CFG, [full_counter])

    path = tmp_path / "checkpoint.pt"
    first_model = model(data)
    partial = fit(first_model, data, CFG, [StepCounter(), InterruptAt(2)], checkpoint=path,
                  fingerprint={"data": "x"})
    assert partial.interrupted and partial.stopped and partial.epochs_run == 1
    assert partial.stop_reason == "KeyboardInterrupt"
    assert 0.5 < partial.test_auc < 1  # the best epoch so far is tested
    document = torch.load(path, weights_only=True)  # readable without running code
    assert document["loop"]["epoch"] == 1

    counter = StepCounter()
    resumed_model = model(data)
    resumed = fit(resumed_model, data, CFG, [counter], checkpoint=path, resume=True,
                  fingerprint={"data": "x"})
    assert not resumed.interrupted
    assert resumed.history.drop(columns=["seconds", "train_seconds"]).equals(
        full.history.drop(columns=["seconds", "train_seconds"])
    )
    assert (resumed.test_auc, resumed.best_epoch) == (full.test_auc, full.best_epoch)
    assert counter.steps == full_counter.steps
    for key, value in full_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key


def test_interrupt_leaves_the_best_weights_in_the_model(data, tmp_path):
    m = model(data)
    result = fit(m, data, CFG, [InterruptAt(3)])
    assert result.interrupted and result.epochs_run == 2
    reference = model(data)
    best = fit(reference, data, TrainConfig(**{**CFG.__dict__, "epochs": 2}))
    assert result.best_epoch == best.best_epoch  # the same two epochs, so the same best
    assert result.test_auc == best.test_auc  # tested like a run that ended by itself
    for key, value in reference.state_dict().items():
        assert torch.equal(value, m.state_dict()[key]), key


def test_interrupt_before_the_first_epoch_ends_returns_a_stopped_result(data):
    result = fit(model(data), data, CFG, [InterruptAt(1)])
    assert result.interrupted and result.epochs_run == 0 and result.best_epoch == 0
    assert result.test_auc != result.test_auc  # NaN, and the note says why
    assert "before the first epoch ended" in result.test_note


def test_resume_with_other_options_is_an_error(data, tmp_path):
    path = tmp_path / "checkpoint.pt"
    fit(model(data), data, CFG, [InterruptAt(2)], checkpoint=path, fingerprint={"lr": 1e-3})
    with pytest.raises(ValueError, match="other data or options .*lr: 0.001 then, 0.002 now"):
        fit(model(data), data, CFG, checkpoint=path, resume=True, fingerprint={"lr": 2e-3})
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(path, {})


def test_a_checkpoint_from_before_an_added_option_resumes_at_that_options_old_value(data, tmp_path):
    """A fingerprint stored before ``embedding_update`` existed matches a run at "dense" (what
    every earlier run did) and not one at "sparse"; any other missing option is a difference."""
    path = tmp_path / "checkpoint.pt"
    old = {"train": {"lr_nn": 1e-3}, "search": {"arch_lr": 0.1}}
    fit(model(data), data, CFG, [InterruptAt(2)], checkpoint=path, fingerprint=old)
    dense = {"train": {"lr_nn": 1e-3, "embedding_update": "dense"},
             "search": {"arch_lr": 0.1, "settle_steps": None}}
    assert load_checkpoint(path, dense)["loop"]["epoch"] == 1
    sparse = {**dense, "train": {**dense["train"], "embedding_update": "sparse"}}
    with pytest.raises(ValueError, match="train: "):
        load_checkpoint(path, sparse)
    other = {**dense, "train": {**dense["train"], "amp_dtype": "bf16"}}
    with pytest.raises(ValueError, match="train: "):
        load_checkpoint(path, other)
