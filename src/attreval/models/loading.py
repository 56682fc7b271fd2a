"""Models named in a run config: the project's own (shipped weights), any torchvision/timm classification
CNN with weights from a local file, or the user's own factory function. Nothing is downloaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from attreval.models.splitters import split_model
from attreval.models.zoo import MODELS, load_default_model


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def load_model(name: str, weights: str = "", num_classes: int = 0, layers: Sequence[str] = (), architecture: str = "") -> nn.Module:
    """A model in eval mode on the CPU, split and verified (:func:`~attreval.models.splitters.split_model`).

    Args:
        name: ``fashion_vgg`` / ``fashion_resnet`` / ``cifar_vgg11``, any torchvision classification model
            name (``vgg11``, ``resnet18``, ``densenet121``, ``mobilenet_v3_small`` …) or ``timm:NAME`` (needs the
            ``timm`` extra); with ``architecture``, only a label.
        weights: local state-dict file (required for torchvision/timm names).
        num_classes: output classes of a torchvision/timm model (default 1000), or passed to the factory.
        layers: layer names (``"input"``, ``"middle"``, ``"final"`` or stage names) the model must have.
        architecture: ``"package.module:function"`` or ``"file.py:function"`` building the model
            (:mod:`attreval.models.factory`); ``weights`` then optional.
    """
    if architecture:
        from attreval.models.factory import build_from_factory
        from attreval.models.staged import StagedModule

        model = build_from_factory(architecture, num_classes)
        if weights and isinstance(model, StagedModule):
            raise ValueError(f"expected no weights for '{name}': its factory returns a StagedModel, which loads its own weights")
        if weights:
            model = _load_weights(model, name, weights, num_classes)
        model = model.eval()
    elif name in MODELS:
        model = load_default_model(name, weights or None)
    else:
        model = _external(name, weights, num_classes or 1000)
    check_logits(model, name)  # a tuple or a map instead of logits: one line, before the splitter sees it
    staged = split_model(model)  # fail now, not mid-run, if the architecture cannot be split
    for layer in layers:  # …or if a layer is unknown (else it fails only after the grids are built)
        staged.resolve(layer)
    return model


def _external(name: str, weights: str, num_classes: int) -> nn.Module:
    if name.startswith("timm:"):
        try:
            import timm  # noqa: F401 - only checks that timm is installed
        except ImportError:
            raise ValueError("expected the timm package for a 'timm:' model, got none (pip install attreval[timm])") from None
        build = lambda: _timm_create(name[5:], num_classes)
    else:
        names = torchvision_names()
        if name not in names:
            from attreval.registry import unknown_name_error

            raise unknown_name_error("model", name, MODELS.names() + names)
        import torchvision

        build = lambda: torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if not weights:
        raise ValueError(f"expected a local weights file for model '{name}' (weights = \"path/to/{name}.pth\"), got none")
    return _load_weights(build(), name, weights, num_classes)


def _timm_create(name: str, num_classes: int) -> nn.Module:
    """A timm model built to run at any input size where its family allows it (``dynamic_img_size=True``:
    Swin, Swin-v2, EVA-02, ViT …), so cells and grids of other sizes than its training images split; families
    without the option are built as they are. Never pretrained (nothing is downloaded)."""
    import timm

    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, dynamic_img_size=True)
    except TypeError:  # the family's constructor has no dynamic_img_size
        return timm.create_model(name, pretrained=False, num_classes=num_classes)


def build_architecture(name: str, num_classes: int = 0, architecture: str = "") -> nn.Module:
    """The untrained model of a config entry (for ``attreval list layers``: the split needs no weights)."""
    if architecture:
        from attreval.models.factory import build_from_factory

        return build_from_factory(architecture, num_classes).eval()
    if name in MODELS:
        from attreval.models.zoo import build_model

        return build_model(name).eval()
    if name.startswith("timm:"):
        return _timm_create(name[5:], num_classes or 1000).eval()
    if name not in torchvision_names():
        from attreval.registry import unknown_name_error

        raise unknown_name_error("model", name, MODELS.names() + torchvision_names())
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes or 1000).eval()


def load_for_timing(name: str, weights: str = "", num_classes: int = 0) -> nn.Module:
    """A model for ``attreval bench``, split and verified: as :func:`load_model`, except that a torchvision
    or timm name without ``weights`` gets random weights (timing and pass counts need no trained weights)."""
    if weights or name in MODELS:
        return load_model(name, weights, num_classes)
    model = build_architecture(name, num_classes)
    split_model(model)  # fail now if the architecture cannot be split
    return model


def _load_weights(model: nn.Module, name: str, weights: str, num_classes: int) -> nn.Module:
    """Load the state dict at ``weights`` into ``model`` (``weights_only=True``); one-line errors."""
    path = Path(weights).expanduser().absolute()
    if not path.is_file():
        raise ValueError(f"expected the weights of '{name}' at {path}, found no file there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"expected a torch state-dict file at {path}, got unreadable data ({type(err).__name__})") from None
    try:
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except (RuntimeError, AttributeError, TypeError) as err:
        raise ValueError(f"expected weights for '{name}' with {num_classes} classes in {path}, got: {_load_error_detail(err)}") from None
    return model.eval()


def _load_error_detail(err: Exception) -> str:
    """The useful part of a ``load_state_dict`` error, on one line, not its bare "Error(s) in loading
    state_dict for ResNet:" heading: the missing / unexpected keys (another architecture), else the first
    size mismatch, with the number of classes the checkpoint has when the mismatch is in the classifier."""
    import re

    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Missing key(s)", "Unexpected key(s)")):
            return line[:300]
    for line in lines:
        if line.startswith("size mismatch"):
            found = re.search(r"size mismatch for (\S+): .*torch\.Size\(\[(\d+)[^\]]*\]\) from checkpoint.*torch\.Size\(\[(\d+)", line)
            classifier = found is not None and re.match(r"(fc|classifier|head)\b", found.group(1)) is not None
            hint = (
                f" (the checkpoint has {found.group(2)} outputs: set num_classes = {found.group(2)})"
                if found is not None and classifier and found.group(2) != found.group(3)
                else ""
            )
            return line[:300] + hint
    return lines[0][:300] if lines else type(err).__name__


def check_logits(model: nn.Module, name: str) -> None:
    """One-line ``ValueError`` unless ``model`` maps a probe input ``(1, C, H, W)`` (its splitter's guess) to
    logits ``(1, K)``: a model returning a tuple, a dict or a 4-D map is refused here. A model that a splitter
    does not accept, or that fails on the probe, is left to :func:`split_model`, which names that."""
    from attreval.models.splitters import splitter_for
    from attreval.models.splitters.common import model_device, probe_input
    from attreval.models.staged import StagedModule

    if isinstance(model, StagedModule):
        return
    try:
        probe = probe_input(splitter_for(model)[1].probe_shape(model), model_device(model))
        with torch.no_grad():
            out = model(probe[:1])
    except Exception:
        return
    if not isinstance(out, torch.Tensor):
        kind = f"a {type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list, dict)) else f"a {type(out).__name__}"
        raise ValueError(f"expected model '{name}' to return logits, a tensor (N, K), got {kind}; return only the logits from forward")
    if out.dim() != 2 or out.shape[0] != 1:
        raise ValueError(
            f"expected model '{name}' to return logits of shape (N, K), got shape {tuple(out.shape)} for an input "
            f"{tuple(probe.shape)}; end the model in its classifier (pool and flatten a map of class scores)"
        )
