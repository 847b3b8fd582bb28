"""A drill's timeline: what happened, when, as seen from outside vipfloat.

One recorder per drill watches the lab from the outside: every node's addresses
(netlink), every Sentinel's events, the client's wire (the first gratuitous ARP
for the VIP) and a client writing through the VIP every 10 ms. ``timeline()``
turns that into the few moments an operator asks about; the drills assert on
them and print them, the demo narrates them, the benchmarks time them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from .capture import Capture, arp_op, is_arp_for
from .cluster import RedisLab
from .observe import AddrEvents, SentinelEvents, Writer


@dataclass(frozen=True)
class Moment:
    t: float
    what: str


class Recorder:
    """``with Recorder(cluster) as rec: rec.mark("kill"); ...; print(rec.render())``"""

    def __init__(self, cluster: RedisLab, client: str = "client", write: bool = True,
                 nodes: Sequence[str] | None = None) -> None:
        self.cluster = cluster
        self.lab = cluster.lab
        self.vip = cluster.cluster.vip.split("/")[0]
        self.nodes = list(nodes or cluster.nodes)
        self.t0 = time.monotonic()
        self.marks: list[Moment] = []
        self.addrs = AddrEvents(self.lab, self.nodes)
        self.events = SentinelEvents(self.lab, self.nodes)
        self.wire = Capture(self.lab, client).__enter__() if client in self.lab.hosts else None
        self.writer = Writer(self.lab, client, self.vip) if write and self.wire else None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        if self.wire:
            self.wire.stop()
        self.events.close()
        self.addrs.close()

    def mark(self, what: str) -> float:
        now = time.monotonic()
        self.marks.append(Moment(now, what))
        return now

    # --- the moments that matter --------------------------------------------------------
    def first_event(self, channel: str, after: float) -> float | None:
        return min((e.t for e in self.events.matching(channel, after)), default=None)

    def bound(self, after: float, host: str | None = None) -> float | None:
        return min((e.t for e in self.addrs.matching(self.vip, added=True, after=after,
                                                     host=host)), default=None)

    def first_announcement(self, after: float, mac: str | None = None) -> float | None:
        """First gratuitous ARP for the VIP on the client's wire (from ``mac``)."""
        if not self.wire:
            return None
        want = bytes.fromhex(mac.replace(":", "")) if mac else None
        # Gratuitous: the sender's IP (28:32) is also the target (38:42); the
        # Ethernet source (6:12) says who sent it.
        frames = self.wire.matching(
            lambda f: is_arp_for(f, self.vip) and f[28:32] == f[38:42]
            and arp_op(f) in (1, 2) and (want is None or f[6:12] == want))
        return min((t for t, _ in frames if t >= after), default=None)

    def first_write(self, after: float) -> float | None:
        if not self.writer:
            return None
        w = self.writer.first_ok_after(after)
        return w.done if w else None

    def write_gap(self, after: float) -> float | None:
        if not self.writer:
            return None
        gap = self.writer.gap(after)
        return gap[1] - gap[0] if gap else None

    def timeline(self, since: float, new_host: str | None = None) -> list[Moment]:
        """Marks, Sentinel's verdict, the VIP's moves and the client's view, in order."""
        out = [m for m in self.marks if m.t >= since]
        for channel in ("+odown", "+promoted-slave", "+switch-master"):
            t = self.first_event(channel, since)
            if t is not None:
                out.append(Moment(t, f"first {channel}"))
        for e in self.addrs.matching(self.vip, after=since):
            out.append(Moment(e.t, f"VIP {'bound on' if e.added else 'removed from'} {e.host}"))
        mac = self.lab.hosts[new_host].mac if new_host else None
        bound = self.bound(since, new_host)
        if bound is not None:
            t = self.first_announcement(bound, mac)
            if t is not None:
                out.append(Moment(t, f"first gratuitous ARP from {new_host or '?'} at the client"))
            t = self.first_write(bound)
            if t is not None:
                out.append(Moment(t, "first write acknowledged through the VIP after the move"))
        return sorted(out, key=lambda m: m.t)

    def render(self, since: float, new_host: str | None = None) -> str:
        lines = [f"  {(m.t - since) * 1000:+9.1f} ms  {m.what}"
                 for m in self.timeline(since, new_host)]
        gap = self.write_gap(since - 0.5)
        if gap is not None:
            lines.append(f"  longest write gap: {gap * 1000:.0f} ms")
        return "\n".join(lines)
