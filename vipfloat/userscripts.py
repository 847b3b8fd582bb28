"""Run the operator's action scripts (``hooks_dir``) after an acquire or release.

run-parts conventions: every executable regular file, in name order, skipping
hidden files, editor backups and dpkg leftovers. Each runs in its own session
under a timeout, and a timed-out script's whole process group is killed. A
script's failure is logged and never fails the hook: the VIP already moved.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

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


def scripts_in(hooks_dir: Path) -> list[Path]:
    try:
        entries = sorted(hooks_dir.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot list hooks_dir %s: %s", hooks_dir, exc.strerror)
        return []
    return [p for p in entries
            if not p.name.startswith(".") and not p.name.endswith(_SKIP_SUFFIXES)
            and p.is_file() and os.access(p, os.X_OK)]


def run_scripts(hooks_dir: Path, env: Mapping[str, str], timeout: float,
                budget: float = TOTAL_BUDGET) -> list[ScriptResult]:
    scripts = scripts_in(hooks_dir)
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
