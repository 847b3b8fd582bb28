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
from .logs import escape
from .sentinel import SentinelAnswer

# What the last-action record and the agent's live view hold, field by field.
# Both come from outside this process (a JSON file in state_dir, whatever answers
# on the agent's socket) and record.read_last returns any JSON at all: a field of
# the wrong type is dropped (read as absent) and named under "malformed", so a
# bad record or reply costs one field of the report, not the report.
_NUM = (int, float)
LAST_FIELDS: dict[str, Any] = {
    "time": _NUM, "master": str, "action": str, "reason": str, "changed": bool,
    "source": str, "role": str, "from": str, "to": str}
QUORUM_FIELDS: dict[str, Any] = {
    "reachable": int, "configured": int, "majority": int, "ok": bool, "below_for": _NUM,
    "policy": str}
BELIEF_FIELDS: dict[str, Any] = {
    "master_addr": str, "epoch": int, "provisional": bool, "source": str}
AGENT_VIP_FIELDS: dict[str, Any] = {
    "held": bool, "last_action": str, "last_reason": str, "last_time": _NUM, "error": str,
    "conflict_mac": str, "conflict_since": _NUM, "last_announcement": _NUM,
    "belief": BELIEF_FIELDS, "quorum_loss_grace": _NUM}
AGENT_FIELDS: dict[str, Any] = {"pid": int, "quorum": QUORUM_FIELDS, "vips": dict}


def _fits(value: Any, kind: Any) -> bool:
    if isinstance(value, bool) and kind is not bool:
        return False  # JSON true is no count, epoch or pid
    return isinstance(value, kind)


def clean(data: Any, schema: dict[str, Any]) -> dict[str, Any] | None:
    """`data` if it is a JSON object, with each field `schema` names kept only
    when it has the right type (null counts as absent, and is fine); the names
    of the dropped ones under "malformed". Fields the schema does not know pass
    as they are (a newer agent's). None if `data` is no object at all."""
    if not isinstance(data, dict):
        return None
    out: dict[str, Any] = {}
    bad = []
    for key, value in data.items():
        if key == "malformed":
            continue  # ours to write: a sender's own would mislead
        kind = schema.get(key)
        if kind is None or value is None:
            out[key] = value
        elif isinstance(kind, dict):
            inner = clean(value, kind)
            if inner is None:
                bad.append(key)
            else:
                out[key] = inner
        elif _fits(value, kind):
            out[key] = value
        else:
            bad.append(key)
    if bad:
        out["malformed"] = sorted(bad)
    return out


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
    from .record import read_last
    from .resolve import resolve_host
    from .netlink import NetlinkHost, binding_of
    from .sentinel import ask_all

    answers = ask_all(config.sentinel, [v.master for v in config.vips])
    live = agent_view(str(config.agent.socket))
    live_vips = live.get("vips") if live is not None else None
    with NetlinkHost() as host:
        rows = host.addresses()
        links = {v.interface: host.link(v.interface) for v in config.vips}
    local = frozenset(r.ip for r in rows)
    out = []
    for vip in config.vips:
        link = links[vip.interface]
        binding, _ = binding_of(rows, link.index if link else None, vip)
        status = summarise(vip, binding, local, answers[vip.master], resolve_host,
                           clean(read_last(config.agent.state_dir, vip.master), LAST_FIELDS))
        if live is not None and isinstance(live_vips, dict) and vip.master in live_vips:
            status = replace(status, agent=merge_agent(live, live_vips[vip.master]))
        out.append(status)
    return out


def merge_agent(live: dict[str, Any], entry: Any) -> dict[str, Any]:
    """One VIP's part of the agent's live view, with the agent's pid and quorum;
    a malformed entry reads as an empty one (and says so)."""
    view = clean(entry, AGENT_VIP_FIELDS)
    bad = [] if view is not None else ["vips"]
    view = view or {}
    bad += view.pop("malformed", [])
    bad += [k for k in live.get("malformed", []) if k in ("pid", "quorum")]
    view.update(quorum=live.get("quorum"), pid=live.get("pid"))
    if bad:
        view["malformed"] = sorted(set(bad))
    return view


def agent_view(path: str) -> dict[str, Any] | None:
    """The running agent's live view, or None when no agent answers."""
    from .agent_client import NoAgent, request

    try:
        return clean(request(path, {"op": "status"}, timeout=2.0), AGENT_FIELDS)
    except (NoAgent, OSError, ValueError):
        return None


def render_json(statuses: Sequence[VipStatus]) -> str:
    return json.dumps({"vips": [s.as_dict() for s in statuses]}, indent=2)


def _yes(value: Any) -> str:
    return "?" if not isinstance(value, bool) else ("yes" if value else "no")


def _show(value: Any) -> str:
    """A field for the table: a string from the record or the agent escaped (it
    goes to a terminal), a missing one as '-'."""
    if value is None:
        return "-"
    return escape(value if isinstance(value, str) else json.dumps(value))


def _names(value: Any) -> str:
    return ", ".join(_show(v) for v in value) if isinstance(value, list) else _show(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def render_table(statuses: Sequence[VipStatus]) -> str:
    header = ("MASTER", "VIP", "IFACE", "BOUND HERE", "SENTINEL MASTER", "EPOCH", "IS LOCAL",
              "CONSISTENT")
    rows = [header]
    for s in statuses:
        rows.append((s.vip.master, str(s.vip.address), s.vip.interface, _yes(s.bound_here),
                     escape(s.master_addr or "-"),
                     "-" if s.master_epoch is None else str(s.master_epoch),
                     _yes(s.master_is_local), _yes(s.consistent)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for s in statuses:
        lines.append("")
        # Sentinels' answers are anyone's text (a compromised Sentinel, or one
        # spoken to over plain TCP): escaped, so they cannot drive the terminal.
        lines.append(f"{s.vip.master}: {escape(s.note)}")
        for answer in s.sentinels:
            m = answer.master
            said = (f"{m.addr} epoch {m.config_epoch} flags {','.join(m.flags)}"
                    if m else answer.error or "no answer")
            lines.append(f"  sentinel {answer.endpoint}: {escape(said)}")
        # The agent's view and the record are checked again here, not only in
        # gather: a VipStatus may come from elsewhere, and a report must not die
        # on one odd field.
        if isinstance(s.agent, dict) and s.agent:
            a, q = s.agent, _dict(s.agent.get("quorum"))
            ok = q.get("ok")
            quorum = ("ok" if ok is True else "?" if not isinstance(ok, bool)
                      else f"LOST for {_show(q.get('below_for'))}s")
            lines.append(f"  agent (pid {_show(a.get('pid'))}): holds {_yes(a.get('held'))}; "
                         f"Sentinels {_show(q.get('reachable'))}/{_show(q.get('configured'))} "
                         f"reachable, quorum {quorum} (on loss: {_show(q.get('policy'))} after "
                         f"{_show(a.get('quorum_loss_grace'))} s)")
            lines.append(f"  agent's last decision: {_show(a.get('last_action'))} "
                         f"({_show(a.get('last_reason'))})")
            if a.get("conflict_mac"):
                lines.append(f"  CONFLICT: {_show(a['conflict_mac'])} also answers for {s.vip.ip}")
            if a.get("error"):
                lines.append(f"  agent error: {_show(a['error'])}")
            if a.get("malformed"):
                lines.append(f"  agent reply malformed: {_names(a['malformed'])} ignored")
        elif isinstance(s.last, dict):
            lines.append(f"  last action: {_show(s.last.get('action'))} "
                         f"({_show(s.last.get('reason'))})")
            if s.last.get("malformed"):
                lines.append(f"  last-action record malformed: {_names(s.last['malformed'])} "
                             "ignored")
        elif s.last is not None:
            lines.append("  last action: malformed record")
    return "\n".join(lines)
