"""Data-parallel training across processes, as torchrun starts them (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs.

Every process takes every WORLD_SIZE-th batch of the common data order and DistributedDataParallel averages the
gradients; process 0 logs, evaluates and saves. With one process every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's rank and the number of processes, with the collectives training needs."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_gather(self, value) -> list:
        """Every process's ``value`` (any picklable object), in rank order."""
        if self.world == 1:
            return [value]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def all_reduce(self, tensor: torch.Tensor) -> None:
        """Sum ``tensor`` over the processes, in place."""
        if self.world > 1:
            dist.all_reduce(tensor)

    def max_of(self, values: list[int], device: torch.device) -> list[int]:
        """Each of ``values``, the largest over the processes, on every process."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.int64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()

    def broadcast(self, value):
        """Process 0's ``value`` (any picklable object), on every process."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to train: ``model`` itself, or DistributedDataParallel around it (same parameters)."""
        if self.world == 1:
            return model
        return torch.nn.parallel.DistributedDataParallel(model,
                                                         device_ids=[device.index] if device.type == "cuda" else None)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE > 1); NCCL on CUDA, gloo on the CPU. Returns the
    process's place and its device (on CUDA, the GPU LOCAL_RANK names)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size()), device
