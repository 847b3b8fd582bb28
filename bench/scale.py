"""Many masters on one Sentinel set: a node that masters about a third of them
loses every Redis at once. How soon is each VIP bound on its own new master, and
when is the last one bound? Real redis-server and redis-sentinel in namespaces:
N masters round-robin over three nodes (ports 6379 + i, VIPs 198.51.100.(100 + i)),
one Sentinel per node watching them all; every mode on a fresh cluster, in one run.

Modes:
  shell       the article's notify_mymaster.sh as every master's
              client-reconfig-script, through a wrapper that maps the master's
              name to its VIP (baseline)
  agent+hook  vipfloat watch on every node and the fast hook (the recommended setup)
  agent       vipfloat watch on every node, no hook

Per VIP of a lost master: its +promoted-slave -> VIP bound on the new master, and
-> the first write acknowledged through the VIP (a client per lost VIP); per
round: the last +promoted-slave -> the last VIP bound. `ok`: every VIP ended on
the master Sentinel settled on for it, alone, and no other VIP moved.

With an agent, also its costs at this N: each agent's idle RSS and CPU (20 s),
its CPU during the failover burst, one reconcile poll (SENTINEL MASTER per
master, to every Sentinel, pipelined: how long the agent's poll takes), the
commands each agent sends the Sentinels per second (measured: their
total_commands_processed with and without the agents), and Sentinel's own
latency for SENTINEL MASTER with the agents running and stopped.

Ends with one line per mode:
  SCALE {"mode": ..., "masters": N, "median_bound_after_promoted_ms": ...,
         "max_bound_after_promoted_ms": ..., "last_bound_after_last_promoted_ms": ...,
         "ok": true}

    sudo .venv/bin/python bench/scale.py --masters 8 --rounds 3 [--modes shell,agent+hook,agent]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BASELINE, chosen_modes, median, table  # noqa: E402
from vipfloat.lab.cluster import RedisLab  # noqa: E402
from vipfloat.lab.configs import Master  # noqa: E402
from vipfloat.lab.netns import Lab, LabError  # noqa: E402
from vipfloat.lab.observe import AddrEvents, SentinelEvents, Writer  # noqa: E402

MODES: dict[str, dict[str, Any]] = {
    "shell": {"hook": "shell", "agent": False},
    "agent+hook": {"hook": True, "agent": True},
    "agent": {"hook": False, "agent": True},
}


def shell_wrapper(masters: list[Master], path: Path) -> str:
    """The baseline for many masters: one script for all of them, as an operator
    would write it, mapping Sentinel's first argument (the master's name) to its
    VIP before running the article's script."""
    cases = "\n".join(f"  {m.name}) VIP={m.vip.split('/')[0]} ;;" for m in masters)
    path.write_text(f'#!/bin/sh\ncase "$1" in\n{cases}\n  *) exit 0 ;;\nesac\n'
                    f'export VIP\nexec {BASELINE} "$@"\n')
    path.chmod(0o755)
    return str(path)


def about(data: str, master: str) -> bool:
    """Does a Sentinel event's data concern ``master``? (+switch-master: the name
    first; instance events: `... @ <master> <ip> <port>`.)"""
    parts = data.split()
    if parts[:1] == [master]:
        return True
    return "@" in parts and parts[parts.index("@") + 1:parts.index("@") + 2] == [master]


def promoted_ip(data: str) -> str | None:
    """The replica a +promoted-slave names: ``slave <ip:port> <ip> <port> @ ...``."""
    parts = data.split()
    return parts[2] if len(parts) > 2 and parts[0] == "slave" else None


def owners(cluster: RedisLab, asked: str) -> dict[str, str]:
    """Each master's node, as ``asked``'s Sentinel names it."""
    out = {}
    for m in cluster.cluster.all_masters():
        addr = cluster.master_addr(asked, m.name)
        out[m.name] = cluster.node_of(addr) if addr else "?"
    return out


def settle_all(cluster: RedisLab, timeout: float = 60.0) -> None:
    """Every master agreed on by every Sentinel, every replica linked to it. Now
    and then Sentinel leaves a restarted replica following the wrong node for
    minutes (bench/failover.py meets it too): that is between Sentinel and
    Redis, not what this measures, so the harness then points it at the master."""
    for m in cluster.cluster.all_masters():
        node, _ = cluster.wait_agreement(timeout=timeout, master=m.name)
        for other in cluster.nodes:
            if other == node:
                continue

            def linked(o: str = other, p: int = m.port) -> bool:
                return "master_link_status:up" in cluster.redis(o, "INFO", "replication",
                                                                port=p)
            try:
                cluster.wait(linked, f"{other}:{m.port} replicating", timeout=20)
            except LabError as exc:
                print(f"  ({exc}: REPLICAOF sent by the harness)", file=sys.stderr, flush=True)
                cluster.redis(other, "REPLICAOF", cluster.lab.hosts[node].ip, str(m.port),
                              port=m.port)
                cluster.wait(linked, f"{other}:{m.port} replicating", timeout=timeout)


# --- costs -------------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def agent_pids(cluster: RedisLab) -> list[int]:
    return [p.pid for k, p in cluster.procs.items() if k.startswith("agent:") and p.poll() is None]


def sentinel_commands(cluster: RedisLab) -> int:
    """Commands every Sentinel has processed (INFO stats: Sentinel keeps no
    per-command statistics), its peers' pings and hellos included."""
    total = 0
    for node in cluster.nodes:
        for line in cluster.sentinel(node, "INFO", "stats").splitlines():
            if line.startswith("total_commands_processed:"):
                total += int(line.split(":")[1])
    return total


def commands_per_second(cluster: RedisLab, seconds: float) -> float:
    before = sentinel_commands(cluster)
    time.sleep(seconds)
    return (sentinel_commands(cluster) - before) / seconds


def poll_ms(cluster: RedisLab, node: str, reps: int = 20) -> float | None:
    """One reconcile poll as the agent on ``node`` makes it (vipfloat.sentinel's
    Poller: every Sentinel asked at once from one thread, pipelined): median
    over ``reps``."""
    from vipfloat.config import Endpoint, SentinelConfig
    from vipfloat.sentinel import Poller

    names = [m.name for m in cluster.cluster.all_masters()]
    eps = tuple(Endpoint(cluster.lab.hosts[n].ip, cluster.cluster.sentinel_port)
                for n in cluster.nodes)
    times = []
    with cluster.lab.inside(node):
        poller = Poller(SentinelConfig(addresses=eps, timeout=2.0))
        try:
            for _ in range(reps):
                start = time.perf_counter()
                poller.poll(names)
                times.append(time.perf_counter() - start)
        finally:
            poller.close()
    return median(times)


def sentinel_latency_ms(cluster: RedisLab, reps: int = 300) -> tuple[float | None, float]:
    """Sentinel's answer time to SENTINEL MASTER, asked by a client: (median, p99)."""
    from vipfloat.sentinel import connection

    first = cluster.cluster.all_masters()[0].name
    times = []
    with cluster.lab.inside("client"):
        conn = connection(cluster.lab.hosts[cluster.nodes[0]].ip, cluster.cluster.sentinel_port,
                          None, None, 2.0)
        try:
            for _ in range(reps):
                start = time.perf_counter()
                conn.send_command("SENTINEL", "MASTER", first)
                conn.read_response()
                times.append(time.perf_counter() - start)
                time.sleep(0.005)
        finally:
            conn.disconnect()
    times.sort()
    return median(times), times[int(len(times) * 0.99) - 1]


def idle_costs(cluster: RedisLab, seconds: float = 20.0) -> dict[str, Any]:
    pids = agent_pids(cluster)
    cpu0 = [cpu_seconds(p) for p in pids]
    with_agents = commands_per_second(cluster, seconds)
    cpu1 = [cpu_seconds(p) for p in pids]
    return {"idle_cpu_pct": round(100 * median([b - a for a, b in zip(cpu0, cpu1)]) / seconds, 2),
            "idle_rss_mib": round(max(rss_mib(p) for p in pids), 1),
            "agents": len(pids), "sentinel_commands_per_s_with_agents": round(with_agents, 1)}


# A VIP bound this long after its own +promoted-slave is worth a look: the
# round's agent and Sentinel logs are kept in bench/out/.
SLOW = 0.1
OUT = Path(__file__).resolve().parent / "out"


def keep_logs(cluster: RedisLab, slow: list[str]) -> None:
    where = OUT / f"scale-{time.strftime('%Y%m%dT%H%M%S')}"
    where.mkdir(parents=True, exist_ok=True)
    for node in cluster.nodes:
        for name in ("agent.log", "sentinel.log"):
            src = cluster.dir(node) / name
            if src.exists():
                (where / f"{node}-{name}").write_bytes(src.read_bytes())
    print(f"  bound over {SLOW * 1000:.0f} ms after +promoted-slave: {', '.join(slow)}; "
          f"logs kept in {where}", file=sys.stderr, flush=True)


def one_round(cluster: RedisLab, addrs: AddrEvents, events: SentinelEvents
              ) -> dict[str, Any]:
    lab = cluster.lab
    masters = cluster.cluster.all_masters()
    before = owners(cluster, cluster.nodes[-1])
    victim = max(cluster.nodes, key=lambda n: sum(o == n for o in before.values()))
    survivors = [n for n in cluster.nodes if n != victim]
    lost = [m for m in masters if before[m.name] == victim]
    interval = max(0.01, len(lost) / 500)      # all clients together: <= 500 writes/s
    writers = {m.name: Writer(lab, "client", m.vip.split("/")[0], interval=interval,
                              port=m.port) for m in lost}
    ok = True
    try:
        for m in lost:
            cluster.wait(lambda w=writers[m.name]: w.first_ok_after(0.0) is not None,
                         f"a write through {m.name}'s VIP", timeout=15)
        pids = agent_pids(cluster)
        cpu0 = [cpu_seconds(p) for p in pids]
        t0 = time.monotonic()
        cluster.stop_redis(victim, sig=signal.SIGKILL)
        dead = time.monotonic()       # every Redis of the victim is gone (reaped)
        final: dict[str, str] = {}
        for m in lost:
            try:
                final[m.name] = cluster.until_settled(
                    lambda node, m=m: cluster.wait(
                        lambda: cluster.holders(vip=m.vip) == [node],
                        f"{m.name}'s VIP on {node} only", timeout=20),
                    among=survivors, master=m.name, timeout=90)
            except LabError as exc:
                print(f"  {m.name}: {exc}", file=sys.stderr, flush=True)
                ok = False
        time.sleep(1.0)   # the last events reach the watchers
        burst = time.monotonic() - t0
        burst_cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
        for m in masters:
            if m not in lost and cluster.holders(vip=m.vip) != [before[m.name]]:
                print(f"  {m.name} was not lost but its VIP is on "
                      f"{cluster.holders(vip=m.vip)}", file=sys.stderr, flush=True)
                ok = False
        per_vip = []
        for m in lost:
            node = final.get(m.name)
            # The promotion of the master Sentinel settled on: after a second
            # failover (Sentinel may fail over again on a loaded machine) the
            # first +promoted-slave names another replica than the final one.
            ip = lab.hosts[node].ip if node else None
            promoted = min((e.t for e in events.matching("+promoted-slave", t0)
                            if about(e.data, m.name) and promoted_ip(e.data) == ip),
                           default=None)
            bound = (min((e.t for e in addrs.matching(m.vip.split("/")[0], added=True,
                                                        after=t0, host=node)), default=None)
                     if node else None)
            write = writers[m.name].first_ok_after(dead)
            per_vip.append({"master": m.name, "promoted": promoted, "bound": bound,
                            "write": write.done if write else None})
    finally:
        for w in writers.values():
            w.close()
    slow = [v["master"] for v in per_vip if v["bound"] is not None and v["promoted"] is not None
            and v["bound"] - v["promoted"] > SLOW]
    if slow:
        keep_logs(cluster, slow)
    cluster.start_redis(victim)   # back, and Sentinel turns each into a replica
    settle_all(cluster)
    time.sleep(1.0)

    def since(a: float | None, b: float | None) -> float | None:
        return a - b if a is not None and b is not None else None

    promoted = [v["promoted"] for v in per_vip if v["promoted"] is not None]
    bound = [v["bound"] for v in per_vip if v["bound"] is not None]
    complete = len(promoted) == len(bound) == len(per_vip)
    return {"victim": victim, "lost": len(lost), "ok": ok and complete,
            "burst_cpu_s": max(burst_cpu, default=None),
            "burst_cpu_pct": 100 * max(burst_cpu) / burst if burst_cpu else None,
            "bound_after_promoted": [since(v["bound"], v["promoted"]) for v in per_vip],
            "write_after_promoted": [since(v["write"], v["promoted"]) for v in per_vip],
            "last_bound_after_last_promoted":
                since(max(bound), max(promoted)) if complete and bound else None}


def run_mode(name: str, masters: int, rounds: int,
             costs: dict[str, Any]) -> list[dict[str, Any]]:
    opts = MODES[name]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vipfloat-scale-") as tmp, \
            Lab(["a", "b", "c", "client"]) as lab:
        hook = opts["hook"]
        if hook == "shell":
            from vipfloat.lab.configs import Cluster

            hook = shell_wrapper(Cluster(masters=masters).all_masters(), Path(tmp) / "shell.sh")
        with RedisLab(lab, Path(tmp) / "lab", hook=hook, masters=masters) as cluster:
            all_masters = cluster.cluster.all_masters()
            if opts["agent"]:
                for node in cluster.nodes:
                    cluster.start_agent(node)
            else:
                for m in all_masters:
                    r = cluster.vipfloat(cluster.node_of(m.initial), "acquire", "--master", m.name)
                    if r.returncode != 0:
                        raise LabError(f"acquire {m.name}: {r.stderr.strip()}")
            for m in all_masters:
                home = cluster.node_of(m.initial)
                cluster.wait(lambda m=m, home=home: cluster.holders(vip=m.vip) == [home],
                             f"{m.name}'s VIP on {home}", timeout=30)
            if opts["agent"]:
                costs.update(idle_costs(cluster))
                costs["poll_ms"] = round((poll_ms(cluster, "c") or 0) * 1000, 2)
                lat = sentinel_latency_ms(cluster)
                costs["sentinel_latency_ms_with_agents"] = [round((v or 0) * 1000, 3)
                                                            for v in lat]
            addrs = AddrEvents(lab, list(cluster.nodes))
            events = SentinelEvents(lab, list(cluster.nodes))
            try:
                time.sleep(1)
                for i in range(rounds):
                    try:
                        got = one_round(cluster, addrs, events)
                    except LabError as exc:
                        print(f"  {name} round {i + 1}/{rounds}: {exc}; stopping this mode",
                              file=sys.stderr, flush=True)
                        results.append({"ok": False, "bound_after_promoted": [],
                                        "write_after_promoted": [],
                                        "last_bound_after_last_promoted": None})
                        break
                    results.append(got)
                    b = [x for x in got["bound_after_promoted"] if x is not None]
                    print(f"  {name} round {i + 1}/{rounds}: {got['lost']} masters lost on "
                          f"{got['victim']}, bound after +promoted-slave: median "
                          f"{fmt(median(b))} ms, max {fmt(max(b, default=None))} ms, last "
                          f"{fmt(got['last_bound_after_last_promoted'])} ms, ok={got['ok']}",
                          file=sys.stderr, flush=True)
            finally:
                events.close()
                addrs.close()
            if opts["agent"]:
                for node in cluster.nodes:
                    cluster.stop(f"agent:{node}")
                time.sleep(2)
                lat = sentinel_latency_ms(cluster)
                costs["sentinel_latency_ms_without_agents"] = [round((v or 0) * 1000, 3)
                                                               for v in lat]
                # What the agents ask, beyond the Sentinels' own traffic, per agent
                # and second: each poll's SENTINEL MASTER per master and Sentinel
                # (every 2 s, pipelined: one round trip per Sentinel), plus the
                # subscriptions' pings (4/s per Sentinel, whatever N: they
                # measure contact for the quorum).
                without = commands_per_second(cluster, 20.0)
                costs["agent_commands_per_s"] = round(
                    (costs["sentinel_commands_per_s_with_agents"] - without)
                    / costs["agents"], 1)
    return results


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def summary(name: str, masters: int, results: list[dict[str, Any]],
            costs: dict[str, Any]) -> dict[str, Any]:
    bound = [x for r in results for x in r["bound_after_promoted"] if x is not None]
    writes = [x for r in results for x in r["write_after_promoted"] if x is not None]
    last = [r["last_bound_after_last_promoted"] for r in results]

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {"mode": name, "masters": masters, "rounds": len(results),
            "median_bound_after_promoted_ms": ms(median(bound)),
            "max_bound_after_promoted_ms": ms(max(bound, default=None)),
            "last_bound_after_last_promoted_ms": ms(median(last)),
            "median_write_after_promoted_ms": ms(median(writes)),
            **({"burst_cpu_s": round(median([r.get("burst_cpu_s") for r in results]) or 0, 3),
                "burst_cpu_pct": round(median([r.get("burst_cpu_pct") for r in results]) or 0,
                                       1), **costs} if costs else {}),
            "ok": bool(results) and all(r["ok"] for r in results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masters", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="shell,agent+hook,agent")
    args = parser.parse_args()
    modes = chosen_modes(args.modes, list(MODES))
    if modes is None:
        return 2
    lines = []
    for name in modes:
        costs: dict[str, Any] = {}
        lines.append(summary(name, args.masters, run_mode(name, args.masters, args.rounds,
                                                          costs), costs))
    rows = [("mode", "bound after +promoted median ms", "max ms", "last bound after last "
             "+promoted ms", "first write after +promoted ms", "ok")]
    for s in lines:
        rows.append((s["mode"], *(str(s[k]) for k in (
            "median_bound_after_promoted_ms", "max_bound_after_promoted_ms",
            "last_bound_after_last_promoted_ms", "median_write_after_promoted_ms", "ok"))))
    print(f"\nscale benchmark: {args.masters} masters, every Redis of the node that masters "
          f"the most killed, {args.rounds} round(s) per mode\n")
    print(table(rows))
    print()
    for s in lines:
        print("SCALE " + json.dumps(s))
    return 0 if all(s["ok"] for s in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
