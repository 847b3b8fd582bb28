"""state_dir against a hostile co-tenant: links, FIFOs and modes planted by
another user must never make a vipfloat process (often root) write, create or
block outside what it meant to. No root needed, except for the ownership test."""
from __future__ import annotations

import json
import os
import stat
import threading
import time

import pytest

from vipfloat import record
from vipfloat.errors import TransientError
from vipfloat.lock import VipLock
from vipfloat.statedir import StateDir, UnsafeStateDir


def _record(cfg, state):
    record.write_last(state, cfg.vips[0].master, {"action": "acquire", "role": "leader"})


@pytest.fixture
def victim(tmp_path):
    """A file that must stay as it is: root's 0600 secret, say."""
    path = tmp_path / "victim"
    path.write_text("precious\n")
    path.chmod(0o600)
    return path


def test_a_link_planted_at_the_temp_names_is_never_written_through(cfg, tmp_path, victim):
    # The old record writer used `.<name>.<pid>`: a group member planted links for
    # the next PIDs and root overwrote their target with JSON.
    state = tmp_path / "state"
    state.mkdir()
    pid = os.getpid()
    for p in range(max(1, pid - 50), pid + 50):
        os.symlink(victim, state / f".mymaster.last.json.{p}")
    _record(cfg, state)
    assert victim.read_text() == "precious\n"
    assert json.loads((state / "mymaster.last.json").read_text())["action"] == "acquire"


def test_a_link_planted_at_the_record_name_is_replaced_not_followed(cfg, tmp_path, victim):
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(victim, state / "mymaster.last.json")
    _record(cfg, state)
    assert victim.read_text() == "precious\n"
    assert not (state / "mymaster.last.json").is_symlink()
    # ... and a reader never follows one either.
    (state / "mymaster.last.json").unlink()
    victim.write_text('{"action": "forged"}')
    os.symlink(victim, state / "mymaster.last.json")
    assert record.read_last(state, "mymaster") is None


def test_a_lock_link_is_removed_and_never_creates_its_target(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    elsewhere = tmp_path / "elsewhere" / "created-by-root"
    elsewhere.parent.mkdir()
    os.symlink(elsewhere, state / "mymaster.lock")
    with VipLock(state, "mymaster", timeout=1):
        pass
    assert not elsewhere.exists()
    assert not (state / "mymaster.lock").is_symlink()
    assert (state / "mymaster.lock").is_file()


def test_a_fifo_at_the_lock_name_is_refused_without_blocking(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / "mymaster.lock")
    result: list[BaseException | None] = []

    def take() -> None:
        try:
            with VipLock(state, "mymaster", timeout=1):
                result.append(None)
        except BaseException as exc:  # noqa: BLE001
            result.append(exc)

    t = threading.Thread(target=take, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "opening a FIFO planted at the lock name blocked"
    assert isinstance(result[0], UnsafeStateDir) and "not a regular file" in str(result[0])


def test_a_world_writable_state_dir_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    with pytest.raises(UnsafeStateDir, match="world-writable"):
        with VipLock(state, "mymaster", timeout=1):
            pass
    assert isinstance(UnsafeStateDir("x"), TransientError)  # exit 1: fixable, retried


def test_a_state_dir_that_is_a_link_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "state")
    with pytest.raises(UnsafeStateDir, match="symbolic link"):
        StateDir(tmp_path / "state", create=False)


def test_lock_files_are_lockable_by_the_group_only_in_a_group_writable_dir(tmp_path):
    # The default mode: a member of state_dir's group reaches the socket but
    # must not be able to open (and flock) a VIP's lock, which stalled acquire.
    own = tmp_path / "own"
    own.mkdir(mode=0o750)
    own.chmod(0o750)
    with VipLock(own, "mymaster", timeout=1):
        pass
    assert stat.S_IMODE((own / "mymaster.lock").stat().st_mode) == 0o600
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o3770)
    with VipLock(shared, "mymaster", timeout=1):
        pass
    assert stat.S_IMODE((shared / "mymaster.lock").stat().st_mode) == 0o640


def test_an_old_world_readable_lock_is_narrowed(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    state.chmod(0o750)
    (state / "mymaster.lock").touch(mode=0o644)
    (state / "mymaster.lock").chmod(0o644)
    with VipLock(state, "mymaster", timeout=1):
        pass
    assert stat.S_IMODE((state / "mymaster.lock").stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_files_root_creates_belong_to_the_directory_owner(cfg, tmp_path):
    # `vipfloat acquire` run by root must not leave a root-only lock the agent,
    # running as its own user, can no longer open.
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    os.chown(state, 65534, 65534)
    with VipLock(state, "mymaster", timeout=1):
        pass
    _record(cfg, state)
    assert (state / "mymaster.lock").stat().st_uid == 65534
    assert (state / "mymaster.last.json").stat().st_uid == 65534


def test_read_last_refuses_a_huge_record(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "mymaster.last.json").write_text('"' + "x" * 200_000 + '"')
    assert record.read_last(state, "mymaster") is None
    assert record.read_last(tmp_path / "missing", "mymaster") is None
    assert not (tmp_path / "missing").exists()   # status never creates state_dir


def test_a_group_writable_state_dir_must_be_sticky(tmp_path):
    # Without the sticky bit a group member could rename its own file over a
    # lock another process holds, and two runs would each hold "the" lock.
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o2770)
    with pytest.raises(UnsafeStateDir, match="group-writable without the sticky bit"):
        with VipLock(state, "mymaster", timeout=1):
            pass


def test_a_hard_link_planted_at_the_lock_name_is_dropped_not_adopted(tmp_path, victim):
    # Root's lock used to fchown and fchmod whatever file sat at the lock name:
    # a hard link made that any file the attacker could link to.
    state = tmp_path / "state"
    state.mkdir()
    victim.chmod(0o666)
    os.link(victim, state / "mymaster.lock")
    with VipLock(state, "mymaster", timeout=1):
        pass
    assert stat.S_IMODE(victim.stat().st_mode) == 0o666 and victim.read_text() == "precious\n"
    assert victim.stat().st_nlink == 1                      # our name for it is gone
    assert (state / "mymaster.lock").stat().st_nlink == 1   # a fresh lock of our own


def test_a_lock_renamed_over_while_waiting_is_taken_again(tmp_path):
    import fcntl

    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    state.chmod(0o750)
    holder = os.open(state / "mymaster.lock", os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    taken, done = threading.Event(), threading.Event()

    def take() -> None:
        with VipLock(state, "mymaster", timeout=5):
            taken.set()
            done.wait(5)

    t = threading.Thread(target=take, daemon=True)
    t.start()
    time.sleep(0.2)
    # Someone swaps a new file in at the name, then the old holder lets go: the
    # waiter's flock on the old file must not count as holding the lock.
    (state / "new").touch()
    os.rename(state / "new", state / "mymaster.lock")
    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    assert taken.wait(5)
    # It holds the file now at the name: nobody else can take that one.
    probe = os.open(state / "mymaster.lock", os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(probe)
        done.set()
        t.join(5)
