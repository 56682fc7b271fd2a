"""What a method needs from the tail it explains, declared as data.

A method lists the capabilities it needs by name (``Method.needs``, a frozenset); a :class:`Capability` says how
to tell whether a tail has one. The same declaration is read by the method before it runs (a one-line
``ValueError`` instead of a silently different method: Guided Backprop on a tail without modules would be Grad),
by the run's plan (units a method does not apply to are skipped before any work), by the contract tests and by
``attreval list methods``.

Built in: ``modules`` (the tail names the modules it runs, for hooks scoped to them: Guided Backprop, LRP, the
attention methods) and ``whole`` (it can run the same heads from the image: Score-CAM). Method modules may
register their own (the attention methods: ``token_attention``).

>>> from attreval.tail import FunctionTail
>>> missing(frozenset({"modules"}), FunctionTail(lambda x: x), "Guided Backprop")
'expected a tail that names the modules it runs (for hooks scoped to them) for Guided Backprop, got a FunctionTail without modules (a plain callable)'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from attreval.registry import Registry
from attreval.tail import Tail


@dataclass(frozen=True)
class Capability:
    """Something a tail can offer a method.

    Attributes:
        expected: the noun phrase of a tail that has it (``"a tail that names the modules it runs"``).
        lacks: ``tail → None`` if the tail has it, else what the tail is instead (the "got …" of the error).
    """

    expected: str
    lacks: Callable[[Tail], str | None]


CAPABILITIES: Registry[Capability] = Registry("capability")


def capability(name: str, expected: str, lacks: Callable[[Tail], str | None]) -> str:
    """Register a capability; returns its name (for ``needs``)."""
    CAPABILITIES.register(name)(Capability(expected, lacks))
    return name


MODULES = capability(
    "modules",
    "a tail that names the modules it runs (for hooks scoped to them)",
    lambda tail: None if tail.modules else f"a {type(tail).__name__} without modules (a plain callable)",
)
WHOLE = capability(
    "whole",
    "a tail that can run from the image",
    lambda tail: None if tail.runs_whole else f"a {type(tail).__name__} that runs only from its layer",
)


def missing(needs: Iterable[str], tail: Tail, display: str) -> str | None:
    """The one-line reason why ``tail`` lacks one of ``needs`` for the method ``display``, or ``None``."""
    for name in sorted(needs):
        cap = CAPABILITIES.get(name)
        got = cap.lacks(tail)
        if got is not None:
            return f"expected {cap.expected} for {display}, got {got}"
    return None
