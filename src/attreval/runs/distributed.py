"""Sharding a run across processes with torch.distributed (``torchrun --nproc_per_node=K -m attreval run``).

Units (model, setting, layer, method) are independent and deterministic, so rank r computes units
r, r+K, r+2K, … of the to-do list and writes each part atomically; rank 0 builds the grids first and
merges the parts at the end, giving the same table as a single process. Rank 0 alone holds the run
directory's lock (:mod:`attreval.runs.lock`) for the whole run. Every worker ends when its launcher dies
(:func:`die_with_parent`), so killing torchrun does not leave workers writing unsupervised.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


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

    def on_main(self, step: Callable[[], T]) -> T | None:
        """Run ``step`` on rank 0 only; a ``ValueError`` there is raised on every rank with the same message,
        so user errors end every process with one clean line instead of hanging or a peer's traceback."""
        outcome: list = [None, None]
        if self.is_main:
            try:
                outcome[0] = step()
            except ValueError as err:
                outcome[1] = str(err)
        if self.world > 1:
            message = [outcome[1]]
            dist.broadcast_object_list(message, src=0)
            outcome[1] = message[0]
        if outcome[1] is not None:
            raise ValueError(outcome[1])
        return outcome[0]

    def shard(self, items: list) -> list:
        """This rank's share of ``items`` (round-robin)."""
        return items[self.rank :: self.world]

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(poll: float = 1.0) -> None:
    """End this process (SIGTERM) when its parent, the torchrun launcher, dies, even by SIGKILL.

    On Linux the kernel does it (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread checks every ``poll``
    seconds whether the parent pid changed. If the parent is already gone when this is called (it died before
    the request was registered), the process ends at once."""
    parent = os.getppid()
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if not armed:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(poll)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="attreval-parent-watchdog", daemon=True).start()
    if os.getppid() != parent:  # the launcher died between getppid and prctl
        os.kill(os.getpid(), signal.SIGTERM)


def from_environment(device: torch.device) -> tuple[Group, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, NCCL on CUDA),
    and pick this rank's GPU (``LOCAL_RANK``) when running on CUDA. A single process gets ``Group(0, 1)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group(), device
    die_with_parent()  # a worker without its launcher would run on unsupervised
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"expected at most {torch.cuda.device_count()} processes per node (one per GPU), got LOCAL_RANK {local}; "
                "lower --nproc_per_node"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Group(rank, world), device
