"""Running a chaos schedule on a live lab, and recording what
:func:`vipfloat.lab.chaos.judge` needs.

The nemesis applies each :class:`~vipfloat.lab.chaos.Fault` at its time and
undoes it when it ends; faults overlap. Partitions are one nftables table on the
lab's switch, rebuilt whole (one transaction) from the set of cut pairs, so two
overlapping cuts never undo each other. A sampler asks every Sentinel for its
master and config-epoch at 20 Hz; the VIP's holders come from netlink (every
change, as it happens); a client writes through the VIP every 10 ms.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .chaos import (AckedWrite, Fault, History, HolderChange, NeighSample, SentinelSample,
                    Verdict, holder_intervals, judge)
from .cluster import RedisLab
from .observe import AddrEvents, Writer, in_netns_thread

SAMPLE_INTERVAL = 0.05
PROCS = ("redis", "sentinel", "agent")


class Nemesis:
    def __init__(self, cluster: RedisLab, client: str = "client") -> None:
        self.cluster = cluster
        self.lab = cluster.lab
        self.client = client
        self.cut: set[frozenset[str]] = set()
        self.killed_agents: set[int] = set()     # pids the nemesis itself ended
        self._lock = threading.Lock()

    # --- applying and undoing ------------------------------------------------------
    def begin(self, fault: Fault) -> None:
        node = fault.node
        if fault.kind == "kill":
            key = f"{fault.target}:{node}"
            proc = self.cluster.procs.get(key)
            if proc is not None and fault.target == "agent":
                self.killed_agents.add(proc.pid)
            self.cluster.stop(key, sig=signal.SIGKILL)
        elif fault.kind == "pause":
            self._signal(fault, signal.SIGSTOP)
        elif fault.kind in ("isolate", "partial"):
            others = [n for n in self.cluster.nodes if n != node]
            if fault.kind == "isolate":
                others.append(self.client)
            with self._lock:
                self.cut |= {frozenset((node, o)) for o in others}
                self._apply_cuts()
        elif fault.kind == "link":
            self.lab.run(node, "ip", "link", "set", "eth1", "down", check=True)
        elif fault.kind == "flush":
            self.lab.run(node, "ip", "addr", "flush", "dev", "eth1", check=True)

    def end(self, fault: Fault) -> None:
        node = fault.node
        if fault.kind == "kill":
            {"redis": self.cluster.start_redis, "sentinel": self.cluster.start_sentinel,
             "agent": self.cluster.start_agent}[fault.target](node)
        elif fault.kind == "pause":
            self._signal(fault, signal.SIGCONT)
        elif fault.kind in ("isolate", "partial"):
            with self._lock:
                self.cut = {pair for pair in self.cut if node not in pair}
                self._apply_cuts()
        elif fault.kind == "link":
            self.lab.run(node, "ip", "link", "set", "eth1", "up", check=True)
        elif fault.kind == "flush":
            host = self.lab.hosts[node]
            self.lab.run(node, "ip", "addr", "add", host.v4, "dev", "eth1")
            self.lab.run(node, "ip", "addr", "add", host.v6, "dev", "eth1", "nodad")

    def _signal(self, fault: Fault, sig: int) -> None:
        targets = PROCS if fault.target == "node" else (fault.target,)
        for name in targets:
            proc = self.cluster.procs.get(f"{name}:{fault.node}")
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, sig)

    def _apply_cuts(self) -> None:
        """Under self._lock: the whole table, replaced in one nft transaction."""
        rules = []
        for pair in sorted(tuple(sorted(p)) for p in self.cut):
            for src, dst in (pair, pair[::-1]):
                rules.append(f'iifname "{f"p-{src}"[:15]}" oifname "{f"p-{dst}"[:15]}" drop')
        script = ("add table bridge vipfloat_chaos\ndelete table bridge vipfloat_chaos\n"
                  "table bridge vipfloat_chaos {\n chain forward {\n"
                  "  type filter hook forward priority 0;\n"
                  + "".join(f"  {r}\n" for r in rules) + " }\n}\n")
        subprocess.run(["ip", "netns", "exec", self.lab.switch, "nft", "-f", "-"], input=script,
                       text=True, check=True, capture_output=True)

    def heal_all(self, running: list[Fault]) -> None:
        for fault in running:
            try:
                self.end(fault)
            except (subprocess.CalledProcessError, OSError):
                pass
        with self._lock:
            self.cut.clear()
            self._apply_cuts()


@dataclass
class Sampler:
    """Every Sentinel's (master ip, config-epoch) at 20 Hz, from inside each node."""

    cluster: RedisLab
    client: str = "client"
    samples: list[SentinelSample] = field(default_factory=list)
    neigh: list[NeighSample] = field(default_factory=list)
    _views: dict[str, tuple[str | None, int | None]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        for node in self.cluster.nodes:
            in_netns_thread(self.cluster.lab, node, functools.partial(self._ask, node))
        threading.Thread(target=self._combine, daemon=True).start()
        threading.Thread(target=self._neighbour, daemon=True).start()

    def _neighbour(self) -> None:
        lab, vip = self.cluster.lab, self.cluster.cluster.vip.split("/")[0]
        while not self._stop.wait(SAMPLE_INTERVAL):
            try:
                self.neigh.append(NeighSample(time.monotonic(), lab.neigh_mac(self.client, vip)))
            except (subprocess.CalledProcessError, OSError):
                pass

    def _ask(self, node: str) -> None:
        import redis

        ip = self.cluster.lab.hosts[node].ip
        client = redis.Redis(host=ip, port=self.cluster.cluster.sentinel_port,
                             socket_timeout=0.2, socket_connect_timeout=0.2,
                             decode_responses=True)
        master = self.cluster.cluster.master_name
        view: tuple[str | None, int | None]
        while not self._stop.is_set():
            try:
                reply = client.execute_command("SENTINEL", "MASTER", master)
                info = dict(zip(reply[::2], reply[1::2])) if isinstance(reply, list) else reply
                view = (info.get("ip"), int(info.get("config-epoch", -1)))
            except (redis.RedisError, OSError, ValueError, TypeError):
                view = (None, None)
                client.close()
            self._views[node] = view
            self._stop.wait(SAMPLE_INTERVAL)

    def _combine(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            views = tuple((n, *self._views.get(n, (None, None))) for n in self.cluster.nodes)
            self.samples.append(SentinelSample(time.monotonic(), views))

    def close(self) -> None:
        self._stop.set()


@dataclass
class RunResult:
    history: History
    verdict: Verdict
    faults_run: list[Fault]


def run(cluster: RedisLab, faults: list[Fault], seconds: float,
        say: Callable[[str], None] = lambda line: None, client: str = "client") -> RunResult:
    """Apply ``faults`` on ``cluster`` (agents and client already up) for
    ``seconds``, then heal everything, wait for the cluster to settle, and judge."""
    lab = cluster.lab
    vip = cluster.cluster.vip.split("/")[0]
    nemesis = Nemesis(cluster, client)
    nemesis.heal_all([])   # the table exists from the start: later changes are atomic
    addrs = AddrEvents(lab, list(cluster.nodes))
    sampler = Sampler(cluster, client)
    writer = Writer(lab, client, vip)
    start = time.monotonic()
    initial = frozenset(cluster.holders())
    sampler.start()
    pending = sorted(faults, key=lambda f: f.start)
    running: list[Fault] = []
    done: list[Fault] = []
    try:
        while True:
            now = time.monotonic() - start
            for fault in [f for f in running if f.start + f.duration <= now]:
                nemesis.end(fault)
                running.remove(fault)
                done.append(Fault(fault.kind, fault.node, fault.start,
                                  round(now - fault.start, 3), fault.target))
                say(f"[{now:7.2f}s] end   {fault.name}")
            while pending and pending[0].start <= now:
                fault = pending.pop(0)
                fault = Fault(fault.kind, fault.node, round(now, 3), fault.duration, fault.target)
                say(f"[{now:7.2f}s] begin {fault.name} for {fault.duration:.1f} s")
                nemesis.begin(fault)
                running.append(fault)
            if now >= seconds and not running:
                break
            time.sleep(0.02)
    finally:
        now = time.monotonic() - start
        for fault in running:
            done.append(Fault(fault.kind, fault.node, fault.start, round(now - fault.start, 3),
                              fault.target))
        nemesis.heal_all(running)
        restart_missing(cluster)
    # Settled: every Sentinel names one master at one epoch, its Redis says so.
    settle_deadline = time.monotonic() + 30
    while time.monotonic() < settle_deadline and not _agreed(sampler):
        time.sleep(0.2)
    time.sleep(3)
    end = time.monotonic()
    sampler.close()
    writer.close()
    addrs.close()
    master = _agreed(sampler)
    read_at = time.monotonic()
    kept: frozenset[int] = frozenset()
    if master:
        node = cluster.node_of(master)
        kept = frozenset(int(v) for v in cluster.redis(node, "LRANGE", "vipfloat:log", "0", "-1")
                         .split() if v.isdigit())
    history = History(
        start=start, end=end, node_ips={n: lab.hosts[n].ip for n in cluster.nodes},
        initial_holders=initial,
        holder_changes=[HolderChange(e.t, e.host, e.added) for e in addrs.matching(vip)],
        samples=list(sampler.samples),
        node_macs={n: lab.hosts[n].mac for n in cluster.nodes}, neigh=list(sampler.neigh),
        faults=sorted(done, key=lambda f: f.start),
        acked=[AckedWrite(w.done, w.value) for w in writer.snapshot()
               if w.ok and w.value is not None],
        kept=kept, read_at=read_at,
        process_problems=process_problems(cluster, nemesis.killed_agents))
    # The checker checks itself: the holders its record ends with must be the
    # lab's own (a record that missed changes would judge a fiction).
    intervals = holder_intervals(history)
    recorded = intervals[-1][2] if intervals else initial
    actual = frozenset(cluster.holders())
    if recorded != actual:
        history.process_problems.append(
            f"checker error: its record ends with the VIP on {sorted(recorded)}, the lab has "
            f"it on {sorted(actual)}")
    return RunResult(history, judge(history), history.faults)


def _agreed(sampler: Sampler) -> str | None:
    if not sampler.samples:
        return None
    views = {(ip, epoch) for _, ip, epoch in sampler.samples[-1].views}
    if len(views) == 1:
        ip, epoch = next(iter(views))
        return ip if ip is not None and epoch is not None else None
    return None


def restart_missing(cluster: RedisLab) -> None:
    """Whatever a kill left stopped (the run ended inside the fault) comes back."""
    for node in cluster.nodes:
        for name, start in (("redis", cluster.start_redis), ("sentinel", cluster.start_sentinel),
                            ("agent", cluster.start_agent)):
            proc = cluster.procs.get(f"{name}:{node}")
            if proc is None:
                start(node)


def process_problems(cluster: RedisLab, killed: set[int]) -> list[str]:
    """Agents that exited on their own, and tracebacks in any agent's log."""
    out = []
    for node in cluster.nodes:
        proc = cluster.procs.get(f"agent:{node}")
        if proc is not None and proc.poll() is not None and proc.pid not in killed:
            out.append(f"agent on {node} exited {proc.returncode} (the nemesis did not stop it)")
        log = cluster.agent_log(node) if (cluster.dir(node) / "agent.log").exists() else ""
        tracebacks = log.count("Traceback")
        if tracebacks:
            first = log[log.index("Traceback"):][:600]
            out.append(f"agent on {node}: {tracebacks} traceback(s) in its log, the first:\n"
                       f"{first}")
    return out


def timeline(history: History, around: float, span: float = 12.0) -> str:
    """What happened within ``span`` s of ``around`` (run seconds): faults,
    holder changes and changes in what the Sentinels named."""
    lines: list[tuple[float, str]] = []
    for f in history.faults:
        for t, what in ((f.start, "begin"), (f.end, "end")):
            lines.append((t, f"{what} {f.name}"))
    for c in history.holder_changes:
        lines.append((c.t - history.start, f"VIP {'bound on' if c.added else 'removed from'} "
                                            f"{c.node}"))
    last = None
    for s in history.samples:
        view = ", ".join(f"{n}: {ip or '-'}@{'-' if e is None else e}" for n, ip, e in s.views)
        if view != last:
            lines.append((s.t - history.start, f"Sentinels: {view}"))
            last = view
    return "\n".join(f"  [{t:7.2f}s] {what}" for t, what in sorted(lines)
                     if abs(t - around) <= span)

