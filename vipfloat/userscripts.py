"""Run the operator's action scripts (``scripts_dir``) after an acquire or release.

run-parts conventions: every executable regular file, in name order, skipping
hidden files, editor backups, dpkg leftovers and subdirectories. Each runs in its
own session under a timeout, and a timed-out script's whole process group is
killed. A script's failure is logged and never fails the hook: the VIP already
moved.

The scripts run as the agent's user, often root, so like cron and sudo this
refuses anything that someone else could have written or redirected: a directory
or script owned by another user or writable by group or others, a symbolic link,
anything but a regular file. A refusal is logged at ERROR (once per run, with the
reason and the fix) and ``vipfloat doctor`` reports the same verdicts (``audit``).
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping

log = logging.getLogger(__name__)

_SKIP_SUFFIXES = ("~", ".dpkg-old", ".dpkg-dist", ".dpkg-new", ".dpkg-tmp", ".swp", ".bak")
# All scripts together must finish far inside Sentinel's 60 s kill of the hook.
TOTAL_BUDGET = 25.0


@dataclass(frozen=True)
class ScriptResult:
    path: Path
    returncode: int | None          # None: killed at the timeout, or not run
    duration: float
    output: str


@dataclass(frozen=True)
class Refusal:
    """A script, or a whole directory of them, that is not run, and why."""

    path: Path      # the script, or the directory itself when none of it runs
    reason: str     # "group-writable (mode 0775)"
    fix: str        # a command that makes it safe: "chmod go-w /etc/vipfloat/actions.d"


def _unsafe(st: os.stat_result, path: Path, owners: Collection[int]) -> list[tuple[str, str]]:
    """(reason, fix) for each way another user could change what ``st`` is: not
    owned by one of ``owners``, or writable by group or others. Pure."""
    found = []
    if st.st_uid not in owners:
        others = [f"uid {u}" for u in sorted(owners) if u != 0]
        allowed = "root" + "".join(f" or {u}" for u in others)
        found.append((f"owned by uid {st.st_uid} (only {allowed} may own it)",
                      f"chown root {path}"))
    writable = [who for who, bit in (("group", stat.S_IWGRP), ("world", stat.S_IWOTH))
                if st.st_mode & bit]
    if writable:
        # Sticky or not: a sticky directory still lets others add scripts.
        who = "group- and world" if len(writable) == 2 else writable[0]
        found.append((f"{who}-writable (mode {stat.S_IMODE(st.st_mode):04o})",
                      f"chmod go-w {path}"))
    return found


def _refusal(path: Path, faults: list[tuple[str, str]], prefix: str = "") -> Refusal:
    return Refusal(path, prefix + ", ".join(r for r, _ in faults),
                   " && ".join(f for _, f in faults))


def audit(directory: Path,
          owners: Collection[int] | None = None) -> tuple[list[Path], list[Refusal]]:
    """Which scripts in ``directory`` may run: (the runnable ones in name order,
    the refused ones with their reasons). Reads the disk, changes and logs nothing.

    ``owners``: the uids that may own the directory and its scripts; by default
    root and this process's effective uid (whoever runs them). doctor, running as
    root, passes the agent's uid instead.

    Everything is read through one descriptor of the directory and never through a
    link, so the verdicts are about the very files listed. run_scripts then runs
    them by path, and that leaves no window for anyone else: replacing an entry
    needs write permission on the directory, which only root or the owners have
    once the directory passed, and a script passed only if nobody else can write
    it. (The directories above ``directory`` are not checked: they are the
    operator's, like the path in the config.)"""
    owners = frozenset({0, os.geteuid()} if owners is None else owners)
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return [], []               # no directory, no scripts: the default
    except NotADirectoryError:
        return [], [Refusal(directory, "not a directory", f"remove {directory}")]
    except OSError as exc:
        return [], [Refusal(directory, f"the directory cannot be read ({exc.strerror})",
                            f"chmod 0755 {directory}")]
    try:
        faults = _unsafe(os.fstat(fd), directory, owners)
        if faults:
            return [], [_refusal(directory, faults, "the directory is ")]
        runnable, refused = [], []
        for name in sorted(os.listdir(fd)):
            if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                continue
            path = directory / name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:  # removed while we looked: nothing to run
                continue
            if stat.S_ISLNK(st.st_mode):
                # Refused even when it points to a safe script in this directory:
                # checking a link's target means following it twice (to check, then
                # to run), and between the two it may point elsewhere. A copy is
                # what the operator wants anyway.
                refused.append(Refusal(path, "a symbolic link (links are not followed)",
                                       "replace the link with a copy of the script it "
                                       "points to"))
            elif stat.S_ISDIR(st.st_mode):
                continue            # run-parts ignores subdirectories; not a script
            elif not stat.S_ISREG(st.st_mode):
                refused.append(Refusal(path, "not a regular file", f"remove {path}"))
            elif os.access(name, os.X_OK, dir_fd=fd, effective_ids=True):
                # (Not executable: skipped quietly, as run-parts does. Only its owner
                # could make it executable, and then it is checked here.)
                faults = _unsafe(st, path, owners)
                if faults:
                    refused.append(_refusal(path, faults))
                else:
                    runnable.append(path)
        return runnable, refused
    except OSError as exc:
        return [], [Refusal(directory, f"the directory cannot be read ({exc.strerror})",
                            f"chmod 0755 {directory}")]
    finally:
        os.close(fd)


def log_refusal(refusal: Refusal, directory: Path) -> None:
    what = "action scripts in" if refusal.path == directory else "action script"
    log.error("%s %s not run: %s -- fix: %s", what, refusal.path, refusal.reason, refusal.fix)


def run_scripts(scripts_dir: Path, env: Mapping[str, str], timeout: float,
                budget: float = TOTAL_BUDGET) -> list[ScriptResult]:
    scripts, refused = audit(scripts_dir)
    for refusal in refused:          # every run: a refused script is never silently lost
        log_refusal(refusal, scripts_dir)
    if not scripts:
        return []
    import subprocess  # only when there is something to run

    results = []
    deadline = time.monotonic() + budget
    full_env = {**os.environ, **env}
    for path in scripts:
        left = deadline - time.monotonic()
        if left <= 0:
            log.error("action script %s skipped: all scripts together exceeded %.0f s",
                      path, budget)
            results.append(ScriptResult(path, None, 0.0, ""))
            continue
        limit = min(timeout, left)
        start = time.monotonic()
        try:
            proc = subprocess.Popen([str(path)], env=full_env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as exc:
            log.error("action script %s failed to start: %s", path, exc.strerror or exc)
            results.append(ScriptResult(path, None, 0.0, ""))
            continue
        try:
            out, _ = proc.communicate(timeout=limit)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            try:
                out, _ = proc.communicate(timeout=1.0)
            except subprocess.TimeoutExpired:  # a grandchild left the group, pipe held open
                proc.kill()
                out = b""
            code = None
        result = ScriptResult(path, code, time.monotonic() - start,
                              out.decode("utf-8", "replace").strip()[-2000:])
        _log_result(result, limit)
        results.append(result)
    return results


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _log_result(result: ScriptResult, limit: float) -> None:
    tail = f": {result.output}" if result.output else ""
    if result.returncode is None:
        log.error("action script %s killed after %.1f s timeout%s", result.path, limit, tail)
    elif result.returncode != 0:
        log.error("action script %s exited %d after %.0f ms%s", result.path, result.returncode,
                  result.duration * 1000, tail)
    else:
        log.info("action script %s ok in %.0f ms%s", result.path, result.duration * 1000, tail)
