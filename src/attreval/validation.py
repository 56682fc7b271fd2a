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


def memory_bytes(device: Any = None) -> int:
    """The memory an allocation on ``device`` can never exceed: the GPU's total for a CUDA device, else the
    machine's physical memory (0 when unknown: then nothing is refused)."""
    import os

    if device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 0


def fits_in_memory(what: str, nbytes: int, advice: str, device: Any = None) -> None:
    """A one-line ``ValueError`` before allocating ``nbytes`` for ``what`` when that is more than
    :func:`memory_bytes` of ``device`` (and of the machine: a GPU tensor is often built on the CPU first).

    >>> fits_in_memory("a test", 1, "lower it")
    >>> fits_in_memory("10**20 masks", 10**20, "lower num_masks")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: expected 10**20 masks to fit in memory, got 86.7 EiB (more than this machine's ... in all); lower num_masks
    """
    for where in (None, device) if device is not None else (None,):
        limit = memory_bytes(where)
        if limit and nbytes > limit:
            place = "this machine's" if where is None else f"{where}'s"
            raise ValueError(f"expected {what} to fit in memory, got {_size(nbytes)} (more than {place} {_size(limit)} in all); {advice}")


def fits_arrays(what: str, count: int, shape: Any, advice: str, device: Any = None) -> None:
    """:func:`fits_in_memory` for ``count`` float32 arrays of ``shape`` (e.g. RISE's masks of one map size)."""
    size = 1
    for side in shape:
        size *= int(side)
    fits_in_memory(f"{count} {what} of {'×'.join(str(int(v)) for v in shape)}", 4 * count * size, advice, device)


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024:
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} EiB"
