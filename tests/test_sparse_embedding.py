"""The sparse embedding update: only the rows a batch touches change, with coupled L2 on them."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import DATA_SAMPLES
from torch import nn

from optfusion_lab import distributed
from optfusion_lab.cli import main
from optfusion_lab.components.embedding import set_sparse_gradients
from optfusion_lab.cost import training_step_optimizer
from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.models import MODELS, ModelConfig, build_model
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig
from optfusion_lab.train import Callback, TrainConfig, fit, make_optimizer
from optfusion_lab.train.optim import LazyAdam, embedding_parameters, touched_row_l2

N, F = 60, 4  # features, fields
SMALL = ModelConfig(embed_dim=3, mlp_dims=(8,), cross_layers=1, cin_sizes=(F,))
CFG = TrainConfig(epochs=3, patience=5, batch_size=256, device="cpu", progress=False, threads=1,
                  lr_emb=1e-2, lr_nn=1e-2)


def labels(rows: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 2, (rows,), generator=torch.Generator().manual_seed(seed)).float()


def step(model, optimizer, ids: torch.Tensor, seed: int, y: torch.Tensor | None = None) -> None:
    y = labels(len(ids), seed) if y is None else y
    loss = nn.functional.binary_cross_entropy_with_logits(model(ids), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def tables(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in embedding_parameters(model)]


def changes(before: list[torch.Tensor], after: list[torch.Tensor], rows: slice) -> list[float]:
    """The largest change of ``rows`` in each table."""
    return [float((b[rows] - a[rows]).abs().max()) for b, a in zip(before, after, strict=True)]


def batch_in(low: int, high: int, rows: int = 16, seed: int = 0) -> torch.Tensor:
    """Ids drawn from [low, high) only."""
    return torch.randint(low, high, (rows, F), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", MODELS)
def test_sparse_step_leaves_rows_outside_the_batch_exactly_as_they_were(name):
    """Step 1 touches rows [0, 20), step 2 rows [20, 40); rows [40, 60) are never touched.
    Sparse: after step 2, the rows of step 1 and the untouched rows are bit-identical to before
    it. Dense: Adam's momentum moves the rows of step 1 again, and coupled L2 moves every row."""
    moved = {}
    for update in ("dense", "sparse"):
        torch.manual_seed(0)
        model = build_model(name, N, F, SMALL)
        optimizer = make_optimizer(model, TrainConfig(embedding_update=update, l2_emb=1e-2))
        step(model, optimizer, batch_in(0, 20), seed=1)
        before = tables(model)
        step(model, optimizer, batch_in(20, 40, seed=2), seed=2)
        after = tables(model)
        earlier, never, touched = (changes(before, after, slice(*rows))
                                   for rows in ((0, 20), (40, 60), (20, 40)))
        moved[update] = (max(earlier), max(never), min(touched))
    assert moved["sparse"][0] == 0.0 and moved["sparse"][1] == 0.0
    assert moved["dense"][0] > 0 and moved["dense"][1] > 0
    assert moved["sparse"][2] > 0 and moved["dense"][2] > 0  # the batch's rows learn either way


def test_sparse_path_uses_sparse_gradients_for_every_table_and_dense_adam_for_the_network():
    torch.manual_seed(0)
    model = build_model("deepfm", N, F, SMALL)  # two tables: the embedding, the first order
    optimizer = make_optimizer(model, TrainConfig(embedding_update="sparse", lr_emb=2e-3,
                                                  l2_emb=1e-4, lr_nn=5e-4, l2_nn=1e-5))
    embedding, network = optimizer.optimizers
    assert isinstance(embedding, LazyAdam) and type(network) is torch.optim.Adam
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
        ("embedding", 2e-3, 1e-4), ("network", 5e-4, 1e-5)]
    assert len(embedding.param_groups[0]["params"]) == 2
    model(batch_in(0, N)).sum().backward()
    assert all(p.grad.is_sparse for p in embedding.param_groups[0]["params"])
    assert not any(p.grad.is_sparse for p in network.param_groups[0]["params"])
    make_optimizer(model, TrainConfig())  # the dense path switches the tables back
    model.zero_grad(set_to_none=True)
    model(batch_in(0, N)).sum().backward()
    assert not any(p.grad.is_sparse for p in embedding_parameters(model))


def test_touched_row_l2_equals_the_closed_form():
    """grad + c * w_r on each distinct touched row r (once, however often r occurs), zero
    elsewhere: the gradient of loss + c/2 * sum over distinct rows of ||w_r||^2."""
    torch.manual_seed(0)
    weight = torch.randn(N, 5)
    ids = torch.tensor([[3, 7, 7, 1], [7, 3, 50, 2]])  # duplicates, and rows never touched
    c = 0.3
    dense = nn.Parameter(weight.clone())
    rows = ids.unique()
    target = torch.randn(2, 4, 5)
    loss = (nn.functional.embedding(ids, dense) * target).sum()
    (loss + c / 2 * dense[rows].pow(2).sum()).backward()
    expected = dense.grad

    sparse = nn.Parameter(weight.clone())
    (nn.functional.embedding(ids, sparse, sparse=True) * target).sum().backward()
    got = touched_row_l2(sparse.grad, sparse, c)
    assert got.is_coalesced() and got.indices()[0].tolist() == rows.tolist()
    torch.testing.assert_close(got.to_dense(), expected, rtol=0, atol=1e-6)
    closed_form = torch.zeros(N, 5)
    for r in rows.tolist():  # written out row by row
        occurrences = (ids == r).nonzero().tolist()
        closed_form[r] = sum(target[i, j] for i, j in occurrences) + c * weight[r]
    torch.testing.assert_close(got.to_dense(), closed_form, rtol=0, atol=1e-6)
    assert touched_row_l2(sparse.grad, sparse, 0.0).to_dense().equal(sparse.grad.to_dense())


def test_lazy_adam_equals_dense_adam_with_coupled_l2_when_every_row_is_touched():
    """When every batch touches every row, the lazy update is Adam itself: same weights as
    torch.optim.Adam(weight_decay=c) step after step, up to where eps enters (SparseAdam adds
    it before the bias correction of the second moment, Adam after). Without the L2 they
    differ by far more."""
    torch.manual_seed(0)
    start = torch.randn(N, 3)
    ids = [torch.randperm(N).reshape(-1, F) for _ in range(4)]  # each batch: every row once
    results = {}
    for kind in ("dense", "sparse", "sparse-no-l2"):
        weight = nn.Parameter(start.clone())
        decay = 0.0 if kind == "sparse-no-l2" else 0.1
        if kind == "dense":
            optimizer = torch.optim.Adam([weight], lr=1e-2, weight_decay=decay)
        else:
            optimizer = LazyAdam([{"params": [weight], "lr": 1e-2, "weight_decay": decay}])
        for batch in ids:
            optimizer.zero_grad(set_to_none=True)
            lookup = nn.functional.embedding(batch, weight, sparse=kind != "dense")
            (lookup.sum(-1).sigmoid()).pow(2).sum().backward()
            optimizer.step()
        results[kind] = weight.detach()
    torch.testing.assert_close(results["sparse"], results["dense"], rtol=0, atol=1e-5)
    assert (results["sparse-no-l2"] - results["dense"]).abs().max() > 1e-3


def test_lazy_adam_without_l2_equals_torch_sparse_adam():
    """LazyAdam is SparseAdam's update done with index operations: the same weights and
    state, on batches with repeated rows and rows left out."""
    torch.manual_seed(0)
    start = torch.randn(N, 3)
    batches = [torch.randint(0, N // (k + 1), (8, F)) for k in range(5)]
    weights, states = {}, {}
    for kind in ("torch", "lazy"):
        weight = nn.Parameter(start.clone())
        optimizer = (torch.optim.SparseAdam([weight], lr=1e-2) if kind == "torch"
                     else LazyAdam([weight], lr=1e-2))
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            nn.functional.embedding(batch, weight, sparse=True).sin().sum().backward()
            optimizer.step()
        weights[kind], states[kind] = weight.detach(), optimizer.state[weight]
    torch.testing.assert_close(weights["lazy"], weights["torch"], rtol=0, atol=1e-6)
    assert states["lazy"]["step"] == states["torch"]["step"] == 5
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(states["lazy"][key], states["torch"][key], rtol=0, atol=1e-6)


def test_lazy_adam_names_the_fix_for_dense_gradients():
    torch.manual_seed(0)
    model = build_model("dnn", N, F, SMALL)
    optimizer = make_optimizer(model, TrainConfig(embedding_update="sparse"))
    set_sparse_gradients(model, False)
    model(batch_in(0, N)).sum().backward()
    with pytest.raises(RuntimeError, match="set_sparse_gradients"):
        optimizer.step()


def test_embedding_update_is_validated():
    with pytest.raises(ValueError, match="embedding_update must be one of dense, sparse"):
        TrainConfig(embedding_update="lazy")


def test_supernet_search_step_updates_only_the_touched_rows():
    torch.manual_seed(0)
    net = FusionNetwork(N, F, SupernetConfig(embed_dim=3, operations=("add", "prod")))
    optimizer = training_step_optimizer(net, TrainConfig(embedding_update="sparse", l2_emb=1e-2))
    alpha, before = net.alpha.detach().clone(), tables(net)
    step(net, optimizer, batch_in(0, 30), seed=1)
    (after,) = tables(net)
    assert after[30:].equal(before[0][30:]) and not after[:30].equal(before[0][:30])
    assert not net.alpha.detach().equal(alpha)  # the architecture optimizer stepped too


def test_sparse_step_under_bf16_autocast():
    """The library's autocast is bf16 on CUDA (no GradScaler: bf16 needs none). The lookup is
    not on autocast's cast lists, so the table and its sparse gradient stay float32; the CPU
    autocast shows the same here."""
    torch.manual_seed(0)
    model = build_model("dcn", N, F, SMALL)
    optimizer = make_optimizer(model, TrainConfig(embedding_update="sparse", l2_emb=1e-3))
    before = tables(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch_in(0, 30))
    nn.functional.binary_cross_entropy_with_logits(logits.float(), torch.ones(16)).backward()
    grad = model.embedding.table.weight.grad
    assert grad.is_sparse and grad.dtype == torch.float32
    optimizer.step()
    (after,) = tables(model)
    assert after[30:].equal(before[0][30:]) and torch.isfinite(after).all()


# --- training runs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def criteo(tmp_path_factory) -> PreparedData:
    out = tmp_path_factory.mktemp("sparse") / "criteo"
    prepare(DATA_SAMPLES / "criteo_sample.txt.gz", out, PrepareConfig("criteo"))
    return PreparedData.open(out)


def dcn(data: PreparedData):
    torch.manual_seed(0)
    return build_model("dcn", data.num_features, data.num_fields,
                       ModelConfig(embed_dim=4, mlp_dims=(32,), cross_layers=2))


def test_dcn_learns_with_the_sparse_update(criteo):
    cfg = TrainConfig(epochs=4, patience=2, batch_size=256, device="cpu", progress=False,
                      threads=1, embedding_update="sparse", l2_emb=1e-6, l2_nn=1e-6)
    result = fit(dcn(criteo), criteo, cfg)
    assert result.best_valid_auc > 0.6 and result.test_auc > 0.6


class InterruptAt(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_step(self, state):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


def test_resume_with_the_sparse_update_equals_an_uninterrupted_run(criteo, tmp_path):
    """The checkpoint carries LazyAdam's state (step and both moments of every row)."""
    cfg = TrainConfig(epochs=3, patience=5, batch_size=256, device="cpu", progress=False,
                      threads=1, embedding_update="sparse", l2_emb=1e-4)
    whole = fit(dcn(criteo), criteo, cfg)
    path = tmp_path / "checkpoint.pt"
    stopped = fit(dcn(criteo), criteo, cfg, [InterruptAt(2)], checkpoint=path)
    assert stopped.stopped and stopped.epochs_run == 1
    state = torch.load(path, weights_only=True)["optimizer"][0]["state"]
    assert state[0]["step"] > 0 and state[0]["exp_avg_sq"].shape[0] == criteo.num_features
    model = dcn(criteo)
    resumed = fit(model, criteo, cfg, checkpoint=path, resume=True)
    assert resumed.resumed_from_epoch == 1
    assert resumed.history["valid_auc"].tolist() == whole.history["valid_auc"].tolist()
    assert resumed.test_auc == whole.test_auc


def test_cli_train_and_search_record_the_sparse_update(criteo, teacher_dir, tmp_path, capsys):
    run = tmp_path / "train"
    assert main(["train", "--data", str(criteo.directory), "--model", "dcn", "--out", str(run),
                 "--preset", "tiny", "--epochs", "1", "--seeds", "0", "--device", "cpu",
                 "--no-progress", "--threads", "1", "--embedding-update", "sparse"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["train_config"]["embedding_update"] == "sparse"
    assert result["metadata"]["arguments"]["embedding_update"] == "sparse"

    search = tmp_path / "search"
    args = ["search", "--data", str(teacher_dir), "--out", str(search), "--preset", "tiny",
            "--epochs", "2", "--device", "cpu", "--threads", "1", "--no-progress",
            "--operations", "add,prod"]
    assert main([*args, "--embedding-update", "sparse"]) == 0
    result = json.loads((search / "result.json").read_text())
    config = json.loads((search / "config.json").read_text())
    assert result["train_config"]["embedding_update"] == "sparse"
    assert config["fingerprint"]["train"]["embedding_update"] == "sparse"
    assert result["test_auc"]["mean"] > 0.6  # the teacher's planted signal is learned
    capsys.readouterr()
    assert main([*args, "--resume", "--embedding-update", "sparse"]) == 0  # nothing to resume
    assert main([*args, "--resume"]) == 2  # dense now: the resume fingerprint has the option
    assert "other data or options" in capsys.readouterr().err


# --- DistributedDataParallel -------------------------------------------------------------


def _rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    model = build_model("deepfm", N, F, SMALL)
    optimizer = make_optimizer(model, TrainConfig(embedding_update="sparse", l2_emb=1e-2))
    ids = batch_in(0, 40, rows=16)
    part = slice(rank * len(ids) // world, (rank + 1) * len(ids) // world)
    step(DistributedDataParallel(model), optimizer, ids[part], seed=1, y=labels(len(ids), 1)[part])
    torch.save(tables(model), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_gloo_sparse_step_equals_one_process_with_the_whole_batch(tmp_path):
    """DDP all-reduces the sparse gradients (gloo has a sparse all-reduce): every rank ends
    with the weights of one process stepping on the whole batch (the touched-row L2 acts on
    the union of the ranks' rows, as it does there), and rows no rank touched stay put."""
    torch.manual_seed(0)
    model = build_model("deepfm", N, F, SMALL)
    start = tables(model)
    optimizer = make_optimizer(model, TrainConfig(embedding_update="sparse", l2_emb=1e-2))
    # each rank's loss is the mean over its half and DDP averages them: the whole batch's mean
    step(model, optimizer, batch_in(0, 40, rows=16), seed=1)
    expected = tables(model)

    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for g, e, s in zip(got, expected, start, strict=True):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-6)
            assert g[40:].equal(s[40:])


def test_sparse_update_under_nccl_is_a_clear_error_at_setup(monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    torch.manual_seed(0)
    model = build_model("dcn", N, F, SMALL)
    with pytest.raises(ValueError, match="--embedding-update sparse .* nccl backend"):
        make_optimizer(model, TrainConfig(embedding_update="sparse"))
    make_optimizer(model, TrainConfig())  # the dense path runs under NCCL
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    distributed.check_embedding_update("sparse")
