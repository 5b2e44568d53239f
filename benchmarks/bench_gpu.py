"""Training throughput on a CUDA GPU: DCN and the supernet, fp32 and bf16, dense and sparse.

What it measures
----------------
On synthetic Criteo-shaped data generated on the device (39 fields, ``--rows`` rows, default
4M, over ``--features`` feature ids, default 10M, about full Criteo's 6.8M after the threshold;
skewed ids, random labels: throughput does not depend on what is learned), at embedding dim
``--embed-dim`` (16: d = 624) and batch ``--batch-size`` (4096), for every combination of

- model: ``dcn`` (``optfusion_lab.cost.reference_dcn_config``: 3 CrossNet-v1 layers beside an
  MLP of three layers of width d), ``supernet-cheap`` (ADD, PROD) and ``supernet`` (ADD, PROD,
  CONCAT, ATT), the latter two stepping the weight and the architecture optimizer as the
  one-shot search does (``optfusion_lab.cost.training_step_optimizer``);
- precision: fp32, and bf16 autocast (``TrainConfig.amp``, the library's ``autocast``);
- embedding update: ``dense`` (the reference) and, when the library has it
  (``TrainConfig.embedding_update``, detected at run time), ``sparse``; otherwise the sparse
  rows are skipped with a note;

it reports steady-state training samples/s (the library's ``train_step`` on batches drawn from
the on-device rows, after warm-up, synchronised), the peak GPU memory of the configuration
(``torch.cuda.max_memory_allocated``), the matmul FLOPs of one step (forward and backward,
``torch.utils.flop_counter.FlopCounterMode``) and their rate as a fraction of a measured
(B x d) @ (d x d) matmul rate of the same dtype on the same GPU, in the same run.

Without CUDA it prints that it measured nothing and exits 0 (with ``--json``, a document with
``"skipped": "no CUDA"``, which ``run_all.py`` reports as skipped). ``--device cpu`` runs the
same code on the CPU at toy sizes, to check the script itself.

How to run
----------
::

    .venv/bin/python benchmarks/bench_gpu.py --json gpu.json         # a few minutes on a GPU
    .venv/bin/python benchmarks/bench_gpu.py --quick                  # 1M rows, 1M features
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --rows 20k --features 50k --embed-dim 4
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_support import machine, parse_size, record, write_report  # noqa: E402

from optfusion_lab.cost import reference_dcn_config, training_step_optimizer  # noqa: E402
from optfusion_lab.models import build_model  # noqa: E402
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig  # noqa: E402
from optfusion_lab.train import TrainConfig  # noqa: E402
from optfusion_lab.train.loop import train_step  # noqa: E402

NUM_FIELDS = 39
MODELS = {"dcn": None, "supernet-cheap": ("add", "prod"),
          "supernet": ("add", "prod", "concat", "att")}


def has_sparse_update() -> bool:
    """Whether this version of the library has the sparse embedding update option."""
    return "embedding_update" in {f.name for f in dataclasses.fields(TrainConfig)}


def synthetic(rows: int, features: int, device: torch.device, seed: int = 0):
    """(rows, 39) int32 global ids and (rows,) float labels, generated on ``device``: per-field
    vocabularies of decreasing size summing to ``features``, skewed ids (u^3: low ids frequent)."""
    g = torch.Generator(device=device).manual_seed(seed)
    weights = torch.tensor([0.5 ** (i / 6) for i in range(NUM_FIELDS)])
    sizes = (weights / weights.sum() * features).long().clamp(min=2)
    sizes[0] += features - int(sizes.sum())
    offsets = torch.cumsum(sizes, 0) - sizes
    x = torch.empty(rows, NUM_FIELDS, dtype=torch.int32, device=device)
    for f in range(NUM_FIELDS):
        u = torch.rand(rows, generator=g, device=device)
        x[:, f] = (offsets[f] + (u**3 * sizes[f]).long().clamp(max=int(sizes[f]) - 1)).int()
    y = (torch.rand(rows, generator=g, device=device) < 0.25).float()
    return x, y


def build(kind: str, features: int, embed_dim: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "dcn":
        return build_model("dcn", features, NUM_FIELDS, reference_dcn_config(NUM_FIELDS, embed_dim))
    return FusionNetwork(features, NUM_FIELDS, SupernetConfig(embed_dim=embed_dim,
                                                              operations=MODELS[kind]))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(batch: int, d: int, dtype: torch.dtype, device: torch.device,
                seconds: float) -> float:
    """FLOP/s of (batch x d) @ (d x d) in ``dtype`` on ``device``, steady state."""
    a = torch.randn(batch, d, device=device, dtype=dtype)
    w = torch.randn(d, d, device=device, dtype=dtype)
    for _ in range(3):
        a @ w
    sync(device)
    n, started = 0, time.perf_counter()
    while True:
        for _ in range(10):
            a @ w
        n += 10
        sync(device)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return 2 * batch * d * d * n / elapsed


def step_flops(model, optimizer, x, y, amp: bool) -> int:
    """Matmul FLOPs of one training step, forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        train_step(model, optimizer, x, y, amp)
    return counter.get_total_flops()


def measure(kind: str, amp: bool, update: str, data, args, device) -> dict:
    """samples/s, peak memory and matmul FLOPs of one configuration."""
    x_all, y_all = data
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = build(kind, args.features, args.embed_dim).to(device).train()
    extra = {"embedding_update": update} if has_sparse_update() else {}
    cfg = TrainConfig(batch_size=args.batch_size, device=device.type, amp=amp, progress=False,
                      **extra)
    optimizer = training_step_optimizer(model, cfg)
    rows = len(y_all)
    order = torch.randperm(rows, device=device)
    position = 0

    def batch():
        nonlocal position
        if position + args.batch_size > rows:
            position = 0
        index = order[position:position + args.batch_size]
        position += args.batch_size
        return x_all.index_select(0, index), y_all.index_select(0, index)

    for _ in range(args.warmup):
        train_step(model, optimizer, *batch(), amp)
    sync(device)
    steps, started = 0, time.perf_counter()
    while steps < args.steps or time.perf_counter() - started < args.min_seconds:
        train_step(model, optimizer, *batch(), amp)
        steps += 1
        if steps % 10 == 0:
            sync(device)
    sync(device)
    seconds = (time.perf_counter() - started) / steps
    flops = step_flops(model, optimizer, *batch(), amp)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    parameters = sum(p.numel() for p in model.parameters())
    del model, optimizer
    return {"model": kind, "amp": amp, "update": update, "samples_per_s": args.batch_size / seconds,
            "step_ms": seconds * 1000, "peak_gib": peak, "step_flops": flops,
            "flop_rate": flops / seconds, "parameters": parameters, "timed_steps": steps}


def records_of(results: list[dict], rates: dict, sparse_note: str) -> list[dict]:
    out = []
    dcn = {(r["amp"], r["update"]): r["samples_per_s"] for r in results if r["model"] == "dcn"}
    for r in results:
        precision = "bf16" if r["amp"] else "fp32"
        name = f"gpu.{r['model']}.{precision}.{r['update']}"
        fraction = r["flop_rate"] / rates[precision]
        out.append(record(f"{name}.samples_per_s", r["samples_per_s"], "samples/s",
                          note=f"{r['step_ms']:.1f} ms/step; {r['parameters']:,} parameters"))
        base = dcn.get((r["amp"], r["update"]))
        if r["model"] != "dcn" and base:
            target = "0.4 x dcn" if r["model"] == "supernet-cheap" else None
            ratio = r["samples_per_s"] / base
            out.append(record(f"{name}.vs_dcn", ratio, "x dcn", target=target,
                              met=None if target is None else ratio >= 0.4,
                              note="the CPU target of the issue, here on the GPU"))
        out.append(record(f"{name}.peak_memory", r["peak_gib"], "GiB",
                          note="torch.cuda.max_memory_allocated (data on the device included)"))
        out.append(record(f"{name}.flop_rate_fraction", fraction, "of matmul rate",
                          target=">= 0.8" if r["model"] == "supernet" else None,
                          met=None if r["model"] != "supernet" else fraction >= 0.8,
                          note=f"{r['flop_rate'] / 1e12:.2f} TFLOP/s of matmul FLOPs "
                               f"({r['step_flops'] / 1e9:.1f} GFLOP/step) against "
                               f"{rates[precision] / 1e12:.1f} TFLOP/s measured"))
    if sparse_note:
        out.append(record("gpu.sparse_embedding", None, "", note=sparse_note))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=parse_size, default=4_000_000)
    parser.add_argument("--features", type=parse_size, default=10_000_000)
    parser.add_argument("--embed-dim", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="least timed steps (default 30)")
    parser.add_argument("--min-seconds", type=float, default=3.0,
                        help="least timed seconds per configuration (default 3)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: check the script at toy sizes (default cuda)")
    parser.add_argument("--quick", action="store_true",
                        help="1M rows, 1M features, fewer steps (under a minute on a GPU)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.features = min(args.rows, 1_000_000), min(args.features, 1_000_000)
        args.steps, args.min_seconds, args.warmup = 10, 0.5, 3
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device on this machine; nothing measured (it needs a GPU)")
        if args.json:
            write_report(args.json, "gpu", [], skipped="no CUDA")
        return 0
    device = torch.device(args.device)
    info = machine()
    gpu = info["gpu"]["name"] if info["gpu"] else "no GPU"
    print(f"{gpu}; torch {info['torch']}; {args.rows:,} rows, {args.features:,} features, "
          f"D={args.embed_dim}, d={NUM_FIELDS * args.embed_dim}, batch {args.batch_size}")
    data = synthetic(args.rows, args.features, device)
    updates = ["dense"]
    sparse_note = ""
    if has_sparse_update():
        updates.append("sparse")
    else:
        sparse_note = ("skipped: this version of the library has no sparse embedding update "
                       "(TrainConfig.embedding_update)")
    d = NUM_FIELDS * args.embed_dim
    rate_seconds = max(0.5, args.min_seconds / 2)
    rates = {"fp32": matmul_rate(args.batch_size, d, torch.float32, device, rate_seconds),
             "bf16": matmul_rate(args.batch_size, d, torch.bfloat16, device, rate_seconds)
             if device.type == "cuda" else None}
    rates["bf16"] = rates["bf16"] or rates["fp32"]  # CPU check: no bf16 autocast there
    print(f"matmul ({args.batch_size} x {d}) @ ({d} x {d}): fp32 {rates['fp32'] / 1e12:.2f}, "
          f"bf16 {rates['bf16'] / 1e12:.2f} TFLOP/s")
    results = []
    amps = (False, True) if device.type == "cuda" else (False,)
    print(f"\n{'model':<16}{'prec':<6}{'update':<8}{'samples/s':>12}{'ms/step':>9}"
          f"{'peak GiB':>9}{'FLOP frac':>10}")
    for kind in args.models:
        for amp in amps:
            for update in updates:
                try:
                    r = measure(kind, amp, update, data, args, device)
                except torch.cuda.OutOfMemoryError as exc:
                    print(f"{kind:<16}{'bf16' if amp else 'fp32':<6}{update:<8} out of memory: "
                          f"{str(exc).splitlines()[0]}")
                    continue
                results.append(r)
                frac = r["flop_rate"] / rates["bf16" if amp else "fp32"]
                peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
                print(f"{kind:<16}{'bf16' if amp else 'fp32':<6}{update:<8}"
                      f"{r['samples_per_s']:>12,.0f}{r['step_ms']:>9.1f}{peak:>9}{frac:>10.2f}",
                      flush=True)
    if sparse_note:
        print(f"\nsparse embedding rows {sparse_note}")
    records = records_of(results, rates, sparse_note)
    if args.json:
        write_report(args.json, "gpu", records, matmul_flops_per_s=rates,
                     settings={k: v for k, v in vars(args).items() if k != "json"})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
