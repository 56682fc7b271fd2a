"""Where LRP's rules go: a Zennit composite registered on a tail's modules only, and everything Zennit changes
on them put back afterwards (see the "Scope" and "Canonizers" notes of :mod:`attreval.methods.lrp`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from attreval.models.splitters.vgg import GlobalAveragePool
from attreval.validation import first_line


def require_zennit() -> Any:
    """The ``zennit`` module, or a one-line error saying how to install it."""
    try:
        import zennit.canonizers
        import zennit.core
        import zennit.layer
        import zennit.rules
        import zennit.torchvision
        import zennit.types
    except ImportError:
        raise ValueError("expected the zennit package for the LRP methods, got none (pip install attreval[zennit])") from None
    return zennit


# --------------------------------------------------------------------------------------------------
# Scope: hooks and canonizers on the tail's modules only, everything restored


def _snapshot(root: nn.Module) -> list[tuple]:
    """References to everything a canonizer or rule may replace, per submodule (no tensor is copied)."""
    saved = []
    for module in root.modules():
        params = dict(module._parameters)
        saved.append(
            (
                module,
                params,
                {name: p.data for name, p in params.items() if p is not None},
                dict(module._buffers),
                {name: b.data for name, b in module._buffers.items() if b is not None},
                dict(module._modules),
                module.__dict__.get("forward", _MISSING),
            )
        )
    return saved


_MISSING = object()


def _restore(saved: list[tuple]) -> None:
    """Put back what :func:`_snapshot` saw: parameter and buffer objects and their data, submodules, ``forward``."""
    for module, params, data, buffers, buffer_data, children, forward in saved:
        module._parameters.clear()
        module._parameters.update(params)
        for name, value in data.items():
            params[name].data = value  # the original tensor (a no-op when Zennit already restored it)
        module._buffers.clear()
        module._buffers.update(buffers)
        for name, value in buffer_data.items():
            buffers[name].data = value
        module._modules.clear()
        module._modules.update(children)
        if forward is _MISSING:
            module.__dict__.pop("forward", None)
        else:
            module.__dict__["forward"] = forward


def _unique(modules: Iterable[nn.Module]) -> list[nn.Module]:
    seen: dict[int, nn.Module] = {}
    for module in modules:
        seen.setdefault(id(module), module)
    return list(seen.values())


@contextmanager
def lrp_scope(modules: Iterable[nn.Module], composite: Any) -> Iterator[nn.ModuleList]:
    """Within the block, ``composite`` (a ``zennit.core.Composite``) is registered on ``modules``.

    Every hook is removed and every canonizer reverted in ``finally`` (Zennit's ``Composite.remove``), and
    then anything still differing from a snapshot taken before registration (a canonizer that failed half way
    leaves its earlier merges unrecorded in Zennit) is put back. Registration errors become a one-line
    ``ValueError``.
    """
    root = nn.ModuleList(_unique(modules))
    saved = _snapshot(root)
    try:
        try:
            composite.register(root)
        except Exception as err:
            line = first_line(err)
            raise ValueError(
                f'expected modules Zennit can canonize and hook for LRP, got {type(err).__name__}: {line} (try canonizer="none")'
            ) from None
        yield root
    finally:
        try:
            composite.remove()
        finally:
            _restore(saved)


# --------------------------------------------------------------------------------------------------
# Composites


def dense_convs(root: nn.Module) -> set[int]:
    """Ids of the ``Conv2d`` modules of GridPG sliding classifiers (``Sequential`` ending in GlobalAveragePool)."""
    dense: set[int] = set()
    for module in root.modules():
        if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], GlobalAveragePool):
            dense.update(id(m) for m in module if isinstance(m, nn.Conv2d))
    return dense
