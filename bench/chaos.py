"""Chaos on the namespace lab: a seeded schedule of overlapping faults while a
client writes through the VIP, judged by invariants (vipfloat/lab/chaos.py),
not by one scripted outcome.

    sudo .venv/bin/python bench/chaos.py --minutes 3 --seed 1 [--faults kill,pause,...]
        [--mode least|direct]

Faults: kill -9 and restart of Redis, Sentinel or the agent; SIGSTOP/SIGCONT of
one of them or of a whole node; full isolation of a node, and partial (it keeps
the client); its link down; its addresses flushed. The last line is
`CHAOS {"seed": ..., "violations": ..., ...}`; a violation prints its timeline
and the command that replays the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vipfloat.lab.chaos import KINDS, schedule  # noqa: E402
from vipfloat.lab.cluster import RedisLab  # noqa: E402
from vipfloat.lab.netns import Lab  # noqa: E402
from vipfloat.lab.nemesis import RunResult, run, timeline  # noqa: E402


def chaos(minutes: float, seed: int, kinds: list[str], mode: str = "least",
          say=print) -> tuple[RunResult, dict]:
    seconds = minutes * 60
    faults = schedule(seed, seconds, ["a", "b", "c"], kinds)
    with tempfile.TemporaryDirectory(prefix="vipfloat-chaos-") as tmp:
        work = Path(tmp)
        work.chmod(0o711)
        with Lab(["a", "b", "c", "client"]) as lab, \
                RedisLab(lab, work, hook=True,
                         sentinel_user="nobody" if mode == "least" else None) as cluster:
            for node in cluster.nodes:
                cluster.start_agent(node)
            cluster.wait(lambda: cluster.holders() == ["a"], "the VIP on a", timeout=15)
            say(f"chaos: seed {seed}, {minutes:g} min, {len(faults)} faults scheduled, "
                f"{mode} mode")
            result = run(cluster, faults, seconds, say=say)
            if result.verdict.violations:
                say(cluster.diagnose())
    v = result.verdict
    summary = {"seed": seed, "minutes": minutes, "faults": len(result.faults_run),
               "by_kind": dict(sorted(Counter(f.label for f in result.faults_run).items())),
               "violations": len(v.violations), "max_converge_ms": v.max_converge_ms,
               "acked": v.acked, "lost": v.lost,
               "lost_by_fault": dict(v.lost_by_fault), "mode": mode}
    return result, summary


def report(result: RunResult, summary: dict, say=print) -> None:
    for violation in result.verdict.violations:
        say(f"\nVIOLATION: {violation}")
        at = _first_time(violation)
        if at is not None:
            say(timeline(result.history, at))
    if result.verdict.violations:
        say(f"\nreplay: python bench/chaos.py --minutes {summary['minutes']:g} "
            f"--seed {summary['seed']} --mode {summary['mode']}")
    say("CHAOS " + json.dumps(summary))


def _first_time(text: str) -> float | None:
    import re

    m = re.search(r"(\d+\.\d+) s", text)
    return float(m.group(1)) if m else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default=",".join(KINDS),
                        help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--mode", choices=("least", "direct"), default="least",
                        help="least: Sentinel as nobody with no capability (the default "
                             "drop-in); direct: Sentinel as root, its hook acts itself")
    args = parser.parse_args()
    kinds = [k for k in args.faults.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kind(s): {', '.join(sorted(unknown))}")
    result, summary = chaos(args.minutes, args.seed, kinds, args.mode)
    report(result, summary)
    return 1 if result.verdict.violations else 0


if __name__ == "__main__":
    sys.exit(main())
