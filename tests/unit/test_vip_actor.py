"""One VIP's actor, end to end on fakes (the kernel, the announcer, the local
Redis): what it asks before acting, and that it takes the VIP's lock only to
act. No root, no network."""
from __future__ import annotations

import contextlib
from dataclasses import replace
from types import SimpleNamespace
import ipaddress
import json
import threading
import time

import pytest

from vipfloat import apply
from vipfloat import config as config_mod
from vipfloat.agent import Agent, Kind, Request, VipActor
from vipfloat.apply import Event
from vipfloat.authority import Authority, Polled
from vipfloat.decide import LocalRole, RedisRole, Verb
from vipfloat.errors import LockTimeout
from vipfloat.lock import VipLock
from vipfloat.netlink import AddrRow, Link
from vipfloat.sentinel import MasterInfo, SentinelAnswer

from .conftest import BASE

HERE = "198.51.100.11"
LINK = Link(index=2, name="eth1", mac=bytes.fromhex("020000000011"), up=True)


class Kernel:
    """This host: 198.51.100.11/24 on eth1, and whatever the actor binds."""

    def __init__(self) -> None:
        self.rows = [AddrRow(2, ipaddress.ip_address(HERE), 24)]
        self.calls: list[str] = []

    def addresses(self, fresh: bool = False):
        return tuple(self.rows)

    def link(self, ifname: str, fresh: bool = False):
        return LINK if ifname == LINK.name else None

    def add(self, vip, link) -> bool:
        self.calls.append(f"add {vip.address}")
        self.rows.append(AddrRow(link.index, vip.ip, vip.address.network.prefixlen))
        return True

    def remove(self, vip, link) -> bool:
        self.calls.append(f"remove {vip.address}")
        self.rows = [r for r in self.rows if r.ip != vip.ip]
        return True

    def close(self) -> None:
        pass


class Announcer:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.last_round: dict[str, float] = {}

    def start(self, vip, link) -> None:
        self.started.append(str(vip.ip))

    def stop(self, vip) -> None:
        pass

    def send(self, vip, link, frames=None) -> None:
        pass

    def close(self) -> None:
        pass


class Redis:
    """The local Redis: answers ROLE, and notes whether the VIP's lock was free
    when it was asked."""

    def __init__(self, role: str, state_dir) -> None:
        self.answer = LocalRole(RedisRole(role))
        self.state_dir = state_dir
        self.asked: list[tuple[str, int, bool]] = []

    def role(self, host: str, port: int) -> LocalRole:
        try:
            with VipLock(self.state_dir, "mymaster", 0.0):
                free = True
        except LockTimeout:
            free = False
        self.asked.append((host, port, free))
        return self.answer

    def close(self) -> None:
        pass


def patient(agent: Agent) -> None:
    """Sentinels heard once stay heard: with the real one-second contact
    window, a test process stalled for a second (a VM's stolen time) between
    its fake poll and the decision would find 0/3 Sentinels reachable. Tests
    of the window itself set their own."""
    agent._authority = Authority.initial(len(agent.config.sentinel.addresses),
                                         time.monotonic(), window=1e9)


@contextlib.contextmanager
def actor_on_fakes(cfg):
    """An agent whose one VIP actor works on the fake kernel and announcer."""
    agent = Agent(cfg)
    patient(agent)
    kernel = Kernel()
    agent.announcer = Announcer()
    actor = VipActor(agent, cfg.vips[0], host=kernel)
    agent.actors = {"mymaster": actor}
    try:
        yield agent, actor, kernel
    finally:
        agent.actors = {}
        agent.stop()


@pytest.fixture
def setup(cfg):
    with actor_on_fakes(cfg) as made:
        yield made


def sentinels_name(agent: Agent, host: str, epoch: int = 3) -> None:
    import vipfloat.agent as agent_mod

    answers = tuple(SentinelAnswer(ep, MasterInfo("mymaster", host, 6379, epoch, ("master",),
                                                  down_after_ms=1000))
                    for ep in agent.config.sentinel.addresses)
    # On the agent module's clock: a test's, when it set one.
    agent.feed(Polled({"mymaster": answers}, agent_mod.time.monotonic()))


def hint(actor: VipActor) -> None:
    actor.handle(Request(Kind.EVENT, event=Event(role="agent",
                                                 new_master=f"{HERE}:6379")))


def test_the_local_redis_is_asked_before_acquiring_and_outside_the_lock(setup, cfg):
    agent, actor, kernel = setup
    agent.local_redis = Redis("master", cfg.agent.state_dir)
    sentinels_name(agent, HERE)
    hint(actor)
    assert agent.local_redis.asked == [(HERE, 6379, True)]    # asked, lock not held
    assert kernel.calls == ["add 198.51.100.250/24"]
    assert agent.announcer.started == ["198.51.100.250"]
    assert actor.live.held and actor.live.last_action == "acquire"
    last = json.loads((cfg.agent.state_dir / "mymaster.last.json").read_text())
    assert (last["action"], last["role"], last["to"], last["source"]) == (
        "acquire", "agent", f"{HERE}:6379",
        "newest config: Sentinel 198.51.100.11:26379, config-epoch 3")


def test_a_local_redis_that_is_still_a_replica_gets_no_vip(setup, cfg):
    agent, actor, kernel = setup
    agent.local_redis = Redis("slave", cfg.agent.state_dir)
    sentinels_name(agent, HERE)
    hint(actor)
    assert agent.local_redis.asked and kernel.calls == []
    assert not actor.live.held and "slave" in actor.live.last_reason


def test_a_vip_already_bound_here_is_announced_without_asking_redis(setup, cfg):
    agent, actor, kernel = setup
    agent.local_redis = Redis("master", cfg.agent.state_dir)
    kernel.add(cfg.vips[0], LINK)
    kernel.calls.clear()
    sentinels_name(agent, HERE)
    hint(actor)
    assert agent.local_redis.asked == [] and kernel.calls == []
    assert agent.announcer.started == ["198.51.100.250"]


def test_another_master_makes_it_let_go(setup, cfg):
    agent, actor, kernel = setup
    agent.local_redis = Redis("master", cfg.agent.state_dir)
    kernel.add(cfg.vips[0], LINK)
    kernel.calls.clear()
    sentinels_name(agent, "198.51.100.12")
    actor.handle(Request(Kind.PERIODIC, event=Event(role="agent", quiet=True)))
    assert agent.local_redis.asked == []
    assert kernel.calls == ["remove 198.51.100.250/24"] and not actor.live.held


def test_the_verdict_goes_back_to_whoever_asked(setup, cfg):
    from concurrent.futures import Future

    agent, actor, kernel = setup
    agent.local_redis = Redis("master", cfg.agent.state_dir)
    sentinels_name(agent, HERE)
    reply: Future = Future()
    actor.handle(Request(Kind.HOOK, reply=reply, event=Event(role="observer")))
    code, reason = reply.result(0)
    assert code == 0 and reason.startswith(f"new master {HERE} is this host")


def test_parse_role_names_each_role_and_keeps_a_strange_reply_short_and_escaped():
    from vipfloat.health import parse_role

    assert parse_role([b"master", 0, []]) == LocalRole(RedisRole.MASTER)
    assert parse_role([b"slave", b"198.51.100.11", 6379, b"connected", 1]) == \
        LocalRole(RedisRole.SLAVE)
    assert parse_role(["sentinel", []]) == LocalRole(RedisRole.SENTINEL)
    assert parse_role(b"OK") == parse_role([]) == LocalRole(RedisRole.UNKNOWN)
    odd = parse_role([b"\x1b[2J" + b"x" * 500])
    assert odd.role is RedisRole.UNKNOWN and "\x1b" not in odd.detail and len(odd.detail) < 80
    assert str(LocalRole(RedisRole.UNREACHABLE, "refused")) == "unreachable (refused)"


# --- the VIP changed by someone else while the actor decided (review findings) ----

class RacingKernel(Kernel):
    """After the actor has read the kernel (gather's last call is link()), a
    direct-path hook / `vipfloat release` on this host takes the VIP's lock,
    removes the VIP and drops the lock a moment later."""

    def __init__(self, state_dir) -> None:
        super().__init__()
        self.state_dir = state_dir
        self.armed = False

    def link(self, ifname, fresh=False):
        link = super().link(ifname, fresh)
        if self.armed:
            self.armed = False
            held = threading.Event()

            def hook() -> None:
                with VipLock(self.state_dir, "mymaster", 5.0):
                    held.set()
                    time.sleep(0.2)
                    self.rows = [r for r in self.rows if str(r.ip) != "198.51.100.250"]
                    self.calls.append("hook removed 198.51.100.250/24")

            threading.Thread(target=hook, daemon=True).start()
            assert held.wait(2)
        return link


@pytest.fixture
def racing(cfg):
    agent = Agent(cfg)
    kernel = RacingKernel(cfg.agent.state_dir)
    agent.announcer = Announcer()
    agent.local_redis = Redis("slave", cfg.agent.state_dir)   # this Redis was demoted
    actor = VipActor(agent, cfg.vips[0], host=kernel)
    agent.actors = {"mymaster": actor}
    yield agent, actor, kernel
    agent.actors = {}
    agent.stop()


def test_no_announcement_for_a_vip_removed_while_the_actor_waited_for_the_lock(racing, cfg):
    agent, actor, kernel = racing
    kernel.add(cfg.vips[0], LINK)
    kernel.calls.clear()
    sentinels_name(agent, HERE)           # stale belief: this host
    kernel.armed = True
    actor.handle(Request(Kind.EVENT, event=Event(role="agent", new_master=f"{HERE}:6379")))
    assert "hook removed 198.51.100.250/24" in kernel.calls
    bound = any(str(r.ip) == "198.51.100.250" for r in kernel.rows)
    # An ANNOUNCE decided on the read before the lock must not run after the
    # hook removed the VIP: gratuitous ARP for an address not bound here, and an
    # actor believing it holds it (refreshes, conflict answers would follow).
    assert bound or agent.announcer.started == [], agent.announcer.started
    assert bound or not actor.live.held


def test_pre_release_scripts_do_not_run_for_a_vip_already_gone(racing, cfg, monkeypatch):
    agent, actor, kernel = racing
    ran: list[str] = []
    monkeypatch.setattr(apply, "run_scripts",
                        lambda d, env, *a, **k: ran.append(env["VIPFLOAT_EVENT"]) or [])
    kernel.add(cfg.vips[0], LINK)
    kernel.calls.clear()
    sentinels_name(agent, "198.51.100.12")   # the master moved away
    kernel.armed = True
    actor.handle(Request(Kind.EVENT, event=Event(role="agent")))
    assert "hook removed 198.51.100.250/24" in kernel.calls
    # A RELEASE decided on the read before the lock must not run the pre-release
    # scripts ("while this host still holds the VIP") after the VIP is gone.
    assert ran == [], ran
    assert actor.live.last_action != "release"


# The usual test config with a short lock wait.
LOCKCFG = BASE.replace('state_dir = "{state}"', 'state_dir = "{state}"\nlock_timeout = 0.5')


@pytest.mark.parametrize("kind", [Kind.PERIODIC, Kind.EVENT])
def test_a_held_lock_costs_the_actor_lock_timeout_once(write_config, kind, monkeypatch):
    cfg = config_mod.load(write_config(LOCKCFG))
    agent = Agent(cfg)
    patient(agent)
    agent.announcer = Announcer()
    agent.local_redis = Redis("master", cfg.agent.state_dir)
    actor = VipActor(agent, cfg.vips[0], host=Kernel())
    agent.actors = {"mymaster": actor}
    waits: list[float] = []

    def counted(state_dir, master, timeout):
        waits.append(timeout)
        return VipLock(state_dir, master, timeout)

    monkeypatch.setattr("vipfloat.agent.VipLock", counted)
    try:
        sentinels_name(agent, HERE)
        with VipLock(cfg.agent.state_dir, "mymaster", 1.0):     # a stuck hook holds it
            actor.handle(Request(kind, event=Event(role="agent")))
        assert actor.live.error and "still held" in actor.live.error
        # One lock_timeout per request: the lock is taken inside each attempt,
        # and until_deadline always retries a TransientError at least once; two
        # waits of up to 15 s would reach the watchdog's STALL_LIMIT. What each
        # attempt may wait is counted, not the wall clock.
        assert waits and sum(waits) <= cfg.agent.lock_timeout, f"{kind}: {waits}"
    finally:
        agent.actors = {}
        agent.stop()


def test_the_timers_tick_reads_the_kernel_once_for_every_vip(setup, cfg):
    # The tick re-seeds the cache from the kernel, then each actor's periodic
    # reconcile reads the cache: one dump per tick whatever the number of VIPs.
    agent, actor, kernel = setup
    read: list[str] = []

    class Host:
        def addresses(self, fresh: bool = False):
            read.append(f"addresses fresh={fresh}")
            agent.kernel.seed_addresses(kernel.rows, agent.kernel.generation())
            return tuple(kernel.rows)

        def link(self, ifname: str, fresh: bool = False):
            read.append(f"link {ifname} fresh={fresh}")
            return LINK

        def close(self) -> None:
            read.append("close")

    agent._tick_host = Host()
    submitted: list[Request] = []
    agent.actors = {"mymaster": SimpleNamespace(submit=submitted.append, vip=cfg.vips[0],
                                                settled=None)}
    agent.reconcile_all()
    assert read == ["addresses fresh=True", "link eth1 fresh=True"]
    assert agent.kernel.addresses() == tuple(kernel.rows)
    assert [r.kind for r in submitted] == [Kind.PERIODIC]


def test_a_tick_whose_kernel_read_fails_leaves_each_actor_to_read_it(setup, cfg):
    agent, actor, kernel = setup
    agent.kernel.seed_addresses(kernel.rows, agent.kernel.generation())

    class Broken:
        closed = False

        def addresses(self, fresh: bool = False):
            raise OSError("netlink busy")

        def close(self) -> None:
            Broken.closed = True

    agent._tick_host = Broken()
    submitted: list[Request] = []
    # Settled on what the cache said: a tick that could not read the kernel
    # reconciles it all the same.
    agent.actors = {"mymaster": SimpleNamespace(submit=submitted.append, vip=cfg.vips[0],
                                                settled=agent.settled_key(cfg.vips[0]))}
    agent.reconcile_all()
    assert agent.kernel.addresses() is None and Broken.closed and agent._tick_host is None
    assert [r.kind for r in submitted] == [Kind.PERIODIC]


class TickHost:
    """The timer's kernel read: re-seeds the agent's cache from the fake kernel."""

    def __init__(self, agent: Agent, kernel: Kernel) -> None:
        self.agent, self.kernel = agent, kernel

    def addresses(self, fresh: bool = False):
        self.agent.kernel.seed_addresses(self.kernel.rows, self.agent.kernel.generation())
        return tuple(self.kernel.rows)

    def link(self, ifname: str, fresh: bool = False):
        self.agent.kernel.seed_link(LINK, self.agent.kernel.generation())
        return LINK

    def close(self) -> None:
        pass


def test_a_settled_vip_is_reconciled_again_only_when_what_it_decides_on_changes(setup, cfg):
    """At 64 VIPs the quiet reconciles of VIPs with nothing to do were two thirds
    of an idle agent's CPU: a VIP that decided to do nothing is skipped until its
    inputs change, and reconciled anyway every FULL_RECONCILE_EVERY ticks."""
    from vipfloat.agent import FULL_RECONCILE_EVERY
    from vipfloat.authority import Heard

    agent, actor, kernel = setup
    agent.local_redis = Redis("master", cfg.agent.state_dir)
    agent._tick_host = TickHost(agent, kernel)
    ran: list[int] = []

    def run_now(request: Request) -> None:            # the actor, synchronously
        ran.append(agent._ticks)
        actor.handle(request)
    actor.submit = run_now

    def tick() -> bool:
        """One timer tick, every Sentinel heard just before: was the VIP reconciled?"""
        for i in range(len(cfg.sentinel.addresses)):
            agent.feed(Heard(i, time.monotonic()))
        before = len(ran)
        agent.reconcile_all()
        return len(ran) > before

    kernel.add(cfg.vips[0], LINK)
    kernel.calls.clear()
    sentinels_name(agent, HERE)
    assert tick()                                     # first: nothing known, reconciled
    assert actor.settled is not None and kernel.calls == []
    assert [tick() for _ in range(3)] == [False] * 3  # bound here as believed: settled

    sentinels_name(agent, "198.51.100.12", epoch=4)   # a poll names another master
    assert tick() and kernel.calls == ["remove 198.51.100.250/24"]
    assert actor.settled is None                      # it acted: look again next tick
    assert tick() and not tick()                      # then nothing to do: settled

    kernel.rows.append(AddrRow(2, cfg.vips[0].ip, 24))  # bound behind the agent's back
    assert tick() and kernel.calls[-1] == "remove 198.51.100.250/24"

    # However settled, each VIP is reconciled once every FULL_RECONCILE_EVERY ticks.
    assert tick() is True and not tick()
    quiet = [tick() for _ in range(2 * FULL_RECONCILE_EVERY)]
    assert quiet.count(True) == 2
    assert all(t % FULL_RECONCILE_EVERY == 0 for t in ran[-2:])


def test_waiting_on_the_local_redis_or_below_a_majority_is_never_settled(setup, cfg):
    from vipfloat.authority import Heard

    agent, actor, kernel = setup
    agent.local_redis = Redis("slave", cfg.agent.state_dir)     # not promoted yet
    agent._tick_host = TickHost(agent, kernel)
    submitted: list[Request] = []
    actor.submit = lambda request: (submitted.append(request), actor.handle(request))
    sentinels_name(agent, HERE)
    for _ in range(3):
        for i in range(len(cfg.sentinel.addresses)):
            agent.feed(Heard(i, time.monotonic()))
        agent.reconcile_all()
    # Believed here, its Redis still a replica: decided "nothing" each time, but on
    # the local Redis's answer, which can change any moment: asked every tick.
    assert len(submitted) == 3 and len(agent.local_redis.asked) == 3
    assert actor.settled is None and kernel.calls == []

    agent.local_redis = Redis("master", cfg.agent.state_dir)
    kernel.add(cfg.vips[0], LINK)
    agent.reconcile_all()
    assert actor.settled is not None
    # No Sentinel heard for longer than the contact window: below a majority the
    # grace runs on the clock alone, so every tick reconciles.
    agent._authority = agent._authority.__class__.initial(3, time.monotonic() - 60)
    assert agent.settled_key(cfg.vips[0]) is None
    count = len(submitted)
    agent.reconcile_all()
    assert len(submitted) == count + 1


class Wire:
    """The wire watcher: claims of the VIP by other MACs, as scripted."""

    def __init__(self) -> None:
        self.claims: list = []

    def sightings(self, ip, since: float) -> list:
        return [c for c in self.claims if c.t >= since]

    def close(self) -> None:
        pass


def holding_on_a_scripted_wire(agent: Agent, actor: VipActor,
                               monkeypatch) -> tuple[Wire, list[float]]:
    """The actor holds its VIP (since 900.0) on a scripted wire, on a clock of
    the test's (now 1000.0) that only the agent module reads: patching
    time.monotonic itself would move every thread's."""
    import vipfloat.agent as agent_mod

    wire = Wire()
    agent._wires["eth1"] = wire
    clock = [1000.0]
    monkeypatch.setattr(agent_mod, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                           time=time.time))
    actor.live.held, actor.live.acquired_at = True, 900.0
    return wire, clock


def test_a_conflict_is_probed_every_second_and_over_soon_after_the_other_host_lets_go(
        setup, cfg, monkeypatch):
    """A slow release elsewhere (a stalled VM) must not read as a long conflict:
    while one lasts, the holder probes every CONFLICT_REPROBE, and it is over
    once two such probes went unanswered, not after two whole intervals (20 s)."""
    from vipfloat.agent import CONFLICT_REPROBE
    from vipfloat.wire import Sighting

    agent, actor, kernel = setup
    assert cfg.agent.conflict_probe_interval == 10.0           # the default
    wire, clock = holding_on_a_scripted_wire(agent, actor, monkeypatch)
    probes: list[float] = []
    agent.announcer.send = lambda vip, link, frames=None: probes.append(clock[0]) \
        if frames else None
    other = bytes.fromhex("02000000000c")

    wire.claims = [Sighting(999.5, cfg.vips[0].ip, other)]
    actor._probe_for_conflicts()
    assert actor.live.conflict_mac == other.hex(":") and probes == [1000.0]
    clock[0] += CONFLICT_REPROBE / 2                            # not yet due
    actor._probe_for_conflicts()
    assert probes == [1000.0]
    clock[0] += CONFLICT_REPROBE / 2 + 0.01                     # due: a second probe
    actor._probe_for_conflicts()
    assert probes == [1000.0, 1001.01] and actor.live.conflict_mac is not None
    # The other host answered last at 1001.0; two re-probes later it is over.
    wire.claims.append(Sighting(1001.0, cfg.vips[0].ip, other))
    clock[0] = 1001.0 + 2 * CONFLICT_REPROBE + 0.1
    actor._probe_for_conflicts()
    assert actor.live.conflict_mac is None
    # No conflict: back to the configured interval, and the wider window it brings
    # back does not take that conflict's claims for a new one.
    for _ in range(20):
        clock[0] += CONFLICT_REPROBE + 0.1
        actor._probe_for_conflicts()
        assert actor.live.conflict_mac is None
    # Probes at the configured 10 s again (1003.1 was the last re-probe).
    assert [round(b - a, 1) for a, b in zip(probes[2:], probes[3:])] == [11.0, 11.0]
    # A new claim afterwards is a new conflict.
    wire.claims.append(Sighting(clock[0], cfg.vips[0].ip, other))
    actor._probe_for_conflicts()
    assert actor.live.conflict_mac == other.hex(":")


def test_the_new_holder_answering_while_the_vip_moves_there_is_no_conflict(
        setup, cfg, monkeypatch, caplog):
    """A planned failover: the old holder keeps the VIP, writes held, until the
    new holder announces it. Its answers are no conflict: announcing again
    would pull the clients back to the old master (seen in the Vagrant lab)."""
    import logging

    from vipfloat.wire import Sighting

    agent, actor, kernel = setup
    wire, _ = holding_on_a_scripted_wire(agent, actor, monkeypatch)
    sent: list[object] = []
    agent.announcer.send = lambda vip, link, frames=None: sent.append(frames)
    kernel.add(cfg.vips[0], LINK)
    other = bytes.fromhex("02000000000d")
    wire.claims = [Sighting(999.5, cfg.vips[0].ip, other)]

    sentinels_name(agent, "198.51.100.13")          # the master is now elsewhere
    with caplog.at_level(logging.INFO, logger="vipfloat.agent"):
        actor._probe_for_conflicts()
        actor._probe_for_conflicts()
    assert actor.live.conflict_mac is None and actor.live.new_holder_mac == other.hex(":")
    assert [f for f in sent if f is None] == []     # probes only, no announcement
    said = [r.getMessage() for r in caplog.records if "answers for" in r.getMessage()]
    assert said == [f"mymaster: {other.hex(':')} answers for {cfg.vips[0].ip}: the new "
                    "holder, as the move to 198.51.100.13 expects; not announcing again"]

    # The newest config names this host again: the same answers are a conflict,
    # fought with an announcement.
    sentinels_name(agent, HERE, epoch=4)
    actor._probe_for_conflicts()
    assert actor.live.conflict_mac == other.hex(":") and None in sent
    assert actor.live.new_holder_mac is None

    # A conflict under way, then a failover in flight promotes a replica on
    # another host (the belief still names this one): the conflict ends, and
    # nothing is announced any more.
    from vipfloat.authority import Attempted, NewEpoch, Promoting

    sent.clear()
    leader = str(cfg.sentinel.addresses[1])
    for event in (NewEpoch(1, 5, 1000.0), Attempted("mymaster", 1, 1000.0),
                  Promoting("mymaster", 1, leader, "198.51.100.12", 6379, HERE, 6379,
                            "+selected-slave", 1000.0)):
        agent.feed(event)
    assert agent.claim_for(cfg.vips[0])[2].host == HERE        # the belief: still here
    assert agent.claim_for(cfg.vips[0])[3].host == "198.51.100.12"
    actor._probe_for_conflicts()
    assert actor.live.conflict_mac is None and actor.live.new_holder_mac == other.hex(":")
    assert [f for f in sent if f is None] == []
    # Released: nothing of the move is kept.
    actor._note(Verb.RELEASE, "released", True, False)
    assert actor.live.new_holder_mac is None


def test_where_the_vip_is_moving():
    from vipfloat.agent import moving_to
    from vipfloat.authority import Belief, Failover
    from vipfloat.errors import ResolveError

    here = frozenset({ipaddress.ip_address(HERE)})

    def resolve(host: str) -> frozenset:
        if host == "gone.example":
            raise ResolveError("no such host")
        return frozenset({ipaddress.ip_address(host)})

    belief = Belief("198.51.100.12", 6379, 3, False, "poll", 0.0)
    assert moving_to(None, belief, here, resolve) == "198.51.100.12"
    assert moving_to(None, replace(belief, host=HERE), here, resolve) is None
    assert moving_to(None, None, here, resolve) is None
    assert moving_to(None, replace(belief, host="gone.example"), here, resolve) is None
    # A failover in flight decides over the belief, either way.
    failover = Failover(0, "198.51.100.11:26379", 4, "198.51.100.13", 6379, HERE, 6379,
                        "+selected-slave", 0.0, 180.0)
    assert moving_to(failover, replace(belief, host=HERE), here, resolve) == "198.51.100.13"
    assert moving_to(replace(failover, host=HERE), belief, here, resolve) is None


def test_what_settles_a_decision_to_do_nothing():
    from vipfloat.agent import settles
    from vipfloat.decide import Binding, Claim, InFlight, Quorum, VipView

    ok = Quorum(reachable=3, configured=3)
    view = VipView(master="mymaster", claim=Claim(source="t"), binding=Binding.PRESENT,
                   quorum=ok)
    ip_claim = Claim(source="t", new_master="198.51.100.12",
                     new_master_addrs=frozenset({ipaddress.ip_address("198.51.100.12")}))
    assert settles(view, ip_claim) and settles(view, Claim(source="t"))
    from dataclasses import replace
    assert not settles(replace(view, local_role=LocalRole(RedisRole.SLAVE)), ip_claim)
    flight = InFlight(leader="l", replica="198.51.100.12:6379", replica_addrs=frozenset(),
                      old_addrs=frozenset(), age=0.1)
    assert not settles(replace(view, in_flight=flight), ip_claim)
    assert not settles(replace(view, quorum=Quorum(reachable=1, configured=3)), ip_claim)
    assert not settles(replace(view, quorum=replace(ok, fresh=False)), ip_claim)
    assert not settles(replace(view, quorum=None), ip_claim)
    # A name: DNS may answer otherwise next time, or answer at all after failing.
    assert not settles(view, Claim(source="t", new_master="redis-b.example.org"))


def test_the_kernel_caches_version_moves_with_every_change_it_takes_in(cfg):
    from vipfloat.netlink import KernelCache
    from vipfloat.netwatch import AddrChange

    kernel = KernelCache()
    seen = [kernel.version()]

    def moved() -> bool:
        seen.append(kernel.version())
        return seen[-1] != seen[-2]
    row = AddrRow(2, ipaddress.ip_address(HERE), 24)
    kernel.seed_addresses([row], kernel.generation())
    assert moved()
    kernel.seed_addresses([row], kernel.generation())
    assert not moved()                                   # the same dump: nothing new
    kernel.seed_link(LINK, kernel.generation())
    assert moved()
    kernel.seed_link(LINK, kernel.generation())
    assert not moved()
    kernel.address_changed(AddrChange(False, HERE, 2, 24))   # removed behind our back
    assert moved()
    kernel.applied(True, row)
    assert moved()
    kernel.links_changed()
    assert moved()
    kernel.forget()
    assert moved()


def test_a_skipped_vip_counts_as_reconciled_only_while_its_actor_is_alive(setup, cfg):
    from vipfloat.agent import STALL_LIMIT

    agent, actor, kernel = setup
    agent._tick_host = TickHost(agent, kernel)
    sentinels_name(agent, HERE)
    agent.reconcile_all()                                 # seeds the cache
    stuck = SimpleNamespace(submit=lambda request: None, vip=cfg.vips[0],
                            settled=agent.settled_key(cfg.vips[0]),
                            beat=time.monotonic() - STALL_LIMIT - 1)
    agent.actors = {"mymaster": stuck}
    stamps: list[int] = []
    agent.metrics.last_reconcile = SimpleNamespace(set_to_current_time=lambda: stamps.append(1))
    agent.reconcile_all()
    assert stamps == []                                  # wedged: not stamped
    stuck.beat = time.monotonic()
    agent.reconcile_all()
    assert stamps == [1]


def test_an_actor_waits_for_its_chores_only_when_it_has_some(setup, cfg, monkeypatch):
    from vipfloat.agent import CONFLICT_REPROBE, STALL_LIMIT

    agent, actor, kernel = setup
    assert actor._wait() == STALL_LIMIT / 3                 # not held: no chores
    import vipfloat.agent as agent_mod

    monkeypatch.setattr(agent_mod, "time", SimpleNamespace(monotonic=lambda: 1000.0,
                                                           time=time.time))
    actor.live.held, actor.live.acquired_at = True, 900.0
    actor.live.last_probe = 1000.0
    agent.announcer.last_round["mymaster"] = time.time()
    # Held: the next probe is due a whole interval after the last one, not sooner.
    assert actor._wait() == cfg.agent.conflict_probe_interval
    actor.live.conflict_mac = "02:00:00:00:00:0c"
    assert actor._wait() == CONFLICT_REPROBE / 2


def test_when_the_next_chore_is_due():
    from vipfloat.agent import CONFLICT_SETTLE, MIN_WAIT, STALL_LIMIT, VipLive, chores_due_in
    from vipfloat.config import AgentConfig

    cfg = AgentConfig(conflict_probe_interval=10.0, announce_refresh=0.0)
    live = VipLive(held=False, last_probe=0.0, acquired_at=0.0)
    assert chores_due_in(live, cfg, 0.0, 100.0, 5000.0) == STALL_LIMIT / 3
    live.held = True
    live.last_probe = 95.0
    assert chores_due_in(live, cfg, 0.0, 100.0, 5000.0) == 5.0
    # Not probed before CONFLICT_SETTLE after the VIP was acquired.
    live.acquired_at = 100.0 - CONFLICT_SETTLE + 1.0
    live.last_probe = 0.0
    assert chores_due_in(live, cfg, 0.0, 100.0, 5000.0) == 1.0
    live.acquired_at = 0.0
    # Overdue, or a probe that could not run: at least MIN_WAIT, never a spin.
    assert chores_due_in(live, cfg, 0.0, 100.0, 5000.0) == MIN_WAIT
    # Probes off: at most STALL_LIMIT / 3 all the same.
    off = AgentConfig(conflict_probe_interval=0.0, announce_refresh=0.0)
    assert chores_due_in(live, off, 0.0, 100.0, 5000.0) == STALL_LIMIT / 3
    # A refresh due before the probe: the refresh's wall-clock time counts.
    both = AgentConfig(conflict_probe_interval=10.0, announce_refresh=3.0)
    live.last_probe = 99.0
    assert chores_due_in(live, both, 4998.5, 100.0, 5000.0) == 1.5
    assert chores_due_in(live, both, 4990.0, 100.0, 5000.0) == MIN_WAIT
    assert chores_due_in(live, both, 5000.0, 100.0, 5000.0) == 3.0


def test_a_claim_on_the_wire_nudges_the_actor_holding_that_vip_at_once(setup, cfg):
    """The wire watcher tells the agent of another MAC's claim: the actor that
    holds the VIP runs its chores now (a CHORES request), not at its next probe,
    and a flood of claims queues one such request per CONFLICT_REPROBE / 2."""
    from vipfloat.agent import CONFLICT_REPROBE
    from vipfloat.wire import Sighting

    agent, actor, kernel = setup
    other = bytes.fromhex("02000000000c")
    agent.on_claim(Sighting(1000.0, cfg.vips[0].ip, other))
    assert actor.inbox.empty()                          # not held here: nothing to judge
    actor.live.held = True
    agent.on_claim(Sighting(1000.0, ipaddress.ip_address("198.51.100.99"), other))
    assert actor.inbox.empty()                          # another address
    agent.on_claim(Sighting(1000.0, cfg.vips[0].ip, other))
    assert [r.kind for r in actor.inbox.queue] == [Kind.CHORES]
    for t in (1000.1, 1000.2, 1000.0 + CONFLICT_REPROBE / 2 - 0.01):
        agent.on_claim(Sighting(t, cfg.vips[0].ip, other))
    assert len(actor.inbox.queue) == 1
    agent.on_claim(Sighting(1000.0 + CONFLICT_REPROBE / 2, cfg.vips[0].ip, other))
    assert len(actor.inbox.queue) == 2


def test_a_chores_request_runs_the_chores_and_nothing_else(setup, cfg):
    agent, actor, kernel = setup
    ran: list[str] = []
    actor._chores = lambda: ran.append("chores")
    actor.handle = lambda request: ran.append("handle")
    actor.inbox.put(Request(Kind.CHORES))
    actor.inbox.put(Request(Kind.STOP))
    actor._run()
    assert ran == ["chores"]


def test_a_chores_request_behind_a_timer_tick_is_no_reconcile_of_its_own(setup, cfg):
    """Timer ticks are coalesced with what queued behind them; a CHORES request
    must not be the one handled then (a full, announcing reconcile)."""
    agent, actor, kernel = setup
    handled: list[Kind] = []
    actor.handle = lambda request: (handled.append(request.kind),
                                    actor.inbox.put(Request(Kind.STOP)))
    actor._chores = lambda: None
    for kind in (Kind.PERIODIC, Kind.CHORES, Kind.PERIODIC):
        actor.inbox.put(Request(kind))
    actor._run()
    assert handled == [Kind.PERIODIC]


def test_a_probe_interval_below_a_second_is_honoured():
    from vipfloat.agent import VipLive, chores_due_in
    from vipfloat.config import AgentConfig

    live = VipLive(held=True, last_probe=0.0, acquired_at=0.0)
    fast = AgentConfig(conflict_probe_interval=0.2, announce_refresh=0.0)
    assert chores_due_in(live, fast, 0.0, 100.0, 5000.0) == 0.2


def test_a_listener_that_raises_never_stops_the_wire_watcher():
    from vipfloat.wire import SightingLog

    def broken(claim):
        raise RuntimeError("dictionary changed size during iteration")

    log_ = SightingLog(bytes.fromhex("020000000011"),
                       frozenset({ipaddress.ip_address("198.51.100.250")}), on_claim=broken)
    from vipfloat.announce import garp_reply

    frame = garp_reply(bytes.fromhex("02000000000c"), ipaddress.ip_address("198.51.100.250"))
    assert log_.record(frame, 1.0) is not None and len(log_) == 1
