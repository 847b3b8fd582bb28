"""Action scripts run as the agent's user (often root): refuse, as cron and sudo
do, anything another user could have written or redirected. Each refusal is
logged at ERROR once per run, and doctor reads the same verdicts."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from vipfloat import userscripts
from vipfloat.userscripts import Refusal, audit, run_scripts

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture
def scripts_dir(tmp_path: Path) -> Path:
    d = tmp_path / "actions.d"
    d.mkdir()
    d.chmod(0o755)          # whatever the umask
    return d


def script(directory: Path, name: str, marker: Path, mode: int = 0o755) -> Path:
    """A script that leaves a trace when (and only when) it runs."""
    path = directory / name
    path.write_text(f"#!/bin/sh\necho ran >> {marker}\n")
    path.chmod(mode)
    return path


def ran(marker: Path) -> bool:
    return marker.exists()


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.ERROR and r.name == userscripts.__name__]


@pytest.mark.parametrize("mode,reason,fix", [
    (0o757, "world-writable (mode 0757)", "chmod go-w {p}"),
    (0o775, "group-writable (mode 0775)", "chmod go-w {p}"),
    (0o777, "group- and world-writable (mode 0777)", "chmod go-w {p}"),
])
def test_a_script_others_can_write_is_refused_and_logged(scripts_dir, tmp_path, caplog, mode,
                                                         reason, fix):
    marker = tmp_path / "marker"
    bad = script(scripts_dir, "10-writable", marker, mode)
    assert run_scripts(scripts_dir, {}, timeout=5) == []
    assert not ran(marker)
    assert refusals(caplog) == [f"action script {bad} not run: {reason} -- fix: "
                                f"{fix.format(p=bad)}"]


def test_a_symlink_is_refused_even_to_a_safe_script(scripts_dir, tmp_path, caplog):
    # Out of the directory (a safe script elsewhere) and inside it: links are never
    # followed, so what runs is always what was checked.
    outside = script(tmp_path, "elsewhere", tmp_path / "marker")
    inside = script(scripts_dir, "20-real", tmp_path / "marker-real")
    (scripts_dir / "10-out").symlink_to(outside)
    (scripts_dir / "30-in").symlink_to(inside)
    results = run_scripts(scripts_dir, {}, timeout=5)
    assert [r.path.name for r in results] == ["20-real"]
    assert not ran(tmp_path / "marker")
    fix = "replace the link with a copy of the script it points to"
    assert refusals(caplog) == [
        f"action script {scripts_dir / '10-out'} not run: a symbolic link (links are not "
        f"followed) -- fix: {fix}",
        f"action script {scripts_dir / '30-in'} not run: a symbolic link (links are not "
        f"followed) -- fix: {fix}"]


@pytest.mark.parametrize("mode,reason", [(0o777, "group- and world-writable (mode 0777)"),
                                         (0o775, "group-writable (mode 0775)"),
                                         (0o1777, "group- and world-writable (mode 1777)")])
def test_a_directory_others_can_write_runs_nothing(scripts_dir, tmp_path, caplog, mode, reason):
    marker = tmp_path / "marker"
    script(scripts_dir, "10-fine", marker)
    scripts_dir.chmod(mode)
    assert run_scripts(scripts_dir, {}, timeout=5) == []
    assert not ran(marker)
    assert refusals(caplog) == [
        f"action scripts in {scripts_dir} not run: the directory is {reason} -- fix: "
        f"chmod go-w {scripts_dir}"]


@as_root
def test_a_script_owned_by_another_user_is_refused(scripts_dir, tmp_path, caplog):
    marker = tmp_path / "marker"
    bad = script(scripts_dir, "10-nobody", marker)
    os.chown(bad, NOBODY, -1)
    assert run_scripts(scripts_dir, {}, timeout=5) == []
    assert not ran(marker)
    assert refusals(caplog) == [
        f"action script {bad} not run: owned by uid {NOBODY} (only root may own it) "
        f"-- fix: chown root {bad}"]


@as_root
def test_a_directory_owned_by_another_user_runs_nothing(scripts_dir, tmp_path, caplog):
    marker = tmp_path / "marker"
    script(scripts_dir, "10-fine", marker)
    os.chown(scripts_dir, NOBODY, -1)
    assert run_scripts(scripts_dir, {}, timeout=5) == []
    assert not ran(marker)
    assert refusals(caplog) == [
        f"action scripts in {scripts_dir} not run: the directory is owned by uid {NOBODY} "
        f"(only root may own it) -- fix: chown root {scripts_dir}"]


@as_root
def test_the_agents_own_user_may_own_its_scripts(scripts_dir, tmp_path):
    # owners: root and the user that runs them (the agent's, when doctor asks).
    bad = script(scripts_dir, "10-agent", tmp_path / "marker")
    os.chown(bad, 995, -1)
    os.chown(scripts_dir, 995, -1)
    assert audit(scripts_dir, owners={0, 995}) == ([bad], [])
    assert audit(scripts_dir, owners={0}) == ([], [Refusal(
        scripts_dir, "the directory is owned by uid 995 (only root may own it)",
        f"chown root {scripts_dir}")])


def test_several_faults_are_one_refusal_with_every_reason(scripts_dir, tmp_path):
    bad = script(scripts_dir, "10-bad", tmp_path / "marker", 0o777)
    reasons = ["group- and world-writable (mode 0777)"]
    fixes = [f"chmod go-w {bad}"]
    if os.geteuid() == 0:
        os.chown(bad, NOBODY, -1)
        reasons.insert(0, f"owned by uid {NOBODY} (only root may own it)")
        fixes.insert(0, f"chown root {bad}")
    assert audit(scripts_dir) == ([], [Refusal(bad, ", ".join(reasons), " && ".join(fixes))])


def test_a_fifo_is_refused_and_a_subdirectory_ignored(scripts_dir, tmp_path, caplog):
    os.mkfifo(scripts_dir / "10-fifo", 0o755)
    (scripts_dir / "20-subdir").mkdir()       # run-parts ignores directories too
    script(scripts_dir, "30-fine", tmp_path / "marker")
    assert audit(scripts_dir) == ([scripts_dir / "30-fine"], [Refusal(
        scripts_dir / "10-fifo", "not a regular file", f"remove {scripts_dir / '10-fifo'}")])


def test_audit_of_a_safe_directory_and_of_no_directory(scripts_dir, tmp_path):
    script(scripts_dir, "20-b", tmp_path / "m")
    script(scripts_dir, "10-a", tmp_path / "m")
    script(scripts_dir, "30-not-executable", tmp_path / "m", 0o644)
    # Not executable, so never run: its being writable by others is no risk (only
    # its owner could make it executable) and not worth an error every run.
    script(scripts_dir, "40-draft", tmp_path / "m", 0o666)
    script(scripts_dir, "50-backup~", tmp_path / "m", 0o777)
    assert audit(scripts_dir) == ([scripts_dir / "10-a", scripts_dir / "20-b"], [])
    assert audit(tmp_path / "absent") == ([], [])


def test_a_file_where_the_directory_should_be_is_refused(tmp_path):
    f = tmp_path / "actions.d"
    f.write_text("")
    [refusal] = audit(f)[1]
    assert (refusal.path, refusal.reason) == (f, "not a directory")


def test_refusals_are_logged_once_per_run(scripts_dir, tmp_path, caplog):
    script(scripts_dir, "10-writable", tmp_path / "marker", 0o777)
    script(scripts_dir, "20-fine", tmp_path / "ok")
    run_scripts(scripts_dir, {}, timeout=5)
    assert len(refusals(caplog)) == 1
    run_scripts(scripts_dir, {}, timeout=5)
    assert len(refusals(caplog)) == 2
    assert (tmp_path / "ok").read_text() == "ran\nran\n"
    assert not ran(tmp_path / "marker")
