"""Printing the doctor's findings: one line each, worst first; or JSON."""

from __future__ import annotations

import json
from typing import Sequence

from .checks import Finding, Level

ORDER = {Level.PROBLEM: 0, Level.WARNING: 1, Level.OK: 2}


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.level is Level.PROBLEM for f in findings) else 0


def summary(findings: Sequence[Finding]) -> str:
    count = {level: sum(1 for f in findings if f.level is level) for level in Level}
    return (f"{count[Level.PROBLEM]} problem(s), {count[Level.WARNING]} warning(s), "
            f"{count[Level.OK]} ok")


def render_text(findings: Sequence[Finding]) -> str:
    # Stable sort: worst first, and within a level in the order the checks ran
    # (Sentinels, Redis, this host), which is the order an operator fixes them in.
    lines = []
    for f in sorted(findings, key=lambda f: ORDER[f.level]):
        line = f"{f.level.value.upper():8} {f.check:21} {f.subject}: {f.message}"
        if f.fix:
            line += f" -- fix: {f.fix}"
        lines.append(line)
    lines.append(summary(findings))
    return "\n".join(lines)


def render_json(findings: Sequence[Finding]) -> str:
    return json.dumps({"ok": exit_code(findings) == 0, "summary": summary(findings),
                       "findings": [f.as_dict() for f in findings]}, indent=2)
