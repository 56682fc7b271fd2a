"""Attribution methods: the registry of paper presets and ways to bring your own.

Importing this package registers every built-in method in :data:`METHODS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from attreval.methods.base import METHODS, Method, Task
from attreval.methods.custom import FunctionMethod
from attreval.methods.sources import find_method, is_method_name, method_names, resolve

#: The built-in method modules, imported (= registered) in this order, the order of every table; LRP needs
#: zennit only to run; attention holds the transformer methods (rollout, Chefer).
BUILTIN_MODULES = ("gradient", "cam", "perturbation", "smoothgrad", "lrp", "attention")
for _name in BUILTIN_MODULES:
    importlib.import_module(f"attreval.methods.{_name}")

__all__ = ["METHODS", "Method", "Task", "FunctionMethod", "find_method", "is_method_name", "method_names", "resolve_method"]


def resolve_method(method: str | Method | Callable[..., Any], **options: Any) -> Method:
    """A method object from a name (built-in or installed plugin), a method object or class, or a plain callable
    ``fn(forward, inputs, targets, **options)``; ``options`` replace fields of its preset (or become the
    function's keyword arguments). See :mod:`attreval.methods.sources`."""
    return resolve(method, **options)
