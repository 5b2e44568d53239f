"""Helpers shared by the benchmark scripts: sizes on the command line and machine load."""

from __future__ import annotations

import argparse
import importlib
import os
import platform


def parse_size(text: str) -> int:
    """``250000``, ``250k``, ``250_000`` or ``1M`` -> number of rows."""
    text = text.strip().lower().replace("_", "").replace(",", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if factor > 1 else text
    try:
        rows = int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of rows: {text!r}") from None
    if rows <= 0:
        raise argparse.ArgumentTypeError(f"the number of rows must be positive: {text!r}")
    return rows


def load() -> tuple[float, float, float]:
    """The load average (1, 5, 15 minutes), rounded."""
    return tuple(round(x, 2) for x in os.getloadavg())


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have used since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def environment(*packages: str, **extra) -> dict:
    """Python, platform, CPU count and the versions of optfusion_lab, numpy and ``packages``."""
    versions = {
        name: importlib.import_module(name).__version__
        for name in ("optfusion_lab", "numpy", *packages)
    }
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **versions,
        **extra,
    }


# --- the JSON contract of every benchmark script ------------------------------------------------
# ``--json PATH`` writes {"benchmark": name, "machine": machine(), "records": [record(...), ...]};
# benchmarks/run_all.py collects these documents into one table.


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo; the platform's processor string otherwise)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the figures were measured on: CPU model and cores (all, and usable by this process),
    GPU (None without CUDA), torch version and threads, Python, platform and load average."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "count": torch.cuda.device_count(),
               "memory_gib": round(props.total_memory / 2**30, 1),
               "cuda": torch.version.cuda}
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "gpu": gpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": list(load()),
    }


def record(metric: str, value, unit: str = "", target: str | None = None,
           met: bool | None = None, note: str = "") -> dict:
    """One row of a benchmark's results: ``met`` None when the metric has no target."""
    return {"metric": metric, "value": value, "unit": unit, "target": target, "met": met,
            "note": note}


def write_report(path, benchmark: str, records: list[dict], **extra) -> dict:
    """Write ``{"benchmark", "machine", "records", **extra}`` as strict JSON to ``path``."""
    from optfusion_lab.io import write_json

    document = {"benchmark": benchmark, "machine": machine(), "records": list(records), **extra}
    write_json(path, document)
    return document
