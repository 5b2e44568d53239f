"""The notebook-facing API: lazy, torch-free imports from the package, and the library functions
the command line calls (prediction on a raw file, retrain defaults, search into a directory)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import DATA_SAMPLES

import optfusion_lab
from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.models import ModelConfig

CFG = optfusion_lab.TrainConfig(epochs=1, batch_size=1024, device="cpu", progress=False,
                                threads=1, lr_emb=3e-3, lr_nn=3e-3)
SUPERNET = optfusion_lab.SupernetConfig(embed_dim=4, num_layers=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> PreparedData:
    out = tmp_path_factory.mktemp("api") / "criteo"
    prepare(DATA_SAMPLES / "criteo_sample.txt.gz", out, PrepareConfig("criteo"))
    return PreparedData.open(out)


def test_the_package_exports_lazily_and_stays_torch_free_until_a_name_is_used():
    code = (
        "import sys\n"
        "import optfusion_lab\n"
        "from optfusion_lab import prepare, PrepareConfig, PreparedData\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "from optfusion_lab import fit_seeds, search, retrain, Genotype, SearchConfig\n"
        "assert 'torch' in sys.modules\n"
        "import optfusion_lab.fusion_search\n"
        "from optfusion_lab import search as again\n"
        "assert again is search and search.__name__ == 'search', search\n"
        "print(len(optfusion_lab.__all__))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        optfusion_lab.nothing_here  # noqa: B018
    assert set(optfusion_lab.__all__) <= set(dir(optfusion_lab))


@pytest.mark.parametrize("name", [n for n in optfusion_lab.__all__ if n != "__version__"])
def test_every_export_has_a_docstring_and_every_function_shows_one_call(name):
    value = getattr(optfusion_lab, name)
    assert inspect.getdoc(value), name
    if inspect.isfunction(value):  # the paragraph after the summary shows a call
        assert f"{name}(" in inspect.getdoc(value).split("\n\n")[1], name


def test_retrain_takes_a_search_result_and_returns_models_and_histories(data):
    result = optfusion_lab.search(data, SUPERNET, CFG)
    run = optfusion_lab.retrain(data, result, CFG, [0, 1], warm_start=True)
    assert run.seeds == [0, 1] and len(run.models) == 2
    assert all(isinstance(m, optfusion_lab.FusionNetwork) for m in run.models)
    assert list(run.history["seed"]) == [0, 1] and len(run.results[0].history) == 1
    assert run.frame["test_auc"].tolist() == [r.test_auc for r in run.results]
    scratch = optfusion_lab.retrain(data, result.genotype, CFG, [0])
    assert scratch.results[0].test_auc != run.results[0].test_auc  # warm start changed the init
    with pytest.raises(ValueError, match="warm_start=True takes the weights of a SearchResult"):
        optfusion_lab.retrain(data, result.genotype, CFG, [0], warm_start=True)


def test_search_takes_a_pre_built_network(data):
    torch.manual_seed(0)
    net = optfusion_lab.FusionNetwork(data.num_features, data.num_fields,
                                      SUPERNET)
    with torch.no_grad():
        net.alpha.fill_(2.0)  # another initialisation of the edges
    result = optfusion_lab.search(data, net, CFG)
    assert result.network is net
    assert result.history.query("when == 'start' and kind == 'alpha'")["value"].eq(2.0).all()


def test_predict_file_scores_a_raw_file_with_a_run(data, tmp_path):
    cfg = optfusion_lab.TrainConfig(**{**CFG.__dict__, "batch_size": 512})
    optfusion_lab.run_seeds("dcn", ModelConfig(embed_dim=4, mlp_dims=(16,), cross_layers=1), data,
                            cfg, [0], out_dir=tmp_path / "run")
    frame = optfusion_lab.predict_file(tmp_path / "run", DATA_SAMPLES / "criteo_sample.txt.gz",
                                       device="cpu", scratch_beside=tmp_path / "p.csv")
    assert len(frame) == sum(data.meta["num_rows"].values())
    assert frame["probability"].between(0, 1).all() and set(frame["label"]) == {0, 1}
    assert frame.attrs["model"] == "dcn" and 0.5 < frame.attrs["metrics"]["auc"] < 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no scratch is left


def test_retrain_defaults_come_from_the_search_run(data, tmp_path):
    cfg = optfusion_lab.TrainConfig(**{**CFG.__dict__, "batch_size": 512, "epochs": 2})
    result = optfusion_lab.search_run(tmp_path / "s", data, SUPERNET, cfg)
    assert result is not None and (tmp_path / "s" / "genotype.json").is_file()
    train_cfg, preset, config = optfusion_lab.retrain_defaults(data, "soft", tmp_path / "s")
    soft = optfusion_lab.get_search_preset(preset).retrain_soft
    assert (train_cfg.batch_size, train_cfg.epochs, train_cfg.lr_nn) == (512, 2, soft[0])
    assert config == json.loads((tmp_path / "s" / "config.json").read_text())
    default_cfg, _, none = optfusion_lab.retrain_defaults(data, "hard", tmp_path / "nowhere")
    assert none is None and default_cfg.batch_size == optfusion_lab.TrainConfig().batch_size
    assert optfusion_lab.search_run(tmp_path / "s", data, SUPERNET, cfg, resume=True) is None
    epochs = pd.read_csv(tmp_path / "s" / "epochs.csv")
    assert list(epochs["epoch"]) == list(range(1, result.fit.epochs_run + 1))


def test_one_run_configuration_gives_config_json_the_fingerprint_and_the_result_header(data,
                                                                                      tmp_path):
    from optfusion_lab.train import PRESENTATION_FIELDS, RunConfig

    model_cfg = ModelConfig(embed_dim=4, mlp_dims=(8,))
    optfusion_lab.run_seeds("dnn", model_cfg, data, CFG, [0], out_dir=tmp_path,
                            metadata={"preset": "tiny"})
    config = json.loads((tmp_path / "config.json").read_text())
    result = json.loads((tmp_path / "result.json").read_text())
    run_cfg = RunConfig.of(data, "dnn", model_cfg, CFG, preset="tiny")
    assert config == run_cfg.to_dict() and config["fingerprint"] == run_cfg.fingerprint()
    header = run_cfg.header()
    assert {k: result[k] for k in header} == header
    assert result["train_config"] == config["train"] and result["model_config"] == config[
        "model_config"]
    quiet = RunConfig.of(data, "dnn", model_cfg, optfusion_lab.TrainConfig(
        **{**CFG.__dict__, "progress": True, "threads": 2, "log_every": 7}))
    assert quiet.fingerprint() == run_cfg.fingerprint()  # presentation changes no result
    assert set(PRESENTATION_FIELDS) <= set(config["train"])
    faster = RunConfig.of(data, "dnn", model_cfg, optfusion_lab.TrainConfig(
        **{**CFG.__dict__, "lr_nn": 1e-2}))
    assert faster.fingerprint()["train"]["lr_nn"] == 1e-2 != run_cfg.fingerprint()["train"]["lr_nn"]
