"""Where one search step of the supernet goes: ``torch.profiler`` self CPU time per operator.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_supernet.py --threads 1

Builds the supernet of ``bench_search.py`` (same data: ``--rows`` synthetic Criteo rows, D=16),
runs ``--warmup`` unprofiled steps (``cost.step_seconds``, as the benchmark times them), then
profiles ``--steps`` steps and prints the operators by self CPU seconds per step, with their
calls per step and share of the step. Compare two checkouts by running it with
``PYTHONPATH=/path/to/checkout`` (from outside the checkout's root).
"""

from __future__ import annotations

import argparse

import torch
from bench_search import CHEAP, LITE, dataset
from torch.profiler import ProfilerActivity, profile

from optfusion_lab.cost import step_seconds
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig

OPERATIONS = {"all": ("add", "prod", "concat", "att"), "cheap": CHEAP, "att-lite": LITE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", choices=sorted(OPERATIONS), default="all")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = dataset(args.rows)
    torch.manual_seed(0)
    model = FusionNetwork(data.num_features, data.num_fields,
                          SupernetConfig(embed_dim=16, operations=OPERATIONS[args.operations]))
    step_seconds(model, data, batch_size=args.batch_size, warmup=args.warmup - 1, steps=1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step_seconds(model, data, batch_size=args.batch_size, warmup=0, steps=args.steps)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / args.steps / 1e6
    print(f"supernet ({args.operations}), batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.steps} profiled steps: {total:.2f} s self CPU time per step")
    print(f"{'operator':<40} {'s/step':>8} {'calls/step':>10} {'share':>6}")
    for e in events[: args.top]:
        seconds = e.self_cpu_time_total / args.steps / 1e6
        print(f"{e.key[:40]:<40} {seconds:>8.3f} {e.count / args.steps:>10.0f} "
              f"{seconds / total:>6.1%}")


if __name__ == "__main__":
    main()
