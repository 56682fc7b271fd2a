"""The library entry point: :func:`attribute` and the construction of a :class:`Task` for a setting."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attreval.methods import resolve_method
from attreval.methods.base import Task
from attreval.models.staged import StagedModel
from attreval.runs.counting import PassCounter
from attreval.settings import Setting, make_setting


def build_task(
    setting: Setting,
    images: Tensor,
    classes: Tensor,
    layer: str,
    heads: tuple[int, ...],
    chunk_size: int = 16,
    activations: Tensor | None = None,
    counter: PassCounter | None = None,
) -> Task:
    """The task of explaining ``setting`` at ``layer`` for grids ``images`` and target ``classes (B, T)``, column t
    on head ``heads[t]``.

    ``activations`` may be passed when already computed (``setting.activations(images, layer)``); ``counter``
    (optional) counts the passes of the task's tail.
    """
    unique = tuple(dict.fromkeys(heads))
    inputs = setting.activations(images, layer) if activations is None else activations
    tail = setting.tail(layer, unique)
    return Task(
        tail=tail if counter is None else counter.wrap(tail),
        inputs=inputs.detach(),
        heads=torch.tensor([unique.index(h) for h in heads], dtype=torch.long, device=images.device),
        classes=classes.to(images.device),
        layer=setting.staged.resolve(layer),
        image=images.detach(),
        chunk_size=chunk_size,
    )


def cells_task(
    setting: Setting,
    images: Tensor,
    labels: Tensor,
    layer: str,
    cells: Sequence[int],
    chunk_size: int = 16,
    counter: PassCounter | None = None,
) -> Task:
    """The unit → task rule of a run and the bench: explain, for grids ``images`` whose cells have the classes
    ``labels (B, n²)``, the class of each scored cell ``cells[t]`` on the head the setting gives it
    (:meth:`~attreval.settings.Setting.heads_for`)."""
    classes = labels[:, list(cells)]
    return build_task(setting, images, classes, layer, setting.heads_for(cells), chunk_size, counter=counter)


def check_inputs(model: nn.Module | StagedModel, images: Tensor, targets: Tensor, n: int) -> None:
    """One-line errors for the usual mistakes (training mode, shapes, dtypes)."""
    if isinstance(model, nn.Module) and model.training:
        raise ValueError("expected a model in eval mode (call model.eval() first), got one in training mode")
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"expected float images of shape (B, C, H, W), got {shape}")
    if not isinstance(targets, Tensor) or targets.dim() != 2 or targets.dtype != torch.long:
        desc = f"{targets.dtype} {tuple(targets.shape)}" if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"expected targets as a LongTensor of shape (B, T), got {desc}")
    if targets.shape[0] != images.shape[0]:
        raise ValueError(f"expected one row of targets per image ({images.shape[0]}), got {targets.shape[0]}")
    if images.shape[-1] % n or images.shape[-2] % n:
        raise ValueError(f"expected image sides divisible by n={n}, got {tuple(images.shape[-2:])}")


def attribute(
    model: nn.Module | StagedModel,
    images: Tensor,
    targets: Tensor,
    method: str | Callable[..., Any],
    *,
    setting: str | Setting = "gridpg",
    layer: str = "input",
    n: int = 2,
    heads: Sequence[int] | None = None,
    chunk_size: int = 16,
    **options: Any,
) -> Tensor:
    """Attribution maps of ``method`` for ``model`` in a setting, at a layer.

    Args:
        model: a CNN in eval mode (any torchvision/timm classification CNN or fx-traceable module, split
            automatically: :func:`attreval.split_model`), or a :class:`StagedModel`.
        images: ``(B, C, n·H, n·W)`` grids (with ``n=1``: single images).
        targets: ``LongTensor (B, T)``: the class of each target column. GridPG explains all T on its
            single output; DiFull/DiPart explain column t on head ``heads[t]``.
        method: a registry name (``attreval.METHODS.names()``), a method object, or any callable
            ``(forward, inputs, targets) -> maps`` (see :class:`attreval.methods.FunctionMethod`).
        setting: a registered setting name (``"gridpg"``, ``"difull"``, ``"dipart"``) or a Setting.
        layer: ``"input"``, ``"middle"``, ``"final"`` or any stage name of the split model.
        n: grid size.
        heads: DiFull/DiPart head of each target column (default: see :meth:`Setting.target_heads`).
        chunk_size: most inputs per forward pass.
        **options: replace the method's preset values (presets: IntGrad ``n_steps=20``, RISE ``num_masks=1000``, …).

    Returns:
        ``(B, T, h, w)`` float32 maps at the layer's resolution, summed over channels, sign kept.
    """
    check_inputs(model, images, targets, n)
    setting = make_setting(setting, model, n)
    setting.staged.check_cell((images.shape[1], images.shape[2] // n, images.shape[3] // n), setting.pooled, images.device, images.dtype)
    method = resolve_method(method, **options)
    task = build_task(setting, images, targets, layer, setting.target_heads(targets.shape[1], heads), chunk_size)
    maps = method(task)
    expected = (task.batch, task.num_targets, *task.inputs.shape[-2:])
    if tuple(maps.shape) != expected:
        raise ValueError(f"expected the method to return maps of shape {expected}, got {tuple(maps.shape)}")
    return maps.float()
