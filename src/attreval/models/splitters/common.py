"""Small facts about a model that every splitter needs (device, input channels, a probe input)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)  # not a list of them all: once per call
    return torch.device("cpu") if first is None else first.device


def in_channels(model: nn.Module, default: int = 3) -> int:
    """Input channels of the first ``Conv2d`` of ``model``."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else default


def probe_input(shape: Sequence[int], device: torch.device) -> Tensor:
    """A reproducible random ``(1, C, H, W)`` probe (not zeros: zeros can hide a wrong split)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn((1, *shape), generator=generator).to(device)
