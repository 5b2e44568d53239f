"""Multi-process training with PyTorch DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node N -m optfusion_lab.cli search ...`` (or ``train``/``retrain``)
starts one process per GPU (or N CPU processes with the gloo backend). Each process calls
:func:`init_from_env` (the command line does), trains on its shard of the data (the loader
takes every N-th index of the epoch's permutation), and DDP averages the gradients of every
parameter, architecture parameters included, so alpha and beta stay identical on every rank.
Only rank 0 writes files.

The sparse embedding update (``--embedding-update sparse``) gives the tables sparse gradients;
DDP all-reduces them with the backend's sparse all-reduce, which gloo has and NCCL has not.
It therefore runs under gloo (CPU processes) and is a clear error under NCCL, raised when the
optimizer is built, before any step (:func:`check_embedding_update`).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def distributed_rank_and_size() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return distributed_rank_and_size()[0] == 0


def init_from_env() -> bool:
    """Join the process group torchrun describes in the environment; False when not launched
    by torchrun (WORLD_SIZE unset or 1). CUDA processes use nccl and their LOCAL_RANK device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def check_embedding_update(embedding_update: str) -> None:
    """Raise ValueError when ``embedding_update`` cannot run on the current process group.

    ``"sparse"`` needs a backend with a sparse all-reduce: gloo. NCCL (the backend of CUDA
    processes, :func:`init_from_env`) has none; there, use ``--embedding-update dense`` or one
    process. Outside torch.distributed every choice runs.
    """
    if embedding_update != "sparse" or not (dist.is_available() and dist.is_initialized()):
        return
    backend = str(dist.get_backend()).lower()
    if backend != "gloo":
        raise ValueError(
            f"--embedding-update sparse (TrainConfig.embedding_update='sparse') cannot run under "
            f"torch.distributed with the {backend} backend: its sparse embedding gradients need "
            "a sparse all-reduce, which NCCL does not have. Use --embedding-update dense for "
            "multi-GPU training, a single process, or CPU processes (gloo)."
        )


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
