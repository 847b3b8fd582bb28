"""How fast does a client-reconfig-script put the VIP on the new master?

For vipfloat-hook and for the article's notify_mymaster.sh, in the same run, in
alternation, on the same namespace lab: exec -> VIP present in the kernel (netlink
event) -> first ARP on the peer's wire -> script exit, plus the script's peak RSS
(with its children). Prints both medians and the ratio vipfloat / shell.

    sudo .venv/bin/python bench/hook_latency.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BASELINE, median, ms, ratio, table, wait_exit  # noqa: E402
from vipfloat.lab.capture import Capture, is_arp_for  # noqa: E402
from vipfloat.lab.cluster import tool  # noqa: E402
from vipfloat.lab.netns import Lab  # noqa: E402
from vipfloat.lab.observe import AddrEvents  # noqa: E402

VIP = "198.51.100.250"
ARGS = ["mymaster", "leader", "start", "198.51.100.12", "6379", "198.51.100.11", "6379"]


def one_round(lab: Lab, watch: AddrEvents, argv: list[str], env: dict[str, str]) -> dict:
    with Capture(lab, "peer") as cap:
        t0 = time.monotonic()
        proc = subprocess.Popen(lab.cmd("a", *argv), env={**os.environ, **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        code, t_exit = wait_exit(proc.pid)
        bound = watch.matching(VIP, added=True, after=t0)
        t_vip = bound[0].t if bound else None
        arps = cap.wait(lambda f: is_arp_for(f, VIP), timeout=3)
    t_arp = arps[0][0] if arps else None
    return {"code": code, "vip": t_vip - t0 if t_vip else None,
            "arp": t_arp - t0 if t_arp else None, "exit": t_exit - t0}


def peak_rss_kib(lab: Lab, argv: list[str], env: dict[str, str]) -> float | None:
    """Peak RSS of the script and its children, from GNU time (a fork of this big
    Python process would count our own pages as the child's)."""
    if not shutil.which("time") and not os.path.exists("/usr/bin/time"):
        return None
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run(lab.cmd("a", "/usr/bin/time", "-f", "%M", "-o", out.name, *argv),
                       env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        text = out.read().strip().splitlines()
    return float(text[-1]) if text and text[-1].isdigit() else None


def rss_median(lab: Lab, argv: list[str], env: dict[str, str]) -> float | None:
    values = []
    for _ in range(3):
        values.append(peak_rss_kib(lab, argv, env))
        reset(lab)
    return median(values)


def reset(lab: Lab) -> None:
    lab.run("a", "ip", "addr", "del", f"{VIP}/24", "dev", "eth1")
    time.sleep(0.3)  # settle; vipfloat's announcer stops at its next round (VIP gone)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    args = parser.parse_args()
    if not args.baseline.exists():
        print(f"baseline script not found: {args.baseline}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vipfloat-bench-") as tmp, Lab(["a", "peer"]) as lab:
        config = Path(tmp) / "vipfloat.toml"
        config.write_text(f"""
[sentinel]
addresses = ["198.51.100.11:26379"]
[agent]
state_dir = "{tmp}/state"
[actions]
hooks_dir = "{tmp}/hooks.d"
[[vip]]
master = "mymaster"
address = "{VIP}/24"
interface = "eth1"
""")
        methods = {
            "vipfloat-hook": ([tool("vipfloat-hook"), *ARGS], {"VIPFLOAT_CONFIG": str(config)}),
            "notify_mymaster.sh": (["bash", str(args.baseline), *ARGS],
                                   {"LOCAL_IP": "198.51.100.11", "VIP": VIP,
                                    "INTERFACE": "eth1", "NETMASK": "24"}),
        }
        results: dict[str, list[dict]] = {name: [] for name in methods}
        watch = AddrEvents(lab, ["a"])
        try:
            # One warm-up each (page cache, pyc files), not counted.
            for name, (argv, env) in methods.items():
                one_round(lab, watch, argv, env)
                reset(lab)
            for i in range(args.rounds):
                for name, (argv, env) in methods.items():
                    r = one_round(lab, watch, argv, env)
                    if r["code"] != 0:
                        print(f"{name} exited {r['code']} in round {i}", file=sys.stderr)
                    results[name].append(r)
                    reset(lab)
                print(f"round {i + 1}/{args.rounds}", file=sys.stderr, end="\r")
            rss = {name: rss_median(lab, argv, env) for name, (argv, env) in methods.items()}
        finally:
            watch.close()
    rows = [("script", "exec->VIP present ms", "exec->first ARP ms", "exec->exit ms",
             "peak RSS MiB")]
    for name, rs in results.items():
        rows.append((name, ms([r["vip"] for r in rs]), ms([r["arp"] for r in rs]),
                     ms([r["exit"] for r in rs]),
                     f"{rss[name] / 1024:.1f}" if rss[name] else "-"))
    v, s = results["vipfloat-hook"], results["notify_mymaster.sh"]
    rows.append(("ratio vipfloat/shell",
                 *(ratio(median([r[k] for r in v]), median([r[k] for r in s]))
                   for k in ("vip", "arp", "exit")),
                 ratio(rss["vipfloat-hook"], rss["notify_mymaster.sh"])))
    print(f"\nhook latency, {args.rounds} rounds each, medians "
          f"(exec through `ip netns exec`, same for both)\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
