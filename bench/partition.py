"""The partial partition: the master cut off from the other nodes but not from
its clients. How long do two nodes hold the VIP, and how many writes are
acknowledged and then lost?

Per round, on a fresh three-node cluster with a client writing through the VIP
every 10 ms: cut a from b and c (nftables on the lab's switch), wait while
Sentinel fails over without a, heal, let everything converge, then count.

Modes: shell (notify_mymaster.sh as client-reconfig-script) and agent+hook
(vipfloat watch on every node, vipfloat-hook configured).

    sudo .venv/bin/python bench/partition.py [--rounds 3] [--cut 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BASELINE, median, ratio, table, vip_cluster  # noqa: E402
from vipfloat.lab.observe import AddrEvent, AddrEvents, Writer  # noqa: E402

VIP = "198.51.100.250"
MODES = {"shell": {"hook": str(BASELINE), "agent": False},
         "agent+hook": {"hook": True, "agent": True}}


def double_holding(events: list[AddrEvent], start: dict[str, bool], since: float,
                   until: float) -> float:
    """Pure: seconds in [since, until] during which two or more hosts held the VIP,
    from the hosts' address events and who held it at ``since``."""
    held = dict(start)
    total, last = 0.0, since
    for e in sorted(events, key=lambda e: e.t):
        if e.t < since or e.t > until:
            continue
        if sum(held.values()) >= 2:
            total += e.t - last
        held[e.host] = e.added
        last = e.t
    if sum(held.values()) >= 2:
        total += until - last
    return total


def one_round(mode: str, cut_for: float) -> dict[str, float]:
    opts = MODES[mode]
    with vip_cluster(opts["hook"], opts["agent"]) as cluster:
        lab = cluster.lab
        addrs = AddrEvents(lab, list(cluster.nodes))
        writer = Writer(lab, "client", VIP, interval=0.01)
        try:
            time.sleep(1)
            cut = time.monotonic()
            lab.partition(["a"], ["b", "c"])
            time.sleep(cut_for)
            lab.heal()
            healed = time.monotonic()
            cluster.wait(lambda: all(cluster.master_addr(n) not in (None, lab.hosts["a"].ip)
                                     for n in cluster.nodes), "every Sentinel to agree",
                         timeout=30)
            time.sleep(5)  # a is demoted to a replica; clients find the new master
            new = cluster.node_of(cluster.master_addr("b"))
            end = time.monotonic()
            landed = {int(v) for v in
                      cluster.redis(new, "LRANGE", "vipfloat:log", "0", "-1").split()}
            # Acknowledged after LRANGE was sent: maybe not in its answer, yet not lost.
            writes = [w for w in writer.snapshot() if w.t >= cut - 0.5 and w.done < end]
        finally:
            writer.close()
            addrs.close()
            lab.heal()
    both = double_holding(addrs.events, {"a": True, "b": False, "c": False}, cut, end)
    return {"both_held": both, "lost": float(sum(1 for w in writes if w.ok and
                                                  w.value not in landed)),
            "acked": float(sum(1 for w in writes if w.ok)),
            "healed_after": healed - cut}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cut", type=float, default=8.0, help="seconds a stays cut off")
    args = parser.parse_args()
    if not BASELINE.exists():
        print(f"baseline script not found: {BASELINE}", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for i in range(args.rounds):
        for mode in MODES:                       # alternate modes round by round
            r = one_round(mode, args.cut)
            results[mode].append(r)
            print(f"  {mode} round {i + 1}: two holders {r['both_held']:.2f} s, "
                  f"{r['lost']:.0f} of {r['acked']:.0f} acknowledged writes lost",
                  file=sys.stderr)
    rows = [("mode", "two nodes hold the VIP s", "acknowledged writes lost")]
    for mode, rs in results.items():
        rows.append((mode, f"{median([r['both_held'] for r in rs]):.2f}",
                     f"{median([r['lost'] for r in rs]):.0f}"))
    rows.append(("ratio agent+hook/shell",
                 ratio(median([r["both_held"] for r in results["agent+hook"]]),
                       median([r["both_held"] for r in results["shell"]])),
                 ratio(median([r["lost"] for r in results["agent+hook"]]),
                       median([r["lost"] for r in results["shell"]]))))
    print(f"\npartial partition ({args.cut:g} s cut, down-after-milliseconds 1000), "
          f"{args.rounds} round(s) per mode, medians\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
