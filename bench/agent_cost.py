"""What the idle agent costs: resident memory and CPU of `vipfloat watch` on a
node of a healthy three-node cluster, sampled from /proc over a quiet minute.

    sudo .venv/bin/python bench/agent_cost.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vipfloat.lab.cluster import RedisLab  # noqa: E402
from vipfloat.lab.netns import Lab  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS   # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=2.0,
                        help="reconcile_interval (2.0 is the default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vipfloat-bench-") as tmp, \
            Lab(["a", "b", "c"]) as lab, \
            RedisLab(lab, Path(tmp), hook=False,
                     agent_options={"reconcile_interval": args.interval,
                                    "metrics_listen": "127.0.0.1:9851"}) as cluster:
        cluster.start_agent("a")
        cluster.wait(lambda: lab.has_address("a", "198.51.100.250/24"), "the VIP on a")
        pid = cluster.procs["agent:a"].pid
        time.sleep(5)  # past start-up
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        peak = 0.0
        while time.monotonic() - t0 < args.seconds:
            peak = max(peak, rss_mib(pid))
            time.sleep(1)
        cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
        threads = len(os.listdir(f"/proc/{pid}/task"))
    print(f"\nidle agent over {args.seconds:.0f} s (reconcile every {args.interval:g} s, 3 Sentinels, "
          f"metrics on): RSS {rss_mib_fmt(peak)} MiB peak, CPU {cpu:.2f} % of one core, "
          f"{threads} threads")
    return 0


def rss_mib_fmt(value: float) -> str:
    return f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
