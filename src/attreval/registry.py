"""A small name → object registry with helpful errors.

One registry per kind of thing (methods, settings, models). The CLI choices, the docs tables and the
test parametrisation all read the same registry, so a name is written exactly once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``.

    >>> did_you_mean("gradcam", ["grad_cam", "rise"])
    " (did you mean 'grad_cam'?)"
    """
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name_error(kind: str, name: str, choices: list[str]) -> ValueError:
    """A one-line ``ValueError`` naming the valid choices and the closest match."""
    return ValueError(f"unknown {kind} '{name}'{did_you_mean(name, choices)}; expected one of: {', '.join(choices)}")


class Registry(Generic[T]):
    """Ordered mapping from snake_case names to objects.

    >>> r = Registry("colour"); _ = r.register("red")(1); r.get("red")
    1
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator (or plain call) that stores ``obj`` under ``name``."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The object registered as ``name``; unknown names raise with a did-you-mean."""
        if not isinstance(name, str):
            raise TypeError(f"expected a {self.kind} name (str), got {type(name).__name__}")
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name_error(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        return list(self._items)

    def remove(self, name: str) -> T:
        """Take ``name`` out again (a test's temporary extension); returns what was registered."""
        self.get(name)  # unknown names raise with a did-you-mean
        return self._items.pop(name)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
