"""Cost of the OptFusion supernet and search, relative to the DCN baseline.

What it measures
----------------
On a synthetic Criteo-shaped dataset (39 fields; the project's generator, cached in
``benchmarks/_data/`` and prepared once), at one embedding dim and batch size:

1. Training throughput (samples/s of training steps only, steady state after warm-up) of
   - the ``dcn`` baseline (3 CrossNet-v1 layers beside an MLP 400-400-400),
   - the search supernet with all four operations (ADD, PROD, CONCAT, ATT), stepping the weight
     and the architecture optimizer on every batch, as the one-shot search does,
   - the supernet with ``att-lite`` (ATT with a rank-32 bottleneck, an option of ours) for ATT,
   - the supernet restricted to the cheap operations (ADD, PROD).
2. Search cost: wall seconds of ``optfusion_lab.search`` (to the genotype, validation
   included) against ``optfusion_lab.train.fit`` of the DCN for the same number of epochs (early
   stopping off, so every epoch runs), and the same for the cheap supernet.
3. Parameter shares of the supernet: embedding, blocks, CONCAT and ATT operations, output, at the
   benchmark's sizes and at the reference Criteo sizes (F = 39, D = 40, d = 1560; counted on the
   meta device, nothing allocated). ATT costs about 2 d^2 per input and CONCAT k d^2 per node.

CPU timings on a shared 2-core machine are noisy: the load average is printed with the figures;
compare numbers within one invocation only.

How to run
----------
::

    .venv/bin/python benchmarks/bench_search.py                  # 200k rows, D=16, batch 4096
    .venv/bin/python benchmarks/bench_search.py --rows 100000 --embed-dim 8 --epochs 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.loader import BatchLoader
from optfusion_lab.data.synthetic import generate, write
from optfusion_lab.fusion_search import SearchConfig, search
from optfusion_lab.models import ModelConfig, build_model
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig
from optfusion_lab.train import JointOptimizer, TrainConfig, fit, make_optimizer

DATA_DIR = Path(__file__).resolve().parent / "_data"
CHEAP = ("add", "prod")


def dataset(rows: int) -> PreparedData:
    DATA_DIR.mkdir(exist_ok=True)
    raw = DATA_DIR / f"criteo_{rows}rows_seed0_scale300.txt"
    if not raw.exists():
        write(generate("criteo", rows, seed=0, vocab_scale=300), raw)
    out = DATA_DIR / f"bench_search_{raw.stem}"
    prepare(raw, out, PrepareConfig("criteo"))
    return PreparedData.open(out)


def build(kind: str, data: PreparedData, embed_dim: int) -> tuple[torch.nn.Module, object]:
    cfg = TrainConfig(lr_emb=1e-3, lr_nn=1e-3, progress=False, device="cpu")
    if kind == "dcn":
        model = build_model("dcn", data.num_features, data.num_fields,
                            ModelConfig(embed_dim=embed_dim, mlp_dims=(400, 400, 400)))  # fmt: skip
        return model, make_optimizer(model, cfg)
    ops = {"supernet-cheap": CHEAP, "supernet-attlite": ("add", "prod", "concat", "att-lite")}.get(
        kind, ("add", "prod", "concat", "att")
    )
    net = FusionNetwork(data.num_features, data.num_fields,
                        SupernetConfig(embed_dim=embed_dim, operations=ops))  # fmt: skip
    arch = torch.optim.Adam([{"name": "architecture", "params": net.arch_parameters(),
                              "lr": 0.1}])  # fmt: skip
    return net, JointOptimizer(make_optimizer(net, cfg, net.weight_parameters()), arch)


def throughput(kind, data, embed_dim, batch_size, warmup, steps) -> tuple[float, int]:
    torch.manual_seed(0)
    model, optimizer = build(kind, data, embed_dim)
    x, y = data.arrays("train")
    loader = BatchLoader(x, y, batch_size, seed=0, drop_last=True)
    batches = iter(loader)
    model.train()
    started, done = None, 0
    for i in range(warmup + steps):
        try:
            xb, yb = next(batches)
        except StopIteration:
            batches = iter(loader)
            xb, yb = next(batches)
        if i == warmup:
            started = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += len(yb) if i >= warmup else 0
    params = sum(p.numel() for p in model.parameters())
    return done / (time.perf_counter() - started), params


def parameter_shares(num_features: int, num_fields: int, embed_dim: int) -> dict[str, int]:
    with torch.device("meta"):
        net = FusionNetwork(num_features, num_fields, SupernetConfig(embed_dim=embed_dim))
    shares = {"embedding": 0, "blocks": 0, "concat": 0, "att": 0, "output": 0}
    for name, p in net.named_parameters():
        if name.startswith("embedding"):
            shares["embedding"] += p.numel()
        elif name.startswith("blocks"):
            shares["blocks"] += p.numel()
        elif ".ops.concat." in name:
            shares["concat"] += p.numel()
        elif ".ops.att." in name:
            shares["att"] += p.numel()
        elif name.startswith("output"):
            shares["output"] += p.numel()
        # alpha and beta: a few dozen values, not shown
    return shares


def print_shares(title: str, shares: dict[str, int]) -> None:
    total = sum(shares.values())
    print(f"{title}: {total:,} parameters")
    for key, value in shares.items():
        print(f"  {key:<10}{value:>14,}  {value / total:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--embed-dim", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = dataset(args.rows)
    d = data.num_fields * args.embed_dim
    print(f"data: {args.rows:,} rows, F={data.num_fields}, {data.num_features:,} features; "
          f"D={args.embed_dim}, d={d}, batch {args.batch_size}, {args.threads} threads; "
          f"load {os.getloadavg()}")  # fmt: skip

    results = {"throughput": {}, "search_cost": {}}
    print("\n1. training throughput (steady state)")
    for kind in ("dcn", "supernet", "supernet-attlite", "supernet-cheap"):
        rate, params = throughput(kind, data, args.embed_dim, args.batch_size, args.warmup,
                                  args.steps)  # fmt: skip
        results["throughput"][kind] = {"samples_per_second": rate, "parameters": params}
    base = results["throughput"]["dcn"]["samples_per_second"]
    for kind, r in results["throughput"].items():
        print(f"  {kind:<16}{r['parameters']:>12,} params {r['samples_per_second']:>10,.0f} "
              f"samples/s  {r['samples_per_second'] / base:5.2f}x dcn")  # fmt: skip

    print(f"\n2. search cost ({args.epochs} epoch(s), validation included)")
    cfg = TrainConfig(epochs=args.epochs, patience=args.epochs + 1, batch_size=args.batch_size,
                      lr_emb=1e-3, lr_nn=1e-3, device="cpu", progress=False)  # fmt: skip
    torch.manual_seed(0)
    started = time.perf_counter()
    fit(build("dcn", data, args.embed_dim)[0], data, cfg)
    results["search_cost"]["dcn_train_seconds"] = time.perf_counter() - started
    for kind, ops in (("supernet", ("add", "prod", "concat", "att")), ("supernet-cheap", CHEAP)):
        supernet_cfg = SupernetConfig(embed_dim=args.embed_dim, operations=ops)
        result = search(data, supernet_cfg, dataclasses.replace(cfg), SearchConfig(arch_lr=0.1))
        results["search_cost"][f"{kind}_search_seconds"] = result.search_seconds
    dcn_seconds = results["search_cost"]["dcn_train_seconds"]
    for key, seconds in results["search_cost"].items():
        print(f"  {key:<30}{seconds:8.1f} s  {seconds / dcn_seconds:5.2f}x dcn training")

    print("\n3. supernet parameters by part")
    shares = parameter_shares(data.num_features, data.num_fields, args.embed_dim)
    print_shares(f"  at D={args.embed_dim}, d={d}", shares)
    reference = parameter_shares(6_800_000, 39, 40)  # Criteo after threshold 2: ~6.8M features
    print_shares("  at the reference Criteo sizes (F=39, D=40, d=1560, 6.8M features)", reference)
    results["parameter_shares"] = {"benchmark": shares, "criteo_reference": reference}
    results["load_after"] = os.getloadavg()
    print(f"\nload average after: {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
