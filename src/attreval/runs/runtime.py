"""Where and how a run computes: the device, faithful numerics on CUDA, and the metadata of the machine.

Shared by ``attreval run`` and ``attreval bench``, so both resolve ``--device`` and report the machine the
same way.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from attreval.version import __version__


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``; a missing accelerator is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"expected a device like cpu, cuda, cuda:0 or auto, got '{name}'") from None
    if device.type not in ("cpu", "cuda", "mps"):  # meta, xpu, …: tensors there hold no values or are untested
        raise ValueError(f"expected a device like cpu, cuda, cuda:0, mps or auto, got '{name}'")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"expected an Apple MPS device for --device {name}, but torch finds none; use --device cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"expected a CUDA device for --device {name}, but torch finds none; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"expected a CUDA device index below {torch.cuda.device_count()}, got {name}")
    return device


def metadata(seed: int, device: torch.device) -> dict[str, Any]:
    """Versions, seed, device and source revision of a run."""
    try:
        revision = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        revision = "unknown"
    return {
        "attreval": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seed": seed,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "git_revision": revision,
    }


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (Linux ``/proc/cpuinfo``) and logical core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine() or "cpu"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} logical cores"


@contextmanager
def faithful_numerics(device: torch.device) -> Iterator[None]:
    """On CUDA: deterministic algorithms (cuDNN's default backward kernels differ run to run in the last bits,
    so reruns and resumes would not be bit-identical) and no TF32 (Occlusion, RISE and Ablation-CAM measure
    small logit differences, which TF32's 10-bit mantissa turns into noise: on an H100 it changed Occlusion
    scores by up to 0.14). The previous settings are restored afterwards. Nothing changes on the CPU."""
    if device.type != "cuda":
        yield
        return
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[2], saved[3]
