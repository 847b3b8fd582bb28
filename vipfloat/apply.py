"""Make this host match a decision: the acting half of vipfloat.

:func:`execute` carries out one :class:`~vipfloat.decide.Action` through a small
effects interface (:class:`Effects`: the kernel, the announcer, the wire
watcher). :func:`carry_out` wraps the attempts of one run in the deadline, then
logs one decision line, records it for `vipfloat status` and hands the action
scripts to run outside the VIP's lock, so a slow script never delays the next
failover.

Two callers: :func:`run`, the hook's and `vipfloat acquire|release`'s path
(under the VIP's flock: read the kernel, decide, execute), and the agent's VIP
actor, which gathers its inputs first and takes the lock only to execute.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ContextManager

from . import logs
from .announce import Announcer, ForkAnnouncer
from .config import PRE_RELEASE_BUDGET, Config, VipConfig
from .decide import Action, Claim, Snapshot, Verb, VipView, bound_after, decide
from .errors import VipfloatError
from .lock import VipLock
from .netlink import Link, NetlinkHost, binding_of, reset_connections, usable
from .record import write_last
from .retry import until_deadline
from .userscripts import run_scripts

if TYPE_CHECKING:
    from .wire import WireWatcher

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Effects:
    """What acting touches, and how a release behaves. The hook and the CLI use
    a fresh netlink socket, the forked announcer and an immediate release; the
    agent lends its long-lived ones and waits for the new holder."""

    host: NetlinkHost
    announcer: Announcer = field(default_factory=ForkAnnouncer)
    wire: WireWatcher | None = None            # sees the new holder announce itself
    since: float = 0.0                         # when the triggering event arrived
    release_wait: float = 0.0
    reset_connections: bool = False


def gather(host: NetlinkHost, vip: VipConfig, claim: Claim,
           fresh: bool = True) -> tuple[Snapshot, Link | None]:
    """The kernel's side of the snapshot: this host's addresses and the VIP's
    binding. ``fresh`` False: the host's KernelCache may answer."""
    rows = host.addresses(fresh)
    link = host.link(vip.interface, fresh)
    binding, detail = binding_of(rows, link.index if link else None, vip)
    view = VipView(master=vip.master, claim=claim, binding=binding, binding_detail=detail)
    return Snapshot(frozenset(r.ip for r in rows), (view,)), link


# What one attempt yields: the action, whether the kernel changed, whether bound.
Attempt = tuple[Action, bool, bool]


def carry_out(config: Config, vip: VipConfig, claim: Claim, event: Event,
              attempt: Callable[[list[Action]], Attempt], retry: float,
              guard: ContextManager[object] | None = None,
              post_scripts: Callable[[Callable[[], object]], object] = lambda job: job(),
              ) -> Outcome:
    """Run ``attempt`` until it succeeds or ``retry`` seconds have passed (inside
    ``guard``, the VIP's lock for the hook's path); log one decision line; record
    it; hand the action scripts to ``post_scripts``. ``attempt`` appends the
    action it decided to the list it is given, so a failure after deciding is
    logged with it."""
    start = time.monotonic()
    decided: list[Action] = []
    try:
        with guard or contextlib.nullcontext():
            action, changed, bound = until_deadline(
                lambda: attempt(decided), retry,
                f"{decided[-1].verb.value if decided else 'act'} {vip.address}")
            duration = time.monotonic() - start
    except VipfloatError as exc:
        _log_decision(vip, event, decided[-1] if decided else None,
                      time.monotonic() - start, error=str(exc))
        exc.logged = True
        raise
    outcome = Outcome(action, changed, duration, bound)
    if action.verb is not Verb.NOTHING or not event.quiet:
        _log_decision(vip, event, action, duration)
    if action.verb is not Verb.NOTHING:
        write_last(config.agent.state_dir, vip.master, {
            "time": time.time(), "master": vip.master, "action": action.verb.value,
            "reason": action.reason, "changed": changed, "source": claim.source,
            "role": event.role, "from": event.old_master, "to": event.new_master})
    if changed:
        env = _script_env(vip, action, event,
                          "acquire" if action.verb is Verb.ACQUIRE else "release")
        post_scripts(lambda: run_scripts(config.actions.scripts_dir, env, config.actions.timeout))
    return outcome


def run(config: Config, vip: VipConfig, claim: Claim, event: Event) -> Outcome:
    """The hook's and the CLI's path: under the VIP's lock, read the kernel,
    decide and execute (again until config.agent.retry_timeout on a transient
    failure); the action scripts run after the lock is dropped."""

    def attempt(decided: list[Action]) -> Attempt:
        with NetlinkHost() as host:
            snapshot, link = gather(host, vip, claim)
            action = decide(snapshot, config)[0]
            decided.append(action)
            effects = Effects(host)                 # forked rounds, immediate release
            changed = execute(action, vip, link, effects, config, event)
            return action, changed, bound_after(action, snapshot.vips[0].binding)

    return carry_out(config, vip, claim, event, attempt, config.agent.retry_timeout,
                     guard=VipLock(config.agent.state_dir, vip.master,
                                   config.agent.lock_timeout))


def execute(action: Action, vip: VipConfig, link: Link | None, effects: Effects,
            config: Config, event: Event) -> bool:
    """Carry out one action on the link just read; True when the kernel's address
    list changed. Every step is idempotent: an address already there (or gone)
    is no error."""
    if action.verb is Verb.NOTHING:
        return False
    if action.verb is Verb.RELEASE:
        if link is None:
            return False
        if action.graceful and effects.wire is not None and effects.release_wait > 0:
            await_new_holder(vip, effects)
        run_scripts(config.actions.pre_release_dir,
                    _script_env(vip, action, event, "pre-release"),
                    min(config.actions.timeout, PRE_RELEASE_BUDGET), budget=PRE_RELEASE_BUDGET)
        if effects.reset_connections:
            reset_connections(vip.ip)
        effects.announcer.stop(vip)
        removed = effects.host.remove(vip, link)
        if effects.reset_connections:
            # A client that reconnected between that reset and the removal holds a
            # socket that outlives the address (an established socket keeps its
            # cached route): this host would go on acknowledging its writes after
            # letting go, the very writes a fence is meant to stop. Destroy it too
            # (no RST can leave now; the client times out instead).
            reset_connections(vip.ip)
        return removed
    link = usable(link, vip.interface)
    added = action.verb is Verb.ACQUIRE and effects.host.add(vip, link)
    effects.announcer.start(vip, link)
    return added


# How far back an announcement by another MAC still counts as the new holder's.
RECENT_CLAIM = 5.0


def await_new_holder(vip: VipConfig, effects: Effects) -> None:
    """Keep the VIP until the new holder has announced itself (or release_wait
    passed): dropping it first would black-hole clients' connection attempts.

    An announcement shortly before the event counts: the new master binds on the
    leader's +promoted-slave, often before this host hears of the failover (an
    observer's +switch-master, a reconcile delayed on a loaded host), and waiting
    for its next one would only keep two holders answering ARP."""
    assert effects.wire is not None
    seen = effects.wire.wait_sighting(vip.ip, effects.since - RECENT_CLAIM, effects.release_wait)
    if seen is None:
        log.warning("%s: no announcement from the new holder within %.2f s; releasing anyway",
                    vip.address, effects.release_wait)
    else:
        delta = (seen.t - effects.since) * 1000
        log.info("%s: new holder %s announced itself %.1f ms %s the event; releasing",
                 vip.address, seen.mac.hex(":"), abs(delta), "after" if delta >= 0 else "before")


def _log_decision(vip: VipConfig, event: Event, action: Action | None, duration: float,
                  error: str | None = None) -> None:
    line = logs.fields(
        master=vip.master, vip=vip.address, role=event.role, **{"from": event.old_master},
        to=event.new_master, action=action.verb.value if action else "none",
        reason=action.reason if action else "failed before deciding",
        duration_ms=f"{duration * 1000:.1f}", result="error" if error else "ok",
        **({"error": error} if error else {}))
    (log.error if error else log.info)(line)


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
