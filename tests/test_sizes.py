"""Sizes that cannot fit are refused before allocation, in one line; a model whose output is not logits
``(N, K)`` is refused when it is loaded (docs/reliability.md, *Bad input*)."""

from __future__ import annotations

import pytest
import torch

from attreval.api import attribute
from attreval.cli import main
from attreval.models.loading import load_model
from attreval.validation import memory_bytes
from tiny_models import tiny_model

NETS = """import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, output):
        super().__init__()
        self.output = output
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 10, 3, padding=1))

    def forward(self, x):
        f = self.features(x)
        logits = f.mean((2, 3))
        return {"tuple": (logits, f), "map": f, "dict": {"logits": logits}}[self.output]


def tuple_net():
    return Net("tuple")


def map_net():
    return Net("map")


def dict_net():
    return Net("dict")
"""


def _grids(channels: int = 3, side: int = 32):
    return torch.randn(1, channels, side, side), torch.tensor([[1, 2, 3, 4]])


@pytest.mark.parametrize(
    "method, options, says",
    [
        ("int_grad", {"n_steps": 100_000_000}, "the 100000000-node Gauss-Legendre rule of IntGrad"),  # before: a 71 PiB MemoryError
        ("int_grad", {"n_steps": 2}, None),
        ("rise", {"num_masks": 10**9}, "1000000000 RISE masks"),  # before: 7 lines advising a smaller batch_size
    ],
)
def test_sizes_that_cannot_fit_are_one_line_before_allocation(method, options, says):
    model = tiny_model("vgg")
    images, targets = _grids()
    if says is None:  # a size that fits is not refused
        assert attribute(model, images, targets, method, **options).shape[:2] == (1, 4)
        return
    with pytest.raises(ValueError, match=f"expected {says}.* to fit in memory, got .*more than this machine's") as caught:
        attribute(model, images, targets, method, **options)
    assert len(str(caught.value).splitlines()) == 1 and "lower" in str(caught.value)
    assert memory_bytes() > 0


@pytest.mark.parametrize(
    "factory, says", [("tuple_net", "got a tuple of 2"), ("map_net", "got shape (1, 10, "), ("dict_net", "got a dict of 1")]
)
def test_a_model_whose_output_is_not_logits_is_refused_when_loaded(tmp_path, factory, says):
    """Before: the splitter failed with a StopIteration traceback."""
    (tmp_path / "nets.py").write_text(NETS)
    with pytest.raises(ValueError, match="expected model 'mine' to return logits") as caught:
        load_model("mine", architecture=f"{tmp_path / 'nets.py'}:{factory}", layers=("input",))
    assert says in str(caught.value) and len(str(caught.value).splitlines()) == 1


def test_a_model_whose_output_is_not_logits_is_one_line_from_the_cli(tmp_path, capfd):
    (tmp_path / "nets.py").write_text(NETS)
    (tmp_path / "c.toml").write_text('[[models]]\nname = "mine"\narchitecture = "nets.py:map_net"\n[data]\nlimit = 20\n')
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"), "-q", "--no-report"]) == 2
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and "expected model 'mine' to return logits of shape (N, K)" in err, err
    assert not (tmp_path / "run").exists()
