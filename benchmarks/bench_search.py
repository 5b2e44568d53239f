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

4. The targets of the supernet's speed (each a ratio measured in this run, interleaved, median of
   ``--repeats`` paired repeats, at 1 and ``--threads`` threads):
   - *cheap operations*: samples/s of the ADD+PROD supernet over those of the reference DCN
     (3 cross layers beside an MLP of three layers of width d, the supernet's deep width); target
     at least 0.4x;
   - *all four operations* (and ``att-lite``): the achieved FLOP rate of one search step (the
     matmul FLOPs of forward and backward, counted by ``torch.utils.flop_counter.FlopCounterMode``,
     over the step's wall time) as a fraction of the rate at which the same matmuls (every
     mm/addmm/bmm/baddbmm of the step, same shapes and strides, random values) run alone; target
     at least 80%.

   With ``--compile``, both targets are measured again with every model of the comparison
   compiled the same way (``torch.compile`` with fused Adam, as ``TrainConfig.compile``); the
   FLOPs and the replayed matmuls stay those of the eager step.

CPU timings on a shared 2-core machine are noisy: the load average is printed with the figures;
compare numbers within one invocation only.

How to run
----------
::

    .venv/bin/python benchmarks/bench_search.py                  # 200k rows, D=16, batch 4096
    .venv/bin/python benchmarks/bench_search.py --rows 100000 --embed-dim 8 --epochs 1
    .venv/bin/python benchmarks/bench_search.py --targets-only --json search.json  # section 4
    .venv/bin/python benchmarks/bench_search.py --targets-only --compile  # + compiled models
    .venv/bin/python benchmarks/bench_search.py --quick                 # section 4, small, < 1 min
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import torch
from benchmark_support import environment, load
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from optfusion_lab.cost import (
    reference_dcn_config,
    step_seconds,
    supernet_parameters,
    training_step_optimizer,
)
from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.loader import BatchLoader
from optfusion_lab.data.synthetic import generate, write
from optfusion_lab.fusion_search import SearchConfig, search
from optfusion_lab.models import ModelConfig, build_model
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig
from optfusion_lab.train import TrainConfig, fit, keep_freed_memory

DATA_DIR = Path(__file__).resolve().parent / "_data"
CHEAP = ("add", "prod")
ALL_OPS = ("add", "prod", "concat", "att")
LITE = ("add", "prod", "concat", "att-lite")
CHEAP_TARGET, FLOP_TARGET = 0.4, 0.8
MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
           torch.ops.aten.baddbmm.default}


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


# ---------------------------------------------------------------- 4. the speed targets


class Stepper:
    """One model with its training-step optimizer and a cycling batch stream (a search
    supernet's step is the one-shot search's joint step, as in ``cost.step_seconds``)."""

    def __init__(self, model: torch.nn.Module, data: PreparedData, batch_size: int,
                 compile: bool = False):
        self.model = model.train()
        cfg = TrainConfig(batch_size=batch_size, device="cpu", progress=False, compile=compile)
        self.optimizer = training_step_optimizer(model, cfg, arch_lr=0.1)
        x, y = data.arrays("train")
        self.loader = BatchLoader(x, y, batch_size, seed=0, drop_last=len(y) >= batch_size)
        self.batches = iter(self.loader)
        # what the steps run: the model, or torch.compile of it with fused Adam (as fit does
        # with TrainConfig.compile); FLOPs and matmuls are always recorded on the eager model
        self.forward = torch.compile(model) if compile else model
        self.compile_seconds = None  # first step minus a steady one: see warm_up()

    def warm_up(self, steps: int) -> None:
        """``steps`` unmeasured steps; when compiled, the first one compiles (forward and
        backward) and ``compile_seconds`` is its time minus the mean of the others."""
        first = self.seconds(1)
        if steps > 1:
            rest = self.seconds(steps - 1)
            if self.forward is not self.model:
                self.compile_seconds = first - rest

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(self.batches, None)
        if batch is None:
            self.batches = iter(self.loader)
            batch = next(self.batches)
        return batch

    def loss(self, xb, yb, forward=None) -> torch.Tensor:
        logits = (forward or self.forward)(xb)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, yb)

    def step(self) -> None:
        loss = self.loss(*self.batch())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def seconds(self, steps: int) -> float:
        """Mean wall seconds of ``steps`` steps."""
        started = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - started) / steps


class MatmulRecorder(TorchDispatchMode):
    """Records every matmul (mm, addmm, bmm, baddbmm) run under it: op, tensor shapes and
    strides, other arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMULS:
            spec = [("tensor", tuple(a.shape), a.stride(), a.dtype) if isinstance(a, torch.Tensor)
                    else ("value", a) for a in args]
            self.calls.append((func, spec, dict(kwargs)))
        return func(*args, **kwargs)


def replay_arguments(spec, tensors: dict) -> list:
    """Random tensors with the recorded shapes and strides (one per distinct layout, shared
    through ``tensors``), the other values as they were."""
    out = []
    for item in spec:
        if item[0] == "value":
            out.append(item[1])
            continue
        if item not in tensors:
            _, shape, stride, dtype = item
            size = 1 + sum((n - 1) * st for n, st in zip(shape, stride, strict=True) if n > 0)
            tensors[item] = torch.randn(size, dtype=dtype).as_strided(shape, stride)
        out.append(tensors[item])
    return out


def step_matmuls(stepper: Stepper) -> tuple[int, list]:
    """The matmul FLOPs of one training step (forward and backward: FlopCounterMode) and its
    matmul calls, ready to replay."""
    xb, yb = stepper.batch()
    stepper.optimizer.zero_grad(set_to_none=True)
    recorder = MatmulRecorder()
    with FlopCounterMode(display=False) as counter, recorder:
        stepper.loss(xb, yb, stepper.model).backward()  # eager: the step's own matmuls
    stepper.optimizer.zero_grad(set_to_none=True)
    tensors = {}
    calls = [(func, replay_arguments(spec, tensors), kwargs)
             for func, spec, kwargs in recorder.calls]
    return counter.get_total_flops(), calls


def matmul_seconds(calls: list) -> float:
    started = time.perf_counter()
    for func, args, kwargs in calls:
        func(*args, **kwargs)
    return time.perf_counter() - started


def paired(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over repeats of ``times[numerator][r] / times[denominator][r]``."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator],
                                                   strict=True))


def cheap_ratio(data, embed_dim, batch_size, threads, steps, repeats, compile=False) -> dict:
    """samples/s of the ADD+PROD supernet over the reference DCN's, interleaved (``compile``:
    both compiled the same way)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dcn = build_model("dcn", data.num_features, data.num_fields,
                      reference_dcn_config(data.num_fields, embed_dim))
    cheap = FusionNetwork(data.num_features, data.num_fields,
                          SupernetConfig(embed_dim=embed_dim, operations=CHEAP))
    steppers = {"dcn": Stepper(dcn, data, batch_size, compile),
                "cheap": Stepper(cheap, data, batch_size, compile)}
    for stepper in steppers.values():
        stepper.warm_up(3)
    times = {name: [] for name in steppers}
    for _ in range(repeats):
        for name, stepper in steppers.items():
            times[name].append(stepper.seconds(steps))
    return {"ratio": paired(times, "dcn", "cheap"),
            **{f"{name}_samples_per_second": batch_size / statistics.median(t)
               for name, t in times.items()},
            **{f"{name}_compile_seconds": s.compile_seconds for name, s in steppers.items()}}


def flop_fraction(data, embed_dim, batch_size, threads, operations, repeats,
                  compile=False) -> dict:
    """Achieved matmul FLOP rate of one search step over the rate of its matmuls alone
    (``compile``: the steps compiled; the FLOPs and the matmuls to replay are the eager
    step's)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = FusionNetwork(data.num_features, data.num_fields,
                        SupernetConfig(embed_dim=embed_dim, operations=operations))
    stepper = Stepper(net, data, batch_size, compile)
    stepper.warm_up(2 if compile else 1)
    flops, calls = step_matmuls(stepper)
    matmul_seconds(calls)  # warm-up
    times = {"step": [], "matmuls": []}
    for _ in range(repeats):
        times["step"].append(stepper.seconds(1))
        times["matmuls"].append(matmul_seconds(calls))
    step, alone = statistics.median(times["step"]), statistics.median(times["matmuls"])
    return {"fraction": paired(times, "matmuls", "step"), "flops_per_step": flops,
            "step_seconds": step, "achieved_gflops": flops / step / 1e9,
            "matmul_gflops": flops / alone / 1e9, "samples_per_second": batch_size / step,
            "matmul_calls": len(calls), "compile_seconds": stepper.compile_seconds}


def record(metric, value, unit, target=None, met=None, note="") -> dict:
    return {"metric": metric, "value": value, "unit": unit, "target": target, "met": met,
            "note": note}


def speed_targets(args, data) -> list[dict]:
    d = data.num_fields * args.embed_dim
    shape = f"batch {args.batch_size}, D={args.embed_dim}, d={d}, F={data.num_fields}"
    records = []
    print(f"\n4. speed targets ({shape}; median of {args.repeats} interleaved repeats)")
    modes = (False, True) if args.compile else (False,)
    for threads in sorted({1, args.threads}):
        for compile in modes:
            records += mode_targets(args, data, threads, compile, shape)
    return records


def mode_targets(args, data, threads: int, compile: bool, shape: str) -> list[dict]:
    """The targets' records at ``threads`` threads, eager or (``compile``) with every model
    of the comparison compiled the same way (torch.compile, inductor)."""
    d = data.num_fields * args.embed_dim
    mode, suffix = ("compiled", "_compiled") if compile else ("eager", "")
    records = []
    cheap = cheap_ratio(data, args.embed_dim, args.batch_size, threads, args.steps, args.repeats,
                        compile)
    compiled = (f"; compile {cheap['dcn_compile_seconds']:.0f} s dcn, "
                f"{cheap['cheap_compile_seconds']:.0f} s supernet" if compile else "")
    print(f"  {threads} thread(s), {mode}: cheap supernet (ADD, PROD) {cheap['ratio']:.3f}x dcn "
          f"samples/s (dcn {cheap['dcn_samples_per_second']:,.0f}, supernet "
          f"{cheap['cheap_samples_per_second']:,.0f}; target >= {CHEAP_TARGET}x{compiled})")
    note = (f"{shape}, {threads} thread(s), {mode} (both sides); DCN: 3 cross layers + MLP "
            f"{d}-{d}-{d}; dcn {cheap['dcn_samples_per_second']:.0f}, supernet "
            f"{cheap['cheap_samples_per_second']:.0f} samples/s{compiled}; load {load()}")
    records.append(record(f"supernet_cheap_vs_dcn_samples_per_second_{threads}t{suffix}",
                          cheap["ratio"], "x", CHEAP_TARGET, cheap["ratio"] >= CHEAP_TARGET,
                          note))
    for name, operations in (("all", ALL_OPS), ("attlite", LITE)):
        fraction = flop_fraction(data, args.embed_dim, args.flop_batch_size, threads,
                                 operations, args.flop_repeats, compile)
        compiled = (f"; compile {fraction['compile_seconds']:.0f} s" if compile else "")
        print(f"  {threads} thread(s), {mode}: supernet {'+'.join(operations)}: "
              f"{fraction['achieved_gflops']:.1f} GFLOP/s achieved, its matmuls alone "
              f"{fraction['matmul_gflops']:.1f} GFLOP/s: {fraction['fraction']:.1%} "
              f"({fraction['samples_per_second']:,.0f} samples/s, "
              f"{fraction['flops_per_step'] / 1e9:.0f} GFLOP per step{compiled}"
              + (f"; target >= {FLOP_TARGET:.0%})" if name == "all" else ")"))
        note = (f"batch {args.flop_batch_size}, D={args.embed_dim}, d={d}, {threads} "
                f"thread(s), {mode} step; {fraction['flops_per_step'] / 1e9:.1f} GFLOP per step "
                f"(FlopCounterMode on the eager step, forward+backward), "
                f"{fraction['achieved_gflops']:.1f} GFLOP/s achieved vs "
                f"{fraction['matmul_gflops']:.1f} GFLOP/s for the eager step's "
                f"{fraction['matmul_calls']} matmuls alone; "
                f"{fraction['samples_per_second']:.0f} samples/s{compiled}; load {load()}")
        target = FLOP_TARGET if name == "all" else None
        records.append(record(f"supernet_{name}_flop_rate_fraction_{threads}t{suffix}",
                              fraction["fraction"], "fraction", target,
                              None if target is None else fraction["fraction"] >= target,
                              note))
        records.append(record(f"supernet_{name}_samples_per_second_{threads}t{suffix}",
                              fraction["samples_per_second"], "samples/s", note=note))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--embed-dim", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved repeats of the cheap-operations ratio (section 4)")
    parser.add_argument("--flop-batch-size", type=int, default=None,
                        help="batch of the FLOP-rate measurement (default: --batch-size)")
    parser.add_argument("--flop-repeats", type=int, default=3)
    parser.add_argument("--targets-only", action="store_true",
                        help="only section 4 (the speed targets)")
    parser.add_argument("--compile", action="store_true",
                        help="section 4 also with every model compiled (torch.compile, as "
                        "TrainConfig.compile does); adds the compile time, minutes on a CPU")
    parser.add_argument("--quick", action="store_true",
                        help="section 4 only, small: 20k rows, batch 1024, FLOP batch 256")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.targets_only, args.rows, args.batch_size = True, 20_000, 1024
        args.flop_batch_size, args.steps, args.repeats, args.flop_repeats = 256, 2, 3, 2
    args.flop_batch_size = args.flop_batch_size or args.batch_size
    torch.set_num_threads(args.threads)
    # as fit() and cost.step_seconds do on the CPU; process-wide, so every model gets it
    print(f"freed memory kept for reuse: {keep_freed_memory()}")
    data = dataset(args.rows)
    d = data.num_fields * args.embed_dim
    print(f"data: {args.rows:,} rows, F={data.num_fields}, {data.num_features:,} features; "
          f"D={args.embed_dim}, d={d}, batch {args.batch_size}, {args.threads} threads; "
          f"load {os.getloadavg()}")

    results = {"throughput": {}, "search_cost": {}}
    if args.targets_only:
        records = speed_targets(args, data)
        write_results(args, records, results)
        return
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
    records = speed_targets(args, data)
    torch.set_num_threads(args.threads)
    results["load_after"] = os.getloadavg()
    print(f"\nload average after: {results['load_after']}")
    write_results(args, records, results)


def write_results(args, records: list[dict], results: dict) -> None:
    """``--json``: {"benchmark", "machine", "records", "results" (sections 1-3, if run)}."""
    if not args.json:
        return
    machine = environment("torch", threads=args.threads, load=load())
    out = {"benchmark": "bench_search", "machine": machine, "records": records,
           "results": results}
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
