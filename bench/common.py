"""Shared helpers for the benchmarks: timing a process, medians, tables."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:
    from vipfloat.lab.cluster import RedisLab

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO.parent / "shared" / "baseline" / "notify_mymaster.sh"


def chosen_modes(text: str, known: Sequence[str]) -> list[str] | None:
    """``--modes a,b``: the modes, or None (said on stderr) when one is unknown or
    the shell baseline is asked for and missing."""
    import sys

    modes = text.split(",")
    unknown = [m for m in modes if m not in known]
    if unknown:
        print(f"unknown mode(s): {', '.join(unknown)}; choose from {', '.join(known)}",
              file=sys.stderr)
        return None
    if "shell" in modes and not BASELINE.exists():
        print(f"baseline script not found: {BASELINE}", file=sys.stderr)
        return None
    return modes


def wait_exit(pid: int) -> tuple[int, float]:
    """Reap ``pid``: (exit code, when it was reaped)."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), time.monotonic()


def ms(values: Sequence[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    return f"{statistics.median(got) * 1000:.1f}"


def median(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def ratio(a: float | None, b: float | None) -> str:
    """a/b, or "-" when either is missing or not positive (a moment before the
    reference point has no meaningful ratio)."""
    return f"{a / b:.2f}" if a is not None and b is not None and a > 0 and b > 0 else "-"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))) for r in rows)


@contextlib.contextmanager
def vip_cluster(hook: bool | str, agent: bool, vip: bool = True,
                agent_options: dict[str, object] | None = None,
                vip_options: dict[str, object] | None = None) -> Iterator[RedisLab]:
    """A fresh three-node cluster and a client in the namespace lab, with the VIP on
    a (bound by the agents, or by `vipfloat acquire` where there is none); torn
    down on exit. Yields the RedisLab (its ``.lab`` is the Lab)."""
    from vipfloat.lab.cluster import RedisLab
    from vipfloat.lab.netns import Lab

    with tempfile.TemporaryDirectory(prefix="vipfloat-bench-") as tmp, \
            Lab(["a", "b", "c", "client"]) as lab, \
            RedisLab(lab, Path(tmp), hook=hook, agent_options=agent_options or {},
                     vip_options=vip_options or {}) as cluster:
        if agent:
            for node in cluster.nodes:
                cluster.start_agent(node)
        elif vip:
            cluster.vipfloat("a", "acquire", "--master", "mymaster")
        if vip:
            address = cluster.cluster.vip
            cluster.wait(lambda: [n for n in cluster.nodes if lab.has_address(n, address)]
                         == ["a"], "the VIP on a")
        yield cluster
