"""An exclusive lock on a run directory, held for the whole of ``attreval run``.

``RUN/.attreval.lock`` is locked with ``fcntl.flock``; the kernel drops the lock when the holding process
exits, however it dies (SIGKILL included), so a stale lock never blocks a ``--resume``. The file is not
removed afterwards: unlinking a lock file races with a process that has just opened it. The holder writes its
pid into the file so that a second process can say who holds it. Under torchrun only rank 0 takes the lock
(it prepares the directory before the other ranks touch it, and holds it until after the merge), so a second
run, torchrun or not, is refused whole. ``flock`` on network file systems depends on the mount (NFS maps it
to POSIX locks); on a local file system it is exact.
"""

from __future__ import annotations

import os
from pathlib import Path

LOCK_FILE = ".attreval.lock"


class RunLock:
    """``acquire()`` at once or fail with one line naming the holder's pid; ``release()`` is idempotent."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        if self.fd is not None:
            return
        try:
            import fcntl
        except ImportError:  # Windows: no flock; runs are not locked there
            return
        from attreval.runs.nofollow import open_nofollow

        fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)  # a link named .attreval.lock is refused, never followed
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"expected no other attreval process on {self.root}, got pid {holder} holding {self.path}; "
                "wait for it to finish or stop it, then --resume"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
