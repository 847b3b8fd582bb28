"""A VIP's actor following a failover in flight, on fakes (the kernel, the
announcer, the local Redis, the wire): the leader's pub/sub steps go through
Agent.on_event as Sentinel publishes them, and the actor binds early, holds the
old master's writes, releases on the new holder's announcement, and lets the
writes through after an abort."""
from __future__ import annotations

import ipaddress
import logging
import time
from types import SimpleNamespace

import pytest

import vipfloat.agent as agent_mod
from vipfloat.agent import Agent, Kind, Request, VipActor
from vipfloat.decide import LocalRole, RedisRole
from vipfloat.netlink import AddrRow
from vipfloat.subscribe import parse_event
from vipfloat.wire import Sighting

from .test_vip_actor import HERE, Kernel, sentinels_name
from .test_vip_actor import actor_on_fakes

OTHER = "198.51.100.13"


class Ticks:
    """A slice's clock that moves ``step`` seconds each time it is read, so a
    follow slice holds the same number of looks on any machine, however loaded."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return (self.reads - 1) * self.step


@pytest.fixture
def on_fakes(cfg, monkeypatch):
    # The agent module's clock stands still unless a test moves it: a stalled
    # test process must not age the failover past its write-hold window (half
    # of down-after), nor run out a hold (HOLD_SLICE), between two steps.
    still = time.monotonic()
    monkeypatch.setattr(agent_mod, "time", SimpleNamespace(
        monotonic=lambda: still, time=time.time, sleep=time.sleep))
    with actor_on_fakes(cfg) as made:
        made[1].slice_clock = Ticks(0.001)   # 125 looks to a FOLLOW_SLICE of 0.25 s
        yield made
VIP = ipaddress.ip_address("198.51.100.250")


class Redis:
    """The local Redis: ROLE answers in turn (the last one repeats), and every
    CLIENT PAUSE / UNPAUSE it was sent."""

    def __init__(self, *roles: str) -> None:
        self.roles = [LocalRole(RedisRole(r)) for r in roles]
        self.asked = 0
        self.holds: list[tuple[str, int, int | None]] = []

    def role(self, host: str, port: int) -> LocalRole:
        self.asked += 1
        return self.roles[min(self.asked, len(self.roles)) - 1]

    def hold_writes(self, host: str, port: int, ms: int | None) -> str | None:
        self.holds.append((host, port, ms))
        return None

    def close(self) -> None:
        pass


class Wire:
    """The wire watcher: another MAC announces the VIP after ``after`` waits."""

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.waits = 0
        self.seen: list[Sighting] = []

    def sightings(self, ip, since):
        return [s for s in self.seen if s.ip == ip and s.t >= since]

    def wait_sighting(self, ip, since, timeout):
        self.waits += 1
        if self.after is not None and self.waits >= self.after and not self.seen:
            self.seen.append(Sighting(agent_mod.time.monotonic(), VIP,
                                      bytes.fromhex("02000000000d")))
        found = self.sightings(ip, since)
        return found[0] if found else None

    def close(self) -> None:
        pass




LEADER = 1     # the second Sentinel in the config leads


def publish(agent: Agent, channel: str, data: str, index: int = LEADER) -> None:
    event = parse_event(channel, data)
    assert event is not None
    agent.on_event(agent.config.sentinel.addresses[index], event)


def failover_starts(agent: Agent, replica: str, old: str, epoch: int = 4) -> None:
    publish(agent, "+new-epoch", str(epoch))
    publish(agent, "+try-failover", f"master mymaster {old} 6379")
    publish(agent, "+selected-slave", f"slave {replica}:6379 {replica} 6379 @ mymaster {old} 6379")


def drain(actor: VipActor) -> list[Request]:
    out = []
    while not actor.inbox.empty():
        out.append(actor.inbox.get_nowait())
    return out


def test_the_chosen_replica_binds_when_role_says_master(on_fakes, caplog):
    agent, actor, kernel = on_fakes
    agent.local_redis = Redis("slave", "slave", "slave", "master")
    sentinels_name(agent, OTHER, epoch=3)
    failover_starts(agent, HERE, OTHER)
    queued = drain(actor)
    assert [r.kind for r in queued] == [Kind.FAILOVER]
    caplog.set_level(logging.INFO)
    actor.follow(queued[0])
    assert agent.local_redis.asked == 4            # polled until ROLE said master
    assert kernel.calls == ["add 198.51.100.250/24"]
    assert actor.live.held and actor.live.early_bind is not None
    assert actor.live.last_reason == (
        "the failover leader (Sentinel 198.51.100.12:26379, epoch 4) promoted this host's "
        f"Redis {HERE}:6379; ROLE is master, ahead of Sentinel's +promoted-slave "
        f"(newest config: Sentinel 198.51.100.11:26379, config-epoch 3)")
    assert drain(actor) == []                      # done: no successor queued
    # Sentinel's own +promoted-slave: the lead is logged, the failover is over.
    publish(agent, "+promoted-slave", f"slave {HERE}:6379 {HERE} 6379 @ mymaster {OTHER} 6379")
    assert "Sentinel's +promoted-slave came" in caplog.text
    assert "after this host bound the VIP early (failover epoch 4)" in caplog.text
    assert actor.live.early_bind is None and not agent._authority.failovers


def test_a_slow_promotion_is_followed_in_slices(on_fakes):
    agent, actor, kernel = on_fakes
    # Read at 0 (the slice ends at 0.25), then 0.1 and 0.2 in the first look
    # (more to wait), then 0.3 and 0.4 in the second: the slice is over.
    actor.slice_clock = Ticks(0.1)
    agent.local_redis = Redis("slave")
    sentinels_name(agent, OTHER, epoch=3)
    failover_starts(agent, HERE, OTHER)
    actor.follow(drain(actor)[0])
    assert kernel.calls == [] and agent.local_redis.asked == 2
    assert [r.kind for r in drain(actor)] == [Kind.FAILOVER]   # its successor


def test_a_replica_not_chosen_does_not_follow(on_fakes):
    agent, actor, kernel = on_fakes
    agent.local_redis = Redis("slave")
    sentinels_name(agent, OTHER, epoch=3)
    failover_starts(agent, "198.51.100.12", OTHER)
    actor.follow(drain(actor)[0])
    assert kernel.calls == [] and agent.local_redis.asked == 0 and drain(actor) == []


def test_a_stale_epoch_is_not_followed(on_fakes):
    agent, actor, kernel = on_fakes
    agent.local_redis = Redis("master")
    sentinels_name(agent, OTHER, epoch=4)
    failover_starts(agent, HERE, OTHER, epoch=4)
    assert drain(actor) == [] and not agent._authority.failovers


def holding(kernel: Kernel) -> None:
    kernel.rows.append(AddrRow(2, VIP, 24))


def test_the_old_holder_holds_writes_then_releases_on_the_announcement(on_fakes):
    agent, actor, kernel = on_fakes
    holding(kernel)
    actor.live.held = True
    agent.local_redis = Redis("master")
    agent._wires = {"eth1": Wire(after=3)}
    sentinels_name(agent, HERE, epoch=3)
    failover_starts(agent, OTHER, HERE)
    actor.follow(drain(actor)[0])
    holds = agent.local_redis.holds
    # Paused and renewed; just before the release, renewed for as long as the
    # release may take before it resets the connections (release_wait 1 s,
    # pre-release scripts 2 s, and one slice), so the hold cannot lapse first.
    assert len(holds) >= 4 and set(holds[:-2]) == {(HERE, 6379, 500)}
    assert holds[-2] == (HERE, 6379, 3500)
    # Released (its connections reset): the hold is lifted, not left to hold
    # Sentinel's own link to this Redis.
    assert holds[-1] == (HERE, 6379, None)
    assert kernel.calls == ["remove 198.51.100.250/24"]
    assert not actor.live.held and actor.live.hold is None
    assert actor.live.last_reason.startswith(
        "the failover leader (Sentinel 198.51.100.12:26379, epoch 4) is promoting "
        f"{OTHER}:6379, another host, and 02:00:00:00:00:0d announced the VIP: releasing")


def test_an_abort_lets_the_held_writes_through(on_fakes):
    agent, actor, kernel = on_fakes
    holding(kernel)
    actor.live.held = True
    agent.local_redis = Redis("master")
    agent._wires = {"eth1": Wire(after=None)}
    sentinels_name(agent, HERE, epoch=3)
    failover_starts(agent, OTHER, HERE)
    actor.handle(drain(actor)[0])
    assert agent.local_redis.holds == [(HERE, 6379, 500)]
    assert actor.live.hold is not None and actor.live.hold.target == (HERE, 6379)
    publish(agent, "-failover-abort-slave-timeout", f"master mymaster {HERE} 6379")
    (request,) = drain(actor)
    actor.handle(request)
    assert agent.local_redis.holds[-1] == (HERE, 6379, None)   # CLIENT UNPAUSE
    assert actor.live.hold is None and kernel.calls == []  # the VIP stays


def test_another_sentinels_abort_changes_nothing(on_fakes):
    agent, actor, kernel = on_fakes
    agent.local_redis = Redis("master")
    sentinels_name(agent, HERE, epoch=3)
    failover_starts(agent, OTHER, HERE)
    drain(actor)
    publish(agent, "-failover-abort-not-elected", f"master mymaster {HERE} 6379", index=0)
    assert drain(actor) == [] and agent._authority.failovers


def test_losing_the_leader_ends_the_failover_and_decides_again(on_fakes):
    agent, actor, kernel = on_fakes
    agent.local_redis = Redis("master")
    sentinels_name(agent, HERE, epoch=3)
    failover_starts(agent, OTHER, HERE)
    drain(actor)
    agent.on_link(agent.config.sentinel.addresses[0], False)
    assert agent._authority.failovers and drain(actor) == []
    agent.on_link(agent.config.sentinel.addresses[LEADER], False)
    assert not agent._authority.failovers
    assert [r.kind for r in drain(actor)] == [Kind.EVENT]


def test_a_hold_that_fails_is_not_tried_again_in_that_failover(on_fakes):
    agent, actor, kernel = on_fakes
    holding(kernel)
    actor.live.held = True

    class Dead(Redis):
        def hold_writes(self, host, port, ms):
            self.holds.append((host, port, ms))
            return "Connection refused"

    agent.local_redis = Dead("master")
    agent._wires = {"eth1": Wire(after=4)}
    sentinels_name(agent, HERE, epoch=3)
    failover_starts(agent, OTHER, HERE)
    actor.follow(drain(actor)[0])
    assert agent.local_redis.holds == [(HERE, 6379, 500)]     # once, not every renewal
    assert kernel.calls == ["remove 198.51.100.250/24"] and actor.live.hold is None
