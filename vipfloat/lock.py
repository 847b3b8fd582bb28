"""One actor per VIP: an flock(2) lock file per master in ``state_dir``.

Sentinel runs up to 16 scripts at once, and later the agent acts too; whoever
changes a VIP holds its lock for the whole read-decide-act step, so two runs can
never interleave (one adding while another removes) and the last one to act saw
the state the previous one left. flock is released by the kernel when the holder
dies, so a SIGKILLed hook never leaves a stale lock.

The lock file is opened through :class:`vipfloat.statedir.StateDir`: never
through a link, and lockable by state_dir's group only in the direct mode.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from .errors import LockTimeout, TransientError
from .retry import until_deadline
from .statedir import StateDir, UnsafeStateDir

_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def lock_path(state_dir: Path, master: str) -> Path:
    # Master names are Sentinel's and may hold any non-space character; keep the
    # readable name where it is safe as a file name, else a stable hash.
    name = master if _SAFE.match(master) and not master.startswith(".") else \
        "h-" + hashlib.sha256(master.encode()).hexdigest()[:16]
    return state_dir / f"{name}.lock"


class VipLock:
    def __init__(self, state_dir: Path, master: str, timeout: float) -> None:
        self.path = lock_path(state_dir, master)
        self.state_dir = state_dir
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> VipLock:
        name = self.path.name
        with StateDir(self.state_dir) as sd:
            fd = self._open(sd)

            def attempt() -> None:
                nonlocal fd
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise LockTimeout(f"lock {self.path} still held after {self.timeout:g} s") \
                        from None
                if not sd.same_file(fd, name):
                    # Renamed over while we waited (only possible where others may
                    # write in state_dir): this lock guards nothing. Start again.
                    os.close(fd)
                    fd = self._open(sd)
                    raise LockTimeout(f"lock {self.path} was replaced while being taken")

            try:
                until_deadline(attempt, self.timeout, f"lock {self.path}", max_wait=0.05)
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd
        return self

    def _open(self, sd: StateDir) -> int:
        try:
            # Read access is enough for flock.
            return sd.open_regular(self.path.name, os.O_RDONLY | os.O_CREAT, sd.lock_mode)
        except UnsafeStateDir:
            raise
        except OSError as exc:
            why = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise TransientError(f"cannot open lock {self.path}: {why}") from None

    def __exit__(self, *_: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
