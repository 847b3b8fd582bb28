"""Chaos for the namespace lab: a seeded fault schedule and a checker that
judges invariants over what happened, not one scripted outcome.

Both halves are pure, so their rules are unit-tested on made-up histories:

- :func:`schedule` turns a seed into faults (what, where, when, for how long);
- :func:`judge` takes the recorded history (who held the VIP when, what every
  Sentinel named, which faults ran when, which writes were acknowledged and
  which survived) and returns the violations, each a sentence with its time.

`bench/chaos.py` runs a schedule on a real lab (redis-server, redis-sentinel,
vipfloat watch and the hook on three nodes, a client writing through the VIP)
and records the history this module judges.

The invariants:

1. Never two holders of the VIP for longer than OVERLAP_MAX (a graceful move
   keeps the old holder until the new one is heard: up to release_wait), except
   while a holder cannot let go (its agent killed or paused, its whole node
   paused, cut off, or its link down) and GRACE after that ends. A host whose
   userspace is paused still answers ARP from its kernel: nothing in that host
   can release the VIP until it runs again; when it does, it sees it lost
   contact with its Sentinels for longer than the grace and fences at once.
2. Once no fault is active and every Sentinel names the same master at the same
   config-epoch, the VIP is on that master, and only there, and the client's
   neighbour entry for it holds that master's MAC, within CONVERGE_MAX.
3. No agent traceback, and no agent exit the nemesis did not cause (the runner
   checks these; they are reported here as violations too).
4. Acknowledged writes lost are counted, each attributed to the fault window it
   was acknowledged in (or to none).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

# What kind of fault, on which process (or the whole node).
KINDS = ("kill", "pause", "isolate", "partial", "link", "flush")
TARGETS = ("redis", "sentinel", "agent", "node")

# Seconds two nodes may hold the VIP together in a graceful move (release_wait
# is 1 s in the lab, plus the time to act and for the kernel to tell us).
OVERLAP_MAX = 2.0
# After a fault that kept a holder from letting go ends: its agent restarts
# (imports and a first reconcile: 1-2 s on a loaded 2-core machine), or resumes
# and fences at once (it missed its Sentinels for longer than the grace).
GRACE = 5.0
# Sentinels agreeing and no fault active: the VIP is on their master by then.
CONVERGE_MAX = 5.0
# Redis replicates asynchronously: a write the master acknowledged just before
# it was cut off, killed or paused may not have reached the replica Sentinel
# then promotes. Its loss belongs to that fault, not to the calm before it.
ACK_LAG = 1.0


@dataclass(frozen=True)
class Fault:
    kind: str                 # one of KINDS
    node: str
    start: float              # seconds from the start of the run
    duration: float
    target: str = "node"      # kill/pause: redis, sentinel, agent or node

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def name(self) -> str:
        what = f"{self.kind} {self.target}" if self.kind in ("kill", "pause") else self.kind
        return f"{what} on {self.node}"

    @property
    def label(self) -> str:
        """The by_kind key: kind and target, without the node."""
        return f"{self.kind}-{self.target}" if self.kind in ("kill", "pause") else self.kind

    def stops_release(self, node: str) -> bool:
        """Does this fault keep ``node`` from letting go of the VIP?"""
        if self.node != node:
            return False
        if self.kind in ("kill", "pause"):
            return self.target in ("agent", "node")
        return self.kind in ("isolate", "partial", "link")


def schedule(seed: int, seconds: float, nodes: Sequence[str], kinds: Sequence[str] = KINDS,
             warmup: float = 5.0, cooldown: float = 15.0, max_active: int = 2) -> list[Fault]:
    """Pure: the faults of one run, in start order. At most ``max_active`` at
    once and one per node (two faults on one process would undo each other's
    cleanup); none in the first ``warmup`` or last ``cooldown`` seconds, so the
    run starts settled and ends converged."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    t = warmup
    while True:
        t += rng.uniform(2.0, 8.0)
        duration = rng.uniform(1.0, 8.0)
        if t + duration > seconds - cooldown:
            return faults
        active = [f for f in faults if f.end > t]
        if len(active) >= max_active:
            continue
        busy = {f.node for f in active}
        free = [n for n in nodes if n not in busy]
        if not free:
            continue
        kind = rng.choice(list(kinds))
        node = rng.choice(free)
        target = rng.choice(TARGETS) if kind in ("kill", "pause") else "node"
        if kind == "kill" and target == "node":
            target = rng.choice(TARGETS[:3])   # a whole node killed is "isolate" + kills
        faults.append(Fault(kind, node, round(t, 3), round(duration, 3), target))


# --- the history a run records -----------------------------------------------------------

@dataclass(frozen=True)
class HolderChange:
    t: float
    node: str
    added: bool


@dataclass(frozen=True)
class SentinelSample:
    t: float
    views: tuple[tuple[str, str | None, int | None], ...]   # (node, master ip, epoch)


@dataclass(frozen=True)
class NeighSample:
    t: float
    mac: str | None           # the client's neighbour entry for the VIP


@dataclass(frozen=True)
class AckedWrite:
    t: float                  # when it was acknowledged
    value: int


@dataclass
class History:
    start: float                              # the run's t = 0, on the same clock
    end: float
    node_ips: dict[str, str]
    initial_holders: frozenset[str]
    holder_changes: list[HolderChange] = field(default_factory=list)
    samples: list[SentinelSample] = field(default_factory=list)
    node_macs: dict[str, str] = field(default_factory=dict)
    neigh: list[NeighSample] = field(default_factory=list)   # empty: not checked
    faults: list[Fault] = field(default_factory=list)    # as run: start/duration measured
    acked: list[AckedWrite] = field(default_factory=list)
    kept: frozenset[int] = frozenset()                    # values in the final master's list
    read_at: float = 0.0                                  # when that list was read
    process_problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    violations: tuple[str, ...]
    max_converge_ms: float | None
    acked: int
    lost: int
    lost_by_fault: tuple[tuple[str, int], ...]


def holder_intervals(history: History) -> list[tuple[float, float, frozenset[str]]]:
    """(from, to, holders) stretches, in the run's seconds."""
    holders = set(history.initial_holders)
    out = []
    t = 0.0
    for change in sorted(history.holder_changes, key=lambda c: c.t):
        at = change.t - history.start
        if at > t:
            out.append((t, at, frozenset(holders)))
        t = max(t, at)
        (holders.add if change.added else holders.discard)(change.node)
    out.append((t, history.end - history.start, frozenset(holders)))
    return [seg for seg in out if seg[1] > seg[0]]


def judge(history: History) -> Verdict:
    """Pure: the violations of the invariants in the module's docstring."""
    violations: list[str] = list(history.process_problems)
    intervals = holder_intervals(history)
    violations += _two_holders(history, intervals)
    converge, late = _convergence(history, intervals)
    violations += late
    lost, by_fault = _lost_writes(history)
    return Verdict(tuple(violations), converge, len([w for w in history.acked
                                                     if w.t <= history.read_at]),
                   len(lost), tuple(sorted(by_fault.items())))


def _two_holders(history: History,
                 intervals: list[tuple[float, float, frozenset[str]]]) -> list[str]:
    out = []
    # Merge consecutive stretches with two or more holders.
    runs: list[tuple[float, float, set[str]]] = []
    for start, end, held in intervals:
        if len(held) < 2:
            continue
        if runs and abs(runs[-1][1] - start) < 1e-9:
            runs[-1] = (runs[-1][0], end, runs[-1][2] | held)
        else:
            runs.append((start, end, set(held)))
    for start, end, holders in runs:
        excusing = [f for f in history.faults if any(f.stops_release(n) for n in holders)]
        windows = [(f.start, f.end + GRACE) for f in excusing]
        for free_start, free_end in _subtract((start, end), windows):
            if free_end - free_start > OVERLAP_MAX:
                near = [f.name for f in excusing if f.start <= free_end + GRACE
                        and f.end + GRACE >= free_start - GRACE]
                why = f" (faults nearby: {', '.join(near)})" if near else ""
                out.append(f"two holders ({', '.join(sorted(holders))}) from {free_start:.2f} s "
                           f"to {free_end:.2f} s with nothing to excuse it{why}: longer than "
                           f"{OVERLAP_MAX:g} s")
    return out


def _subtract(span: tuple[float, float],
              holes: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pure: the parts of ``span`` outside every hole."""
    parts = [span]
    for h_start, h_end in holes:
        nxt = []
        for p_start, p_end in parts:
            if h_end <= p_start or h_start >= p_end:
                nxt.append((p_start, p_end))
                continue
            if h_start > p_start:
                nxt.append((p_start, h_start))
            if h_end < p_end:
                nxt.append((h_end, p_end))
        parts = nxt
    return parts


def _active(history: History, t: float) -> list[Fault]:
    return [f for f in history.faults if f.start <= t < f.end]


def _convergence(history: History, intervals: list[tuple[float, float, frozenset[str]]]
                 ) -> tuple[float | None, list[str]]:
    """Stretches where no fault is active and every Sentinel names one master at
    one epoch; in each, how long until that master alone holds the VIP."""
    out: list[str] = []
    worst: float | None = None
    ip_node = {ip: n for n, ip in history.node_ips.items()}
    stretches: list[tuple[float, float, str]] = []
    for sample in history.samples:
        t = sample.t - history.start
        views = {(ip, epoch) for _, ip, epoch in sample.views}
        agreed = (len(views) == 1 and None not in next(iter(views))
                  and not _active(history, t))
        if agreed:
            master = ip_node.get(next(iter(views))[0] or "", "?")
            if stretches and stretches[-1][2] == master and t - stretches[-1][1] < 0.5:
                stretches[-1] = (stretches[-1][0], t, master)
                continue
            stretches.append((t, t, master))
    for begin, finish, master in stretches:
        reached = _reached(history, intervals, begin, finish, master)
        if reached is not None:
            took = reached - begin
            worst = took if worst is None else max(worst, took)
            if took > CONVERGE_MAX:
                out.append(f"the VIP reached {master}, the master every Sentinel names, only "
                           f"{took:.2f} s after they agreed at {begin:.2f} s (bound "
                           f"{CONVERGE_MAX:g} s)")
        elif finish - begin > CONVERGE_MAX:
            holders = next((h for s, e, h in intervals if s <= finish < e), frozenset())
            client = ""
            if history.neigh:
                macs = {m: n for n, m in history.node_macs.items()}
                last = [n.mac for n in history.neigh if n.t - history.start <= finish]
                client = (
                    f", and the client's neighbour entry named "
                    f"{macs.get(last[-1] or '', last[-1] or 'nothing') if last else 'nothing'}")
            out.append(f"every Sentinel named {master} from {begin:.2f} s to {finish:.2f} s "
                       f"with no fault active, but the VIP was on "
                       f"{', '.join(sorted(holders)) or 'no node'}{client}")
    return (None if worst is None else round(worst * 1000, 1)), out


def _reached(history: History, intervals: list[tuple[float, float, frozenset[str]]],
             begin: float, finish: float, master: str) -> float | None:
    """The first moment in [begin, finish] when ``master`` alone holds the VIP
    and (when sampled) the client's neighbour entry names its MAC."""
    if not history.neigh:
        return next((max(begin, s) for s, e, holders in intervals
                     if e > begin and s <= finish and holders == {master}), None)
    mac = history.node_macs.get(master)
    for sample in sorted(history.neigh, key=lambda n: n.t):
        t = sample.t - history.start
        if t < begin:
            continue
        if t > finish:
            break
        holders = next((h for s, e, h in intervals if s <= t < e), frozenset())
        if sample.mac == mac and holders == {master}:
            return t
    return None


def _lost_writes(history: History) -> tuple[list[AckedWrite], dict[str, int]]:
    """Acknowledged before the final list was read, and not in it."""
    lost = [w for w in history.acked if w.t <= history.read_at and w.value not in history.kept]
    by_fault: dict[str, int] = {}
    for write in lost:
        t = write.t - history.start
        # The fault active when it was acknowledged, or that ended just before
        # (a demoted master's last writes are discarded at the next sync), or
        # that began just after (its last writes not replicated yet).
        window = [f for f in history.faults if f.start - ACK_LAG <= t <= f.end + GRACE]
        key = ", ".join(sorted({f.label for f in window})) or "no fault"
        by_fault[key] = by_fault.get(key, 0) + 1
    return lost, by_fault
