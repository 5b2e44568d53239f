"""Where one ``prepare`` of a raw Criteo file goes: wall and CPU seconds per stage, in process.

    .venv/bin/python benchmarks/profile_prepare.py                 # 1M rows, 3 runs
    .venv/bin/python benchmarks/profile_prepare.py --rows 250k --runs 5

Each run is a fresh interpreter (``python -P``, this checkout first on ``PYTHONPATH``) that times
its own imports of the library, then ``prepare()`` of the cached file of ``bench_prepare.py``
(``--rows`` synthetic Criteo rows, made on first use) into a fresh folder, with timers wrapped
around the stages of :mod:`optfusion_lab.data.prepare`: the parse pass (parse, validate, encode,
count), the vocabulary merge (``TokenCounter.build`` of every field, on parallel threads: its
figure is the sum over fields of their CPU seconds), writing the splits and ``vocab.parquet``.
"other" is what ``prepare()`` spends outside these (hashing the input runs on a thread during the
parse). Compare two checkouts with ``--code DIR``, which sets the code that is profiled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

from bench_prepare import DATA_DIR, DEFAULT_VOCAB_SCALE, data_file
from benchmark_support import parse_size

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent("""
    import json, shutil, sys, threading, time
    started = time.perf_counter()
    import importlib
    from optfusion_lab.data import PrepareConfig, prepare
    stages = importlib.import_module("optfusion_lab.data.prepare")
    vocab = importlib.import_module("optfusion_lab.data.vocab")
    imports = time.perf_counter() - started
    wall, cpu, lock = {}, {}, threading.Lock()

    def timed(owner, name, key, clock):
        function = getattr(owner, name)

        def wrapper(*args, **kwargs):
            begin = clock()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    wall[key] = wall.get(key, 0.0) + clock() - begin

        setattr(owner, name, wrapper)

    timed(stages, "_parse", "parse", time.perf_counter)
    timed(stages, "_write_splits", "write splits", time.perf_counter)
    timed(stages.Vocabulary, "save", "vocab.parquet", time.perf_counter)
    timed(vocab.TokenCounter, "build", "merge (CPU, all threads)", time.thread_time)
    source, out = sys.argv[1], sys.argv[2]
    shutil.rmtree(out, ignore_errors=True)
    begin, begin_cpu = time.perf_counter(), time.process_time()
    prepare(source, out, PrepareConfig("criteo"))
    total, total_cpu = time.perf_counter() - begin, time.process_time() - begin_cpu
    shutil.rmtree(out, ignore_errors=True)
    inside = sum(v for k, v in wall.items() if not k.startswith("merge"))
    print(json.dumps({"imports": imports, **wall, "other": total - inside,
                      "prepare()": total, "prepare() CPU": total_cpu}))
""")


def profile_once(source: Path, out: Path, code: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-P", "-c", CHILD, str(source), str(out)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=parse_size, default=1_000_000, help="e.g. 250k, 1M")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout to profile")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    source = data_file(args.rows, 0, DEFAULT_VOCAB_SCALE, args.data_dir)
    out = args.data_dir / f"profile_prepare_{os.getpid()}"
    runs = [profile_once(source, out, args.code) for _ in range(args.runs)]
    print(f"prepare of {source.name} ({args.rows:,} rows), {args.runs} runs of {args.code}, "
          f"{os.cpu_count()} CPUs; seconds per run, then the median")
    for stage in runs[0]:
        values = [r[stage] for r in runs]
        print(f"  {stage:<26}" + "".join(f"{v:>8.2f}" for v in values)
              + f"   median {statistics.median(values):.2f}")


if __name__ == "__main__":
    main()
