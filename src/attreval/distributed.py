"""Sharding a run across processes with torch.distributed (``torchrun --nproc_per_node=K -m attreval run``).

Units (model, setting, layer, method) are independent and deterministic, so rank r computes units
r, r+K, r+2K, … of the to-do list and writes each part atomically; rank 0 builds the grids first and
merges the parts at the end, giving the same table as a single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    """This process's place in the run: ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def shard(self, items: list) -> list:
        """This rank's share of ``items`` (round-robin)."""
        return items[self.rank::self.world]

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device: torch.device) -> tuple[Group, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, NCCL on CUDA),
    and pick this rank's GPU (``LOCAL_RANK``) when running on CUDA. A single process gets ``Group(0, 1)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Group(rank, world), device
