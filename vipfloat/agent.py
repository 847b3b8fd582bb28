"""vipfloat watch: the always-on agent that keeps every VIP where Sentinel says.

Threads and what they own:
  main        polls every Sentinel (SENTINEL MASTER) each `reconcile_interval`, or
              at once when poked; folds the answers into each master's belief and
              the quorum tracker; asks every VIP's actor to reconcile.
  subscriptions  one for every Sentinel: +promoted-slave / +switch-master become hints that
              go straight to the VIP's actor (the fast path); a failover leader's
              promotion steps start the actor following the failover (the early
              bind, the old holder's write hold); other events poke.
  actor       one per VIP, the only thread that acts on it: decide + apply under
              the VIP's flock lock (shared with a direct-path hook), probes for
              conflicts (when due, or when the wire shows a claim), refreshes
              announcements.
  socket      the hook's fast path and `vipfloat status`'s live view.
  wire        one per interface: who else claims our VIPs (ARP, NA).
Signals: SIGTERM/SIGINT stop (VIPs stay, unless release_on_stop), SIGHUP reloads.
"""

from __future__ import annotations

import faulthandler
import ipaddress
import logging
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Callable

from . import config as config_mod
from . import logs
from .announce import ThreadAnnouncer
from .apply import Effects, Event, carry_out, execute, gather
from . import authority
from .authority import (Aborted, Attempted, Authority, AuthorityEvent, Belief, Checked,
                        EarlyBound, Failover, Heard, Hinted, NewEpoch, Polled, Promoting,
                        Started, Trust, Unsubscribed)
from .config import (PRE_RELEASE_BUDGET, AgentConfig, Config, Endpoint, IPAddress, VipConfig,
                     hostport)
from .decide import (Action, Binding, Claim, InFlight, Quorum, Snapshot, Verb, VipView,
                     bound_after, candidate_local_addresses, decide, is_new_master_here)
from .errors import (ConfigError, LockTimeout, PermanentError, ResolveError, TransientError,
                     VipfloatError)
from .lock import VipLock
from .agent_socket import AgentSocket, Peer
from .health import LocalRedis
from .metrics import Metrics
from .netlink import KernelCache, NetlinkHost
from .netwatch import NetWatcher
from .resolve import resolve_host
from .sdnotify import notify, watchdog_interval
from .statedir import ensure as ensure_state_dir
from .sentinel import Poller
from .subscribe import (ABORT_EVENTS, ATTEMPT_EVENT, EPOCH_EVENT, PROMOTION_EVENTS,
                        Link, SentinelEvent, Subscriptions)
from .wire import Sighting, WireWatcher

if TYPE_CHECKING:
    from .crash import CrashView
    from .crashwatch import CrashWatcher

log = logging.getLogger(__name__)

# A claim of a VIP by another MAC this long after we acquired it is a conflict;
# before that it is the previous holder letting go.
CONFLICT_SETTLE = 3.0
# While a conflict lasts, probe this often (whatever conflict_probe_interval
# says), so that it is reported over within seconds of the other host letting go
# rather than after two whole intervals of silence (20 s at the default: a
# release slowed down by a stalled VM read as a conflict of 19 s).
CONFLICT_REPROBE = 1.0
# The systemd watchdog is fed only while the main loop, every VIP's actor and
# every subscription have shown progress within this long. One action can take
# retry_timeout (10 s at most) plus release_wait (10 s) plus the pre-release
# scripts (2 s): a thread stuck for longer is hung, and systemd restarts the
# agent (WatchdogSec= in vipfloat.service, above this).
STALL_LIMIT = 30.0
# Requests waiting for one VIP's actor: Sentinel runs at most 16 scripts at once,
# so more than this is somebody flooding the socket.
MAX_QUEUED = 64
# Following a failover in flight (Kind.FAILOVER): the chosen replica's host asks
# its Redis ROLE every ROLE_POLL_FAST seconds for the first ROLE_POLL_FAST_FOR
# seconds (a promotion takes milliseconds once Sentinel sends it, one of its
# timer ticks after +selected-slave), then every ROLE_POLL_SLOW until the
# failover ends or reaches failover-timeout. One request follows for at most
# FOLLOW_SLICE, then queues its successor, so other requests are never held up.
ROLE_POLL_FAST = 0.003
ROLE_POLL_FAST_FOR = 2.0
ROLE_POLL_SLOW = 0.1
FOLLOW_SLICE = 0.25
# The old holder's write hold: CLIENT PAUSE <HOLD_SLICE s> WRITE, renewed every
# HOLD_RENEW while it is needed, so that it ends by itself soon after the agent
# stops renewing it (it released the VIP, or died).
HOLD_SLICE = 0.5
HOLD_RENEW = 0.1
# An announcement by another MAC this long before this host heard the leader's
# step still counts as the new holder's (events reach the hosts at different times).
SIGHTING_SLACK = 0.5
# A VIP whose last decision was to do nothing, taken on inputs that have not
# changed since, is not reconciled again at every tick (at 64 VIPs those quiet
# reconciles were two thirds of an idle agent's CPU), but at least once every
# this many ticks all the same (30 s at the default interval), spread over the
# ticks: so whatever the inputs below miss (a name that now resolves elsewhere)
# is still caught.
FULL_RECONCILE_EVERY = 15
# The shortest wait for chores: a chore that could not run (no link to probe
# from, none to announce on) is due again at once, and must not spin the actor.
MIN_WAIT = 1.0


def chores_due_in(live: VipLive, cfg: AgentConfig, last_round: float, now: float,
                  wall: float) -> float:
    """Pure: seconds until a VIP's next chore, at least MIN_WAIT and at most
    STALL_LIMIT / 3: its conflict probe (every conflict_probe_interval, from
    CONFLICT_SETTLE after it was acquired) and its re-announcement (every
    announce_refresh after the last round, a wall-clock time). A VIP not held
    has none."""
    due = STALL_LIMIT / 3
    if not live.held:
        return due
    if cfg.conflict_probe_interval > 0:
        due = min(due, max(live.last_probe + cfg.conflict_probe_interval,
                           live.acquired_at + CONFLICT_SETTLE) - now)
    if cfg.announce_refresh > 0:
        due = min(due, last_round + cfg.announce_refresh - wall)
    # A probe interval configured below MIN_WAIT is honoured.
    floor = min(MIN_WAIT, cfg.conflict_probe_interval) if cfg.conflict_probe_interval > 0 \
        else MIN_WAIT
    return max(floor, due)


def settles(view: VipView, claim: Claim) -> bool:
    """Pure: may a decision to do nothing, taken on ``view``, stand until
    Agent.settled_key changes? Not when the clock or the world outside the key
    can change it: this host's Redis was asked (its ROLE may change any moment),
    a failover is in flight, the quorum was not ok and fresh, or the new master
    is a name (DNS may answer differently, or at all, next time)."""
    if view.local_role is not None or view.in_flight is not None:
        return False
    if view.quorum is None or not view.quorum.ok or not view.quorum.fresh:
        return False
    if claim.new_master is not None:
        try:
            ipaddress.ip_address(claim.new_master)
        except ValueError:
            return False
    return True


def role_poll_pause(age: float, following: int) -> float:
    """Pure: the pause between two ROLE questions of a replica being promoted,
    ``age`` seconds into its failover, while ``following`` actors of this agent
    wait on one each. Their questions together stay at one per ROLE_POLL_FAST:
    a host losing 22 masters at once had 22 actors asking every 3 ms, 7,000
    questions a second that starved the agent's own threads (binds took 1 s)."""
    base = ROLE_POLL_FAST if age < ROLE_POLL_FAST_FOR else ROLE_POLL_SLOW
    return min(max(base, ROLE_POLL_FAST * max(1, following)), max(base, ROLE_POLL_SLOW))


def moving_to(failover: Failover | None, belief: Belief | None,
              local: frozenset[IPAddress],
              resolve: Callable[[str], frozenset[IPAddress]]) -> str | None:
    """Pure but for ``resolve``: the host the VIP is moving to, when that is
    another host: a failover in flight promotes a replica elsewhere, or (none in
    flight) the newest config names a master elsewhere. Another MAC answering
    for the VIP is then its new holder, not a conflict to fight: announcing
    again would pull the clients back to the old master while it hands over.
    None when the VIP belongs here, or nobody can tell."""
    target = failover.host if failover is not None else belief.host if belief else None
    if target is None:
        return None
    try:
        addrs = resolve(target)
    except ResolveError:
        return None
    return None if addrs & local else target


class BindingMoved(TransientError):
    """The VIP's binding changed between the actor's read and its lock: decide
    again on the new one."""


class LockWaitOver(VipfloatError):
    """The VIP's lock was still held after lock_timeout: this request gives up
    (exit 1; the next reconcile, or Sentinel's retry of the hook, comes back)
    rather than wait for it once per attempt."""


# The role a hook request from an untrusted sender is logged and recorded with:
# its own text is never passed on (to action scripts, the record, the log).
UNVERIFIED = "hook (unverified sender)"


class Kind(StrEnum):
    """What a request to a VIP's actor is."""

    PERIODIC = "periodic"     # the timer, a poll, a kernel change: decide on what is known
    EVENT = "event"           # a Sentinel's hint: the fast path
    HOOK = "hook"             # Sentinel's script, handed over on the socket
    FAILOVER = "failover"     # a failover leader's promotion step: follow it
    RELEASE = "release"       # the agent stops with release_on_stop
    CHORES = "chores"         # another MAC claimed a VIP held here: probe and judge now
    STOP = "stop"             # the actor's thread ends


# The hook's verdict: exit code and reason.
Verdict = Future[tuple[int, str]]


@dataclass
class Request:
    kind: Kind
    since: float = field(default_factory=time.monotonic)
    event: Event = field(default_factory=Event)
    reply: Verdict | None = None       # the hook's verdict: exit code and reason


@dataclass(frozen=True)
class WriteHold:
    """This host paused its Redis's writes (CLIENT PAUSE WRITE) until ``until``."""

    target: tuple[str, int]
    until: float                       # monotonic: when the pause ends unless renewed


@dataclass
class VipLive:
    """What `vipfloat status` shows of the agent's view of one VIP."""

    last_action: str = ""
    last_reason: str = ""
    last_time: float = 0.0
    held: bool = False
    acquired_at: float = 0.0           # monotonic
    conflict_mac: str | None = None
    conflict_since: float = 0.0        # wall clock
    conflict_over: float = 0.0         # monotonic: claims before this ended a conflict
    new_holder_mac: str | None = None  # another MAC answering while the VIP moves there
    last_probe: float = 0.0            # monotonic
    error: str | None = None
    early_bind: tuple[int, float] | None = None   # (failover epoch, monotonic) of an early bind
    hold: WriteHold | None = None                 # this host's Redis's writes, paused
    hold_failed: int | None = None                # the failover epoch a hold failed in


class VipActor:
    """The one thread that acts on one VIP."""

    def __init__(self, agent: Agent, vip: VipConfig, host: NetlinkHost | None = None) -> None:
        self.agent = agent
        self.vip = vip
        self.live = VipLive()
        self.inbox: queue.Queue[Request] = queue.Queue()
        self.scripts: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self.beat = time.monotonic()      # when the current request (or idle wait) began
        # Agent.settled_key() when this actor last decided to do nothing on inputs
        # that time alone cannot change; None: the next tick reconciles it.
        self.settled: tuple[object, ...] | None = None
        # The kernel through netlink: the agent's cached socket, opened on first
        # use and reopened after a failure; or one lent by the caller (a test's).
        self._host: NetlinkHost | None = host
        self._own_host = host is None
        # Conflict probes and refreshes run between requests, when they are due
        # (_wait), or at once when the wire shows another MAC claiming the VIP
        # (nudge): an idle agent should cost next to nothing.
        self._nudged = 0.0                # when the last CHORES request was queued
        # What ends a follow slice (FOLLOW_SLICE): the monotonic clock, or a
        # test's clock that moves only as the loop reads it, so that how many
        # looks fit in a slice does not depend on how loaded the machine is.
        self.slice_clock: Callable[[], float] = time.monotonic
        self._thread = threading.Thread(target=self._run, name=f"vip-{vip.master}", daemon=True)
        self._script_thread = threading.Thread(target=self._run_scripts,
                                               name=f"scripts-{vip.master}", daemon=True)

    def start(self) -> None:
        self.agent.metrics.declare(self.vip.master, str(self.vip.address))
        self._thread.start()
        self._script_thread.start()

    def submit(self, request: Request) -> None:
        self.inbox.put(request)

    def nudge(self, now: float) -> None:
        """Another MAC claims this VIP (the wire watcher's thread): judge it now
        rather than at the next probe, at most every CONFLICT_REPROBE / 2 (a host
        flooding claims must not keep the actor busy)."""
        if self.live.held and now - self._nudged >= CONFLICT_REPROBE / 2:
            self._nudged = now
            self.inbox.put(Request(Kind.CHORES))

    def stop(self) -> None:
        self._stop.set()
        self.inbox.put(Request(Kind.STOP))
        self.scripts.put(None)
        # Started or not: stop() also runs after a start that failed half-way.
        if self._thread.ident is not None:
            self._thread.join(timeout=10)
        if self._script_thread.ident is not None:
            self._script_thread.join(timeout=30)

    # --- the loop --------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat = time.monotonic()
            try:
                request = self.inbox.get(timeout=self._wait())
            except queue.Empty:
                self._chores()
                continue
            if request.kind is Kind.STOP:
                break
            if request.kind is Kind.CHORES:
                self._chores()
                continue
            # Timer reconciles pile up behind a slow action: one is enough.
            if request.kind is Kind.PERIODIC:
                while True:
                    try:
                        nxt = self.inbox.get_nowait()
                    except queue.Empty:
                        break
                    # Chores run after every request anyway: a CHORES request
                    # taken here must not become a full, announcing reconcile.
                    if nxt.kind not in (Kind.PERIODIC, Kind.CHORES):
                        request = nxt
                        break
                if request.kind is Kind.STOP:
                    break
            self.beat = time.monotonic()
            if request.kind is Kind.FAILOVER:
                self.follow(request)
            else:
                self.handle(request)
            self._chores()
        if self._host is not None and self._own_host:
            self._host.close()

    def _wait(self) -> float:
        """How long to wait for a request before the chores: until the next probe
        or refresh of a VIP held here is due; CONFLICT_REPROBE / 2 while a
        conflict lasts. Never longer than STALL_LIMIT / 3, to show the watchdog
        the actor is alive (64 actors waking every 1-2.5 s for chores not yet due
        were a third of an idle agent's CPU). A claim by another MAC seen on the
        wire does not wait for this: it nudges the actor."""
        if self.live.conflict_mac is not None:
            return CONFLICT_REPROBE / 2
        return chores_due_in(self.live, self.agent.config.agent,
                             self.agent.announcer.last_round.get(self.vip.master, 0.0),
                             time.monotonic(), time.time())

    def handle(self, request: Request) -> Snapshot | None:
        """One request: gather the snapshot (the claim, the kernel's binding, the
        local Redis's role) without the lock, decide, and execute the action
        under the VIP's lock; retried on a transient failure, then answered.
        Returns the snapshot the last decision was taken on."""
        agent, vip, cfg = self.agent, self.vip, self.agent.config
        code, message = 0, ""
        seen: list[Snapshot] = []
        if request.kind is not Kind.PERIODIC:
            log.debug("%s: %s request waited %.1f ms", vip.master, request.kind.value,
                      (time.monotonic() - request.since) * 1000)
        # Taken before anything is read: a change after this point shows as a new
        # key at the next tick, never as one already decided on.
        key = agent.settled_key(vip)
        self.settled = None
        try:
            if self._host is None:
                self._host = NetlinkHost(cache=agent.kernel)
            host = self._host
            claim, quorum, belief, failover = agent.claim_for(vip)
            if request.kind is Kind.RELEASE:
                claim = Claim(source="vipfloat watch stopping", order=Verb.RELEASE)
            effects = Effects(host, agent.announcer, agent.wire(vip.interface),
                              since=request.since, release_wait=cfg.agent.release_wait,
                              reset_connections=cfg.agent.reset_connections)
            # Every request reads the cache; the timer's tick re-reads the kernel
            # into it first (reconcile_all), so a periodic reconcile sees it afresh.
            fresh = False

            # One wait for the VIP's lock per request, however many attempts.
            lock_deadline = time.monotonic() + cfg.agent.lock_timeout

            def attempt(decided: list[Action]) -> tuple[Action, bool, bool]:
                snapshot, _ = gather(host, vip, claim, fresh)
                snapshot = self.inputs(snapshot, request, quorum, belief, failover)
                seen.append(snapshot)
                action = decide(snapshot, cfg)[0]
                decided.append(action)
                binding = snapshot.vips[0].binding
                if action.verb is Verb.RELEASE and self.live.hold is not None \
                        and self.writes_held(time.monotonic()):
                    # The release may wait for the new holder and run pre-release
                    # scripts before it resets the connections: the held writes
                    # must stay held until then, not run out in between.
                    self._hold(self.live.hold.target, cfg.agent.release_wait
                               + PRE_RELEASE_BUDGET + HOLD_SLICE,
                               failover.epoch if failover is not None else None)
                if action.verb is Verb.NOTHING:
                    return action, False, bound_after(action, binding)
                try:
                    with VipLock(cfg.agent.state_dir, vip.master,
                                 max(0.0, lock_deadline - time.monotonic())):
                        # While this actor decided (and waited), a direct-path hook
                        # or `vipfloat acquire|release` may have changed the VIP
                        # under the lock. Acting on the old read would announce an
                        # address no longer here, or run pre-release scripts for one
                        # already gone: read it again (the cache first takes in
                        # every change the kernel has already queued) and start
                        # over if it moved.
                        agent.kernel_settled()
                        again, link = gather(host, vip, claim, fresh)
                        if again.vips[0].binding is not binding:
                            raise BindingMoved(
                                f"{vip.address} went from {binding.value} to "
                                f"{again.vips[0].binding.value} while deciding")
                        changed = execute(action, vip, link, effects, cfg, request.event)
                except LockTimeout as exc:
                    raise LockWaitOver(str(exc)) from None
                return action, changed, bound_after(action, binding)

            outcome = carry_out(cfg, vip, claim, request.event, attempt,
                                retry=0.0 if request.kind is Kind.PERIODIC else 1.0,
                                post_scripts=self.scripts.put)
            action = outcome.action
            message = action.reason
            self._note(action.verb, action.reason, outcome.changed, outcome.bound)
            if seen:
                self._after(action, seen[-1], failover, outcome.bound)
                if self.live.hold is not None and not self.writes_held(time.monotonic()):
                    self.live.hold = None     # ran out by itself (CLIENT PAUSE's timeout)
                if action.verb is Verb.NOTHING and settles(seen[-1].vips[0], claim) \
                        and self.live.hold is None:
                    self.settled = key
        except VipfloatError as exc:
            code, message = exc.exit_code, str(exc)
            self.live.error = message
            if not exc.logged:
                log.error("%s: %s", vip.master, exc)
            if self._host is not None and self._own_host and code == 1:
                self._host.close()  # a broken netlink socket is reopened next time
                self._host = None
        except Exception as exc:  # noqa: BLE001 - one bad cycle must not stop the actor
            code, message = 1, f"internal error: {type(exc).__name__}: {exc}"
            log.exception("%s: reconcile failed", vip.master)
        if request.reply is not None and not request.reply.done():
            request.reply.set_result((code, message))
        if code == 0:   # a cycle that failed is no reconcile: the stale alert should see it
            agent.metrics.last_reconcile.set_to_current_time()
        return seen[-1] if seen else None

    def _after(self, action: Action, snapshot: Snapshot, failover: Failover | None,
               bound: bool) -> None:
        """What a decision asks of this host's Redis, and the early bind's note."""
        live, vip, metrics = self.live, self.vip, self.agent.metrics
        view = snapshot.vips[0]
        if action.verb is Verb.ACQUIRE and view.in_flight is not None and failover is not None:
            now = time.monotonic()
            live.early_bind = (failover.epoch, now)
            self.agent.feed(EarlyBound(vip.master, failover.epoch, now))
            metrics.early_binds.labels(vip.master).inc()
        if action.hold_writes and failover is not None:
            self._hold((failover.old_host, failover.old_port), HOLD_SLICE, failover.epoch)
        elif action.hold_writes is False and live.hold is not None:
            held, live.hold = live.hold.target, None
            error = self.agent.local_redis.hold_writes(*held, None)
            log.info("%s: writes on %s let through again%s", vip.master, hostport(*held),
                     f" (failed: {error})" if error else "")

    def _hold(self, target: tuple[str, int], seconds: float, epoch: int | None) -> None:
        """Pause (or renew the pause of) ``target``'s writes for ``seconds``."""
        live, vip = self.live, self.vip
        if epoch is not None and live.hold_failed == epoch:
            return      # failed once in this failover: dead or hung, it acknowledges nothing
        error = self.agent.local_redis.hold_writes(*target, int(seconds * 1000))
        if error is not None:
            live.hold_failed = epoch
            log.info("%s: cannot hold writes on %s (not tried again in this failover): %s",
                     vip.master, hostport(*target), error)
            return
        first = live.hold is None or live.hold.target != target
        live.hold = WriteHold(target, time.monotonic() + seconds)
        if first:
            self.agent.metrics.write_holds.labels(vip.master).inc()
            log.info("%s: holding writes on %s (CLIENT PAUSE WRITE, renewed every %.0f ms) "
                     "until the new holder announces %s", vip.master, hostport(*target),
                     HOLD_RENEW * 1000, vip.ip)

    def writes_held(self, now: float) -> bool:
        return self.live.hold is not None and self.live.hold.until > now

    def follow(self, request: Request) -> None:
        """A failover in flight (Kind.FAILOVER): decide again and again for up to
        FOLLOW_SLICE, as long as there is something to wait for. On the chosen
        replica's host, for its Redis to say ROLE master (then acquire); on the
        holder's, for the new holder's announcement (then release), renewing the
        write hold meanwhile. Then the request queues its successor."""
        end = self.slice_clock() + FOLLOW_SLICE
        first = True
        while True:
            snapshot = self.handle(request if first else Request(
                Kind.FAILOVER, event=replace(request.event, quiet=True)))
            first = False
            view = snapshot.vips[0] if snapshot is not None else None
            f = view.in_flight if view is not None else None
            if view is None or f is None or snapshot is None:
                return
            bound = view.binding is Binding.PRESENT or self.live.held
            here = bool(f.replica_addrs & candidate_local_addresses(snapshot.local_addresses,
                                                                    self.vip))
            left = max(0.0, end - self.slice_clock())
            if here and not bound and self.agent.config.agent.early_bind:
                pause = role_poll_pause(f.age, len(self.agent.waiting_for_role) + 1)
                self.agent.waiting_for_role.add(self.vip.master)
                try:
                    self._stop.wait(min(pause, left))
                finally:
                    self.agent.waiting_for_role.discard(self.vip.master)
            elif not here and self.live.held:
                wire = self.agent.wire(self.vip.interface)
                if wire is None:
                    return
                # Sightings carry the monotonic clock's time, whatever ends the slice.
                wire.wait_sighting(self.vip.ip, time.monotonic() - f.age - SIGHTING_SLACK,
                                   min(HOLD_RENEW, left))
            else:
                return
            self.beat = time.monotonic()
            if self._stop.is_set():
                return
            if self.slice_clock() >= end:
                self.submit(Request(Kind.FAILOVER, event=replace(request.event, quiet=True)))
                return

    def inputs(self, snapshot: Snapshot, request: Request, quorum: Quorum,
               belief: Belief | None, failover: Failover | None = None) -> Snapshot:
        """The agent's own inputs to the decision: the quorum read with the claim,
        the failover in flight, and this host's Redis role when either says to
        acquire here (asked before the VIP's lock is taken: a slow Redis must not
        hold it)."""
        views = []
        now = time.monotonic()
        for view in snapshot.vips:
            role = None
            in_flight = None if failover is None else self.agent.in_flight(self.vip.master,
                                                                          failover, now)
            absent = view.claim.order is None and view.binding is Binding.ABSENT
            if (view.claim.order is None and in_flight is not None and in_flight.replica_addrs
                    & candidate_local_addresses(snapshot.local_addresses, self.vip)):
                # Bound early or not: the early hold lasts while ROLE says master.
                assert failover is not None
                role = self.agent.local_redis.role(failover.host, failover.port)
            elif (absent and belief is not None
                    and is_new_master_here(view.claim, snapshot.local_addresses, self.vip)):
                role = self.agent.local_redis.role(belief.host, belief.port)
            new_holder = None
            if in_flight is not None and view.binding is Binding.PRESENT:
                wire = self.agent.wire(self.vip.interface)
                seen = wire.sightings(self.vip.ip, now - in_flight.age - SIGHTING_SLACK) \
                    if wire is not None else []
                new_holder = seen[-1].mac.hex(":") if seen else None
            views.append(replace(view, quorum=quorum, local_role=role,
                                 periodic=request.kind is Kind.PERIODIC, in_flight=in_flight,
                                 new_holder=new_holder,
                                 writes_held=self.writes_held(now)))
        return replace(snapshot, vips=tuple(views))

    def _note(self, verb: Verb, reason: str, changed: bool, bound: bool) -> None:
        live, vip, metrics = self.live, self.vip, self.agent.metrics
        live.error = None
        if verb is not Verb.NOTHING or not live.last_action:
            live.last_action, live.last_reason, live.last_time = verb.value, reason, time.time()
        if bound and not live.held:
            live.acquired_at = time.monotonic()
        if not bound:
            live.conflict_mac = live.new_holder_mac = None
        live.held = bound
        if changed:
            metrics.transitions.labels(vip.master, verb.value).inc()
        metrics.held.labels(vip.master, str(vip.address)).set(1 if live.held else 0)

    # --- between requests: conflicts and refreshes ---------------------------------------
    def _chores(self) -> None:
        if not self.live.held:
            return
        try:
            self._probe_for_conflicts()
            self._refresh()
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: %s", self.vip.master, exc)

    def _probe_for_conflicts(self) -> None:
        agent, vip, live = self.agent, self.vip, self.live
        interval = agent.config.agent.conflict_probe_interval
        if interval > 0 and live.conflict_mac is not None:
            interval = min(interval, CONFLICT_REPROBE)
        wire = agent.wire(vip.interface)
        if wire is None:
            return
        now = time.monotonic()
        settled = live.acquired_at + CONFLICT_SETTLE
        if interval > 0 and now - live.last_probe >= interval and now >= settled:
            live.last_probe = now
            link = self._host.link(vip.interface) if self._host else None
            if link is not None:
                from .announce import probe_frame

                agent.announcer.send(vip, link, (probe_frame(link.mac, vip.ip),))
        # A conflict lasts while another MAC keeps claiming the VIP: answers to the
        # last two probes, or announcements of its own, within this window.
        window = max(2 * interval, 2.0)
        claims = wire.sightings(vip.ip, since=max(settled, now - window, live.conflict_over))
        target = self._moving_to() if claims else None
        if claims and target is not None:
            # The new holder, while this host hands over (the actor releases
            # once it sees it): no conflict, and above all no announcement.
            mac = claims[-1].mac.hex(":")
            if live.new_holder_mac != mac:
                live.new_holder_mac = mac
                log.info("%s: %s answers for %s: the new holder, as the move to %s "
                         "expects; not announcing again", vip.master, mac, vip.ip, target)
            if live.conflict_mac:
                live.conflict_mac, live.conflict_over = None, now
        elif claims:
            live.new_holder_mac = None
            mac = claims[-1].mac.hex(":")
            if live.conflict_mac != mac:
                live.conflict_mac, live.conflict_since = mac, time.time()
                agent.metrics.conflicts.labels(vip.master, str(vip.address)).inc()
                log.warning("%s: CONFLICT: %s also answers for %s on %s; keeping it and "
                            "announcing again", vip.master, mac, vip.ip, vip.interface)
                link = self._host.link(vip.interface) if self._host else None
                if link is not None:
                    agent.announcer.send(vip, link)
        elif live.conflict_mac:
            live.new_holder_mac = None
            log.info("%s: conflict over: nobody else answers for %s", vip.master, vip.ip)
            # The claims seen so far are that conflict's: once the window widens
            # back to the interval's, they must not start another.
            live.conflict_mac, live.conflict_over = None, now
        agent.metrics.conflict.labels(vip.master, str(vip.address)).set(
            1 if live.conflict_mac else 0)

    def _moving_to(self) -> str | None:
        """The host this VIP is moving to, when another (see moving_to)."""
        if self._host is None:
            return None
        _, _, belief, failover = self.agent.claim_for(self.vip)
        local = candidate_local_addresses((r.ip for r in self._host.addresses()), self.vip)
        return moving_to(failover, belief, local, resolve_host)

    def _refresh(self) -> None:
        refresh = self.agent.config.agent.announce_refresh
        last = self.agent.announcer.last_round.get(self.vip.master, 0.0)
        if refresh > 0 and time.time() - last >= refresh and self._host is not None:
            if self._moving_to() is not None:
                return          # handing over: the new holder announces it now
            link = self._host.link(self.vip.interface)
            if link is not None and link.up:
                self.agent.announcer.send(self.vip, link)

    def _run_scripts(self) -> None:
        # Action scripts run here, in order, so a slow one never holds up the actor.
        while True:
            job = self.scripts.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # noqa: BLE001
                log.exception("%s: action scripts failed", self.vip.master)


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics(config.agent.metrics_listen)
        self.announcer = ThreadAnnouncer(on_round=lambda vip: self.metrics.announcements.labels(
            vip.master).inc())
        self.local_redis = LocalRedis(config.redis)
        self.kernel = KernelCache()             # fed by self.netwatch, read by the actors
        self._tick_host: NetlinkHost | None = None   # the timer's kernel read (reconcile_all)
        self._ticks = 0                          # reconcile_all's, on the main loop only
        # The actors asking their Redis ROLE of a replica being promoted, right
        # now (set operations are atomic under the GIL): their rate is shared.
        self.waiting_for_role: set[str] = set()
        # What the Sentinels have told us, as one frozen value (vipfloat.authority):
        # replaced whole under _lock by _feed, read without it.
        self._lock = threading.Lock()
        self._authority = Authority.initial(len(config.sentinel.addresses), time.monotonic())
        self._index = {ep: i for i, ep in enumerate(config.sentinel.addresses)}
        # Hook requests that name another master than the one believed: handed to
        # their actors after the next poll, which decides.
        self._after_poll: dict[str, list[Verdict]] = {}
        self._poke = threading.Event()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wires: dict[str, WireWatcher] = {}
        self.actors: dict[str, VipActor] = {}
        self.crash_watchers: list[CrashWatcher] = []
        self.subscriptions: Subscriptions | None = None
        self.subscribers: list[Link] = []          # one per Sentinel, for the watchdog
        self.poller: Poller | None = None
        self.server: AgentSocket | None = None
        self.netwatch: NetWatcher | None = None
        self.beat = time.monotonic()             # the main loop's last turn

    # --- shared state, read by actors ----------------------------------------------
    def feed(self, event: AuthorityEvent) -> tuple[Authority, Authority]:
        """One input to the state machine: the states before and after it."""
        with self._lock:
            before = self._authority
            self._authority = after = authority.step(before, event)
        return before, after

    def belief(self, master: str) -> Belief | None:
        return self._authority.belief(master)

    def kernel_changed(self) -> None:
        """A watched address or a link changed (the netlink watcher says so):
        reconcile soon, from the main loop. Never in the caller's thread: an
        actor takes in the kernel's changes under its VIP's lock (kernel_settled),
        and running every VIP's reconcile there, one actor at a time, made each
        of 22 acquires at once take 1-3 s (bench/scale.py --masters 64)."""
        self._poke.set()

    def kernel_settled(self) -> None:
        """Take into the kernel cache every change the kernel has already told
        us of. Another process that changed the VIP and then dropped its lock
        has its notifications queued on our netlink socket by then."""
        if self.netwatch is not None:
            self.netwatch.drain()

    def claim_for(self, vip: VipConfig) -> tuple[Claim, Quorum, Belief | None, Failover | None]:
        """What to believe about ``vip``'s master, the quorum it was believed
        under and the failover in flight, read from one state: a poll landing
        between two reads could pair a stale belief with a fresh quorum (a
        healed old master would take the VIP back on what its own Sentinel told
        it while cut off)."""
        state = self._authority
        belief = state.belief(vip.master)
        quorum = self._quorum(state, vip.master)
        failover = state.failover(vip.master, time.monotonic())
        addrs: frozenset[IPAddress] = frozenset()
        if belief is not None:
            try:
                addrs = resolve_host(belief.host)
            except ResolveError as exc:
                log.warning("%s", exc)
        return authority.claim(belief, addrs), quorum, belief, failover

    def settled_key(self, vip: VipConfig) -> tuple[object, ...] | None:
        """What a quiet reconcile of ``vip`` decides on, reduced to what can change
        between two ticks: the kernel cache's version, the belief, the Sentinels
        reachable. None when time alone can change the decision (below a
        majority, the grace runs; a failover in flight ages): reconcile anyway."""
        state, now = self._authority, time.monotonic()
        if state.below(now) or state.failover(vip.master, now) is not None:
            return None
        return (self.kernel.version(), state.belief(vip.master),
                state.contacts.reachable(now), state.confirmed)

    def local_master(self, vip: VipConfig) -> tuple[str, int] | None:
        """The master Sentinel's newest config names for ``vip``, when it is this
        host's Redis (the crash watcher's target), else None."""
        belief = self._authority.belief(vip.master)
        rows = self.kernel.addresses()
        if belief is None or rows is None:
            return None
        try:
            addrs = resolve_host(belief.host)
        except ResolveError:
            return None
        if addrs & candidate_local_addresses((r.ip for r in rows), vip):
            return belief.host, belief.port
        return None

    def believes(self, master: str, host: str, port: int) -> bool:
        """Whether the newest config known names ``host:port`` as ``master``'s master."""
        belief = self._authority.belief(master)
        return belief is not None and (belief.host, belief.port) == (host, port)

    def crash_view(self, vip: VipConfig, addr: str) -> CrashView:
        """What the agent's state says, for a crash of this host's Redis at
        ``addr`` (the Sentinel to ask is consulted only if this allows it)."""
        from .crash import CrashView

        now = time.monotonic()
        state = self._authority
        belief = state.belief(vip.master)
        here = self.local_master(vip)
        flight = state.failover(vip.master, now)
        return CrashView(addr=addr,
                         believed_here=here is not None and hostport(*here) == addr,
                         epoch=belief.epoch if belief is not None else -1,
                         quorum=self._quorum(state, vip.master),
                         in_flight=None if flight is None else
                         f"{flight.describe()} promoting {flight.addr}")

    def in_flight(self, master: str, f: Failover, now: float) -> InFlight | None:
        """The failover as a decision reads it, its hosts resolved; None when a
        name does not resolve (the usual rules then decide)."""
        try:
            replica, old = resolve_host(f.host), resolve_host(f.old_host)
        except ResolveError as exc:
            log.warning("%s", exc)
            return None
        return InFlight(leader=f.describe(), replica=f.addr, replica_addrs=replica,
                        old_addrs=old, age=now - f.since,
                        down_after=self._authority.down_after.get(master))

    def quorum(self, master: str) -> Quorum:
        return self._quorum(self._authority, master)

    def _quorum(self, state: Authority, master: str) -> Quorum:
        return authority.quorum(state, master, time.monotonic(),
                                self.config.agent.quorum_loss_grace,
                                self.config.agent.on_quorum_loss)

    def wire(self, ifname: str) -> WireWatcher | None:
        if self._wires.get(ifname) is None:
            try:
                with NetlinkHost() as host:
                    link = host.link(ifname)
                if link is not None:  # a missing interface is looked for again next time
                    # Only the VIPs on this interface: other hosts' ARP costs a
                    # comparison of bytes per frame, and is never stored.
                    self._wires[ifname] = WireWatcher(ifname, link.mac, vips=frozenset(
                        v.ip for v in self.config.vips if v.interface == ifname),
                        on_claim=self.on_claim)
            except (OSError, VipfloatError) as exc:
                log.warning("cannot watch %s for announcements: %s", ifname, exc)
        return self._wires.get(ifname)

    # --- inputs ------------------------------------------------------------------------
    def on_claim(self, sighting: Sighting) -> None:
        """Another MAC claims one of our VIPs (the wire watcher's thread): the
        actor holding it judges that now, not at its next probe."""
        for actor in tuple(self.actors.values()):   # never "changed size during iteration"
            if actor.vip.ip == sighting.ip:
                actor.nudge(sighting.t)

    def on_event(self, endpoint: Endpoint, event: SentinelEvent) -> None:
        now = time.monotonic()
        log.info("sentinel %s: %s %s", endpoint, event.channel, event.data)
        index = self._index[endpoint]
        if event.channel == EPOCH_EVENT and event.epoch is not None:
            self.feed(NewEpoch(index, event.epoch, now))
            return
        master = event.master
        if master is None or master not in self.actors:
            self._poke.set()
            return
        if event.channel == ATTEMPT_EVENT:
            self.feed(Attempted(master, index, now))
            return
        if event.channel in PROMOTION_EVENTS and event.replica and event.old_master:
            before, after = self.feed(Promoting(master, index, str(endpoint), *event.replica,
                                                *event.old_master, event.channel, now))
            # Once per failover (its later steps change nothing the actor decides on).
            old, new = before.failover(master, now), after.failover(master, now)
            if new is not None and (old is None or (old.leader, old.epoch, old.addr)
                                    != (new.leader, new.epoch, new.addr)):
                self.actors[master].submit(Request(Kind.FAILOVER, since=now, event=Event(
                    role="agent", new_master=new.addr)))
            return
        if event.channel in ABORT_EVENTS:
            before, after = self.feed(Aborted(master, index, now))
            if master in before.failovers and master not in after.failovers:
                self.actors[master].submit(Request(Kind.EVENT, since=now,
                                                   event=Event(role="agent")))
            self._poke.set()
            return
        self._note_early_bind(master, event, now)
        # A hint (event.is_hint): parse_event sets its new host and port together.
        host, port = event.new_host, event.new_port
        if host is not None and port is not None:
            before, after = self.feed(Hinted(master, host, port,
                                              f"{event.channel} from Sentinel {endpoint}", now))
            # Every Sentinel repeats +switch-master: news only once.
            if after.belief(master) is before.belief(master):
                self._poke.set()
                return
            self.actors[master].submit(Request(Kind.EVENT, since=now, event=Event(
                role="agent", new_master=hostport(host, port))))
        self._poke.set()

    def _note_early_bind(self, master: str, event: SentinelEvent, now: float) -> None:
        """Sentinel's own +promoted-slave after this host bound the VIP early:
        how far ahead the early bind was."""
        live = self.actors[master].live
        if event.channel == "+promoted-slave" and live.early_bind is not None:
            epoch, at = live.early_bind
            live.early_bind = None
            log.info("%s: Sentinel's +promoted-slave came %.0f ms after this host bound the "
                     "VIP early (failover epoch %d)", master, (now - at) * 1000, epoch)

    def on_link(self, endpoint: Endpoint, alive: bool) -> None:
        if not alive:
            # A failover this Sentinel leads can no longer be followed: its abort
            # would go unseen. What Sentinel's config says decides again.
            before, after = self.feed(Unsubscribed(self._index[endpoint], time.monotonic()))
            for master in set(before.failovers) - set(after.failovers):
                if master in self.actors:
                    self.actors[master].submit(Request(Kind.EVENT, event=Event(role="agent")))
        self._poke.set()  # whatever was published while it was down is lost: poll

    def reconcile_all(self) -> None:
        """A quiet reconcile of every VIP that may need one. The kernel is read
        here, once for all of them (an address dump and each VIP interface's
        link), re-seeding the cache the actors read: so nothing the cache got
        wrong outlives a tick, at one dump per tick rather than one per VIP (each
        dump lists every VIP bound here, and 24 actors asking at once all found
        the cache empty: the idle agent's main cost). Should the read fail, the
        cache is emptied and each actor reads the kernel itself.

        A VIP that last decided to do nothing, on the inputs it would decide on
        now (settled_key), is skipped: its decision is a pure function of them.
        It is reconciled anyway once every FULL_RECONCILE_EVERY ticks."""
        read = True
        try:
            if self._tick_host is None:
                self._tick_host = NetlinkHost(cache=self.kernel)
            self._tick_host.addresses(fresh=True)
            for ifname in sorted({v.interface for v in self.config.vips}):
                self._tick_host.link(ifname, fresh=True)
        except Exception as exc:  # noqa: BLE001 - the actors then read the kernel themselves
            read = False
            log.warning("reading the kernel for this tick: %s", exc)
            self.kernel.forget()
            if self._tick_host is not None:
                self._tick_host.close()
                self._tick_host = None
        self._ticks += 1
        ticks = self._ticks
        skipped = 0
        for i, actor in enumerate(self.actors.values()):
            key = self.settled_key(actor.vip) if read else None
            if key is not None and key == actor.settled and (ticks + i) % FULL_RECONCILE_EVERY:
                # Verified unchanged, but only a live actor counts as reconciled.
                skipped += time.monotonic() - actor.beat < STALL_LIMIT
                continue
            actor.submit(Request(Kind.PERIODIC, event=Event(role="agent", quiet=True)))
        if skipped:
            # Verified unchanged against a fresh read of the kernel: reconciled.
            self.metrics.last_reconcile.set_to_current_time()

    def on_contact(self, endpoint: Endpoint) -> None:
        now = time.monotonic()
        before, after = self.feed(Heard(self._index[endpoint], now))
        if authority.regained(before, after, now):
            # Back in touch after a silence (a cut, or this host too starved to
            # hear the pongs): beliefs are acted on again only once a majority has
            # answered a poll, so poll now rather than at the next tick.
            self._poke.set()

    # --- the socket's requests (vipfloat.agent_socket.Handler) ----------------------------
    @property
    def hook_timeout(self) -> float:
        return self.config.agent.hook_timeout

    def status(self) -> dict[str, Any]:
        return self.live_status()

    def hook(self, argv: list[str], since: float, peer: Peer) -> Verdict:
        """The hook's arguments, handed over on the socket: act as it would. The
        verdict, (exit code, reason), comes in the returned future.

        A request is a hint, trusted as far as its sender is: root and the
        agent's own user (an operator, the lab) may name any new master, as the
        hook run by them could act directly anyway. Anyone else (Sentinel's user,
        a member of the socket's group) never changes what the agent believes:
        the agent acts at once when the hook names the master it already
        believes in (the usual case: Sentinel's own pub/sub got here first), and
        otherwise polls the Sentinels first and acts on their answer. So a forged
        request can neither move nor release a VIP against Sentinel's newest
        config, nor send the ROLE probe to an address it chose."""
        from .hook import parse_argv

        args = parse_argv(argv)
        actor = self.actors.get(args.master)
        if actor is None:
            raise PermanentError(f"master {args.master!r} has no [[vip]] block in "
                                 f"{self.config.path}")
        if actor.inbox.qsize() >= MAX_QUEUED:
            raise TransientError(f"agent busy: {actor.inbox.qsize()} requests queued for "
                                 f"{args.master}")
        belief = self._authority.belief(args.master)
        verdict = authority.trust(belief, peer.uid in (0, os.geteuid()), args.to_host,
                                  args.to_port)
        if verdict is Trust.SENDER:
            self.feed(Hinted(args.master, args.to_host, args.to_port,
                             f"hook ({args.role}) via agent", since))
        log.info("hook request from %s: %s", peer, logs.fields(
            master=args.master, role=args.role, to=hostport(args.to_host, args.to_port),
            trust=verdict.value))
        if verdict is Trust.POLL_FIRST:
            # Parked until the next poll, all of a master's together: one
            # reconcile answers every one of them, and a flood stays bounded.
            with self._lock:
                waiting = self._after_poll.setdefault(args.master, [])
                if len(waiting) >= MAX_QUEUED:
                    raise TransientError(f"agent busy: {len(waiting)} requests wait for a "
                                         f"poll of the Sentinels for {args.master}")
                future: Verdict = Future()
                waiting.append(future)
            if len(waiting) == 1:
                self._poke.set()
            return future
        if verdict is Trust.SENDER:
            event = Event(role=args.role, old_master=hostport(args.from_host, args.from_port),
                          new_master=hostport(args.to_host, args.to_port))
        else:
            # What the action scripts and the record see comes from the belief,
            # not from the request's text (it only agreed with it).
            assert belief is not None
            event = Event(role=UNVERIFIED, new_master=belief.addr)
        request = Request(Kind.HOOK, since=since, reply=Future(), event=event)
        actor.submit(request)
        if verdict is Trust.SENDER:
            self._poke.set()
        assert request.reply is not None
        return request.reply

    # --- polling -------------------------------------------------------------------------
    def poll_once(self) -> None:
        assert self.poller is not None
        masters = [v.master for v in self.config.vips]
        answers = self.poller.poll(masters)
        now = time.monotonic()
        before, after = self.feed(Polled(answers, now))
        self._report_quorum(before, after, now)

    def release_after_poll(self) -> None:
        """After a poll: one reconcile per master that parked hook requests, whose
        verdict answers every one of them."""
        with self._lock:
            parked, self._after_poll = self._after_poll, {}
        for master, waiting in parked.items():
            reply: Verdict = Future()

            def fan_out(done: Verdict, waiting: list[Verdict] = waiting) -> None:
                for future in waiting:
                    if not future.done():
                        future.set_result(done.result())

            reply.add_done_callback(fan_out)
            self.actors[master].submit(Request(Kind.HOOK, reply=reply,
                                               event=Event(role=UNVERIFIED)))

    def quorum_lost_now(self) -> bool:
        """Between polls: has the majority just gone silent? Logged at once."""
        now = time.monotonic()
        before, after = self.feed(Checked(now))
        if not after.below(now):
            return False
        self._report_quorum(before, after, now)
        return True

    def _report_quorum(self, before: Authority, after: Authority, now: float) -> None:
        ok, contacts = after.quorum_ok, after.contacts
        reachable = contacts.reachable(now)
        if before.quorum_ok != ok:
            (log.info if ok else log.error)(
                "QUORUM %s: %d of %d Sentinels reachable (majority %d)%s",
                "regained" if ok else "LOST", reachable, contacts.configured,
                contacts.majority,
                "" if ok else f"; on_quorum_loss = {self.config.agent.on_quorum_loss}")
        self.metrics.sentinels_reachable.set(reachable)
        self.metrics.sentinels_configured.set(contacts.configured)
        self.metrics.quorum_ok.set(1 if ok else 0)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        # What a failover's path needs, imported now rather than in the middle of
        # one (the lab's import log showed them after +selected-slave): the hook's
        # argv parser, at the first hook request; subprocess, for the old holder's
        # `ss -K` and the action scripts. 0.35 MiB; the hook's own path is unchanged.
        import subprocess  # noqa: F401

        from . import hook  # noqa: F401

        cfg = self.config
        ensure_state_dir(cfg.agent.state_dir)
        self.poller = Poller(cfg.sentinel)
        for vip in cfg.vips:
            self.actors[vip.master] = VipActor(self, vip)
        for vip in cfg.vips:     # after the actors: a claim seen at once finds its actor
            self.wire(vip.interface)
        self.server = AgentSocket(cfg.agent.socket, cfg.agent.socket_group, self)
        self.server.start()
        # Contact counts from now: setting up (imports, netlink, sockets) can take
        # longer than the tracker's window on a slow host, and must not read as a
        # quorum loss before the first Sentinel could even answer.
        self.feed(Started(time.monotonic()))
        self.subscriptions = Subscriptions(cfg.sentinel, self.on_event, self.on_link,
                                           on_contact=self.on_contact)
        self.subscribers = self.subscriptions.links
        self.subscriptions.start()
        # A VIP removed behind our back, or a link that bounced: reconcile now. Started
        # before the actors, whose first read seeds the cache this keeps current.
        self.netwatch = NetWatcher({str(v.ip) for v in cfg.vips}, self.kernel_changed,
                                   listener=self.kernel)
        for actor in self.actors.values():
            actor.start()
        from .crashwatch import CrashWatcher

        for vip in cfg.vips:
            if vip.crash_failover:
                watcher = CrashWatcher(self, vip)
                self.crash_watchers.append(watcher)
                watcher.start()

    def stop(self, release: bool = False) -> None:
        t0 = time.monotonic()
        # Also ends this agent's watchdog thread: after a reload it would watch
        # threads that no longer run, and complain of them.
        self._stop.set()
        # First: a watcher must not act on a state that stops changing.
        for watcher in self.crash_watchers:
            watcher.stop()
        if self.server:
            self.server.close()
        if self.subscriptions is not None:
            self.subscriptions.stop()
        log.debug("subscribers stopped after %.2f s", time.monotonic() - t0)
        if release:
            for actor in self.actors.values():
                future: Verdict = Future()
                actor.submit(Request(Kind.RELEASE, reply=future, event=Event(role="agent")))
                try:
                    future.result(timeout=15)
                except Exception as exc:  # noqa: BLE001
                    log.error("%s: release on stop failed: %s", actor.vip.master, exc)
        if self.netwatch:
            self.netwatch.close()
        for actor in self.actors.values():
            actor.stop()
        log.debug("actors stopped after %.2f s", time.monotonic() - t0)
        for wire in self._wires.values():
            wire.close()
        if self.poller:
            self.poller.close()
        if self._tick_host is not None:
            self._tick_host.close()
            self._tick_host = None
        self.announcer.close()
        self.local_redis.close()
        self.metrics.close()
        log.debug("agent stopped after %.2f s", time.monotonic() - t0)

    def run(self) -> int:
        self.start()
        interval = self.config.agent.reconcile_interval
        ready = False
        log.info("watching %d VIP(s) through %d Sentinel(s); reconcile every %.1f s",
                 len(self.config.vips), len(self.config.sentinel.addresses), interval)
        watchdog = watchdog_interval()
        if watchdog is not None:
            threading.Thread(target=self.feed_watchdog, args=(watchdog,), name="watchdog",
                             daemon=True).start()
        while not self._stop.is_set():
            started = self.beat = time.monotonic()
            try:
                if self.quorum_lost_now():
                    # Cut off: decide on what the tracker knows now. The poll below
                    # waits for the unreachable Sentinels' timeouts, which must not
                    # delay fencing.
                    self.reconcile_all()
                self.poll_once()
                self.reconcile_all()
                self.release_after_poll()
            except Exception:  # noqa: BLE001 - an error in one cycle never ends the loop
                log.exception("reconcile cycle failed")
            if not ready:
                notify("READY=1\nSTATUS=watching")
                ready = True
            if self._reload.is_set():
                return RELOAD
            # Sleep until the next tick, or until an event pokes us (debounced).
            # Below a Sentinel majority, poll fast: fencing should happen when the
            # grace period ends, not up to a whole interval later.
            tick = interval if not self._authority.below(time.monotonic()) else min(
                interval, 0.25)
            self._sleep_until(started + tick)
            if self._poke.is_set():
                self._poke.clear()
                time.sleep(0.02)
        return 0

    def stalled(self, now: float) -> list[str]:
        """The threads that have shown no progress for STALL_LIMIT seconds."""
        beats = [("main loop", self.beat)]
        beats += [(f"actor of {m}", a.beat) for m, a in self.actors.items()]
        beats += [(f"subscription to {s.endpoint}", s.beat) for s in self.subscribers]
        beats += [(f"crash watcher of {w.vip.master}", w.beat) for w in self.crash_watchers]
        if self.server is not None:
            beats.append(("agent socket", self.server.beat))
        return [f"{name} ({now - beat:.0f} s)" for name, beat in beats
                if now - beat > STALL_LIMIT]

    def feed_watchdog(self, interval: float) -> None:
        """WATCHDOG=1 while everything makes progress; silence otherwise, so that
        systemd restarts a hung agent (the restarted one reconciles at start)."""
        complained = False
        while not self._stop.wait(interval):
            stuck = self.stalled(time.monotonic())
            if not stuck:
                notify("WATCHDOG=1")
                complained = False
            elif not complained:
                log.error("not feeding the systemd watchdog: no progress in %s",
                          ", ".join(stuck))
                complained = True

    def _sleep_until(self, deadline: float) -> None:
        """Until ``deadline`` or a poke, but also wake when the quorum could just
        have been lost (the majority's last contact going stale), so fencing starts
        from the real loss rather than from the next timer tick. Those wake-ups
        cost a comparison, not a poll."""
        below_at_start = self._authority.below(time.monotonic())
        while not self._poke.is_set():
            now = time.monotonic()
            state = self._authority
            wait = sleep_for(now, deadline, below_at_start, state.below(now),
                             state.contacts.next_check(now))
            if wait <= 0:
                return
            self._poke.wait(wait)

    def request_stop(self) -> None:
        self._stop.set()
        self._poke.set()

    def request_reload(self) -> None:
        self._reload.set()
        self._poke.set()

    def live_status(self) -> dict[str, Any]:
        q = self._authority.contacts
        now = time.monotonic()
        out: dict[str, Any] = {
            "pid": os.getpid(),
            "quorum": {"reachable": q.reachable(now), "configured": q.configured,
                       "majority": q.majority, "ok": q.reachable(now) >= q.majority,
                       "below_for": round(q.below_for(now), 2),
                       "policy": self.config.agent.on_quorum_loss},
            "vips": {},
        }
        for master, actor in self.actors.items():
            live, belief = actor.live, self.belief(master)
            quorum = self.quorum(master)
            out["vips"][master] = {
                "held": live.held, "last_action": live.last_action,
                "last_reason": live.last_reason, "last_time": live.last_time,
                "error": live.error, "conflict_mac": live.conflict_mac,
                "conflict_since": live.conflict_since or None,
                "last_announcement": self.announcer.last_round.get(master),
                "belief": None if belief is None else {
                    "master_addr": belief.addr, "epoch": belief.epoch,
                    "provisional": belief.provisional, "source": belief.source},
                "quorum_loss_grace": quorum.grace,
            }
        return out


RELOAD = -1


def sleep_for(now: float, deadline: float, below_at_start: bool, below_now: bool,
              next_check: float) -> float:
    """Pure: how long the main loop may sleep before its next tick. It wakes early
    when the quorum is lost *during* the sleep (fencing counts from the real loss),
    but not when it was already lost before: then its Sentinels may be failing
    fast (refused, no route), and waking at once would poll them in a busy loop."""
    if now >= deadline:
        return 0.0
    if below_now and not below_at_start:
        return 0.0
    if below_at_start:
        return deadline - now
    return min(deadline, next_check) - now


def main(config_path: str | None) -> int:
    """Run the agent until SIGTERM; reload on SIGHUP (a bad new config is refused
    and the running one kept). A bad config at start raises ConfigError (exit 2)."""
    logs.setup("vipfloat", syslog=False)
    # systemd's watchdog aborts a hung agent (SIGABRT): every thread's stack then
    # goes to stderr, the journal, to show where it hung.
    faulthandler.enable()
    # A hint must reach its VIP's actor at once; the default 5 ms GIL switch
    # interval would let a busy thread hold it back for a whole slice.
    sys.setswitchinterval(0.0005)
    cfg = config_mod.load(config_path)
    logging.getLogger().setLevel(cfg.log_level.upper())
    current: list[Agent] = []
    signal.signal(signal.SIGTERM, lambda *_: current[-1].request_stop())
    signal.signal(signal.SIGINT, lambda *_: current[-1].request_stop())
    signal.signal(signal.SIGHUP, lambda *_: current[-1].request_reload())
    while True:
        agent = Agent(cfg)
        current.append(agent)
        reload = False
        try:
            reload = agent.run() == RELOAD
        finally:
            if reload:
                notify("RELOADING=1")
                agent.stop(release=False)  # a reload never releases anything
            else:
                notify("STOPPING=1")
                agent.stop(release=cfg.agent.release_on_stop)
        current.pop(0)
        if not reload:
            log.info("stopped; VIPs %s", "released" if cfg.agent.release_on_stop else
                     "left in place (release_on_stop = false)")
            return 0
        try:
            cfg = config_mod.load(config_path)
            logging.getLogger().setLevel(cfg.log_level.upper())
            log.info("config reloaded from %s", cfg.path)
        except ConfigError as exc:
            for line in exc.problems:
                log.error("reload refused: %s", line)
            log.error("keeping the running config")
