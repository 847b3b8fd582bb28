"""`make demo`: a real Redis Sentinel failover, with vipfloat moving the VIP.

Three nodes (redis-server, redis-sentinel and the vipfloat agent each, with
vipfloat-hook as Sentinel's client-reconfig-script) and a client that writes
through the VIP every 10 ms, all in network namespaces on this machine. The
master's Redis is killed; the timeline shows Sentinel's verdict, where the VIP
goes, and the client's gap.
Everything is torn down at the end, on error, and on Ctrl-C.

    sudo .venv/bin/python -m vipfloat.lab.demo
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from .cluster import RedisLab
from .netns import Lab, LabError
from .observe import AddrEvents, SentinelEvents, Writer

VIP = "198.51.100.250"
SHOWN = ("+sdown", "+odown", "+try-failover", "+elected-leader", "+selected-slave",
         "+failover-state-wait-promotion", "+promoted-slave", "+switch-master", "+failover-end",
         "-script-error")


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def say(self, text: str, t: float | None = None) -> None:
        at = (t if t is not None else time.monotonic()) - self.t0
        print(f"[{at:6.2f}s] {text}", flush=True)


def run(workdir: Path) -> int:
    out = Timeline()
    nodes = ["a", "b", "c"]
    out.say("building the lab: 3 nodes + 1 client in network namespaces on one bridge")
    with Lab([*nodes, "client"]) as lab:
        for n in nodes:
            h = lab.hosts[n]
            out.say(f"  node {n}: {h.ip} ({h.mac}) in namespace {h.netns}")
        out.say(f"  client: {lab.hosts['client'].ip}")
        out.say("starting redis-server and redis-sentinel on each node (quorum 2, "
                "down-after 1000 ms, client-reconfig-script vipfloat-hook)")
        with RedisLab(lab, workdir, nodes=nodes) as cluster:
            out.say(f"cluster up: master a ({lab.hosts['a'].ip}), replicas b and c")
            for n in nodes:
                cluster.start_agent(n)
            out.say("started vipfloat watch on each node; it asks every Sentinel who the "
                    "master is")
            cluster.wait(lambda: cluster.holders() == ["a"], "the agents to bind the VIP on a")
            out.say(f"VIP {VIP} bound on {', '.join(cluster.holders())} by its agent "
                    "(and announced with gratuitous ARP)")
            addrs = AddrEvents(lab, nodes)
            events = SentinelEvents(lab, nodes)
            writer = Writer(lab, "client", VIP)
            try:
                time.sleep(1.0)
                ok = sum(w.ok for w in writer.snapshot())
                out.say(f"client is writing through {VIP} every 10 ms: {ok} writes acknowledged")
                kill_at = time.monotonic()
                cluster.stop("redis:a", sig=signal.SIGKILL)
                out.say("killed redis-server on a (SIGKILL): the master is gone", kill_at)
                new = _wait_for_move(cluster, out, events, addrs, kill_at)
                time.sleep(1.0)
                _summary(out, lab, cluster, writer, events, addrs, kill_at, new)
            finally:
                writer.close()
                events.close()
                addrs.close()
    out.say("lab torn down: namespaces, processes and addresses are gone")
    return 0


def _wait_for_move(cluster: RedisLab, out: Timeline, events: SentinelEvents, addrs: AddrEvents,
                   since: float) -> str:
    shown: set[tuple[str, str]] = set()
    seen_addr = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for e in events.since(since):
            key = (e.channel, e.data.split(" @ ")[0] if e.channel != "+switch-master" else "")
            if e.channel in SHOWN and key not in shown:
                shown.add(key)
                out.say(f"sentinel on {e.source}: {e.channel} {e.data}", e.t)
        moves = [e for e in addrs.matching(VIP, after=since)]
        for move in moves[seen_addr:]:
            out.say(f"VIP {'bound on' if move.added else 'removed from'} {move.host}", move.t)
        seen_addr = len(moves)
        now = cluster.holders()
        if len(now) == 1 and now[0] != "a" and events.matching("+switch-master", since):
            return now[0]
        time.sleep(0.05)
    raise LabError("the VIP did not move within 30 s")


def _summary(out: Timeline, lab: Lab, cluster: RedisLab, writer: Writer, events: SentinelEvents,
             addrs: AddrEvents, kill_at: float, new: str) -> None:
    switch = min((e.t for e in events.matching("+switch-master", kill_at)), default=None)
    promoted = min((e.t for e in events.matching("+promoted-slave", kill_at)), default=None)
    sent = min((e.t for e in events.matching("+failover-state-wait-promotion", kill_at)),
               default=None)
    bound = min((e.t for e in addrs.matching(VIP, added=True, after=kill_at)), default=None)
    first = writer.first_ok_after(bound or kill_at)
    gap = writer.gap(kill_at - 1)
    mac = lab.neigh_mac("client", VIP)
    print()
    out.say("summary")
    print(f"  new master: {new} ({lab.hosts[new].ip}); VIP holders now: "
          f"{', '.join(cluster.holders())}")
    print(f"  client's neighbour entry for {VIP}: {mac} "
          f"({'node ' + new if mac == lab.hosts[new].mac else 'not the new master!'})")
    if sent and bound:
        print(f"  SLAVEOF NO ONE sent (+failover-state-wait-promotion) -> VIP bound on {new}: "
              f"{(bound - sent) * 1000:.0f} ms")
    if promoted and bound:
        print(f"  +promoted-slave -> VIP bound: {(bound - promoted) * 1000:+.0f} ms (negative: "
              "the new master's agent saw its Redis promoted before Sentinel did)")
    if switch and bound:
        print(f"  +switch-master -> VIP bound on {new}: {(bound - switch) * 1000:+.0f} ms")
    if bound and first:
        print(f"  VIP bound -> first write acknowledged through it: "
              f"{(first.done - bound) * 1000:.0f} ms")
    if gap:
        print(f"  client write gap: {(gap[1] - gap[0]) * 1000:.0f} ms, of which "
              f"{(gap[1] - kill_at) * 1000:.0f} ms after the kill "
              f"(down-after-milliseconds is {cluster.cluster.down_after_ms} ms)")
    why = [line for line in cluster.agent_log(new).splitlines() if "action=acquire" in line]
    if why:
        reason = why[-1].split('reason="', 1)[-1].split('"', 1)[0]
        print(f"  why {new} took it, from its agent's log: {reason}")
    writes = writer.snapshot()
    print(f"  writes: {sum(w.ok for w in writes)} acknowledged, {sum(not w.ok for w in writes)} "
          "failed while there was no master")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    # Ctrl-C and SIGTERM unwind through the context managers, which tear down.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="vipfloat-demo-") as tmp:
            return run(Path(tmp))
    except KeyboardInterrupt:
        print("\ninterrupted: lab torn down", file=sys.stderr)
        return 130
    except LabError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
