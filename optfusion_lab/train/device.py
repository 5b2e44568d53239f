"""Devices: which one to train on, bf16 autocast, waiting for queued work, and keeping freed
CPU memory for the next training step."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

import torch

from .config import DEVICES


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for cuda without one is a ValueError.

    CUDA resolves to the current device (``cuda:LOCAL_RANK`` under torchrun, see
    :func:`optfusion_lab.distributed.init_from_env`).
    """
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu")
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; a no-op otherwise."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for honest timings); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# blocks below this come from the heap and are reused; larger ones (a 10M-feature embedding
# table, say) are still mapped and unmapped on their own
_KEEP_BELOW = 1 << 30
_TRIM_ABOVE = 2**31 - 1


@functools.cache
def keep_freed_memory() -> bool:
    """Ask the C allocator to keep freed memory for reuse instead of returning it to the
    operating system; True when it took effect (glibc), False elsewhere (a no-op).

    A training step on the CPU allocates and frees the same large activations every step. By
    default glibc maps every block above its threshold (32 MB at most) afresh and unmaps it on
    free, and trims the heap's top, so the kernel zeroes and faults in every page again on the
    next step: at batch 4096 the all-operations supernet took about 775k page faults and 5 s
    of system time per 13-14 s step. With blocks up to 1 GiB served from the heap and no
    trimming, a step reuses the previous step's pages: 33k faults and 9.3 s per step
    (``benchmarks/memory_faults.py``; benchmarks/README.md has the table). The cost is that the
    process keeps its peak heap until it exits (about 15 % more peak RSS there). The setting is
    process-wide and made once; :func:`optfusion_lab.train.fit` and
    :func:`optfusion_lab.cost.step_seconds` call it for CPU training.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no C library by that name, or not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_ABOVE))
