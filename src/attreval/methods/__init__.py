"""Attribution methods: the registry of paper presets and ways to bring your own.

Importing this package registers every built-in method in :data:`METHODS`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from attreval.methods.base import METHODS, Method, Task
from attreval.methods.custom import FunctionMethod

#: The built-in method modules, imported (= registered) in this order, the order of every table; LRP needs
#: zennit only to run; attention holds the transformer methods (rollout, Chefer).
BUILTIN_MODULES = ("gradient", "cam", "perturbation", "smoothgrad", "lrp", "attention")
for _name in BUILTIN_MODULES:
    importlib.import_module(f"attreval.methods.{_name}")

__all__ = ["METHODS", "Method", "Task", "FunctionMethod", "resolve_method"]


def resolve_method(method: str | Method | Callable[..., Any], **options: Any) -> Method | FunctionMethod:
    """A method object from a registry name, method object or plain callable; ``options`` replace fields."""
    preset: Any = METHODS.get(method) if isinstance(method, str) else method  # a Method is a dataclass by convention
    if not isinstance(preset, Method):
        if not callable(preset):
            raise TypeError(f"expected a method name, Method or callable, got {type(preset).__name__}")
        if options:
            raise ValueError(f"options {sorted(options)} only apply to built-in methods, got a plain callable")
        return FunctionMethod(preset)
    if not options:
        return preset
    spec: Any = preset  # fields/replace: the type system cannot see that a Method is a dataclass
    fields = {f.name for f in dataclasses.fields(spec)}
    unknown = sorted(set(options) - fields)
    if unknown:
        from attreval.registry import did_you_mean

        hint = did_you_mean(unknown[0], sorted(fields))
        raise ValueError(
            f"unknown option '{unknown[0]}' for {type(preset).__name__}{hint}; expected one of: {', '.join(sorted(fields)) or 'none'}"
        )
    return dataclasses.replace(spec, **options)
