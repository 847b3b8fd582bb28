"""The last action taken for each VIP, kept in state_dir for `vipfloat status`
(best effort: a record that cannot be written is logged, never an error)."""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import TransientError
from .lock import lock_path
from .statedir import StateDir

log = logging.getLogger(__name__)


def last_name(master: str) -> str:
    """The record's name in state_dir."""
    return lock_path(Path("."), master).with_suffix(".last.json").name


def write_last(state_dir: Path, master: str, record: dict[str, object]) -> None:
    try:
        with StateDir(state_dir) as sd:
            sd.write_record(last_name(master), record)
    except (OSError, TransientError) as exc:
        log.warning("cannot record last action in %s: %s", state_dir,
                    getattr(exc, "strerror", None) or exc)


def read_last(state_dir: Path, master: str) -> object:
    """The record as JSON (any JSON: the reader checks its shape), or None. Never
    creates state_dir: `vipfloat status` only reads."""
    try:
        with StateDir(state_dir, create=False) as sd:
            return sd.read_record(last_name(master))
    except (OSError, TransientError):
        return None
