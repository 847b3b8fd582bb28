"""Failover timeline: how soon after Sentinel promotes a replica do clients write
through the VIP again? Real redis-server and redis-sentinel in namespaces, a
client writing through the VIP every 5 ms, `SENTINEL FAILOVER` each round.

Modes, each on a fresh cluster, in one run:
  shell          the article's notify_mymaster.sh as client-reconfig-script (baseline)
  hook           vipfloat-hook as client-reconfig-script, no agent
  agent          vipfloat watch on every node, no hook configured
  agent+hook     both (the recommended setup)

Per round: +promoted-slave (the leader's, which is also when it runs its hook)
-> VIP bound on the new master; first +switch-master -> VIP bound; +promoted-slave
-> first write acknowledged by the new master through the VIP; and acknowledged
writes lost (acknowledged, then missing on the new master).

    sudo .venv/bin/python bench/failover.py [--rounds 5] [--modes agent,agent+hook]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BASELINE, median, ratio, table  # noqa: E402
from vipfloat.lab.cluster import RedisLab  # noqa: E402
from vipfloat.lab.netns import Lab, LabError  # noqa: E402
from vipfloat.lab.observe import AddrEvents, SentinelEvents, Writer  # noqa: E402

VIP = "198.51.100.250"
MODES = {
    "shell": {"hook": str(BASELINE), "agent": False},
    "hook": {"hook": True, "agent": False},
    "agent": {"hook": False, "agent": True},
    "agent+hook": {"hook": True, "agent": True},
}


def holders(cluster: RedisLab) -> list[str]:
    return [n for n in cluster.nodes if cluster.lab.has_address(n, f"{VIP}/24")]


def settle(cluster: RedisLab, master: str) -> None:
    cluster.settle(master)
    time.sleep(1.0)


def one_round(cluster: RedisLab, addrs: AddrEvents, events: SentinelEvents,
              writer: Writer) -> dict[str, float | None]:
    lab = cluster.lab
    old = cluster.node_of(cluster.master_addr("a"))
    t0 = time.monotonic()
    cluster.failover(old)
    cluster.wait(lambda: cluster.master_addr(old) not in (None, lab.hosts[old].ip),
                 "a new master", timeout=20)
    new = cluster.node_of(cluster.master_addr(old))
    cluster.wait(lambda: holders(cluster) == [new], f"the VIP on {new} only", timeout=20)
    time.sleep(1.5)  # writes resume, every Sentinel publishes +switch-master
    promoted = min((e.t for e in events.matching("+promoted-slave", t0)), default=None)
    switch = min((e.t for e in events.matching("+switch-master", t0)), default=None)
    bound = min((e.t for e in addrs.matching(VIP, added=True, after=t0, host=new)), default=None)
    # Writes after the promotion that the new master really has: the first of them
    # is when clients got through again; acknowledged ones it lacks are lost.
    landed = {int(v) for v in cluster.redis(new, "LRANGE", "vipfloat:log", "0", "-1").split()}
    writes = [w for w in writer.snapshot() if w.t >= t0 - 0.5]
    first = next((w.done for w in writes if w.ok and w.value in landed
                  and promoted and w.t >= promoted), None)
    lost = sum(1 for w in writes if w.ok and w.value not in landed)
    settle(cluster, new)
    return {
        "promoted_bound": bound - promoted if bound and promoted else None,
        "switch_bound": bound - switch if bound and switch else None,
        "promoted_write": first - promoted if first and promoted else None,
        "lost": float(lost),
    }


def run_mode(name: str, rounds: int) -> list[dict[str, float | None]]:
    opts = MODES[name]
    results = []
    with tempfile.TemporaryDirectory(prefix="vipfloat-bench-") as tmp, \
            Lab(["a", "b", "c", "client"]) as lab, \
            RedisLab(lab, Path(tmp), hook=opts["hook"]) as cluster:
        if opts["agent"]:
            for node in cluster.nodes:
                cluster.start_agent(node)
        else:
            cluster.vipfloat("a", "acquire", "--master", "mymaster")
        cluster.wait(lambda: holders(cluster) == ["a"], "the VIP on a")
        addrs = AddrEvents(lab, list(cluster.nodes))
        events = SentinelEvents(lab, list(cluster.nodes))
        writer = Writer(lab, "client", VIP, interval=0.005)
        try:
            time.sleep(1)
            for i in range(rounds):
                results.append(one_round(cluster, addrs, events, writer))
                print(f"  {name} round {i + 1}/{rounds}: " + ", ".join(
                    f"{k}={v * 1000:.1f}ms" if v is not None and k != "lost" else f"{k}={v}"
                    for k, v in results[-1].items()), file=sys.stderr)
        finally:
            writer.close()
            events.close()
            addrs.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    modes = args.modes.split(",")
    if "shell" in modes and not BASELINE.exists():
        print(f"baseline script not found: {BASELINE}", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, float | None]]] = {}
    for name in modes:
        try:
            results[name] = run_mode(name, args.rounds)
        except LabError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1

    def med(name: str, key: str) -> float | None:
        return median([r[key] for r in results[name]])

    def fmt(value: float | None, scale: float = 1000) -> str:
        return "-" if value is None else f"{value * scale:.1f}"

    rows = [("mode", "promoted->VIP bound ms", "switch-master->VIP bound ms",
             "promoted->first write ms", "lost writes (median)")]
    for name in results:
        rows.append((name, fmt(med(name, "promoted_bound")), fmt(med(name, "switch_bound")),
                     fmt(med(name, "promoted_write")), fmt(med(name, "lost"), 1)))
    if "shell" in results:
        for name in results:
            if name != "shell":
                rows.append((f"ratio {name}/shell",
                             *(ratio(med(name, k), med("shell", k))
                               for k in ("promoted_bound", "switch_bound", "promoted_write")),
                             ""))
    print(f"\nfailover timeline, {args.rounds} SENTINEL FAILOVER rounds per mode, medians\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
