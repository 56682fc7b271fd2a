"""The symlink rule of a run directory: nothing inside ``--out`` may be a symbolic link.

A link inside the run directory (``.attreval.lock``, ``report/``, ``manifest/``, a part file …) would make a
write, a rename or a deletion land on whatever it points to, outside ``--out``. So every reader and writer of
a run first looks for links (:func:`symlinks_under`, ``lstat`` only: a link is never followed, so a loop cannot
trap the walk), each path written is checked component by component (:func:`checked`), and the lock file is
opened with ``O_NOFOLLOW``. The run directory itself (``--out``) may be a link: that is the user's choice.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def symlinks_under(root: str | os.PathLike) -> list[Path]:
    """Every symbolic link inside ``root`` (not ``root`` itself), found without following any, in walk order."""
    found: list[Path] = []
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_symlink():
                found.append(Path(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
    return found


def refuse_symlinks(root: str | os.PathLike) -> None:
    """A one-line ``ValueError`` naming the first link inside ``root`` (see the module docstring)."""
    links = symlinks_under(root)
    if links:
        raise ValueError(symlink_problem(Path(root), links))


def symlink_problem(root: Path, links: list[Path]) -> str:
    """The one line that names the links found inside the run directory ``root``."""
    more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
    return (
        f"expected no symbolic links inside the run directory {root}, got {links[0]} -> {os.readlink(links[0])}{more}; "
        "attreval never writes through a link: remove it"
    )


def checked(root: Path, path: Path) -> Path:
    """``path``, checked to lie inside ``root`` with no component below ``root`` being a symbolic link."""
    full = Path(os.path.abspath(path))
    base = Path(os.path.abspath(root))
    if not full.is_relative_to(base) or full == base:
        raise ValueError(f"expected a path inside the run directory {root}, got {path}")
    current = base
    for part in full.relative_to(base).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            break  # what does not exist yet is created by us, as a plain file or folder
        if stat.S_ISLNK(mode):
            raise ValueError(symlink_problem(base, [current]))
    return path


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` itself (``O_NOFOLLOW``) with a one-line error."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), mode)
    except OSError:
        if os.path.islink(path):
            raise ValueError(symlink_problem(path.parent, [path])) from None
        raise
