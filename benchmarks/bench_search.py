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
2. Search cost: wall seconds of ``optfusion_lab.fusion_search.search`` (to the genotype, validation
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

from optfusion_lab.cost import step_seconds, supernet_parameters
from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.synthetic import generate, write
from optfusion_lab.fusion_search import SearchConfig, search
from optfusion_lab.models import ModelConfig, build_model
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig
from optfusion_lab.train import TrainConfig, fit

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


def build(kind: str, data: PreparedData, embed_dim: int) -> torch.nn.Module:
    if kind == "dcn":
        return build_model("dcn", data.num_features, data.num_fields,
                           ModelConfig(embed_dim=embed_dim, mlp_dims=(400, 400, 400)))
    ops = {"supernet-cheap": CHEAP, "supernet-attlite": ("add", "prod", "concat", "att-lite")}.get(
        kind, ("add", "prod", "concat", "att")
    )
    return FusionNetwork(data.num_features, data.num_fields,
                         SupernetConfig(embed_dim=embed_dim, operations=ops))


def throughput(kind, data, embed_dim, batch_size, warmup, steps) -> tuple[float, int]:
    """Training samples per second of one step (the search's joint step for a supernet), as
    measured by the library's :func:`optfusion_lab.cost.step_seconds`."""
    torch.manual_seed(0)
    model = build(kind, data, embed_dim)
    seconds = step_seconds(model, data, batch_size=batch_size, warmup=warmup, steps=steps,
                           arch_lr=0.1)
    return batch_size / seconds, sum(p.numel() for p in model.parameters())


def parameter_shares(num_features: int, num_fields: int, embed_dim: int) -> dict[str, int]:
    """The supernet's parameters by part (:func:`optfusion_lab.cost.supernet_parameters`),
    without the parameter-free operations and the few dozen architecture values."""
    parts = supernet_parameters(num_features, num_fields, SupernetConfig(embed_dim=embed_dim))
    return {k: v for k, v in parts.items() if k not in ("add", "prod", "architecture")}


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
          f"load {os.getloadavg()}")

    results = {"throughput": {}, "search_cost": {}}
    print("\n1. training throughput (steady state)")
    for kind in ("dcn", "supernet", "supernet-attlite", "supernet-cheap"):
        rate, params = throughput(kind, data, args.embed_dim, args.batch_size, args.warmup,
                                  args.steps)
        results["throughput"][kind] = {"samples_per_second": rate, "parameters": params}
    base = results["throughput"]["dcn"]["samples_per_second"]
    for kind, r in results["throughput"].items():
        print(f"  {kind:<16}{r['parameters']:>12,} params {r['samples_per_second']:>10,.0f} "
              f"samples/s  {r['samples_per_second'] / base:5.2f}x dcn")

    print(f"\n2. search cost ({args.epochs} epoch(s), validation included)")
    cfg = TrainConfig(epochs=args.epochs, patience=args.epochs + 1, batch_size=args.batch_size,
                      lr_emb=1e-3, lr_nn=1e-3, device="cpu", progress=False)
    torch.manual_seed(0)
    started = time.perf_counter()
    fit(build("dcn", data, args.embed_dim), data, cfg)
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
