"""Training loop, presets, run directory and the train/predict command line, on the criteo sample.

Everything trains the ``tiny`` preset on the prepared 12k-row synthetic Criteo sample (9,600
training rows, 38 batches of 256 per epoch), on CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from optfusion_lab.cli import main
from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.models import MODELS, ModelConfig, build_model
from optfusion_lab.names import MODELS as MODEL_NAMES
from optfusion_lab.presets import (
    PRESETS,
    get_preset,
    resolve_preset,
    with_sizes,
)
from optfusion_lab.train import (
    HISTORY_COLUMNS,
    SUMMARY_METRICS,
    Callback,
    TrainConfig,
    TrainingDivergedError,
    evaluate,
    fit,
    make_optimizer,
    param_groups,
    run_seeds,
    seed_everything,
    summarize,
)
from optfusion_lab.train_cli import add_predict_parser, add_train_parser

REPO = Path(__file__).resolve().parents[1]
CRITEO_SAMPLE = REPO / "data_samples" / "criteo_sample.txt.gz"


@pytest.fixture(scope="session")
def criteo(tmp_path_factory) -> PreparedData:
    out = tmp_path_factory.mktemp("data") / "criteo"
    prepare(CRITEO_SAMPLE, out, PrepareConfig(dataset="criteo"))
    return PreparedData.open(out)


def tiny(model: str, data: PreparedData, **changes) -> tuple[ModelConfig, TrainConfig]:
    model_cfg, train_cfg = resolve_preset("tiny", model, data.meta)
    # one thread: small models gain nothing from more, and a shared machine makes spinning
    # OpenMP workers stall for seconds
    quiet = {"device": "cpu", "progress": False, "threads": 1}
    return model_cfg, dataclasses.replace(train_cfg, **{**quiet, **changes})


def built(model: str, data: PreparedData, model_cfg: ModelConfig, seed: int = 0):
    seed_everything(seed)
    return build_model(model, data.num_features, data.num_fields, model_cfg)


class StepLosses(Callback):
    needs_loss = True

    def __init__(self):
        self.losses: list[float] = []

    def on_step(self, state):
        self.losses.append(state.loss)


# --- learning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_baseline_learns_the_planted_structure(criteo, model):
    model_cfg, train_cfg = tiny(model, criteo, epochs=3, patience=3)
    losses = StepLosses()
    result = fit(built(model, criteo, model_cfg), criteo, train_cfg, [losses])
    steps = len(losses.losses)
    assert steps == 3 * 38 and result.epochs_run == 3
    first, last = np.mean(losses.losses[:10]), np.mean(losses.losses[-10:])
    assert last < first - 0.05, (first, last)
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]
    assert result.best_valid_auc > 0.65
    assert result.test_auc > 0.62
    assert list(result.history.columns) == list(HISTORY_COLUMNS)


def test_same_seed_same_metrics_other_seed_differs(criteo):
    model_cfg, train_cfg = tiny("dcn", criteo, epochs=1)
    frames = [run_seeds("dcn", model_cfg, criteo, train_cfg, [s]).frame for s in (3, 3, 4)]
    metrics = ["test_auc", "test_logloss", "best_valid_auc"]
    assert frames[0][metrics].equals(frames[1][metrics])
    assert (frames[0][metrics].to_numpy() != frames[2][metrics].to_numpy()).all()


def test_amp_is_ignored_on_cpu_and_progress_bars_do_not_change_results(criteo, capsys):
    model_cfg, train_cfg = tiny("dnn", criteo, epochs=1)
    plain = fit(built("dnn", criteo, model_cfg), criteo, train_cfg)
    other = dataclasses.replace(train_cfg, amp=True, progress=True)
    shown = fit(built("dnn", criteo, model_cfg), criteo, other)
    assert (shown.test_auc, shown.best_valid_auc) == (plain.test_auc, plain.best_valid_auc)
    assert "valid AUC" in capsys.readouterr().out  # the per-epoch line of the progress display
    assert plain.samples_per_second == pytest.approx(9600 / plain.train_seconds)


# --- early stopping ---------------------------------------------------------------------------


class SpoilFromEpoch2(Callback):
    """Keeps a copy of the weights at every epoch end; from epoch 2 on, zeroes the embedding
    after every step, so predictions are constant (valid AUC exactly 0.5)."""

    def __init__(self):
        self.copies: dict[int, dict[str, torch.Tensor]] = {}
        self.valid_auc: dict[int, float] = {}

    def on_step(self, state):
        if state.epoch >= 2:
            with torch.no_grad():
                state.model.embedding.table.weight.zero_()

    def on_epoch_end(self, state):
        self.copies[state.epoch] = {k: v.clone() for k, v in state.model.state_dict().items()}
        self.valid_auc[state.epoch] = state.valid_auc


@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_restores_the_best_epoch(criteo, patience):
    model_cfg, train_cfg = tiny("dnn", criteo, epochs=5, patience=patience)
    spoil = SpoilFromEpoch2()
    model = built("dnn", criteo, model_cfg)
    result = fit(model, criteo, train_cfg, [spoil])

    assert result.epochs_run == 1 + patience == len(result.history)
    assert result.best_epoch == 1
    history = result.history
    assert history["valid_auc"].iloc[1:].eq(0.5).all()
    assert history["valid_auc"].iloc[0] > 0.5
    assert int(history.loc[history["valid_auc"].idxmax(), "epoch"]) == result.best_epoch
    assert result.best_valid_auc == history["valid_auc"].max() == spoil.valid_auc[1]

    restored = model.state_dict()
    best, last = spoil.copies[1], spoil.copies[result.epochs_run]
    assert all(torch.equal(restored[k], best[k]) for k in best)
    assert not torch.equal(restored["embedding.table.weight"], last["embedding.table.weight"])
    x_test, y_test = criteo.arrays("test")
    assert evaluate(model, x_test, y_test)["auc"] == pytest.approx(result.test_auc, abs=1e-12)


# --- divergence -------------------------------------------------------------------------------


class NanAtStep(Callback):
    def __init__(self, step: int):
        self.step = step
        self.seen: list[int] = []

    def on_step(self, state):
        self.seen.append(state.step)
        if state.step == self.step:
            with torch.no_grad():
                state.model.embedding.table.weight.fill_(float("nan"))


@pytest.mark.parametrize("check_every", [5, 1000])
def test_nan_loss_raises_naming_the_first_bad_step(criteo, check_every):
    model_cfg, train_cfg = tiny("dnn", criteo, nan_check_every=check_every, lr_emb=2e-3)
    inject = NanAtStep(3)  # weights NaN after step 3 -> the loss of step 4 is NaN
    with pytest.raises(TrainingDivergedError, match=r"step 4 \(epoch 1, batch 4\)") as info:
        fit(built("dnn", criteo, model_cfg), criteo, train_cfg, [inject])
    assert info.value.step == 4
    assert info.value.learning_rates == {"embedding": 2e-3, "network": 1e-3}
    assert "embedding 0.002, network 0.001" in str(info.value)
    # checked every 5 steps: raised at step 5, before its callbacks; else at the epoch's end
    assert max(inject.seen) == (4 if check_every == 5 else 38)


def test_huge_learning_rate_diverges(criteo):
    model_cfg, train_cfg = tiny("deepfm", criteo, lr_emb=1e10, lr_nn=1e10)
    with pytest.raises(TrainingDivergedError, match="1e\\+10"):
        fit(built("deepfm", criteo, model_cfg), criteo, train_cfg)


# --- optimizer groups -------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_param_groups_partition_the_parameters(criteo, model):
    model_cfg, train_cfg = tiny(model, criteo, lr_emb=2e-3, l2_emb=1e-6, l2_nn=3e-6)
    net = built(model, criteo, model_cfg)
    groups = make_optimizer(net, train_cfg).param_groups
    assert [g["name"] for g in groups] == ["embedding", "network"]
    assert (groups[0]["lr"], groups[0]["weight_decay"]) == (2e-3, 1e-6)
    assert (groups[1]["lr"], groups[1]["weight_decay"]) == (1e-3, 3e-6)
    ids = [[id(p) for p in g["params"]] for g in groups]
    everything = [id(p) for p in net.parameters()]
    assert sorted(ids[0] + ids[1]) == sorted(everything)  # each parameter exactly once
    assert {id(p) for p in net.embedding.parameters()} <= set(ids[0])
    if hasattr(net, "linear"):  # DeepFM, xDeepFM: first-order table with the embeddings
        assert id(net.linear.weight.table.weight) in ids[0]
        assert id(net.linear.bias) in ids[1]
        assert len(ids[0]) == 2
    else:
        assert len(ids[0]) == 1
    subset = [p for p in net.parameters() if p is not net.embedding.table.weight]
    restricted = param_groups(net, train_cfg, parameters=subset)  # e.g. weight_parameters()
    assert id(net.embedding.table.weight) not in {id(p) for g in restricted for p in g["params"]}
    assert sum(len(g["params"]) for g in restricted) == len(subset)


# --- run directory ----------------------------------------------------------------------------


def test_run_seeds_writes_a_complete_run_directory(criteo, tmp_path):
    model_cfg, train_cfg = tiny("dcnv2-parallel", criteo, epochs=1)
    out = tmp_path / "run"
    frame, summary = run_seeds(
        "dcnv2-parallel", model_cfg, criteo, train_cfg, [7, 8], out_dir=out,
        metadata={"preset": "tiny"},
    )
    assert frame["seed"].tolist() == [7, 8]
    result = json.loads((out / "result.json").read_text())
    for key in ("model", "dataset", "data_dir", "seeds", "device", "model_config",
                "train_config", "versions", "num_parameters"):
        assert key in result, key
    assert (result["model"], result["dataset"], result["seeds"]) == ("dcnv2-parallel", "criteo",
                                                                     [7, 8])
    assert Path(result["data_dir"]) == criteo.directory.resolve()
    assert result["device"] == "cpu"
    assert result["model_config"] == json.loads(json.dumps(dataclasses.asdict(model_cfg)))
    assert result["train_config"]["batch_size"] == 256
    assert set(result["versions"]) >= {"torch", "numpy", "sklearn", "optfusion_lab"}
    assert result["metadata"] == {"preset": "tiny"}
    for metric in SUMMARY_METRICS:
        entry = result[metric]
        assert set(entry) == {"mean", "std", "per_seed"}
        assert entry["per_seed"] == pytest.approx(frame[metric].tolist())
        assert entry["mean"] == pytest.approx(np.mean(entry["per_seed"]))
        assert entry["std"] == pytest.approx(np.std(entry["per_seed"], ddof=1))
        assert summary[metric] == entry
    assert result["test_auc"]["std"] > 0

    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["seed", *HISTORY_COLUMNS]
    assert history["seed"].tolist() == [7, 8]

    # every model.pt loads with weights_only=True into a fresh model and reproduces its test AUC
    x_test, y_test = criteo.arrays("test")
    for path, seed_index in ((out / "model.pt", 0), (out / "seed_7" / "model.pt", 0),
                             (out / "seed_8" / "model.pt", 1)):
        fresh = built("dcnv2-parallel", criteo, model_cfg, seed=123)
        fresh.load_state_dict(torch.load(path, weights_only=True))
        auc = evaluate(fresh, x_test, y_test)["auc"]
        assert auc == pytest.approx(result["test_auc"]["per_seed"][seed_index], abs=1e-12)
    assert not list(out.rglob(".*tmp*"))  # atomic writes left no temporary files


def test_one_seed_has_zero_std_and_no_seed_dirs(criteo, tmp_path):
    assert summarize([0.7]) == {"mean": 0.7, "std": 0.0, "per_seed": [0.7]}
    assert summarize([1.0, 3.0])["std"] == pytest.approx(np.sqrt(2.0))  # sample std
    model_cfg, train_cfg = tiny("dnn", criteo, epochs=1)
    run_seeds("dnn", model_cfg, criteo, train_cfg, [0], out_dir=tmp_path)
    assert (tmp_path / "model.pt").is_file() and not list(tmp_path.glob("seed_*"))
    assert json.loads((tmp_path / "result.json").read_text())["test_auc"]["std"] == 0.0


def test_fit_rejects_a_prediction_only_dataset(criteo, tmp_path):
    rows = gzip.open(CRITEO_SAMPLE, "rt").read().splitlines()[:20]
    raw = tmp_path / "few.tsv"
    raw.write_text("\n".join(rows) + "\n")
    prepare(raw, tmp_path / "enc", PrepareConfig(dataset="criteo"), vocab_from=criteo.directory)
    encoded = PreparedData.open(tmp_path / "enc")
    model_cfg, train_cfg = tiny("dnn", criteo)
    with pytest.raises(ValueError, match="train/valid/test"):
        fit(built("dnn", criteo, model_cfg), encoded, train_cfg)


def test_train_config_is_frozen_and_validated():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.patience, cfg.device) == (5, 4096, 1, "auto")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]
    for bad in ({"device": "tpu"}, {"patience": 0}, {"lr_nn": 0.0}, {"l2_emb": -1.0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


# --- presets ----------------------------------------------------------------------------------


def test_preset_model_names_match_the_registry():
    assert MODEL_NAMES == tuple(MODELS)
    for preset in PRESETS.values():
        assert tuple(preset.learning_rates) == MODEL_NAMES


@pytest.mark.parametrize(
    ("preset", "fields", "model", "embed_dim", "lr", "l2"),
    [
        ("criteo", 39, "xdeepfm", 40, 3e-3, 3e-7),
        ("criteo", 39, "dcn", 40, 2e-3, 3e-6),
        ("avazu", 24, "edcn", 40, 3e-3, 1e-9),
        ("avazu", 24, "dcnv2-stacked", 40, 3e-4, 3e-6),
        ("kdd12", 11, "deepfm", 16, 3e-5, 1e-5),
        ("kdd12", 11, "edcn", 16, 1e-3, 0.0),
    ],
)
def test_dataset_presets_carry_the_reference_values(preset, fields, model, embed_dim, lr, l2):
    meta = {"dataset": preset, "num_fields": fields}
    model_cfg, train_cfg = resolve_preset(preset, model, meta)
    d = fields * embed_dim
    assert model_cfg.embed_dim == embed_dim
    assert model_cfg.mlp_dims == (d, d, d)
    assert model_cfg.cin_sizes == (fields, fields, fields)
    assert (train_cfg.lr_emb, train_cfg.lr_nn) == (lr, lr)
    assert (train_cfg.l2_emb, train_cfg.l2_nn) == (l2, l2)
    assert (train_cfg.batch_size, train_cfg.epochs, train_cfg.patience) == (4096, 5, 1)


def test_preset_errors_and_size_overrides(criteo):
    with pytest.raises(ValueError, match="valid presets: criteo, avazu, kdd12, tiny"):
        get_preset("huge")
    with pytest.raises(ValueError, match="valid models: dnn, ipnn"):
        resolve_preset("tiny", "widedeep", criteo.meta)
    with pytest.raises(ValueError, match="meant for avazu data"):
        resolve_preset("avazu", "dnn", criteo.meta)
    model_cfg, _ = resolve_preset(with_sizes(get_preset("criteo"), embed_dim=8), "dnn",
                                  criteo.meta)
    assert model_cfg.mlp_dims == (39 * 8,) * 3  # d follows the embedding dim
    model_cfg, train_cfg = resolve_preset("tiny", "dnn", criteo.meta)
    assert (model_cfg.embed_dim, model_cfg.mlp_dims, model_cfg.cross_layers) == (4, (32, 32), 2)
    assert (train_cfg.batch_size, train_cfg.lr_nn) == (256, 1e-3)


# --- command line -----------------------------------------------------------------------------


def test_parsers_register_on_any_subparsers():
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_predict_parser(sub)
    args = parser.parse_args(["train", "--data", "d", "--model", "dnn", "--out", "o",
                              "--mlp", "8", "4", "--seeds", "1", "2", "--lr", "0.01"])
    assert (args.mlp, args.seeds, args.lr, args.device) == ([8, 4], [1, 2], 0.01, "auto")


def test_train_help_lists_models_and_presets(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in (*MODEL_NAMES, *PRESETS):
        assert name in text, name


def test_cli_does_not_import_torch_to_build_parsers():
    code = (
        "import sys, optfusion_lab.cli as c; c.build_parser(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "widedeep"], "unknown model 'widedeep'; valid models: dnn, ipnn"),
        (["--model", "dnn", "--preset", "huge"], "unknown preset 'huge'; valid presets"),
    ],
)
def test_cli_unknown_names_exit_2(criteo, tmp_path, capsys, extra, message):
    code = main(["train", "--data", str(criteo.directory), "--out", str(tmp_path / "r"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_cli_missing_or_incomplete_data_exits_2(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "nowhere"), "--model", "dnn",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "not a prepared dataset" in err and err.count("\n") == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text(json.dumps({"dataset": "criteo"}))
    code = main(["train", "--data", str(broken), "--model", "dnn", "--out", str(tmp_path / "r")])
    assert code == 2 and "incomplete meta.json" in capsys.readouterr().err


def test_cli_train_then_predict_labelled_and_unlabelled(criteo, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(criteo.directory), "--model", "deepfm", "--out", str(run),
                 "--preset", "tiny", "--epochs", "1", "--seeds", "5", "--device", "cpu",
                 "--embed-dim", "3", "--mlp", "16", "--lr", "0.002", "--no-progress",
                 "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "test AUC" in printed and "+- 0.00000" in printed
    result = json.loads((run / "result.json").read_text())
    assert result["model_config"]["embed_dim"] == 3 and result["model_config"]["mlp_dims"] == [16]
    assert result["train_config"]["lr_emb"] == result["train_config"]["lr_nn"] == 0.002
    assert result["seeds"] == [5] and result["metadata"]["preset"] == "tiny"

    rows = [line.split("\t") for line in gzip.open(CRITEO_SAMPLE, "rt").read().splitlines()[:25]]
    labelled = tmp_path / "labelled.tsv"
    labelled.write_text("".join("\t".join(r) + "\n" for r in rows))
    unlabelled = tmp_path / "unlabelled.tsv"  # Criteo's test layout: 39 columns, no label
    unlabelled.write_text("".join("\t".join(r[1:]) + "\n" for r in rows))

    frames = {}
    for name, path in (("labelled", labelled), ("unlabelled", unlabelled)):
        out = tmp_path / "preds" / f"{name}.csv"
        assert main(["predict", "--run", str(run), "--input", str(path), "--out", str(out),
                     "--device", "cpu"]) == 0
        frames[name] = pd.read_csv(out)
        assert not list(out.parent.glob(".*"))  # no scratch or temporary files left
    assert "25 rows scored" in capsys.readouterr().out
    assert list(frames["labelled"].columns) == ["probability", "label"]
    assert list(frames["unlabelled"].columns) == ["probability"]
    assert frames["labelled"]["label"].tolist() == [int(r[0]) for r in rows]
    for frame in frames.values():
        assert len(frame) == 25 and frame["probability"].between(0, 1).all()
    np.testing.assert_allclose(frames["labelled"]["probability"],
                               frames["unlabelled"]["probability"])  # labels do not matter
    assert frames["labelled"]["probability"].std() > 0


def test_cli_predict_without_a_run_exits_2(tmp_path, capsys):
    code = main(["predict", "--run", str(tmp_path), "--input", str(CRITEO_SAMPLE),
                 "--out", str(tmp_path / "p.csv")])
    assert code == 2 and "no result.json" in capsys.readouterr().err
