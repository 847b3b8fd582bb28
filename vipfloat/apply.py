"""Make this host match a decision: the acting half of vipfloat.

One run, for one VIP, under its lock: read the kernel's view (addresses, link),
ask :func:`vipfloat.decide.decide`, then bind/unbind through netlink and announce.
The lock is dropped before the operator's action scripts run, so a slow script
never delays the next failover. The hook and ``vipfloat acquire|release`` share
this path; the agent will too.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from . import announce, logs
from .config import PRE_RELEASE_BUDGET, Config, IPAddress, VipConfig
from .decide import Action, Binding, Claim, Snapshot, Verb, VipView, decide
from .errors import ResolveError, TransientError, VipfloatError
from .lock import VipLock, lock_path
from .netlink import Link, NetlinkHost, binding_of
from .retry import until_deadline
from .userscripts import run_scripts

log = logging.getLogger(__name__)


class AnnounceError(TransientError):
    """The VIP is bound but the announcement could not be sent."""


@dataclass(frozen=True)
class Event:
    """Who asked, for the log line and the action scripts' environment."""

    role: str = ""
    old_master: str = ""      # host:port as Sentinel gave it, or ""
    new_master: str = ""


@dataclass(frozen=True)
class Outcome:
    action: Action
    changed: bool             # the kernel's state changed (address added or removed)
    duration: float           # seconds from the start of the run to the first announcement


def resolve_host(host: str) -> frozenset[IPAddress]:
    """An IP literal as is; a hostname (Sentinel's announce-hostnames) through DNS."""
    try:
        return frozenset({ipaddress.ip_address(host)})
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(f"cannot resolve new master {host!r}: {exc}") from None
    return frozenset(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos)


def gather(host: NetlinkHost, vip: VipConfig, claim: Claim) -> tuple[Snapshot, Link | None]:
    rows = host.addresses()
    link = host.link(vip.interface)
    binding, detail = binding_of(rows, link.index if link else None, vip)
    view = VipView(master=vip.master, claim=claim, binding=binding, binding_detail=detail)
    return Snapshot(frozenset(r.ip for r in rows), (view,)), link


def run(config: Config, vip: VipConfig, claim: Claim, event: Event) -> Outcome:
    """Decide and act for one VIP; log one decision line; then run action scripts."""
    start = time.monotonic()
    action: Action | None = None
    try:
        with VipLock(config.agent.state_dir, vip.master, config.agent.lock_timeout):
            def attempt() -> tuple[Action, bool]:
                nonlocal action
                with NetlinkHost() as host:
                    snapshot, _ = gather(host, vip, claim)
                    action = decide(snapshot, config)[0]
                    if action.verb is Verb.RELEASE:
                        run_scripts(config.actions.pre_release_dir,
                                    _script_env(vip, action, event, "pre-release"),
                                    min(config.actions.timeout, PRE_RELEASE_BUDGET),
                                    budget=PRE_RELEASE_BUDGET)
                    return action, _execute(action, vip, host)

            action, changed = until_deadline(attempt, config.agent.retry_timeout,
                                             f"{action.verb.value if action else 'act'} "
                                             f"{vip.address}")
            duration = time.monotonic() - start
    except VipfloatError as exc:
        _log_decision(vip, event, action, time.monotonic() - start, error=str(exc))
        exc.logged = True  # type: ignore[attr-defined]
        raise
    outcome = Outcome(action, changed, duration)
    _log_decision(vip, event, action, duration)
    _record(config.agent.state_dir, vip, claim, event, outcome)
    if changed:
        run_scripts(config.actions.hooks_dir,
                    _script_env(vip, action, event,
                                "acquire" if action.verb is Verb.ACQUIRE else "release"),
                    config.actions.timeout)
    return outcome


def _execute(action: Action, vip: VipConfig, host: NetlinkHost) -> bool:
    """Carry out one action; True when the kernel's address list changed."""
    if action.verb is Verb.NOTHING:
        return False
    if action.verb is Verb.RELEASE:
        link = host.link(vip.interface)
        return bool(link) and host.remove(vip, link)
    link = host.usable_link(vip.interface)
    added = action.verb is Verb.ACQUIRE and host.add(vip, link)
    _announce(vip, link)
    return added


def _announce(vip: VipConfig, link: Link) -> None:
    frames = announce.round_frames(link.mac, vip.ip)
    try:
        sender = announce.RawSender(link.name)
        sender.send_round(frames)
    except OSError as exc:
        hint = " (needs CAP_NET_RAW)" if exc.errno in (1, 13) else ""
        raise AnnounceError(f"announcing {vip.ip} on {link.name}: {exc.strerror}{hint}") from None
    try:
        announce.spawn_rounds(sender, frames, vip.announce_count - 1, vip.announce_interval,
                              still_bound=lambda: _still_bound(vip, link.index))
    finally:
        sender.close()


def _still_bound(vip: VipConfig, index: int) -> bool:
    with NetlinkHost() as host:
        return binding_of(host.addresses(), index, vip)[0] is Binding.PRESENT


def _log_decision(vip: VipConfig, event: Event, action: Action | None, duration: float,
                  error: str | None = None) -> None:
    line = logs.fields(
        master=vip.master, vip=vip.address, role=event.role, **{"from": event.old_master},
        to=event.new_master, action=action.verb.value if action else "none",
        reason=action.reason if action else "failed before deciding",
        duration_ms=f"{duration * 1000:.1f}", result="error" if error else "ok",
        **({"error": error} if error else {}))
    (log.error if error else log.info)(line)


def last_path(state_dir: Path, master: str) -> Path:
    return lock_path(state_dir, master).with_suffix(".last.json")


def _record(state_dir: Path, vip: VipConfig, claim: Claim, event: Event,
            outcome: Outcome) -> None:
    """Remember the last decision for `vipfloat status` (best effort)."""
    record = {"time": time.time(), "master": vip.master, "action": outcome.action.verb.value,
              "reason": outcome.action.reason, "changed": outcome.changed,
              "source": claim.source, "role": event.role, "from": event.old_master,
              "to": event.new_master}
    path = last_path(state_dir, vip.master)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(record) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot record last action in %s: %s", path, exc.strerror)


def read_last(state_dir: Path, master: str) -> dict | None:
    try:
        return json.loads(last_path(state_dir, master).read_text())
    except (OSError, ValueError):
        return None


def _script_env(vip: VipConfig, action: Action, event: Event, name: str) -> dict[str, str]:
    return {
        "VIPFLOAT_EVENT": name,
        "VIPFLOAT_MASTER": vip.master,
        "VIPFLOAT_VIP": str(vip.ip),
        "VIPFLOAT_VIP_CIDR": str(vip.address),
        "VIPFLOAT_INTERFACE": vip.interface,
        "VIPFLOAT_OLD_MASTER": event.old_master,
        "VIPFLOAT_NEW_MASTER": event.new_master,
        "VIPFLOAT_ROLE": event.role,
        "VIPFLOAT_REASON": action.reason,
    }
