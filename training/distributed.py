"""torch.distributed helpers: process-group setup from torchrun's environment, and all-gather with gradients.

Plain ``dist.all_gather`` returns tensors cut off from the graph, so negatives from other ranks would carry no
gradient. :func:`gather_with_grad` keeps them in the graph: its backward sums each rank's gradient for every
slice and hands each rank the gradient of its own slice (as ``torch.distributed.nn.all_gather`` does).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, metrics and checkpoints."""
        return self.rank == 0


def setup(device: str) -> DistInfo:
    """Join the process group when launched by torchrun (NCCL on GPU, Gloo on CPU); no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    logger.info("rank %d of %d joined", rank, world)
    return DistInfo(rank, world, local_rank)


def is_distributed() -> bool:
    """Whether a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss depends on every slice: sum their gradients
        size = grad.shape[0] // dist.get_world_size()
        rank = dist.get_rank()
        return grad[rank * size:(rank + 1) * size]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every rank) over ranks, keeping gradients; identity when alone."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate over ranks without gradients (teacher targets, weights)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def rank_offset(local_size: int) -> int:
    """Index of this rank's first row in a gathered batch."""
    return dist.get_rank() * local_size if is_distributed() else 0


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (for logging)."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()
