"""The shape probe of ``StagedModel.check_cell`` runs once per (cell shape, device, dtype) and parameter set
(issue 24 §2): repeated calls reuse it, a replaced parameter or module re-runs it, errors are never cached."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import attreval
from attreval.models.staged import StagedModel


class Counting(nn.Module):
    """A head that counts its forwards."""

    def __init__(self, channels: int):
        super().__init__()
        self.calls = 0
        self.fc = nn.Linear(channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.fc(x.mean((-2, -1)))


def staged() -> StagedModel:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU())
    head = Counting(4)
    return StagedModel((("a", body),), head, head)


def test_the_probe_runs_once_and_again_after_a_parameter_swap():
    model = staged()
    head = model.cell_head
    model.check_cell((2, 8, 8), gridpg=True)
    model.check_cell((2, 8, 8), gridpg=False)
    assert head.calls == 1
    model.check_cell((2, 6, 6), gridpg=True)  # another cell shape: probed once more
    model.check_cell((2, 8, 8), gridpg=True)
    assert head.calls == 2
    conv = model.stages[0][1][0]
    conv.weight = nn.Parameter(torch.randn(4, 2, 3, 3))  # the parameter is replaced
    model.check_cell((2, 8, 8), gridpg=True)
    assert head.calls == 3
    with torch.no_grad():
        conv.bias.add_(1.0)  # changed in place (a load_state_dict)
    model.check_cell((2, 8, 8), gridpg=True)
    assert head.calls == 4
    model.stages[0][1][0] = nn.Conv2d(2, 5, 3, padding=1)  # a module replaced: now the head cannot take 5 channels
    with pytest.raises(ValueError, match="expected custom to accept 2-channel 8×8 cells"):
        model.check_cell((2, 8, 8), gridpg=True)
    with pytest.raises(ValueError, match="expected custom to accept"):  # errors are not cached
        model.check_cell((2, 8, 8), gridpg=True)


def test_one_target_attribute_calls_probe_once():
    model = staged()
    images, targets = torch.randn(1, 2, 16, 16), torch.tensor([[1]])
    assert model.cell_head.calls == 0
    first = attreval.attribute(model, images, targets, "grad")
    calls = model.cell_head.calls
    second = attreval.attribute(model, images, targets, "grad")
    assert torch.equal(first, second)
    assert model.cell_head.calls - calls == calls - 1  # the second call: one forward fewer (no probe)
