"""One VIP's actor, end to end on fakes (the kernel, the announcer, the local
Redis): what it asks before acting, and that it takes the VIP's lock only to
act. No root, no network."""
from __future__ import annotations

import ipaddress
import json
import time

import pytest

from vipfloat.agent import Agent, Kind, Request, VipActor
from vipfloat.apply import Event
from vipfloat.authority import Polled
from vipfloat.decide import LocalRole, RedisRole
from vipfloat.errors import LockTimeout
from vipfloat.lock import VipLock
from vipfloat.netlink import AddrRow, Link
from vipfloat.sentinel import MasterInfo, SentinelAnswer

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


@pytest.fixture
def setup(cfg):
    agent = Agent(cfg)
    kernel = Kernel()
    agent.announcer = Announcer()
    actor = VipActor(agent, cfg.vips[0], host=kernel)
    agent.actors = {"mymaster": actor}
    yield agent, actor, kernel
    agent.actors = {}
    agent.stop()


def sentinels_name(agent: Agent, host: str, epoch: int = 3) -> None:
    answers = tuple(SentinelAnswer(ep, MasterInfo("mymaster", host, 6379, epoch, ("master",),
                                                  down_after_ms=1000))
                    for ep in agent.config.sentinel.addresses)
    agent.feed(Polled({"mymaster": answers}, time.monotonic()))


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
