"""Page faults of a CPU training step with and without ``keep_freed_memory()``.

Each setting runs in its own process (the allocator setting is process-wide and cannot be
undone): build a model of ``bench_search`` at its sizes, take warm-up steps, then time
``--steps`` steps and count their minor page faults, system CPU time and the peak resident set.

    .venv/bin/python benchmarks/memory_faults.py                       # all-operations supernet
    .venv/bin/python benchmarks/memory_faults.py --kind supernet-cheap --rows 50000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(kind: str, rows: int, batch_size: int, warmup: int, steps: int, keep: bool) -> dict:
    """One setting, in this process: seconds, faults and system seconds per step, peak RSS."""
    import torch
    sys.path.insert(0, str(HERE))
    from bench_search import Stepper, build, dataset

    from optfusion_lab.train import keep_freed_memory

    torch.set_num_threads(1)
    took = keep_freed_memory() if keep else False
    data = dataset(rows)
    torch.manual_seed(0)
    stepper = Stepper(build(kind, data, 16), data, batch_size)
    stepper.warm_up(warmup)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        stepper.step()
    seconds = (time.perf_counter() - start) / steps
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"keep_freed_memory": keep, "took_effect": took, "seconds_per_step": seconds,
            "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
            "system_seconds_per_step": (after.ru_stime - before.ru_stime) / steps,
            "peak_rss_gb": after.ru_maxrss / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", default="supernet",
                        help="a bench_search model: dcn, supernet, supernet-attlite, "
                        "supernet-cheap")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", choices=["default", "kept"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # the child process: one setting, printed as JSON
        print(json.dumps(measure(args.kind, args.rows, args.batch_size, args.warmup, args.steps,
                                 args.one == "kept")))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print(f"{args.kind}, batch {args.batch_size}, 1 thread, {args.steps} steps after "
          f"{args.warmup} warm-up; load {os.getloadavg()}")
    for setting in ("default", "kept", "default", "kept"):  # interleaved, twice
        out = subprocess.run([sys.executable, __file__, "--one", setting, "--kind", args.kind,
                              "--rows", str(args.rows), "--batch-size", str(args.batch_size),
                              "--warmup", str(args.warmup), "--steps", str(args.steps)],
                             env=env, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {setting:>7}: {r['seconds_per_step']:6.2f} s/step, "
              f"{r['faults_per_step']:9,.0f} page faults/step, "
              f"{r['system_seconds_per_step']:5.2f} s system/step, "
              f"peak RSS {r['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
