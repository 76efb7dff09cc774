"""Multi-process training the torchrun way: rank and world size from the environment, seeding, gathers.

``torchrun --nproc_per_node N script.py ...`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` for each
process; a plain ``python script.py`` sets none of them and runs as rank 0 of 1 without any process
group. Only the main rank (0) writes files and prints.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from reid.devices import resolve_device


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_environment() -> DistEnv:
    """Read ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by torchrun); rank 0 of 1 when absent."""
    if "RANK" not in os.environ:
        return DistEnv()
    return DistEnv(rank=int(os.environ["RANK"]), world_size=int(os.environ.get("WORLD_SIZE", "1")),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device: str = "auto") -> tuple[DistEnv, torch.device]:
    """Join the process group when launched by torchrun and pick this process's device.

    device: ``auto`` (one GPU per process, ``cuda:LOCAL_RANK``, when CUDA exists; else CPU), or an
    explicit torch device string (``cpu``, ``cuda:1``): ``reid.devices.resolve_device``. The backend is
    NCCL on GPUs, gloo on CPU.
    """
    env = env_from_environment()
    torch_device = resolve_device(device, env.local_rank)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if env.is_distributed and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size,
                                device_id=torch_device if torch_device.type == "cuda" else None)
    return env, torch_device


def cleanup_distributed() -> None:
    """Leave the process group (no-op in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and every GPU). Callers pass ``seed + rank``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _GatherWithGradient(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient of the gathered tensor and returns this
    rank's rows (each rank computes its loss from all rows, so each rank's rows get gradient from all)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_features(features: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Concatenate ``features`` (B, ...) of every rank in rank order -> (world_size * B, ...).

    Every rank must pass the same B. With autograd: the gradient of this rank's rows is the sum of all
    ranks' gradients of them (as in the single-process loss on the concatenated batch, which DDP's
    averaging of parameter gradients then reproduces). Identity when ``world_size == 1``.
    """
    if world_size == 1:
        return features
    if rank != dist.get_rank() or world_size != dist.get_world_size():
        raise ValueError(f"rank {rank} of {world_size} does not match the process group "
                         f"({dist.get_rank()} of {dist.get_world_size()})")
    if features.requires_grad:
        return _GatherWithGradient.apply(features)
    parts = [torch.empty_like(features) for _ in range(world_size)]
    dist.all_gather(parts, features.contiguous())
    return torch.cat(parts)

