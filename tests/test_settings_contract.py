"""The settings contract, generated from the registry: every setting × layer × model family.

What a setting's tail promises (attreval.tail, attreval.chain): the tail is its chain run by hand (modules in
order on the whole map, each head's view, head modules); ``rows`` equals the call's column of each row's head; the
occluder equals the materialised occluded copies; where it declares regions (separate cells), the gradient of each
head is exactly zero outside its region, and it declares them exactly where the setting says its cells are separate.

The promise that "a fourth setting is one class plus one registry line" is checked by registering one here
(:class:`MeanOfCells`: the grid through the backbone jointly, then the cell head on the mean of the cell blocks) for
the generated checks, and by running every registered method on it, Occlusion included.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

import attreval
from attreval import METHODS
from attreval.chain import Chain
from attreval.grid import fold_cells
from attreval.methods.base import Task
from attreval.settings import SETTINGS, GridPG, Setting
from attreval.tail import Occluder, as_tail
from tiny_models import tiny_model
from tiny_vit import tiny_vit

N, CELL = 2, 16
LAYERS = ["input", "middle", "final"]
TOY = "mean_of_cells"


class MeanOfCells(Setting):
    """A toy fourth setting: the grid through the backbone jointly, then the cell head on the mean of the n² cell
    blocks of the final features: one output (like GridPG) that reads every cell through one cell-sized view."""

    name, display, grids, pooled = TOY, "MeanOfCells", "gridpg", True

    def activations(self, x: Tensor, layer: str) -> Tensor:
        with torch.no_grad():
            return self.staged.run(x, 0, self.staged.index(layer))

    def chain(self, layer: str, heads: tuple[int, ...]) -> Chain:
        n = self.n
        return Chain(
            self.stages_from(layer), (self.staged.cell_head,), heads, n, view=lambda x: fold_cells(x, n).unflatten(0, (-1, n * n)).mean(1)
        )


@pytest.fixture
def registered() -> Iterator[None]:
    """The toy setting in the registry for the duration of one test (collection never sees it)."""
    SETTINGS.register(TOY)(MeanOfCells)
    try:
        yield
    finally:
        SETTINGS.remove(TOY)


FAMILIES = {
    "vgg": lambda: tiny_model("vgg", seed=3),
    "resnet": lambda: tiny_model("resnet", seed=3),
    "vit": lambda: tiny_vit("token", reg=1, img=CELL, patch=4, dim=8, seed=3),  # a class token: DiPart's part_head
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def model(request):
    return FAMILIES[request.param]()


def by_hand(chain: Chain, a: Tensor) -> Tensor:
    """The chain run step by step: ``(N, C, h, w) → (N, H, K)``, each head's block cut by slicing."""
    x = a
    for module in chain.stem:
        x = module(x)
    if chain.blocks:
        h, w = x.shape[-2] // chain.n, x.shape[-1] // chain.n
        outs = []
        for cell in chain.heads:
            row, col = divmod(cell, chain.n)
            y = x[..., row * h : (row + 1) * h, col * w : (col + 1) * w]
            for module in chain.head:
                y = module(y)
            outs.append(y)
        return torch.stack(outs, dim=1)
    y = x if chain.view is None else chain.view(x)
    for module in chain.head:
        y = module(y)
    return y[:, None].expand(-1, len(chain.heads), -1)


def setting_and_tail(name: str, model, layer: str):
    setting = attreval.make_setting(name, model, N)
    heads = tuple(range(setting.num_heads))[::-1]  # every head, in an order other than the registry's
    g = torch.Generator().manual_seed(1)
    a = setting.activations(torch.randn(2, 3, N * CELL, N * CELL, generator=g), layer)
    return setting, setting.tail(layer, heads), a


def close(a: Tensor, b: Tensor) -> None:
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


def boxes_for(a: Tensor) -> Tensor:
    """A few windows of the map (one straddling the cell border), ``(P, 4)`` long half-open."""
    h, w = a.shape[-2:]
    k = max(1, h // 4)
    tops = [0, h // 2 - k // 2, h - k]
    return torch.tensor([[t, t + k, left, left + k] for t in tops for left in (0, w - k)], dtype=torch.long)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("name", [*SETTINGS.names(), TOY])
def test_setting_contract(name, layer, model, registered):
    setting, tail, a = setting_and_tail(name, model, layer)
    with torch.no_grad():
        out = tail(a)
        assert out.shape[:2] == (2, len(tail.heads)) and torch.isfinite(out).all()
        close(out, by_hand(tail.chain, a))  # the tail is its chain
        assert tail.modules == tail.chain.modules and tail.modules  # what hooks see

        index = torch.tensor([1, 0]) % len(tail.heads)  # rows == the call's column of each row's head
        close(tail.rows(a, index), out[torch.arange(2), index])

        boxes = boxes_for(a)  # the occluder (cones where they save work) == the materialised copies
        occluder, plain = tail.occluder(a), Occluder(tail, a)
        close(occluder(boxes), plain(boxes))
        per_window = torch.arange(boxes.shape[0]) % len(tail.heads)
        close(occluder(boxes, per_window), plain(boxes, per_window))

    regions = tail.regions(tuple(a.shape[-2:]))
    # DiFull's property, named once: the setting's class says it, the chain declares it, regions follow from it
    assert (regions is not None) == tail.separate_cells == setting.separate_cells
    if regions is not None:
        leaf = a.clone().requires_grad_(True)
        logits = tail(leaf)
        for i in range(len(tail.heads)):
            (grad,) = torch.autograd.grad(logits[:, i].sum(), leaf, retain_graph=True)
            assert grad.abs().sum() > 0
            assert torch.equal(grad[:, :, ~regions[i]], torch.zeros_like(grad[:, :, ~regions[i]]))


def test_a_plain_callable_is_a_tail_without_chain():
    tail = as_tail(lambda x: x.flatten(1)[:, None, :3])
    x = torch.randn(2, 1, 4, 4)
    assert tail.chain is None and tail.modules == () and not tail.separate_cells and tail.regions((4, 4)) is None
    assert type(tail.occluder(x)) is Occluder
    close(tail.rows(x, torch.zeros(2, dtype=torch.long)), tail(x)[:, 0])


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS.get(n).needs])
def test_methods_that_need_something_refuse_a_plain_callable_in_one_line(name):
    images, targets = torch.randn(1, 3, 8, 8), torch.tensor([[0]])
    task = Task(
        tail=lambda x: x.flatten(1)[:, None, :3], inputs=images, heads=torch.zeros(1, dtype=torch.long), classes=targets, image=images
    )
    with pytest.raises(ValueError, match=r"^expected a tail [^\n]* for [^\n]*, got a FunctionTail [^\n]*$"):
        METHODS.get(name)(task)


def test_the_toy_setting_is_not_grid_pointing_game(registered):
    # the toy is a setting of its own: same stages as GridPG, another readout (so the checks above test something).
    # On a VGG: its classifier is not linear in the features (on a GAP head the mean of the blocks pools like GridPG)
    model = tiny_model("vgg", seed=3)
    x = torch.randn(1, 3, N * CELL, N * CELL)
    assert not torch.allclose(attreval.make_setting(TOY, model, N).logits(x), GridPG(model, N).logits(x))


@pytest.mark.slow
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("family", ["vgg", "vit"])  # LRP's CNN and the attention methods' transformer
def test_every_registered_method_runs_on_the_toy_setting(family, layer, registered):
    model = FAMILIES[family]()
    g = torch.Generator().manual_seed(2)
    images = torch.randn(2, 3, N * CELL, N * CELL, generator=g)
    targets = torch.stack([torch.randperm(10, generator=g)[: N * N] for _ in range(2)])
    setting = attreval.make_setting(TOY, model, N)
    ran = []
    for name in METHODS.names():
        method = METHODS.get(name)
        if any(importlib.util.find_spec(m) is None for m in method.requires):
            continue  # an optional extra that is not installed (`make test` has them all)
        if method.needs:
            try:
                method.check_tail(setting.tail(layer))
            except ValueError:
                continue  # e.g. the attention methods on a CNN: refused before any work, as a run skips them
        options = dict(type(method).test_preset)
        maps = attreval.attribute(model, images, targets, name, setting=TOY, layer=layer, n=N, chunk_size=64, **options)
        h, w = setting.activations(images, layer).shape[-2:]
        assert maps.shape == (2, N * N, h, w) and torch.isfinite(maps).all() and maps.abs().sum() > 0, name
        ran.append(name)
    assert {n for n in METHODS.names() if not METHODS.get(n).needs} <= set(ran) and "occlusion" in ran
    assert "guided_backprop" in ran and "score_cam" in ran  # needs met by every setting's tail: modules, whole
    if family == "vit":
        assert {"attention_rollout", "chefer"} <= set(ran)  # the token map through the toy's mean view
    elif importlib.util.find_spec("zennit") is not None:
        assert "lrp_epsilon" in ran
