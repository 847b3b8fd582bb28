"""state_dir, where the per-VIP lock files and last-action records live, reached
without ever following a link another user planted.

Other users may be able to write in state_dir: in the opt-in direct mode the
hook runs as Sentinel's user, a member of the directory's group, and must create
lock files there too. A root process (the agent, or `vipfloat acquire` run by an
operator) must then never be turned against its own host by what such a user
puts there:

- the directory is opened once (``O_DIRECTORY | O_NOFOLLOW``) and every file in
  it is reached relative to that descriptor with ``O_NOFOLLOW``: a symbolic link
  planted at a lock or record name is refused (and removed: unlinking a link
  never touches its target), never written through;
- ``O_NONBLOCK`` on every open, and anything but a regular file refused, so a
  FIFO planted at a lock name cannot block the opener;
- temporary files get an unpredictable name and ``O_EXCL``, and are renamed
  over the record (a rename replaces a link, it does not follow it);
- a world-writable directory is refused outright: anybody could swap its files;
  a group-writable one must be sticky (the direct mode's 3770), so that a group
  member can add files but never rename or remove the agent's;
- a file with more than one link is not ours (a hard link to a file elsewhere):
  it is unlinked here, never chowned or chmodded.

Files get the directory's owner when root creates them (so the agent, running as
its own user, can still open a lock file `vipfloat acquire` created), and are
readable or lockable by the group only when the directory is group-writable (the
direct mode, whose group is the hook's and trusted): in the default mode a
group member can reach the agent's socket but cannot hold a VIP's lock.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import stat
from pathlib import Path

from .errors import TransientError

log = logging.getLogger(__name__)

# A last-action record is a few hundred bytes; anything much larger is not ours.
RECORD_MAX = 64 * 1024
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeStateDir(TransientError):
    """state_dir (or a file in it) is not what vipfloat created: refused."""


def ensure(path: Path) -> None:
    """Create state_dir if missing: only its owner may write (the default mode)."""
    try:
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        raise TransientError(f"cannot create state_dir {path}: {exc.strerror}") from None


class StateDir:
    """An open state_dir; a context manager that closes the descriptor."""

    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = path
        if create:
            ensure(path)
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            # O_DIRECTORY | O_NOFOLLOW on a link fails with ENOTDIR (or ELOOP).
            why = "a symbolic link" if path.is_symlink() else exc.strerror
            raise UnsafeStateDir(f"cannot open state_dir {path}: {why}") from None
        st = os.fstat(self.fd)
        if st.st_mode & stat.S_IWOTH:
            os.close(self.fd)
            raise UnsafeStateDir(f"state_dir {path} is world-writable (mode "
                                 f"{stat.S_IMODE(st.st_mode):04o}): refusing to use it; "
                                 "chmod o-w it, or choose a directory of vipfloat's own")
        if st.st_mode & stat.S_IWGRP and not st.st_mode & stat.S_ISVTX:
            os.close(self.fd)
            raise UnsafeStateDir(f"state_dir {path} is group-writable without the sticky bit "
                                 f"(mode {stat.S_IMODE(st.st_mode):04o}): a group member could "
                                 "replace its files; chmod +t it (3770), or g-w")
        self.owner = st.st_uid
        self.group_writable = bool(st.st_mode & stat.S_IWGRP)
        # Lock files: the group may lock them (read access is enough for flock)
        # only where it may also create them.
        self.lock_mode = 0o640 if self.group_writable else 0o600
        self.record_mode = 0o640

    def __enter__(self) -> StateDir:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # --- opening one file ---------------------------------------------------------------
    def open_regular(self, name: str, flags: int, mode: int) -> int:
        """``name`` in this directory, never through a link and only if it is a
        regular file; a planted link is removed and the open tried once more."""
        for attempt in (1, 2):
            try:
                fd = os.open(name, flags | _OPEN_FLAGS, mode, dir_fd=self.fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP and attempt == 1 and self._remove_planted(
                        name, "a symbolic link"):
                    continue
                raise
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                raise UnsafeStateDir(f"{self.path / name} is not a regular file: refusing it")
            if st.st_nlink != 1:
                # Another name for this file exists, maybe outside state_dir: a
                # hard link planted here. Drop our name for it and start afresh.
                os.close(fd)
                if attempt == 1 and self._remove_planted(name, "a hard link", st.st_uid):
                    continue
                raise UnsafeStateDir(f"{self.path / name} has {st.st_nlink} links: refusing it")
            self._own(fd, st, mode)
            return fd
        raise AssertionError("unreachable")

    def same_file(self, fd: int, name: str) -> bool:
        """Is ``name`` still the file open on ``fd``? (A lock taken on a file that
        was renamed over meanwhile locks nothing anyone else will open.)"""
        try:
            here = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        st = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino)

    def _remove_planted(self, name: str, what: str, uid: int | None = None) -> bool:
        try:
            st = os.lstat(name, dir_fd=self.fd)
            if what == "a symbolic link" and not stat.S_ISLNK(st.st_mode):
                return False
            os.unlink(name, dir_fd=self.fd)   # removes this name only, never a target
        except OSError:
            return False
        log.warning("removed %s planted at %s (uid %d): vipfloat never follows or adopts "
                    "links in state_dir", what, self.path / name, st.st_uid if uid is None else uid)
        return True

    def _own(self, fd: int, st: os.stat_result, mode: int) -> None:
        """Give a file root created to the directory's owner, and exactly ``mode``
        (whatever the umask; files from older versions were 0644)."""
        try:
            if st.st_uid != self.owner and os.geteuid() == 0:
                os.fchown(fd, self.owner, -1)
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)
        except OSError:
            pass  # not ours to change (another user's lock in the direct mode)

    # --- records ------------------------------------------------------------------------
    def write_record(self, name: str, record: object) -> None:
        """Replace ``name`` atomically with ``record`` as one JSON line."""
        tmp = f".{name}.{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS,
                     self.record_mode, dir_fd=self.fd)
        try:
            try:
                self._own(fd, os.fstat(fd), self.record_mode)
                os.write(fd, (json.dumps(record) + "\n").encode())
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass
            raise

    def read_record(self, name: str) -> object:
        """The JSON in ``name``; None when it is missing, not ours or not JSON."""
        try:
            fd = os.open(name, os.O_RDONLY | _OPEN_FLAGS, dir_fd=self.fd)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = os.read(fd, RECORD_MAX + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        if len(data) > RECORD_MAX:
            return None
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            return None
