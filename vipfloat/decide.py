"""Who should hold each VIP: a pure function over a frozen snapshot.

Nothing here touches the network, the kernel or the clock. ``decide`` takes what
was observed (the new master's addresses, this host's addresses, whether the VIP
is bound) and returns one :class:`Action` per VIP, each with the reason that is
logged and asserted in tests. :mod:`vipfloat.apply` makes the host match.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from .config import AgentConfig, Config, IPAddress, QuorumPolicy, VipConfig, majority

if TYPE_CHECKING:
    from .sentinel import SentinelAnswer


class Verb(str, Enum):
    ACQUIRE = "acquire"     # bind the VIP here and announce it
    ANNOUNCE = "announce"   # already bound here: announce again so the network follows
    RELEASE = "release"     # unbind the VIP here
    NOTHING = "nothing"


class Binding(str, Enum):
    ABSENT = "absent"       # the VIP is not on the configured interface
    PRESENT = "present"     # it is, with the configured prefix: ours
    FOREIGN = "foreign"     # the same IP with another prefix: somebody else's, never touched


@dataclass(frozen=True)
class Claim:
    """What a caller says about one master: a failover's new master, or an order."""

    source: str                                   # "hook (leader)", "vipfloat acquire", ...
    new_master: str | None = None                 # host as Sentinel gave it (IP or name)
    new_master_addrs: frozenset[IPAddress] = frozenset()  # new_master resolved
    order: Verb | None = None                     # operator's acquire/release, overrides


@dataclass(frozen=True)
class Quorum:
    """How many configured Sentinels this host can reach, and for how long it has
    been fewer than a majority (the agent's isolation test)."""

    reachable: int
    configured: int
    below_for: float = 0.0                        # seconds below a majority; 0 when ok
    grace: float = 30.0                           # seconds allowed below before fencing
    policy: QuorumPolicy = QuorumPolicy.RELEASE   # on_quorum_loss
    # False from a quorum loss until a poll has been answered by a majority again:
    # what this host believed while cut off is stale, and a healed old master must
    # not take the VIP back on it.
    fresh: bool = True

    @property
    def majority(self) -> int:
        return majority(self.configured)

    @property
    def ok(self) -> bool:
        return self.reachable >= self.majority


class RedisRole(StrEnum):
    """What this host's Redis answers to ROLE, or why it answered nothing."""

    MASTER = "master"
    SLAVE = "slave"
    SENTINEL = "sentinel"
    UNKNOWN = "unknown"           # a reply of another shape
    UNREACHABLE = "unreachable"   # refused, timed out
    ERROR = "error"               # an error reply (NOAUTH, ...)


@dataclass(frozen=True)
class LocalRole:
    """This host's Redis's role for the master, with why when it is no role."""

    role: RedisRole
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.role.value} ({self.detail})" if self.detail else self.role.value


@dataclass(frozen=True)
class InFlight:
    """A failover in flight for the VIP's master, as its leader published it
    (vipfloat.authority.Failover), with its addresses resolved."""

    leader: str                                   # "the failover leader (Sentinel …, epoch 7)"
    replica: str                                  # host:port it promotes, as Sentinel names it
    replica_addrs: frozenset[IPAddress]
    old_addrs: frozenset[IPAddress]               # the master it replaces, resolved
    age: float = 0.0                              # seconds since the replica was first named
    # The master's down-after-milliseconds, in seconds, as its Sentinels report
    # it (None: not known yet): the write hold ends by half of it.
    down_after: float | None = None


@dataclass(frozen=True)
class VipView:
    """One VIP at one moment."""

    master: str
    claim: Claim
    binding: Binding
    binding_detail: str = ""                      # e.g. the foreign prefix, for the reason
    # The agent fills these; the hook and operator paths leave them None.
    quorum: Quorum | None = None
    local_role: LocalRole | None = None           # ROLE of this host's Redis for the master
    periodic: bool = False                        # a timer reconcile: no re-announcing
    in_flight: InFlight | None = None             # a failover its leader is running
    new_holder: str | None = None                 # a MAC that announced the VIP since it began
    writes_held: bool = False                     # this host paused its Redis's writes for it


@dataclass(frozen=True)
class Snapshot:
    local_addresses: frozenset[IPAddress]
    vips: tuple[VipView, ...]


@dataclass(frozen=True)
class Action:
    verb: Verb
    master: str
    reason: str
    # A release that waits (up to release_wait) for the new holder's announcement
    # before letting go, so clients' connection attempts are never black-holed in
    # between. Fencing and operator releases are immediate.
    graceful: bool = False
    # This host's Redis (the master a failover replaces): True, pause its writes
    # (CLIENT PAUSE WRITE, renewed while True); False, let them through again;
    # None, leave them as they are.
    hold_writes: bool | None = None


def candidate_local_addresses(local: Iterable[IPAddress], vip: VipConfig) -> frozenset[IPAddress]:
    """The addresses that make this host 'the new master' for ``vip``.

    The VIP itself never counts (on its holder it is a local address, and a setup
    that monitors the master through the VIP would otherwise keep it forever), nor
    does loopback (127.0.0.1 is every host). A non-empty ``local_addresses`` in the
    config narrows the set further.
    """
    usable = {a for a in local if a != vip.ip and not a.is_loopback}
    if vip.local_addresses:
        usable &= set(vip.local_addresses)
    return frozenset(usable)


def is_new_master_here(claim: Claim, local: Iterable[IPAddress], vip: VipConfig) -> bool:
    return bool(claim.new_master_addrs & candidate_local_addresses(local, vip))


def newest(answers: Sequence[SentinelAnswer]) -> SentinelAnswer | None:
    """The authority: the answer with the highest config-epoch (the newest
    configuration). A lagging Sentinel still names the old master at a lower epoch.

    A failover leader is no authority until it ends: from +promoted-slave on, its
    SENTINEL MASTER reports the *new* config-epoch with the *old* address (it
    switches the address only at +switch-master), so answers flagged
    failover_in_progress are left out."""
    known = [a for a in answers if a.master is not None
             and "failover_in_progress" not in a.master.flags]
    return max(known, key=lambda a: a.master.config_epoch, default=None)  # type: ignore[union-attr]


def decide(snapshot: Snapshot, config: Config) -> tuple[Action, ...]:
    actions = []
    for view in snapshot.vips:
        vip = config.vip_for(view.master)
        if vip is None:  # gathered for a master the config no longer has
            actions.append(Action(Verb.NOTHING, view.master, "master not in config"))
            continue
        action = _decide_one(view, vip, snapshot.local_addresses, config.agent)
        if view.writes_held and action.hold_writes is None and (
                bound_after(action, view.binding) or action.verb is Verb.RELEASE):
            # The failover that held them is over and the VIP is still here (an
            # abort, a timeout), or the VIP goes now (its connections reset):
            # writes go through again at once. A hold left to run out would
            # also hold Sentinel's own link to this Redis (its hello PUBLISH
            # blocks, and the PINGs queued behind it), and Sentinel would take
            # this master for down: a second failover.
            action = replace(action, reason=f"{action.reason}; letting the held writes through",
                             hold_writes=False)
        actions.append(action)
    return tuple(actions)


def bound_after(action: Action, binding: Binding) -> bool:
    """Whether the VIP is bound here once ``action`` is carried out."""
    return (action.verb in (Verb.ACQUIRE, Verb.ANNOUNCE)
            or (action.verb is Verb.NOTHING and binding is Binding.PRESENT))


def _decide_one(view: VipView, vip: VipConfig, local: frozenset[IPAddress],
                agent: AgentConfig) -> Action:
    def act(verb: Verb, why: str, graceful: bool = False,
            hold_writes: bool | None = None) -> Action:
        return Action(verb, view.master, f"{why} ({view.claim.source})", graceful, hold_writes)

    if view.binding is Binding.FOREIGN:
        return act(Verb.NOTHING, f"{vip.ip} is on {vip.interface} as {view.binding_detail}, "
                                 f"not the configured /{vip.address.network.prefixlen}: "
                                 "not ours to touch")
    bound = view.binding is Binding.PRESENT
    if view.claim.order is Verb.ACQUIRE:
        return (act(Verb.ANNOUNCE,
                    "operator asked to acquire; VIP already bound here, re-announcing")
                if bound else act(Verb.ACQUIRE, "operator asked to acquire"))
    if view.claim.order is Verb.RELEASE:
        return (act(Verb.RELEASE, "operator asked to release") if bound
                else act(Verb.NOTHING, "operator asked to release; VIP not bound here"))

    who = _describe(view.claim)
    named = bool(view.claim.new_master_addrs)
    here = named and is_new_master_here(view.claim, local, vip)
    # The quorum, when it does not allow acting on beliefs (lost, or regained but
    # not yet asked); None when it does.
    q = view.quorum
    if q is not None and q.ok and q.fresh:
        q = None
    if view.in_flight is not None:
        # Fencing comes first: a host cut off from the majority lets go, failover
        # in flight or not.
        fenced = _without_quorum(act, q, bound) if q is not None and bound else None
        if fenced is not None and fenced.verb is Verb.RELEASE:
            return fenced
        early = _in_flight(view, view.in_flight, vip, local, agent, q, act, here)
        if early is not None:
            return early
    if bound and named and not here:
        # Letting go needs no quorum: at worst the VIP is unbound until the next
        # reconcile, never held twice; only taking it does. So a host too starved
        # to hear its Sentinels' pongs (or cut off from most of them) still
        # releases at once when one it hears names another master.
        note = f" ({_quorum_note(q)})" if q is not None else ""
        return act(Verb.RELEASE, f"new master {who} is another host; VIP bound here{note}",
                   graceful=True)
    if q is not None:
        return _without_quorum(act, q, bound)
    if view.claim.new_master is None and not named:
        return act(Verb.NOTHING, "no Sentinel has named a master yet")
    if not named:
        return act(Verb.NOTHING, f"new master {who} has no usable address")
    if here:
        # IPv4 before IPv6: the two do not compare (a host name resolving to
        # both raised TypeError here, found by mutation testing).
        mine = ", ".join(str(a) for a in sorted(
            view.claim.new_master_addrs & candidate_local_addresses(local, vip),
            key=lambda a: (a.version, a)))
        if bound:
            if view.periodic:
                return act(Verb.NOTHING, f"master {who} is this host and holds the VIP")
            # Re-announcing is cheap and repairs caches that still point at a host
            # that held the VIP in between (a missed release, a quick A-B-A failover).
            return act(Verb.ANNOUNCE, f"new master {who} is this host ({mine}); "
                                      "VIP already bound, re-announcing")
        if view.local_role is not None and view.local_role.role is not RedisRole.MASTER:
            # Sentinel may name this host before its Redis agrees (or after it died):
            # a VIP in front of a replica or a dead port only turns writes into errors.
            return act(Verb.NOTHING, f"new master {who} is this host ({mine}), but the local "
                                     f"Redis answers ROLE as {view.local_role}: not acquiring")
        return act(Verb.ACQUIRE, f"new master {who} is this host ({mine})")
    return act(Verb.NOTHING, f"new master {who} is another host; VIP not bound here")


def _in_flight(view: VipView, f: InFlight, vip: VipConfig, local: frozenset[IPAddress],
               agent: AgentConfig, q: Quorum | None, act: Callable[..., Action],
               believed_here: bool) -> Action | None:
    """A failover its leader is running, before Sentinel confirms it. The
    chosen replica's host binds the VIP as soon as its Redis says ROLE master
    (hundreds of ms before +promoted-slave), and keeps it while ROLE says so;
    the host Sentinel still names (the old holder) holds its Redis's writes,
    then lets go when the new holder announces itself, and does not take the
    VIP back meanwhile. None: the usual rules decide (any other host)."""
    mine = candidate_local_addresses(local, vip)
    bound = view.binding is Binding.PRESENT
    role = view.local_role
    if f.replica_addrs & mine:
        if bound:
            if role is not None and role.role is not RedisRole.MASTER:
                return None     # no longer master (converted back, gone): as usual
            return act(Verb.NOTHING, f"{f.leader} is promoting this host's Redis {f.replica}; "
                                     "VIP already bound here")
        if not agent.early_bind:
            return None
        if q is not None:
            # Local ROLE and one Sentinel's word never move a VIP without a
            # majority behind them.
            return _without_quorum(act, q, False)
        if role is None or role.role is not RedisRole.MASTER:
            return act(Verb.NOTHING, f"{f.leader} is promoting this host's Redis {f.replica}, "
                                     f"but ROLE is still {role or 'unasked'}: waiting for the "
                                     "promotion")
        return act(Verb.ACQUIRE, f"{f.leader} promoted this host's Redis {f.replica}; ROLE is "
                                 "master, ahead of Sentinel's +promoted-slave")
    if not believed_here:
        return None
    if not bound:
        return act(Verb.NOTHING, f"{f.leader} is promoting {f.replica}, another host: not "
                                 "acquiring while it is in flight")
    if view.new_holder is not None:
        # The new holder has announced the VIP: every frame clients send now goes
        # there, and keeping it here would only answer ARP against it.
        return act(Verb.RELEASE, f"{f.leader} is promoting {f.replica}, another host, and "
                                 f"{view.new_holder} announced the VIP: releasing")
    if f.old_addrs & mine and f.age < hold_limit(agent, f) and agent.reset_connections:
        # Every write this Redis acknowledges from now on would be discarded
        # when Sentinel makes it a replica of the new master: hold them, so that
        # they fail when the connections are reset at the release instead
        # (without the reset, they would be acknowledged once the pause ends).
        return act(Verb.NOTHING, f"{f.leader} is promoting {f.replica}, another host: "
                                 "holding this host's writes until the new holder announces "
                                 "the VIP", hold_writes=True)
    return act(Verb.NOTHING, f"{f.leader} is promoting {f.replica}, another host: keeping "
                             "the VIP until the new holder announces it")


def hold_limit(agent: AgentConfig, f: InFlight) -> float:
    """How long the old holder may hold its writes: failover_write_hold, and
    less than half of down-after-milliseconds, after which Sentinel, whose
    commands to this Redis wait behind its blocked hello PUBLISH, would find
    it down and start a failover of its own."""
    if f.down_after is None:
        return agent.failover_write_hold
    return min(agent.failover_write_hold, f.down_after / 2)


def _quorum_note(q: Quorum) -> str:
    return (f"{q.reachable}/{q.configured} Sentinels reachable"
            + (", not yet asked" if q.ok else f" for {q.below_for:.1f} s"))


def _without_quorum(act: Callable[..., Action], q: Quorum, bound: bool) -> Action:
    """Fewer than a majority of Sentinels reachable: this host is probably cut off
    while the others fail over without it. Never acquire; after the grace period,
    fence (release at once) unless the policy is keep."""
    if q.ok:  # back in contact, but not yet asked: decide nothing on stale beliefs
        return act(Verb.NOTHING, f"{q.reachable}/{q.configured} Sentinels reachable again; "
                                 "waiting for their answers before acting")
    seen = (f"only {q.reachable}/{q.configured} Sentinels reachable for {q.below_for:.1f} s "
            f"(majority {q.majority}, grace {q.grace:.1f} s)")
    if not bound:
        return act(Verb.NOTHING, f"{seen}: not acquiring anything")
    if q.policy is QuorumPolicy.KEEP:
        return act(Verb.NOTHING, f"{seen}: keeping the VIP (on_quorum_loss = keep)")
    if q.below_for < q.grace:
        return act(Verb.NOTHING, f"{seen}: keeping the VIP until the grace period ends")
    return act(Verb.RELEASE, f"{seen}: fencing, this host is probably isolated")


def _describe(claim: Claim) -> str:
    addrs = sorted(claim.new_master_addrs, key=lambda a: (a.version, a))
    shown = ", ".join(str(a) for a in addrs)
    if claim.new_master is None:
        return shown or "unknown"
    try:
        ipaddress.ip_address(claim.new_master)
        return claim.new_master
    except ValueError:
        return f"{claim.new_master} ({shown})" if shown else claim.new_master
