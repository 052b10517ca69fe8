"""Data-parallel training across processes, as torchrun starts them (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs.

Every process takes every WORLD_SIZE-th batch of the common data order and DistributedDataParallel averages the
gradients; process 0 logs, evaluates and saves. With one process every helper here is a no-op.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .files import one_line


@dataclass
class Distributed:
    """This process's rank and the number of processes, with the collectives training needs."""

    rank: int = 0
    world: int = 1
    # Where collectives put their tensors: NCCL's group (CUDA) reduces only CUDA tensors, gloo's CPU ones.
    device: torch.device | None = None
    # Whether every process knows the others end here too (the run finished, or on_main told them all of a
    # failure): close may then wait for them.
    settled: bool = False

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
        """Sum ``tensor`` over the processes, in place (through the group's device when it lies elsewhere)."""
        if self.world == 1:
            return
        if self.device is not None and self.device.type == "cuda" and tensor.device != self.device:
            moved = tensor.to(self.device)
            dist.all_reduce(moved)
            tensor.copy_(moved)
        else:
            dist.all_reduce(tensor)

    def on_main(self, fn):
        """``fn()`` on process 0, its result there (None on the others), which wait for it. When it raises, every
        process raises: process 0 its error, the others a ValueError with its message, instead of failing in their
        next collective with the peer gone (a raw gloo or NCCL traceback beside process 0's one line). A
        KeyboardInterrupt (Ctrl-C twice) is told as well: the others would wait in this broadcast until the
        collective's timeout."""
        result, error = None, None
        if self.main:
            try:
                result = fn()
            except BaseException as caught:  # every process must hear of it, whatever it is
                error = caught
        if self.world > 1:
            message = self.broadcast(None if error is None else one_line(error))
            self.settled = self.settled or message is not None
            if message is not None and error is None:
                raise ValueError(f"process 0 stopped: {message}")
        if error is not None:
            raise error
        return result

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
        """Leave the process group. When every process ends here (``settled``), first wait for them all and give
        gloo's worker threads a moment: a thread lets go of the work it ran only after that work completed, and
        letting go of a tensor Python made takes the GIL, which destroy_process_group holds while it joins the
        threads. Process 1, done before process 0, deadlocked there (CI, 2026-12-05) when it destroyed the group
        right after the last all_gather_object. After a failure only some processes saw, waiting could hang."""
        if self.world > 1 and dist.is_initialized():
            if self.settled:
                dist.barrier()
                time.sleep(0.1)
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
    return Distributed(dist.get_rank(), dist.get_world_size(), device), device
