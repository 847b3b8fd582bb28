"""A short chaos run with a fixed seed (bench/chaos.py, about 3 minutes):
overlapping kills, pauses, partitions, link and address faults on real Redis,
Sentinel and agents, while a client writes through the VIP. It asserts the
invariants of vipfloat/lab/chaos.py, not one outcome: never two holders past a
named window, the VIP where the Sentinels agree once the faults are healed, no
agent traceback or unexpected exit. `pytest -s` prints the run and its CHAOS
line; a violation prints its timeline and the command that replays it."""
from __future__ import annotations

import os
import shutil

import pytest

SEED = 20261202
MINUTES = 3.0


def test_a_short_chaos_run_keeps_every_invariant():
    if os.geteuid() != 0 or not shutil.which("redis-sentinel"):
        pytest.skip("chaos needs root and redis-sentinel")
    from bench.chaos import chaos, report
    from vipfloat.lab.chaos import KINDS

    lines: list[str] = []

    def say(line: str) -> None:
        print(line)
        lines.append(line)

    result, summary = chaos(MINUTES, SEED, list(KINDS), say=say)
    report(result, summary, say=say)
    assert summary["faults"] >= 10
    assert not result.verdict.violations, "\n".join(lines[-80:])
