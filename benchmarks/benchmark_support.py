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
