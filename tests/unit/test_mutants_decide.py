"""Every reason decide() can give, word for word, with its verb: the table that
`make mutate` showed was missing (a reworded, emptied or dropped sentence, a
quorum note that never shows, a boundary moved by one, a loop that stops early).
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from vipfloat import config as config_mod
from vipfloat.config import QuorumPolicy
from vipfloat.decide import (Action, Binding, Claim, LocalRole, Quorum, RedisRole, Snapshot,
                             Verb, VipView, decide)

ip = ipaddress.ip_address
# Parsed once, here: these tests are about decide(), not about loading a config.
CFG = config_mod.parse({
    "sentinel": {"addresses": ["198.51.100.11:26379"]},
    "vip": [{"master": "mymaster", "address": "198.51.100.250/24", "interface": "eth1"},
            {"master": "six", "address": "2001:db8:100::250/64", "interface": "eth1"}],
}, Path("/etc/vipfloat/vipfloat.toml"))
# This host: two IPv4 and one IPv6 address on the VIPs' network, and loopback.
HERE = frozenset({ip("198.51.100.11"), ip("198.51.100.13"), ip("127.0.0.1"),
                  ip("2001:db8:100::b")})
SRC = "hook, leader"


def named(to: str | None, *addrs: str, source: str = SRC) -> Claim:
    if to is None and not addrs:
        return Claim(source=source)
    return Claim(source=source, new_master=to,
                 new_master_addrs=frozenset(ip(a) for a in (addrs or (to,))))


def order(verb: Verb) -> Claim:
    return Claim(source=f"vipfloat {verb.value}", order=verb)


LOST = Quorum(reachable=1, configured=3, below_for=2.5, grace=30.0)
STALE = Quorum(reachable=3, configured=3, fresh=False)        # back, not yet asked
OK = Quorum(reachable=3, configured=3)
ME, OTHER = "198.51.100.11", "198.51.100.12"

# (claim, binding, extra VipView fields, verb, graceful, the whole reason)
CASES = [
    (named(OTHER), Binding.FOREIGN, {"binding_detail": "/32"}, Verb.NOTHING, False,
     "198.51.100.250 is on eth1 as /32, not the configured /24: not ours to touch (hook, leader)"),
    (order(Verb.ACQUIRE), Binding.ABSENT, {}, Verb.ACQUIRE, False,
     "operator asked to acquire (vipfloat acquire)"),
    (order(Verb.ACQUIRE), Binding.PRESENT, {}, Verb.ANNOUNCE, False,
     "operator asked to acquire; VIP already bound here, re-announcing (vipfloat acquire)"),
    (order(Verb.RELEASE), Binding.PRESENT, {}, Verb.RELEASE, False,
     "operator asked to release (vipfloat release)"),
    (order(Verb.RELEASE), Binding.ABSENT, {}, Verb.NOTHING, False,
     "operator asked to release; VIP not bound here (vipfloat release)"),
    (named(OTHER), Binding.PRESENT, {}, Verb.RELEASE, True,
     "new master 198.51.100.12 is another host; VIP bound here (hook, leader)"),
    # Letting go needs no quorum, and says what the quorum was.
    (named(OTHER), Binding.PRESENT, {"quorum": LOST}, Verb.RELEASE, True,
     "new master 198.51.100.12 is another host; VIP bound here "
     "(1/3 Sentinels reachable for 2.5 s) (hook, leader)"),
    (named(OTHER), Binding.PRESENT, {"quorum": STALE}, Verb.RELEASE, True,
     "new master 198.51.100.12 is another host; VIP bound here "
     "(3/3 Sentinels reachable, not yet asked) (hook, leader)"),
    (named(OTHER), Binding.PRESENT, {"quorum": OK}, Verb.RELEASE, True,
     "new master 198.51.100.12 is another host; VIP bound here (hook, leader)"),
    (named(ME), Binding.ABSENT, {"quorum": STALE}, Verb.NOTHING, False,
     "3/3 Sentinels reachable again; waiting for their answers before acting (hook, leader)"),
    (named(ME), Binding.ABSENT, {"quorum": LOST}, Verb.NOTHING, False,
     "only 1/3 Sentinels reachable for 2.5 s (majority 2, grace 30.0 s): "
     "not acquiring anything (hook, leader)"),
    (named(ME), Binding.PRESENT, {"quorum": LOST}, Verb.NOTHING, False,
     "only 1/3 Sentinels reachable for 2.5 s (majority 2, grace 30.0 s): "
     "keeping the VIP until the grace period ends (hook, leader)"),
    (named(ME), Binding.PRESENT,
     {"quorum": Quorum(reachable=0, configured=3, below_for=99.0, grace=30.0,
                       policy=QuorumPolicy.KEEP)},
     Verb.NOTHING, False,
     "only 0/3 Sentinels reachable for 99.0 s (majority 2, grace 30.0 s): "
     "keeping the VIP (on_quorum_loss = keep) (hook, leader)"),
    (named(ME), Binding.PRESENT, {"quorum": Quorum(reachable=1, configured=3, below_for=30.5)},
     Verb.RELEASE, False,
     "only 1/3 Sentinels reachable for 30.5 s (majority 2, grace 30.0 s): "
     "fencing, this host is probably isolated (hook, leader)"),
    (named(None), Binding.PRESENT, {}, Verb.NOTHING, False,
     "no Sentinel has named a master yet (hook, leader)"),
    (Claim(source=SRC, new_master="ghost.example"), Binding.ABSENT, {}, Verb.NOTHING, False,
     "new master ghost.example has no usable address (hook, leader)"),
    (named(ME), Binding.PRESENT, {"periodic": True}, Verb.NOTHING, False,
     "master 198.51.100.11 is this host and holds the VIP (hook, leader)"),
    (named(ME), Binding.PRESENT, {}, Verb.ANNOUNCE, False,
     "new master 198.51.100.11 is this host (198.51.100.11); VIP already bound, "
     "re-announcing (hook, leader)"),
    (named(ME), Binding.ABSENT, {"local_role": LocalRole(RedisRole.SLAVE)}, Verb.NOTHING, False,
     "new master 198.51.100.11 is this host (198.51.100.11), but the local Redis answers "
     "ROLE as slave: not acquiring (hook, leader)"),
    (named(ME), Binding.ABSENT, {"local_role": LocalRole(RedisRole.MASTER)}, Verb.ACQUIRE, False,
     "new master 198.51.100.11 is this host (198.51.100.11) (hook, leader)"),
    (named(OTHER), Binding.ABSENT, {}, Verb.NOTHING, False,
     "new master 198.51.100.12 is another host; VIP not bound here (hook, leader)"),
    # How the new master is named: a host name with its addresses, IPv4 first.
    (named("redis-b.example", ME, "2001:db8:100::c"), Binding.ABSENT, {}, Verb.ACQUIRE, False,
     "new master redis-b.example (198.51.100.11, 2001:db8:100::c) is this host "
     "(198.51.100.11) (hook, leader)"),
    (named("redis-b.example", "2001:db8:100::c", "198.51.100.12", "198.51.100.9"),
     Binding.ABSENT, {}, Verb.NOTHING, False,
     "new master redis-b.example (198.51.100.9, 198.51.100.12, 2001:db8:100::c) is another "
     "host; VIP not bound here (hook, leader)"),
    # Only addresses, no name (as a caller that resolved it itself would say).
    (named(None, "2001:db8:100::c", OTHER), Binding.PRESENT, {}, Verb.RELEASE, True,
     "new master 198.51.100.12, 2001:db8:100::c is another host; VIP bound here (hook, leader)"),
    # The addresses this host is the new master by, all of them, in order.
    (named("redis-a.example", ME, "198.51.100.13"), Binding.ABSENT, {}, Verb.ACQUIRE, False,
     "new master redis-a.example (198.51.100.11, 198.51.100.13) is this host "
     "(198.51.100.11, 198.51.100.13) (hook, leader)"),
]


def case_id(case) -> str:
    # Node ids must not hold '::' (an IPv6 address would split them).
    return re.sub(r"[^A-Za-z0-9_.]+", "-", case[-1].removesuffix(" (hook, leader)"))[-60:]


@pytest.mark.parametrize("claim, binding, extra, verb, graceful, reason", CASES,
                         ids=[case_id(c) for c in CASES])
def test_every_reason_word_for_word(claim, binding, extra, verb, graceful, reason):
    view = VipView("mymaster", claim, binding, **extra)
    assert decide(Snapshot(HERE, (view,)), CFG) == (Action(verb, "mymaster", reason, graceful),)


def test_fencing_starts_when_the_grace_period_is_over():
    def verb(below_for: float) -> Verb:
        q = Quorum(reachable=1, configured=3, below_for=below_for, grace=30.0)
        view = VipView("mymaster", named(ME), Binding.PRESENT, quorum=q)
        (action,) = decide(Snapshot(HERE, (view,)), CFG)
        return action.verb
    assert [verb(t) for t in (29.9, 30.0, 30.1)] == [Verb.NOTHING, Verb.RELEASE, Verb.RELEASE]


def test_a_master_no_longer_configured_does_not_stop_the_others():
    views = (VipView("gone", named(ME), Binding.ABSENT),
             VipView("mymaster", named(ME), Binding.ABSENT),
             VipView("also-gone", named(OTHER), Binding.PRESENT),
             VipView("six", named(OTHER), Binding.PRESENT))
    assert decide(Snapshot(HERE, views), CFG) == (
        Action(Verb.NOTHING, "gone", "master not in config"),
        Action(Verb.ACQUIRE, "mymaster",
               "new master 198.51.100.11 is this host (198.51.100.11) (hook, leader)"),
        Action(Verb.NOTHING, "also-gone", "master not in config"),
        Action(Verb.RELEASE, "six",
               "new master 198.51.100.12 is another host; VIP bound here (hook, leader)", True),
    )


def test_a_dual_stack_new_master_named_by_host_name_is_this_host():
    claim = named("redis-a.example", ME, "2001:db8:100::b")
    (action,) = decide(Snapshot(HERE, (VipView("mymaster", claim, Binding.ABSENT),)), CFG)
    assert action == Action(Verb.ACQUIRE, "mymaster",
                            "new master redis-a.example (198.51.100.11, 2001:db8:100::b) is this "
                            "host (198.51.100.11, 2001:db8:100::b) (hook, leader)")
