"""Make this host match a decision: the acting half of vipfloat.

One run, for one VIP, under its lock: read the kernel's view (addresses, link),
ask :func:`vipfloat.decide.decide`, then bind/unbind through netlink and announce.
The lock is dropped before the operator's action scripts run, so a slow script
never delays the next failover. The hook and ``vipfloat acquire|release`` share
this path; the agent will too.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from . import announce, logs
from .config import PRE_RELEASE_BUDGET, Config, IPAddress, VipConfig
from .decide import Action, Binding, Claim, Snapshot, Verb, VipView, decide
from .errors import ResolveError, TransientError, VipfloatError
from .lock import VipLock, lock_path
from .statedir import StateDir
from .netlink import Link, NetlinkHost, binding_of, reset_connections, usable
from .retry import until_deadline
from .userscripts import run_scripts

if TYPE_CHECKING:
    from .wire import WireWatcher

log = logging.getLogger(__name__)


class AnnounceError(TransientError):
    """The VIP is bound but the announcement could not be sent."""


@dataclass(frozen=True)
class Event:
    """Who asked, for the log line and the action scripts' environment."""

    role: str = ""
    old_master: str = ""      # host:port as Sentinel gave it, or ""
    new_master: str = ""
    quiet: bool = False       # a timer reconcile: log only when something is done


@dataclass(frozen=True)
class Outcome:
    action: Action
    changed: bool             # the kernel's state changed (address added or removed)
    duration: float           # seconds from the start of the run to the first announcement
    bound: bool = False       # the VIP is bound here after this run


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


class Announcer(Protocol):
    """Sends the announcement rounds for a VIP just bound (or re-announced)."""

    def start(self, vip: VipConfig, link: Link) -> None: ...   # first round now, the rest later
    def stop(self, vip: VipConfig) -> None: ...                # no more rounds: released


class ForkAnnouncer:
    """The hook's: first round now, the rest from a detached process, so the hook
    exits at once (Sentinel waits for it)."""

    def start(self, vip: VipConfig, link: Link) -> None:
        frames = announce.round_frames(link.mac, vip.ip)
        sender = _first_round(vip, link, frames)
        try:
            announce.spawn_rounds(sender, frames, vip.announce_count - 1,
                                  vip.announce_interval,
                                  still_bound=lambda: _still_bound(vip, link.index))
        finally:
            sender.close()

    def stop(self, vip: VipConfig) -> None:
        pass  # the detached rounds check the VIP is still bound before each one


class ThreadAnnouncer:
    """The agent's: first round now, the rest from a timer thread per VIP, which a
    release (or a newer start) cancels. Keeps one packet socket per interface."""

    def __init__(self, on_round: Callable[[VipConfig], None] = lambda vip: None) -> None:
        self.on_round = on_round
        self.last_round: dict[str, float] = {}      # master -> when the last round went out
        self._senders: dict[str, announce.RawSender] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def _sender(self, ifname: str) -> announce.RawSender:
        with self._lock:
            sender = self._senders.get(ifname)
            if sender is None:
                sender = self._senders[ifname] = announce.RawSender(ifname)
            return sender

    def send(self, vip: VipConfig, link: Link, frames: tuple[bytes, ...] | None = None) -> None:
        """One round now (also used for refreshes and conflict answers)."""
        try:
            self._sender(link.name).send_round(frames or announce.round_frames(link.mac, vip.ip))
        except OSError as exc:
            with self._lock:  # the interface may have been recreated: reopen next time
                self._senders.pop(link.name, None)
            hint = " (needs CAP_NET_RAW)" if exc.errno in (1, 13) else ""
            raise AnnounceError(f"announcing {vip.ip} on {link.name}: {exc.strerror}{hint}") \
                from None
        self.last_round[vip.master] = time.time()
        self.on_round(vip)

    def start(self, vip: VipConfig, link: Link) -> None:
        self.stop(vip)
        self.send(vip, link)
        if vip.announce_count <= 1:
            return
        cancel = threading.Event()
        with self._lock:
            self._cancel[vip.master] = cancel

        def rounds() -> None:
            for _ in range(vip.announce_count - 1):
                if cancel.wait(vip.announce_interval):
                    return
                try:
                    self.send(vip, link)
                except AnnounceError as exc:
                    log.warning("%s", exc)

        threading.Thread(target=rounds, name=f"announce-{vip.master}", daemon=True).start()

    def stop(self, vip: VipConfig) -> None:
        with self._lock:
            cancel = self._cancel.pop(vip.master, None)
        if cancel is not None:
            cancel.set()

    def close(self) -> None:
        with self._lock:
            for cancel in self._cancel.values():
                cancel.set()
            for sender in self._senders.values():
                sender.close()
            self._senders.clear()


def _first_round(vip: VipConfig, link: Link, frames: tuple[bytes, ...]) -> announce.RawSender:
    try:
        sender = announce.RawSender(link.name)
        sender.send_round(frames)
    except OSError as exc:
        hint = " (needs CAP_NET_RAW)" if exc.errno in (1, 13) else ""
        raise AnnounceError(f"announcing {vip.ip} on {link.name}: {exc.strerror}{hint}") from None
    return sender


@dataclass
class ActContext:
    """What the caller lends one run. The hook and the CLI use the defaults (fresh
    netlink socket, forked announcer, immediate release); the agent lends its
    long-lived ones and enriches the view with quorum and local health."""

    host: NetlinkHost | None = None
    announcer: Announcer = field(default_factory=ForkAnnouncer)
    wire: WireWatcher | None = None            # sees the new holder announce itself
    enrich: Callable[[Snapshot], Snapshot] | None = None
    since: float = 0.0                         # when the triggering event arrived
    release_wait: float = 0.0
    reset_connections: bool = False
    retry_timeout: float | None = None         # None: config.agent.retry_timeout
    fresh: bool = True                         # False: the host's KernelCache may answer
    post_scripts: Callable[[Callable[[], object]], None] = lambda job: job()


def gather(host: NetlinkHost, vip: VipConfig, claim: Claim,
           fresh: bool = True) -> tuple[Snapshot, Link | None]:
    rows = host.addresses(fresh)
    link = host.link(vip.interface, fresh)
    binding, detail = binding_of(rows, link.index if link else None, vip)
    view = VipView(master=vip.master, claim=claim, binding=binding, binding_detail=detail)
    return Snapshot(frozenset(r.ip for r in rows), (view,)), link


def run(config: Config, vip: VipConfig, claim: Claim, event: Event,
        ctx: ActContext | None = None) -> Outcome:
    """Decide and act for one VIP under its lock; log one decision line; then run
    the action scripts (outside the lock)."""
    ctx = ctx or ActContext()
    start = time.monotonic()
    action: Action | None = None
    try:
        with VipLock(config.agent.state_dir, vip.master, config.agent.lock_timeout):
            def attempt() -> tuple[Action, bool, bool]:
                nonlocal action
                host = ctx.host or NetlinkHost()
                try:
                    snapshot, link = gather(host, vip, claim, ctx.fresh)
                    if ctx.enrich is not None:
                        snapshot = ctx.enrich(snapshot)
                    action = decide(snapshot, config)[0]
                    changed = _execute(action, vip, host, link, ctx, config, event)
                    bound = (action.verb in (Verb.ACQUIRE, Verb.ANNOUNCE)
                             or (action.verb is Verb.NOTHING
                                 and snapshot.vips[0].binding is Binding.PRESENT))
                    return action, changed, bound
                finally:
                    if ctx.host is None:
                        host.close()

            retry = config.agent.retry_timeout if ctx.retry_timeout is None else ctx.retry_timeout
            action, changed, bound = until_deadline(attempt, retry,
                                             f"{action.verb.value if action else 'act'} "
                                             f"{vip.address}")
            duration = time.monotonic() - start
    except VipfloatError as exc:
        _log_decision(vip, event, action, time.monotonic() - start, error=str(exc))
        exc.logged = True
        raise
    outcome = Outcome(action, changed, duration, bound)
    if action.verb is not Verb.NOTHING or not event.quiet:
        _log_decision(vip, event, action, duration)
    if action.verb is not Verb.NOTHING:
        _record(config.agent.state_dir, vip, claim, event, outcome)
    if changed:
        env = _script_env(vip, action, event,
                          "acquire" if action.verb is Verb.ACQUIRE else "release")
        ctx.post_scripts(lambda: run_scripts(config.actions.hooks_dir, env,
                                             config.actions.timeout))
    return outcome


def _execute(action: Action, vip: VipConfig, host: NetlinkHost, link: Link | None,
             ctx: ActContext, config: Config, event: Event) -> bool:
    """Carry out one action on the link just read; True when the kernel's address
    list changed."""
    if action.verb is Verb.NOTHING:
        return False
    if action.verb is Verb.RELEASE:
        if link is None:
            return False
        if action.graceful and ctx.wire is not None and ctx.release_wait > 0:
            _await_new_holder(vip, ctx)
        run_scripts(config.actions.pre_release_dir,
                    _script_env(vip, action, event, "pre-release"),
                    min(config.actions.timeout, PRE_RELEASE_BUDGET), budget=PRE_RELEASE_BUDGET)
        if ctx.reset_connections:
            reset_connections(vip.ip)
        ctx.announcer.stop(vip)
        removed = host.remove(vip, link)
        if ctx.reset_connections:
            # A client that reconnected between that reset and the removal holds a
            # socket that outlives the address (an established socket keeps its
            # cached route): this host would go on acknowledging its writes after
            # letting go, the very writes a fence is meant to stop. Destroy it too
            # (no RST can leave now; the client times out instead).
            reset_connections(vip.ip)
        return removed
    link = usable(link, vip.interface)
    added = action.verb is Verb.ACQUIRE and host.add(vip, link)
    ctx.announcer.start(vip, link)
    return added


# How far back an announcement by another MAC still counts as the new holder's.
RECENT_CLAIM = 5.0


def _await_new_holder(vip: VipConfig, ctx: ActContext) -> None:
    """Keep the VIP until the new holder has announced itself (or release_wait
    passed): dropping it first would black-hole clients' connection attempts.

    An announcement shortly before the event counts: the new master binds on the
    leader's +promoted-slave, often before this host hears of the failover (an
    observer's +switch-master, a reconcile delayed on a loaded host), and waiting
    for its next one would only keep two holders answering ARP."""
    assert ctx.wire is not None
    claim = ctx.wire.wait_claim(vip.ip, ctx.since - RECENT_CLAIM, ctx.release_wait)
    if claim is None:
        log.warning("%s: no announcement from the new holder within %.2f s; releasing anyway",
                    vip.address, ctx.release_wait)
    else:
        delta = (claim.t - ctx.since) * 1000
        log.info("%s: new holder %s announced itself %.1f ms %s the event; releasing",
                 vip.address, claim.mac.hex(":"), abs(delta), "after" if delta >= 0 else "before")


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


def last_name(master: str) -> str:
    """The last-action record's name in state_dir."""
    return lock_path(Path("."), master).with_suffix(".last.json").name


def _record(state_dir: Path, vip: VipConfig, claim: Claim, event: Event,
            outcome: Outcome) -> None:
    """Remember the last decision for `vipfloat status` (best effort)."""
    record = {"time": time.time(), "master": vip.master, "action": outcome.action.verb.value,
              "reason": outcome.action.reason, "changed": outcome.changed,
              "source": claim.source, "role": event.role, "from": event.old_master,
              "to": event.new_master}
    try:
        with StateDir(state_dir) as sd:
            sd.write_record(last_name(vip.master), record)
    except (OSError, TransientError) as exc:
        log.warning("cannot record last action in %s: %s", state_dir,
                    getattr(exc, "strerror", None) or exc)


def read_last(state_dir: Path, master: str) -> object:
    """The last-action record as JSON (any JSON: the reader checks its shape), or
    None. Never creates state_dir: `vipfloat status` only reads."""
    try:
        with StateDir(state_dir, create=False) as sd:
            return sd.read_record(last_name(master))
    except (OSError, TransientError):
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
