"""DistributedDataParallel on CPU (gloo): gradients equal one process with the whole batch."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig

F, D, N, BATCH = 5, 3, 50, 16


def supernet() -> FusionNetwork:
    torch.manual_seed(0)
    net = FusionNetwork(N, F, SupernetConfig(embed_dim=D))
    with torch.no_grad():  # some edges off, so gates and dead nodes take part
        net.alpha.copy_(torch.linspace(-0.5, 1.0, len(net.alpha)))
    return net


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, N, (BATCH, F), generator=g), torch.randint(0, 2, (BATCH,), generator=g)


def gradients(net: FusionNetwork) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in net.named_parameters()}


def _rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    net = supernet()
    model = DistributedDataParallel(net)
    x, y = batch()
    half = BATCH // world
    part = slice(rank * half, (rank + 1) * half)
    logits = model(x[part])
    torch.nn.functional.binary_cross_entropy_with_logits(logits, y[part].float()).backward()
    torch.save(gradients(net), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_gradients_equal_single_process_gradients(tmp_path):
    net = supernet()
    x, y = batch()
    torch.nn.functional.binary_cross_entropy_with_logits(net(x), y.float()).backward()
    expected = gradients(net)
    assert expected["alpha"].abs().sum() > 0 and expected["beta"].abs().sum() > 0

    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, rtol=0, atol=1e-6, msg=name)


def test_torchrun_two_process_search_writes_one_genotype(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import DATA_SAMPLES

    from optfusion_lab.data import PrepareConfig, prepare
    from optfusion_lab.io import MARKER
    from optfusion_lab.models.genotype import Genotype

    data = tmp_path / "teacher"
    prepare(DATA_SAMPLES / "teacher_kdd12.tsv.gz", data, PrepareConfig("kdd12"))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "optfusion_lab.cli", "search", "--data", str(data), "--out", str(run),
               "--preset", "tiny", "--epochs", "1", "--device", "cpu", "--threads", "1",
               "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("Genotype v1") == 1  # only rank 0 reports and writes
    Genotype.load(run / "genotype.json")
    result = json.loads((run / "result.json").read_text())
    assert 0.5 < result["test_auc"]["mean"] < 1.0 and 0.5 < result["best_valid_auc"]["mean"]
    hidden = sorted(p.name for p in run.iterdir() if p.name.startswith("."))
    assert hidden == [MARKER]  # the output's marker, and no scratch files
