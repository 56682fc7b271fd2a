"""A unit's maps on disk: a memory-mappable ``.npy`` streamed batch by batch (float16 while every value fits
and the float16 copy gives back every score computed from the map, float32 otherwise)."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attreval.runs.files import named, temporary_path
from attreval.runs.manifest import Manifest


class MapWriter:
    """Streams the maps ``(G, T, h, w)`` of one unit to ``path`` batch by batch, so no more than one batch is
    ever in memory: batches go into :func:`temporary_path` (an ``.npy`` made by ``open_memmap``, mapped only
    while a batch is written) and :meth:`commit` renames it onto ``path`` once all ``G`` grids are written.

    dtype as :func:`_save_npy`: float16 while every value fits (|x| < 65,504); the first batch that does not
    switches the file to float32 (the rows written so far are copied, float16 → float32 is exact, so those
    grids keep their float16 rounding where :func:`_save_npy` of the whole array keeps float32 values). As a
    context manager it discards the temporary file when the block ends without :meth:`commit` (an
    exception); a killed process leaves only the ``.tmp`` file. ``seconds`` is the time spent writing.
    """

    def __init__(self, path: Path, grids: int, manifest: Manifest | None = None):
        self.path, self.grids, self.tmp = Path(path), grids, temporary_path(Path(path))
        self.manifest = manifest  # records the file on commit
        self.written, self.seconds, self.committed = 0, 0.0, False
        self.dtype: type | None = None  # of the file, once the first batch has created it

    def __enter__(self) -> MapWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.discard()

    def write(self, start: int, batch: np.ndarray, keeps_scores: Callable[[], bool] | None = None) -> None:
        """Write ``batch`` ``(B, T, h, w)`` as grids ``start … start + B - 1``; batches come in order.

        ``keeps_scores()`` (asked only while the file is float16): whether the batch rounded to float16 still
        gives the scores that were computed from it (:func:`float16_keeps_scores`); False switches the file to
        float32, so that the stored maps always reproduce the stored scores."""
        t0 = time.perf_counter()
        if batch.ndim != 4 or start != self.written or start + len(batch) > self.grids:
            raise ValueError(f"expected maps (B, T, h, w) of grids {self.written}… of {self.grids}, got {batch.shape} from grid {start}")
        narrow = self.dtype in (None, np.float16) and _fits_float16(batch) and (keeps_scores is None or keeps_scores())
        if self.dtype is None:
            self._create(batch, narrow)
        elif self.dtype == np.float16 and not narrow:
            self._widen(step=max(len(batch), 1))
        _write_rows(self.tmp, start, batch)
        self.written += len(batch)
        self.seconds += time.perf_counter() - t0

    def commit(self) -> None:
        """Rename the temporary file onto ``path``; every one of the ``G`` grids must have been written."""
        if self.dtype is None or self.written != self.grids:
            raise ValueError(f"expected maps of all {self.grids} grids before commit, got {self.written}")
        try:
            if self.manifest is not None:
                self.manifest.commit(self.tmp, self.path)
            else:
                os.replace(self.tmp, self.path)
        except OSError as err:
            raise named(err, self.path) from None
        self.committed = True

    def discard(self) -> None:
        """Delete the temporary file (nothing after :meth:`commit`)."""
        if not self.committed:
            self.tmp.unlink(missing_ok=True)

    def _create(self, batch: np.ndarray, narrow: bool) -> None:
        """The temporary ``.npy`` of shape ``(G, T, h, w)`` from the first batch ``(B, T, h, w)`` (float16 if ``narrow``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.float16 if narrow else np.float32
        _create_npy(self.tmp, self.dtype, (self.grids, *batch.shape[1:]))

    def _widen(self, step: int) -> None:
        """Switch the temporary file to float32, copying the rows written so far ``step`` grids at a time."""
        wide = temporary_path(self.path, ".float32")
        try:
            shape = np.lib.format.open_memmap(self.tmp, mode="r").shape
            _create_npy(wide, np.float32, shape)
            for start in range(0, self.written, step):
                _write_rows(wide, start, np.lib.format.open_memmap(self.tmp, mode="r")[start : start + step])
            os.replace(wide, self.tmp)
        finally:
            wide.unlink(missing_ok=True)
        self.dtype = np.float32


def _create_npy(path: Path, dtype: type, shape: tuple[int, ...]) -> None:
    """An ``.npy`` of ``shape`` at ``path`` with all its blocks allocated on disk.

    ``open_memmap`` makes a sparse file; writing through the map then allocates blocks at page faults, and on a
    full disk that is a SIGBUS that kills the process with no message. Reserving the space up front turns a
    full disk into an ``OSError`` (ENOSPC) here, naming the file."""
    try:
        np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        with open(path, "r+b") as handle:
            size = os.fstat(handle.fileno()).st_size
            try:
                os.posix_fallocate(handle.fileno(), 0, size)
            except (AttributeError, OSError) as err:  # no fallocate here (macOS, some file systems): write zeros
                if isinstance(err, OSError) and err.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                _fill_zeros(handle, size)
    except OSError as err:
        path.unlink(missing_ok=True)
        raise named(err, path) from None


def _fill_zeros(handle: Any, size: int, block: int = 1 << 20) -> None:
    """Allocate the ``size`` bytes of an open file by writing them (the ``.npy`` header is rewritten as it was)."""
    handle.seek(0)
    header = handle.read(4096)
    handle.seek(0)
    zeros = bytes(block)
    for start in range(0, size, block):
        handle.write(zeros[: min(block, size - start)])
    handle.seek(0)
    handle.write(header[: min(len(header), size)])
    handle.flush()


def _write_rows(path: Path, start: int, rows: np.ndarray) -> None:
    """Write ``rows`` ``(B, T, h, w)`` into the ``.npy`` at ``path`` from grid ``start`` (cast to its dtype).

    The file is mapped only during this call, so the pages written do not stay in the process's memory."""
    array = np.lib.format.open_memmap(path, mode="r+")
    if array.shape[1:] != rows.shape[1:]:
        raise ValueError(f"expected maps of shape (B, {', '.join(map(str, array.shape[1:]))}), got {rows.shape}")
    array[start : start + len(rows)] = rows


#: Largest difference between a score computed from a map and from its float16 copy for the copy to be stored.
SCORE_TOLERANCE = 1e-6


def float16_keeps_scores(
    maps: torch.Tensor,
    parts_of: Callable[[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]],
    parts: list[tuple[torch.Tensor, torch.Tensor]],
) -> bool:
    """Whether ``maps`` ``(B, T, h, w)`` float32, rounded to float16, give every score of ``parts`` (per scored
    variant, the ``(inside, total)`` masses ``(B, T)`` computed from ``maps`` by ``parts_of``) to within
    :data:`SCORE_TOLERANCE`. float16 keeps ~3 significant digits and flushes values below ~6e-8 to zero: maps
    of a tiny scale (RISE, Score-CAM at hidden layers) or with mass spread thinly lose their scores there."""
    from attreval.metric import score_from_parts

    if not maps.numel():
        return True
    again = parts_of(maps.half().float())
    return all(
        float((score_from_parts(*a) - score_from_parts(*b)).abs().max()) <= SCORE_TOLERANCE for a, b in zip(again, parts, strict=True)
    )


def _fits_float16(maps: np.ndarray) -> bool:
    """Whether every value of ``maps`` (any shape) is below float16's largest, 65,504, in magnitude."""
    return bool(not maps.size or float(np.abs(maps).max()) < float(np.finfo(np.float16).max))


def _save_npy(path: Path, maps: np.ndarray) -> None:
    """float16 halves the size; maps beyond its range (|x| > 65,504) are kept as float32 instead of inf."""
    with path.open("wb") as f:
        np.save(f, maps.astype(np.float16 if _fits_float16(maps) else np.float32))
