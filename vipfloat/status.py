"""`vipfloat status`: what holds each VIP, what the Sentinels say, and whether it agrees.

Gathering (netlink, Sentinels, DNS) is kept apart from :func:`summarise`, a pure
function that the unit tests drive with fakes, and from the two renderers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from .config import Config, IPAddress, VipConfig
from .decide import Binding, Claim, is_new_master_here, newest
from .errors import ResolveError
from .sentinel import SentinelAnswer


@dataclass(frozen=True)
class VipStatus:
    vip: VipConfig
    binding: Binding
    master_addr: str | None
    master_epoch: int | None
    master_is_local: bool | None
    consistent: bool
    note: str
    sentinels: tuple[SentinelAnswer, ...]
    last: dict[str, Any] | None = None
    agent: dict[str, Any] | None = None       # the running agent's live view, if any

    @property
    def bound_here(self) -> bool:
        return self.binding is Binding.PRESENT

    def as_dict(self) -> dict[str, Any]:
        return {
            "master": self.vip.master,
            "address": str(self.vip.address),
            "interface": self.vip.interface,
            "bound_here": self.bound_here,
            "master_addr": self.master_addr,
            "config_epoch": self.master_epoch,
            "master_is_local": self.master_is_local,
            "consistent": self.consistent,
            "note": self.note,
            "sentinels": [a.as_dict() for a in self.sentinels],
            "last_action": self.last,
            "agent": self.agent,
        }


def summarise(vip: VipConfig, binding: Binding, local: frozenset[IPAddress],
              answers: Sequence[SentinelAnswer],
              resolve: Callable[[str], frozenset[IPAddress]],
              last: dict[str, Any] | None = None) -> VipStatus:
    best = newest(answers)
    reachable = sum(a.reachable for a in answers)
    if best is None or best.master is None:
        note = (f"no Sentinel answered for {vip.master} "
                f"({reachable}/{len(answers)} reachable)")
        return VipStatus(vip, binding, None, None, None, False, note, tuple(answers), last)
    master = best.master
    try:
        addrs = resolve(master.host)
    except ResolveError as exc:
        return VipStatus(vip, binding, master.addr, master.config_epoch, None, False, str(exc),
                         tuple(answers), last)
    local_master = is_new_master_here(Claim("status", master.host, addrs), local, vip)
    bound = binding is Binding.PRESENT
    if binding is Binding.FOREIGN:
        consistent, note = False, f"{vip.ip} is bound with another prefix: not managed by vipfloat"
    elif bound == local_master:
        consistent = True
        note = "master is here and holds the VIP" if bound else "master is elsewhere; VIP not here"
    else:
        consistent = False
        note = ("master is here but the VIP is not bound" if local_master
                else "VIP bound here but the master is elsewhere")
    disagree = {a.master.addr for a in answers if a.master} - {master.addr}
    if disagree:
        note += f"; lagging Sentinels still name {', '.join(sorted(disagree))}"
    return VipStatus(vip, binding, master.addr, master.config_epoch, local_master, consistent,
                     note, tuple(answers), last)


def gather(config: Config) -> list[VipStatus]:
    from .apply import read_last, resolve_host
    from .netlink import NetlinkHost, binding_of
    from .sentinel import ask_all

    answers = ask_all(config.sentinel, [v.master for v in config.vips])
    live = agent_view(str(config.agent.socket))
    with NetlinkHost() as host:
        rows = host.addresses()
        links = {v.interface: host.link(v.interface) for v in config.vips}
    local = frozenset(r.ip for r in rows)
    out = []
    for vip in config.vips:
        link = links[vip.interface]
        binding, _ = binding_of(rows, link.index if link else None, vip)
        status = summarise(vip, binding, local, answers[vip.master], resolve_host,
                           read_last(config.agent.state_dir, vip.master))
        if live is not None and vip.master in live.get("vips", {}):
            status = replace(status, agent={**live["vips"][vip.master],
                                            "quorum": live.get("quorum"), "pid": live.get("pid")})
        out.append(status)
    return out


def agent_view(path: str) -> dict[str, Any] | None:
    """The running agent's live view, or None when no agent answers."""
    from .agent_client import NoAgent, request

    try:
        return request(path, {"op": "status"}, timeout=2.0)
    except (NoAgent, OSError, ValueError):
        return None


def render_json(statuses: Sequence[VipStatus]) -> str:
    return json.dumps({"vips": [s.as_dict() for s in statuses]}, indent=2)


def _yes(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def render_table(statuses: Sequence[VipStatus]) -> str:
    header = ("MASTER", "VIP", "IFACE", "BOUND HERE", "SENTINEL MASTER", "EPOCH", "IS LOCAL",
              "CONSISTENT")
    rows = [header]
    for s in statuses:
        rows.append((s.vip.master, str(s.vip.address), s.vip.interface, _yes(s.bound_here),
                     s.master_addr or "-", "-" if s.master_epoch is None else str(s.master_epoch),
                     _yes(s.master_is_local), _yes(s.consistent)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for s in statuses:
        lines.append("")
        lines.append(f"{s.vip.master}: {s.note}")
        for a in s.sentinels:
            said = (f"{a.master.addr} epoch {a.master.config_epoch} flags {','.join(a.master.flags)}"
                    if a.master else a.error or "no answer")
            lines.append(f"  sentinel {a.endpoint}: {said}")
        if s.agent:
            a, q = s.agent, s.agent.get("quorum") or {}
            lines.append(f"  agent (pid {a.get('pid')}): holds {_yes(a.get('held'))}; Sentinels "
                         f"{q.get('reachable')}/{q.get('configured')} reachable, quorum "
                         f"{'ok' if q.get('ok') else 'LOST for %ss' % q.get('below_for')} "
                         f"(on loss: {q.get('policy')} after {a.get('quorum_loss_grace')} s)")
            lines.append(f"  agent's last decision: {a.get('last_action')} ({a.get('last_reason')})")
            if a.get("conflict_mac"):
                lines.append(f"  CONFLICT: {a['conflict_mac']} also answers for {s.vip.ip}")
            if a.get("error"):
                lines.append(f"  agent error: {a['error']}")
        elif s.last:
            lines.append(f"  last action: {s.last.get('action')} ({s.last.get('reason')})")
    return "\n".join(lines)
