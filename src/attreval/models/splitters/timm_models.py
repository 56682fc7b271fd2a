"""timm CNNs, from the model's own contract: the modules of ``feature_info`` are the stages (with the
reductions timm reports), the last feature map before ``forward_head`` is final, and ``get_classifier``
names the classifier. The cut itself is the graph splitter's (:mod:`attreval.models.splitters.graph`).
"""

from __future__ import annotations

from torch import Tensor, nn

from attreval.models.splitters.common import in_channels
from attreval.models.splitters.graph import HEAD_NAMES, GraphCut
from attreval.models.staged import StagedModel


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.") and hasattr(model, "feature_info") and hasattr(model, "forward_head")


class TimmSplitter:
    """Accepts timm models with ``feature_info`` and spatial (``(B, C, h, w)``) features."""

    def accepts(self, model: nn.Module) -> bool:
        return _is_timm(model) and all("module" in info for info in _infos(model))

    def probe_shape(self, model: nn.Module) -> tuple[int, int, int]:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        size = tuple(cfg.get("input_size", (in_channels(model), 224, 224)))
        return int(size[0]), int(size[1]), int(size[2])

    def split(self, model: nn.Module, probe: Tensor) -> StagedModel:
        cut = GraphCut(model, probe)
        classifier = _classifier_name(model)
        heads = HEAD_NAMES + ((classifier,) if classifier else ())
        boundaries = [info["module"] for info in _infos(model)]
        if any(b not in cut.last_node for b in boundaries):  # HRNet's feature_info names its features-only modules
            boundaries = cut.structural_boundaries(heads)
        return cut.staged(_at_cuts(cut, boundaries), heads, f"timm {type(model).__name__}")


def _at_cuts(cut: GraphCut, boundaries: list[str]) -> list[str]:
    """Each ``feature_info`` module, or where it ends inside a residual block (Xception's
    ``blocks.1.stack.act3``, where the shortcut is still live), the module ending at the last spatial cut
    before it: the previous block's output, a map of the same resolution."""
    out: list[str] = []
    for path in boundaries:
        if not cut.is_stage_end(path):
            before = [i for i in range(cut.last_node[path], -1, -1) if cut.nodes[i] in cut.cuts and cut.nodes[i] in cut.spatial]
            path = cut.name_of(cut.nodes[before[0]], set(out)) if before else ""
        if path and path in cut.last_node and path not in out:
            out.append(path)
    return out


def _infos(model: nn.Module) -> list[dict]:
    info = model.feature_info
    return list(info.info) if hasattr(info, "info") else list(info)


def _classifier_name(model: nn.Module) -> str | None:
    """The attribute path of ``model.get_classifier()`` among the model's modules, if any."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, nn.Module):
        return None
    return next((name for name, m in model.named_modules() if m is classifier and name), None)
