"""What the agent believes each master is, and whether it can trust anything.

The agent's rules as one pure state machine: :func:`step` takes an
:class:`Authority` and one input event (a poll's answers, a hint from pub/sub
or a hook, contact with a Sentinel, the main loop's check, each with ``now``)
and returns the next state; :func:`quorum` and :func:`claim` read what one
VIP's decision needs. No locks, clock reads or I/O here: the agent feeds the
events and holds the current state; tests drive it on a fake clock.

Inside it: :class:`Belief` follows the newest Sentinel configuration, taking
event payloads as provisional hints that polls of lagging Sentinels cannot
undo; :class:`Contacts` measures how long this host has seen fewer than a
majority of its Sentinels; :class:`Failover` is a failover its leader is
running, followed from the leader's own steps (+new-epoch, +try-failover,
+selected-slave ...) until Sentinel confirms or abandons it, so that the VIP
can move when the promotion happens rather than when Sentinel notices it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Mapping, Sequence, Union

from .config import IPAddress, QuorumPolicy, hostport, majority
from .decide import Claim, Quorum, newest
from .sentinel import SentinelAnswer

# A hint (+promoted-slave, +switch-master, a hook's argv) that no Sentinel has
# confirmed with a newer config-epoch within this long is dropped. Observers
# adopt the new configuration from the leader's hellos within about 2 s.
HINT_TTL = 15.0
# Sentinels whose epochs all went backwards (reset, rebuilt) are believed again
# once a majority has agreed on the lower epoch for this long.
EPOCH_RESET_AFTER = 30.0
# The quorum-loss grace when it follows Sentinel's down-after-milliseconds and
# no Sentinel has told us that yet.
DEFAULT_GRACE = 30.0
# Sentinel's own default failover-timeout, until a poll tells us the master's.
DEFAULT_FAILOVER_TIMEOUT = 180.0
# After this host bound the VIP early, how long Sentinel has to confirm the
# promotion before the newest configuration decides again. The leader polls the
# promoted replica's INFO every second during a failover, so it notices within
# about 1.1 s; a leader that has not after this long is stuck (TILT, cut off
# from the replica) and may never: the VIP must not wait failover-timeout (180 s
# by default) in front of a node Sentinel does not name.
CONFIRM_WITHIN = 5.0


@dataclass(frozen=True)
class Belief:
    host: str
    port: int
    epoch: int              # the config-epoch behind it; for a hint, the one it supersedes
    provisional: bool       # from an event, not yet confirmed by a newer epoch
    source: str
    since: float            # when this belief was formed (monotonic clock)
    lower_since: float | None = None  # when a majority started reporting a lower epoch

    @property
    def addr(self) -> str:
        return hostport(self.host, self.port)


def on_hint(belief: Belief | None, host: str, port: int, source: str, now: float) -> Belief:
    """An event says ``host:port`` is the new master: believe it now, provisionally."""
    if belief is not None and (belief.host, belief.port) == (host, port):
        return belief
    return Belief(host, port, belief.epoch if belief else -1, True, source, now)


def on_poll(belief: Belief | None, answers: Sequence[SentinelAnswer], configured: int,
            now: float) -> Belief | None:
    """Fold one round of SENTINEL MASTER answers into the belief."""
    best = newest(answers)
    if best is None or best.master is None:
        return belief
    m = best.master
    polled = Belief(m.host, m.port, m.config_epoch, False,
                    f"Sentinel {best.endpoint}, config-epoch {m.config_epoch}", now)
    if belief is None or m.config_epoch > belief.epoch:
        return polled            # a newer configuration: it wins, whatever it names
    if belief.provisional:
        if now - belief.since > HINT_TTL:
            return polled        # never confirmed: fall back to what Sentinels say
        return belief            # an older configuration: a lagging view, ignored
    if m.config_epoch == belief.epoch:
        return replace(belief, lower_since=None)
    # Every answer is older than what we believe. Lagging Sentinels do that for a
    # moment; a majority doing it for EPOCH_RESET_AFTER means the epochs were reset.
    agreeing = sum(1 for a in answers if a.master and a.master.config_epoch == m.config_epoch
                   and (a.master.host, a.master.port) == (m.host, m.port))
    if agreeing < majority(configured):
        return replace(belief, lower_since=None)
    if belief.lower_since is None:
        return replace(belief, lower_since=now)
    if now - belief.lower_since >= EPOCH_RESET_AFTER:
        return polled
    return belief


@dataclass(frozen=True)
class Contacts:
    """When each configured Sentinel was last heard, and what follows: how many
    are reachable, and since when this host has had fewer than a majority.

    Contact is any successful exchange: a poll answer, a pub/sub message, a pong
    (the subscriptions ping every quarter second). A Sentinel silent for longer
    than ``window`` counts as unreachable, and the quorum is taken as lost from
    the moment the last Sentinel needed for a majority was last heard, not from
    when the loss was noticed: the isolated old master's grace period then runs
    from the real cut, as the other Sentinels' down-after-milliseconds does.
    """

    last: tuple[float, ...]
    window: float = 1.0

    @classmethod
    def start(cls, configured: int, now: float, window: float = 1.0) -> Contacts:
        """Every Sentinel counted as just heard, so that a (re)start is no
        quorum loss."""
        return cls((now,) * configured, window)

    @property
    def configured(self) -> int:
        return len(self.last)

    @property
    def majority(self) -> int:
        return majority(self.configured)

    def heard(self, index: int, now: float) -> Contacts:
        if now <= self.last[index]:
            return self
        return replace(self, last=self.last[:index] + (now,) + self.last[index + 1:])

    def reachable(self, now: float) -> int:
        return sum(1 for t in self.last if now - t <= self.window)

    def _majority_heard(self) -> float:
        """When the majority-th most recent contact was."""
        return sorted(self.last, reverse=True)[self.majority - 1]

    def next_check(self, now: float) -> float:
        """When the quorum would be lost if nothing more is heard: the moment the
        majority-th most recent contact becomes older than ``window``."""
        return max(now, self._majority_heard() + self.window + 0.001)

    def below_for(self, now: float) -> float:
        """Seconds since contact with a majority was lost; 0 while there is one."""
        if self.reachable(now) >= self.majority:
            return 0.0
        return now - self._majority_heard()


@dataclass(frozen=True)
class Failover:
    """A failover in flight for one master, as its leader publishes it: the
    replica it promotes, at the epoch it won. It never changes a belief: it is
    the early, provisional hold (the chosen replica's host binds the VIP once its
    Redis says ROLE master; the old holder holds writes, then lets go when the
    new holder announces itself). It ends when Sentinel confirms (+promoted-slave,
    +switch-master, a poll at its epoch), aborts, loses its leader, or outlives
    failover-timeout; then the newest configuration decides, as always."""

    leader: int                  # the leader's index in the config's Sentinels
    leader_addr: str             # its address, for the reason
    epoch: int                   # the failover epoch it won (its +new-epoch)
    host: str                    # the replica it promotes, as Sentinel names it
    port: int
    old_host: str                # the master it replaces
    old_port: int
    stage: str                   # the last step published (+selected-slave, ...)
    since: float                 # when the replica was first named
    timeout: float               # the master's failover-timeout, seconds
    bound_at: float | None = None  # when this host bound the VIP early for it

    @property
    def addr(self) -> str:
        return hostport(self.host, self.port)

    @property
    def old_addr(self) -> str:
        return hostport(self.old_host, self.old_port)

    def describe(self) -> str:
        return f"the failover leader (Sentinel {self.leader_addr}, epoch {self.epoch})"


# --- the events -----------------------------------------------------------------------

@dataclass(frozen=True)
class Started:
    """The agent starts listening: every Sentinel counts as heard now."""

    now: float


@dataclass(frozen=True)
class Heard:
    """Sentinel number ``index`` (in the config's order) answered something."""

    index: int
    now: float


@dataclass(frozen=True)
class Polled:
    """One round of SENTINEL MASTER answers, per master, each tuple in the
    config's order of Sentinels."""

    answers: Mapping[str, Sequence[SentinelAnswer]]
    now: float


@dataclass(frozen=True)
class Hinted:
    """An event (+promoted-slave, +switch-master) or a trusted hook names
    ``host:port`` as ``master``'s new master."""

    master: str
    host: str
    port: int
    source: str
    now: float


@dataclass(frozen=True)
class Checked:
    """The main loop looks between polls: has the majority gone silent?"""

    now: float


@dataclass(frozen=True)
class NewEpoch:
    """Sentinel number ``index`` published +new-epoch: its current epoch."""

    index: int
    epoch: int
    now: float


@dataclass(frozen=True)
class Attempted:
    """Sentinel ``index`` published +try-failover for ``master``: it starts a
    failover at the epoch it published just before (sentinelStartFailover)."""

    master: str
    index: int
    now: float


@dataclass(frozen=True)
class Promoting:
    """Sentinel ``index`` published a promotion step (+selected-slave,
    +failover-state-send-slaveof-noone, +failover-state-wait-promotion) naming
    ``host:port`` as the replica it promotes for ``master``, which was at
    ``old_host:old_port``. Only a failover's leader publishes these."""

    master: str
    index: int
    leader_addr: str
    host: str
    port: int
    old_host: str
    old_port: int
    stage: str
    now: float


@dataclass(frozen=True)
class Aborted:
    """Sentinel ``index`` published -failover-abort-* for ``master``."""

    master: str
    index: int
    now: float


@dataclass(frozen=True)
class EarlyBound:
    """This host bound ``master``'s VIP early for the failover at ``epoch``:
    from now on Sentinel has CONFIRM_WITHIN to confirm it."""

    master: str
    epoch: int
    now: float


@dataclass(frozen=True)
class Unsubscribed:
    """The subscription to Sentinel ``index`` dropped: what it publishes from
    now on is lost, so a failover it leads can no longer be followed."""

    index: int
    now: float


AuthorityEvent = Union[Started, Heard, Polled, Hinted, Checked, NewEpoch, Attempted,
                       Promoting, Aborted, EarlyBound, Unsubscribed]


@dataclass(frozen=True)
class Authority:
    """Everything the agent has learnt from its Sentinels, as one value."""

    contacts: Contacts
    beliefs: Mapping[str, Belief] = field(default_factory=lambda: MappingProxyType({}))
    # Each master's down-after-milliseconds as Sentinel reports it, in seconds:
    # the default quorum-loss grace.
    down_after: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # Set by a poll a majority answered, cleared whenever this host is seen below
    # a majority: only then are beliefs current enough to act on (Quorum.fresh).
    confirmed: bool = False
    # The last verdict on the quorum, for the QUORUM LOST / regained log line.
    quorum_ok: bool = True
    # Each master's failover-timeout as Sentinel reports it, in seconds.
    failover_timeout: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({}))
    # Each Sentinel's last +new-epoch, by index; the epoch each (master, Sentinel)
    # attempt started at (+try-failover); the failovers in flight, by master.
    epochs: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    attempts: Mapping[tuple[str, int], int] = field(
        default_factory=lambda: MappingProxyType({}))
    failovers: Mapping[str, Failover] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def initial(cls, configured: int, now: float, window: float = 1.0) -> Authority:
        return cls(Contacts.start(configured, now, window))

    def belief(self, master: str) -> Belief | None:
        return self.beliefs.get(master)

    def below(self, now: float) -> bool:
        return self.contacts.below_for(now) > 0

    def failover(self, master: str, now: float) -> Failover | None:
        """The failover in flight for ``master`` that may move its VIP early: led
        at an epoch newer than the configuration believed, and not older than
        its failover-timeout. None otherwise."""
        f = self.failovers.get(master)
        belief = self.beliefs.get(master)
        if f is None or belief is None or f.epoch <= belief.epoch:
            return None
        if now - f.since > f.timeout:
            return None
        if f.bound_at is not None and now - f.bound_at > CONFIRM_WITHIN:
            return None
        return f


def step(state: Authority, event: AuthorityEvent) -> Authority:
    """The next state after one event."""
    # Seen below a majority, at any event: what was believed is stale until a
    # poll a majority answers (a silence nobody polled through still counts).
    if state.confirmed and state.below(event.now) and not isinstance(event, Started):
        state = replace(state, confirmed=False)
    if isinstance(event, Started):
        contacts = Contacts.start(state.contacts.configured, event.now, state.contacts.window)
        return replace(state, contacts=contacts)
    if isinstance(event, Heard):
        return replace(state, contacts=state.contacts.heard(event.index, event.now))
    if isinstance(event, Hinted):
        # Sentinel has confirmed the promotion in flight. A hint naming another
        # node (a lagging Sentinel's +switch-master of an earlier failover) ends
        # nothing: the poll at the failover's epoch will.
        f = state.failovers.get(event.master)
        if f is not None and (f.host, f.port) == (event.host, event.port):
            state = _end_failover(state, event.master)
        before = state.beliefs.get(event.master)
        after = on_hint(before, event.host, event.port, event.source, event.now)
        if after is before:
            return state
        return replace(state, beliefs=MappingProxyType({**state.beliefs, event.master: after}))
    if isinstance(event, Checked):
        state = _expire_failovers(state, event.now)
        if not state.below(event.now):
            return state
        return replace(state, quorum_ok=False)     # confirmed: cleared above
    if isinstance(event, NewEpoch):
        return replace(state, epochs=MappingProxyType({**state.epochs,
                                                       event.index: event.epoch}))
    if isinstance(event, Attempted):
        epoch = state.epochs.get(event.index)
        attempts = {k: v for k, v in state.attempts.items() if k != (event.master, event.index)}
        if epoch is not None:
            attempts[(event.master, event.index)] = epoch
        return replace(state, attempts=MappingProxyType(attempts))
    if isinstance(event, Promoting):
        return _promoting(state, event)
    if isinstance(event, Aborted):
        f = state.failovers.get(event.master)
        attempts = {k: v for k, v in state.attempts.items() if k != (event.master, event.index)}
        state = replace(state, attempts=MappingProxyType(attempts))
        if f is None or f.leader != event.index:
            return state          # another Sentinel's attempt ended, not the one followed
        return _end_failover(state, event.master)
    if isinstance(event, EarlyBound):
        f = state.failovers.get(event.master)
        if f is None or f.epoch != event.epoch or f.bound_at is not None:
            return state
        return replace(state, failovers=MappingProxyType(
            {**state.failovers, event.master: replace(f, bound_at=event.now)}))
    if isinstance(event, Unsubscribed):
        return replace(state, failovers=MappingProxyType(
            {m: f for m, f in state.failovers.items() if f.leader != event.index}))
    return _polled(state, event)


def _promoting(state: Authority, event: Promoting) -> Authority:
    """A leader's promotion step: followed only when the leader's attempt was
    seen starting (its epoch known) at an epoch newer than the configuration
    believed. A step of the failover already followed keeps its start time."""
    epoch = state.attempts.get((event.master, event.index))
    belief = state.beliefs.get(event.master)
    if epoch is None or belief is None or epoch <= belief.epoch:
        return state
    current = state.failovers.get(event.master)
    if current is not None and current.epoch > epoch:
        return state              # a newer failover is followed already
    same = (current is not None and current.epoch == epoch and current.leader == event.index
            and (current.host, current.port) == (event.host, event.port))
    if same and current is not None:
        f = replace(current, stage=event.stage)
    else:
        f = Failover(event.index, event.leader_addr, epoch, event.host, event.port,
                     event.old_host, event.old_port, event.stage, event.now,
                     state.failover_timeout.get(event.master, DEFAULT_FAILOVER_TIMEOUT))
    return replace(state, failovers=MappingProxyType({**state.failovers, event.master: f}))


def _end_failover(state: Authority, master: str) -> Authority:
    if master not in state.failovers:
        return state
    return replace(state, failovers=MappingProxyType(
        {m: f for m, f in state.failovers.items() if m != master}))


def _expire_failovers(state: Authority, now: float) -> Authority:
    """Failovers older than their failover-timeout, or overtaken by the
    configuration believed, are over."""
    kept = {m: f for m, f in state.failovers.items() if state.failover(m, now) is not None}
    if len(kept) == len(state.failovers):
        return state
    return replace(state, failovers=MappingProxyType(kept))


def _polled(state: Authority, event: Polled) -> Authority:
    now, contacts = event.now, state.contacts
    answered = [i for i in range(contacts.configured)
                if any(len(a) > i and a[i].reachable for a in event.answers.values())]
    for i in answered:
        contacts = contacts.heard(i, now)
    ok = contacts.reachable(now) >= contacts.majority
    # Confirmed only by this poll's own answers from a majority: contact from
    # pongs alone says the Sentinels are there, not what they now say.
    confirmed = ok and (state.confirmed or len(answered) >= contacts.majority)
    beliefs = dict(state.beliefs)
    down_after = dict(state.down_after)
    timeouts = dict(state.failover_timeout)
    for master, answers in event.answers.items():
        belief = on_poll(beliefs.get(master), answers, contacts.configured, now)
        if belief is not None:
            beliefs[master] = belief
        downs = [a.master.down_after_ms for a in answers if a.master and a.master.down_after_ms]
        if downs:
            down_after[master] = max(downs) / 1000
        limits = [a.master.failover_timeout_ms for a in answers
                  if a.master and a.master.failover_timeout_ms]
        if limits:
            timeouts[master] = max(limits) / 1000
    state = replace(state, contacts=contacts, beliefs=MappingProxyType(beliefs),
                    down_after=MappingProxyType(down_after),
                    failover_timeout=MappingProxyType(timeouts), confirmed=confirmed,
                    quorum_ok=ok)
    return _expire_failovers(state, now)


def regained(before: Authority, after: Authority, now: float) -> bool:
    """An event brought this host back in touch with a majority. Beliefs are
    acted on again only once a majority has answered a poll: poll at once
    rather than at the next tick."""
    return before.below(now) and not after.below(now)


class Trust(StrEnum):
    """How far a hook request handed over on the agent's socket is believed."""

    SENDER = "sender"                                   # root or the agent's user
    BELIEVED = "believed master"                        # names what we already believe
    POLL_FIRST = "none: polling the Sentinels first"    # anything else: ask Sentinel


def trust(belief: Belief | None, trusted_sender: bool, host: str, port: int) -> Trust:
    """A request is a hint, trusted as far as its sender is. Root and the agent's
    own user may name any new master (run by them, the hook could act directly
    anyway): their request is believed, like a pub/sub hint. Anyone else
    (Sentinel's user, a member of the socket's group) changes no belief: acted
    on at once only when it names the master already believed, else parked
    until a poll of the Sentinels decides."""
    if trusted_sender:
        return Trust.SENDER
    if belief is not None and (belief.host, belief.port) == (host, port):
        return Trust.BELIEVED
    return Trust.POLL_FIRST


# --- what one VIP's decision reads ------------------------------------------------------

def quorum(state: Authority, master: str, now: float, grace: float | None,
           policy: QuorumPolicy) -> Quorum:
    """The quorum as ``master``'s VIP sees it at ``now``. ``grace`` None: the
    master's down-after-milliseconds, as its Sentinels report it."""
    contacts = state.contacts
    below_for = contacts.below_for(now)
    if grace is None:
        grace = state.down_after.get(master, DEFAULT_GRACE)
    return Quorum(reachable=contacts.reachable(now), configured=contacts.configured,
                  below_for=below_for, grace=grace, policy=policy,
                  fresh=state.confirmed and below_for == 0)


def claim(belief: Belief | None, addrs: frozenset[IPAddress]) -> Claim:
    """The claim a belief makes, given the addresses its host resolved to (an IP
    literal is its own; a host name goes through DNS, which is the caller's)."""
    if belief is None:
        return Claim(source="no Sentinel answer yet")
    kind = "hint" if belief.provisional else "newest config"
    return Claim(source=f"{kind}: {belief.source}", new_master=belief.host,
                 new_master_addrs=addrs)
