"""Lock, retry, action scripts and log formatting: the small mechanisms."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from vipfloat import logs, retry, userscripts
from vipfloat.errors import LockTimeout, TransientError, UsageError
from vipfloat.lock import VipLock, lock_path


def test_lock_excludes_a_second_holder_until_released(tmp_path):
    with VipLock(tmp_path, "mymaster", timeout=1):
        start = time.monotonic()
        with pytest.raises(LockTimeout):
            with VipLock(tmp_path, "mymaster", timeout=0.2):
                pass
        assert time.monotonic() - start >= 0.2
        with VipLock(tmp_path, "other", timeout=0.2):  # another VIP is independent
            pass
    with VipLock(tmp_path, "mymaster", timeout=0.2):
        pass


def test_lock_file_names_are_safe(tmp_path):
    assert lock_path(tmp_path, "mymaster") == tmp_path / "mymaster.lock"
    odd = lock_path(tmp_path, "../etc/passwd")
    assert odd.parent == tmp_path and odd.name.startswith("h-")


def test_until_deadline_retries_transient_then_succeeds():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("not yet")
        return "done"
    assert retry.until_deadline(flaky, 2.0, "flaky") == "done" and len(calls) == 3


def test_until_deadline_gives_up_and_never_retries_permanent():
    calls = []

    def never():
        calls.append(1)
        raise TransientError("still down")
    start = time.monotonic()
    with pytest.raises(TransientError):
        retry.until_deadline(never, 0.2, "never")
    # Gave up: not before its 0.2 s, and well before "never" (a generous bound,
    # so that seconds of stolen time cannot fail it).
    assert 0.2 <= time.monotonic() - start < 10 and len(calls) > 1

    def bad():
        calls.append(2)
        raise UsageError("no")
    with pytest.raises(UsageError):
        retry.until_deadline(bad, 5.0, "bad")
    assert calls.count(2) == 1


def script(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    directory.mkdir(exist_ok=True)
    directory.chmod(0o755)  # a group-writable one (umask 002) would be refused
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


def test_scripts_run_in_order_with_environment(tmp_path):
    d = tmp_path / "actions.d"
    out = tmp_path / "out"
    script(d, "20-second", f'echo "second $VIPFLOAT_EVENT $VIPFLOAT_VIP" >> {out}')
    script(d, "10-first", f'echo "first $VIPFLOAT_MASTER" >> {out}')
    script(d, "30-not-executable", f"echo bad >> {out}", mode=0o644)
    script(d, "40-backup~", f"echo bad >> {out}")
    script(d, ".hidden", f"echo bad >> {out}")
    results = userscripts.run_scripts(d, {"VIPFLOAT_EVENT": "acquire", "VIPFLOAT_MASTER": "m",
                                          "VIPFLOAT_VIP": "198.51.100.250"}, timeout=5)
    assert [r.path.name for r in results] == ["10-first", "20-second"]
    assert out.read_text().splitlines() == ["first m", "second acquire 198.51.100.250"]


def test_failing_and_hanging_scripts_are_logged_not_raised(tmp_path, caplog):
    # Two runs: the timeout applies to every script, and 0.3 s is short enough
    # for a stalled machine to kill one that had to finish. Those run under a
    # generous one; only the hanging one (and the one after it) gets 0.3 s.
    d = tmp_path / "actions.d"
    script(d, "10-fails", "echo oops; exit 3")
    script(d, "30-still-runs", "exit 0")
    caplog.set_level(logging.INFO)
    results = userscripts.run_scripts(d, {}, timeout=30)
    assert [r.returncode for r in results] == [3, 0]
    hanging = tmp_path / "hanging.d"
    script(hanging, "20-hangs", "sleep 30 & sleep 30")
    script(hanging, "30-after-it", "exit 0")
    start = time.monotonic()
    results = userscripts.run_scripts(hanging, {}, timeout=0.3)
    assert time.monotonic() - start < 10      # killed, not waited for (30 s)
    # The next script still ran (0 in time; None if a stall made even it late:
    # a skipped one would have no duration).
    assert [r.path.name for r in results] == ["20-hangs", "30-after-it"]
    assert results[0].returncode is None and results[1].duration > 0
    text = caplog.text
    assert "10-fails exited 3" in text and "oops" in text
    assert "20-hangs killed after 0.3 s timeout" in text


def test_budget_skips_remaining_scripts(tmp_path, caplog):
    d = tmp_path / "actions.d"
    script(d, "10-slow", "sleep 1")
    script(d, "20-late", "exit 0")
    results = userscripts.run_scripts(d, {}, timeout=5, budget=0.2)
    assert [r.returncode for r in results] == [None, None]
    assert "20-late skipped" in caplog.text


def test_missing_scripts_dir_is_fine(tmp_path):
    assert userscripts.run_scripts(tmp_path / "absent", {}, timeout=1) == []


def test_log_fields_quote_and_dash():
    line = logs.fields(master="m", reason='a "b" c', error=None, n=3)
    assert line == 'master=m reason="a \\"b\\" c" error=- n=3'
