"""Attribution methods: the registry of paper presets and ways to bring your own.

Importing this package registers every built-in method in :data:`METHODS`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from attreval.methods.base import METHODS, Method, Task
from attreval.methods.custom import FunctionMethod
from attreval.methods import gradient, cam, perturbation, smoothgrad  # noqa: F401  (registers methods)
from attreval.methods import lrp  # noqa: F401  (registers the LRP methods; zennit is needed only to run them)
from attreval.methods import attention  # noqa: F401  (registers the transformer methods: rollout, Chefer)

__all__ = ["METHODS", "Method", "Task", "FunctionMethod", "resolve_method"]


def resolve_method(method: str | Method | Callable[..., Any], **options: Any) -> Method | FunctionMethod:
    """A method object from a registry name, method object or plain callable; ``options`` replace fields."""
    if isinstance(method, str):
        method = METHODS.get(method)
    elif not isinstance(method, Method):
        if not callable(method):
            raise TypeError(f"expected a method name, Method or callable, got {type(method).__name__}")
        if options:
            raise ValueError(f"options {sorted(options)} only apply to built-in methods, got a plain callable")
        return FunctionMethod(method)
    if options:
        fields = {f.name for f in dataclasses.fields(method)}
        unknown = sorted(set(options) - fields)
        if unknown:
            from attreval.registry import did_you_mean

            hint = did_you_mean(unknown[0], sorted(fields))
            raise ValueError(
                f"unknown option '{unknown[0]}' for {type(method).__name__}{hint}; expected one of: {', '.join(sorted(fields)) or 'none'}"
            )
        method = dataclasses.replace(method, **options)
    return method
