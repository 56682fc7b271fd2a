"""What the analyses, the figures and the report agree on: display names, orders, and which evaluations
the paper compares (PAPER.md §6). Each rule is written here once; nothing here names a method: what is
known about a method comes from its class (the registry) or from the run's own rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from attreval.methods import METHODS
from attreval.settings import SETTINGS

FAMILIES = ("backprop", "activation", "perturbation")
SETTING_ORDER = tuple(SETTINGS.names())
LAYER_ORDER = ("input", "middle", "final")
#: The paper's qualitative smoothing kernel (K = 129 at 448 px, §6.1): AggAtt rows, SmoothGrad comparison.
PAPER_KERNEL_REF = 129


def method_display(method: str) -> str:
    return METHODS.get(method).display if method in METHODS else method


def method_family(method: str) -> str:
    return METHODS.get(method).family if method in METHODS else "other"


def setting_display(setting: str) -> str:
    return SETTINGS.get(setting).display if setting in SETTINGS else setting


def ordered(values: Iterable, first: Sequence[str]) -> list[str]:
    """``values`` (unique) with the names in ``first`` leading, in that order, the rest in seen order."""
    values = list(dict.fromkeys(values))
    return [v for v in first if v in values] + [v for v in values if v not in first]


def method_order(methods: Iterable) -> list[str]:
    """Registry order first, then unregistered names in seen order."""
    return ordered(methods, METHODS.names())


def position(value: str, order: Sequence[str]) -> int:
    """Sort key of ``value`` in ``order``: its index, or after every listed name."""
    return order.index(value) if value in order else len(order)


def smoothed_methods(results: pd.DataFrame, **where) -> list[str]:
    """The methods with smoothed rows (``kernel_size > 0``: S-IntGrad, S-IxG in the paper's runs) among the
    rows matching ``where`` (column = value), in registry order: the run's own record of what it smoothed."""
    rows = results[results["kernel_size"] > 0]
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return method_order(pd.unique(rows["method"]))


def reference_evaluation() -> tuple[str, str]:
    """``(method, layer)`` the smoothed methods are compared with (PAPER.md §6.2: Grad-CAM at the final
    layer): the registered method whose class declares a non-empty ``reference_layer``."""
    chosen = [(name, type(m).reference_layer) for name, m in METHODS.items() if getattr(type(m), "reference_layer", "")]
    if len(chosen) != 1:
        raise ValueError(f"expected one method class declaring a reference_layer, got {chosen}")
    return chosen[0]


def smoothgrad_methods() -> list[str]:
    """Registered names whose preset is a SmoothGrad (drawn as the noise-averaging reference, §6.3)."""
    from attreval.methods.smoothgrad import SmoothGrad

    return [name for name, m in METHODS.items() if isinstance(m, SmoothGrad)]
