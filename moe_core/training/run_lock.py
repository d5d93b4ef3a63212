"""One trainer per run directory: an exclusive flock on RUN/.lock."""

from __future__ import annotations

import os
from pathlib import Path

LOCK_NAME = ".lock"  # RUN/.lock: flock-ed by the process training the run (the kernel drops it if that dies)


class RunLock:
    """An exclusive, non-blocking `fcntl.flock` on RUN/.lock, so two trainers never write one run directory.

    The file holds the owner's PID (for the message only): the lock itself is the flock, which the kernel
    releases when the process exits or is killed, so a stale file never blocks a later resume.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; training still works, without the guard
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OSError(f"cannot write to run directory {self.path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise ValueError(
                f"run {self.path.parent.name} is already being trained by process {owner} ({self.path.parent})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
