"""Atomic file writes: a temporary name beside the target, renamed into place (and recorded in a manifest)."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

from attreval.runs.manifest import Manifest


def temporary_path(path: Path, tag: str = "") -> Path:
    """``.NAME.PID[TAG].tmp`` beside ``path``: same directory (atomic rename), removed by :meth:`RunStore.remove_temporary`."""
    return path.with_name(f".{path.name}.{os.getpid()}{tag}.tmp")


def atomic_write(
    path: Path, write: Any, manifest: Manifest | None = None, fingerprint: dict | None = None, extra: dict | None = None
) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` (same directory, so the rename is atomic); with a
    ``manifest``, the file is hashed and recorded too (:meth:`Manifest.commit`). An ``OSError`` (a full disk,
    a read-only file system) is raised with the file's path, for the one-line message of the CLI. A symbolic link
    at ``path``'s folder or at the temporary name is refused (a rename replaces a link at ``path`` itself)."""
    tmp = temporary_path(path)
    for where in (path.parent, tmp):
        if where.is_symlink():
            raise ValueError(
                f"expected no symbolic link at {where}, got one (-> {os.readlink(where)}); attreval never writes through a link"
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        if manifest is not None:
            manifest.commit(tmp, path, fingerprint, extra)
        else:
            os.replace(tmp, path)
    except OSError as err:
        raise named(err, path) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def named(err: OSError, path: Path) -> OSError:
    """``err`` with ``path`` as its file name when it has none (``posix_fallocate``, torch and numpy drop it)."""
    if err.filename is not None:
        return err
    code = err.errno
    if code is None:  # pyarrow's OSError carries the errno in its message only: "[Errno 28] No space left …"
        found = re.search(r"\[Errno (\d+)\]", str(err))
        code = int(found.group(1)) if found else errno.EIO
    return OSError(code, os.strerror(code) if err.errno is None else (err.strerror or os.strerror(code)), str(path))
