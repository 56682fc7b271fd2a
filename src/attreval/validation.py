"""One-line checks of user-given values: the "expected …, got …" errors every module raises the same way."""

from __future__ import annotations

from typing import Any


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int ≥ 1 (not a bool), else ``ValueError("expected a positive integer NAME, got …")``.

    >>> positive_int("n_steps", 20)
    20
    >>> positive_int("n_steps", 0)
    Traceback (most recent call last):
    ...
    ValueError: expected a positive integer n_steps, got 0
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"expected a positive integer {name}, got {value!r}")
    return value


def in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` if it is a real number within ``[low, high]`` (ends open as asked), else a one-line ``ValueError``.

    >>> in_range("keep_prob", 0.1, 0, 1, low_open=True)
    0.1
    >>> in_range("keep_prob", 0, 0, 1, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: expected keep_prob in (0, 1], got 0
    """
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    above = number and (value > low if low_open else value >= low)
    below = number and (value < high if high_open else value <= high)
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"expected {name} in {interval}, got {value!r}")
    return float(value)


def positive_number(name: str, value: Any) -> float:
    """``value`` if it is a real number > 0 (not a bool), else ``ValueError("expected a positive number for NAME, …")``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"expected a positive number for {name}, got {value!r}")
    return float(value)


def choice(name: str, value: Any, choices: tuple[str, ...]) -> Any:
    """``value`` if it is one of ``choices``, else ``ValueError("expected NAME in (…), got …")``."""
    if value not in choices:
        raise ValueError(f"expected {name} in {choices}, got {value!r}")
    return value


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (at most ``limit`` characters), or its type's name when it has none:
    what a one-line error quotes of the error it replaces.

    >>> first_line(RuntimeError("shapes cannot be multiplied\\nlong details")), first_line(KeyError())
    ('shapes cannot be multiplied', 'KeyError')
    """
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__
