"""The decision table: every branch, with the reason it gives."""
from __future__ import annotations

import ipaddress

import pytest

from vipfloat.config import Endpoint
from vipfloat.decide import (Action, Binding, Claim, Snapshot, Verb, VipView,
                             candidate_local_addresses, decide, is_new_master_here, newest)
from vipfloat.sentinel import MasterInfo, SentinelAnswer

ip = ipaddress.ip_address
HERE = frozenset({ip("198.51.100.11"), ip("127.0.0.1"), ip("2001:db8:100::b")})


def hook_claim(to: str, *addrs: str) -> Claim:
    return Claim(source="hook, leader", new_master=to,
                 new_master_addrs=frozenset(ip(a) for a in (addrs or (to,))))


def one(cfg, claim: Claim, binding: Binding = Binding.ABSENT, local=HERE, master="mymaster",
        detail: str = "") -> Action:
    snap = Snapshot(frozenset(local), (VipView(master, claim, binding, detail),))
    (action,) = decide(snap, cfg)
    assert action.master == master
    return action


def test_new_master_here_and_vip_absent_acquires(cfg):
    a = one(cfg, hook_claim("198.51.100.11"))
    assert a.verb is Verb.ACQUIRE
    assert a.reason == "new master 198.51.100.11 is this host (198.51.100.11) (hook, leader)"


def test_new_master_here_and_vip_bound_reannounces(cfg):
    a = one(cfg, hook_claim("198.51.100.11"), Binding.PRESENT)
    assert a.verb is Verb.ANNOUNCE and "already bound, re-announcing" in a.reason


def test_new_master_elsewhere_and_vip_bound_releases(cfg):
    a = one(cfg, hook_claim("198.51.100.12"), Binding.PRESENT)
    assert a.verb is Verb.RELEASE
    assert a.reason == "new master 198.51.100.12 is another host; VIP bound here (hook, leader)"


def test_new_master_elsewhere_and_vip_absent_does_nothing(cfg):
    a = one(cfg, hook_claim("198.51.100.12"))
    assert a.verb is Verb.NOTHING and "VIP not bound here" in a.reason


def test_hostname_is_shown_with_its_addresses(cfg):
    a = one(cfg, hook_claim("redis-b.example", "198.51.100.11"))
    assert a.verb is Verb.ACQUIRE
    assert a.reason.startswith("new master redis-b.example (198.51.100.11) is this host")


def test_ipv6_master(cfg):
    a = one(cfg, hook_claim("2001:db8:100::b"), master="six")
    assert a.verb is Verb.ACQUIRE


def test_foreign_prefix_is_never_touched(cfg):
    a = one(cfg, hook_claim("198.51.100.12"), Binding.FOREIGN, detail="/32")
    assert a.verb is Verb.NOTHING
    assert "as /32, not the configured /24: not ours to touch" in a.reason


def test_loopback_and_vip_never_make_this_host_the_master(cfg):
    # Sentinel monitoring 127.0.0.1 would make every host "the master"; a setup
    # that names the VIP itself would make the holder keep it forever.
    assert one(cfg, hook_claim("127.0.0.1"), Binding.PRESENT).verb is Verb.RELEASE
    local = HERE | {ip("198.51.100.250")}
    assert one(cfg, hook_claim("198.51.100.250"), Binding.PRESENT, local=local).verb is Verb.RELEASE


def test_local_addresses_narrow_the_test(write_config):
    from vipfloat import config as config_mod
    cfg = config_mod.load(write_config("""
        [sentinel]
        addresses = ["198.51.100.11:26379"]
        [[vip]]
        master = "mymaster"
        address = "198.51.100.250/24"
        interface = "eth1"
        local_addresses = ["198.51.100.12", "198.51.100.13"]
        """))
    vip = cfg.vips[0]
    # 198.51.100.11 is on this host but not listed: it does not count.
    assert not is_new_master_here(hook_claim("198.51.100.11"), HERE, vip)
    assert candidate_local_addresses(HERE | {ip("198.51.100.12")}, vip) == {ip("198.51.100.12")}
    assert one(cfg, hook_claim("198.51.100.11")).verb is Verb.NOTHING


def test_unresolvable_claim_does_nothing(cfg):
    a = one(cfg, Claim(source="hook, leader", new_master="ghost", new_master_addrs=frozenset()))
    assert a.verb is Verb.NOTHING and "no usable address" in a.reason


@pytest.mark.parametrize("order, binding, verb, words", [
    (Verb.ACQUIRE, Binding.ABSENT, Verb.ACQUIRE, "operator asked to acquire"),
    (Verb.ACQUIRE, Binding.PRESENT, Verb.ANNOUNCE, "already bound here"),
    (Verb.RELEASE, Binding.PRESENT, Verb.RELEASE, "operator asked to release"),
    (Verb.RELEASE, Binding.ABSENT, Verb.NOTHING, "VIP not bound here"),
])
def test_operator_orders(cfg, order, binding, verb, words):
    a = one(cfg, Claim(source="vipfloat " + order.value, order=order), binding)
    assert a.verb is verb and words in a.reason and a.reason.endswith(f"(vipfloat {order.value})")


def test_decide_covers_every_view(cfg):
    snap = Snapshot(HERE, (VipView("mymaster", hook_claim("198.51.100.11"), Binding.ABSENT),
                           VipView("six", hook_claim("2001:db8:100::c"), Binding.PRESENT),
                           VipView("gone", hook_claim("198.51.100.11"), Binding.ABSENT)))
    verbs = [(a.master, a.verb) for a in decide(snap, cfg)]
    assert verbs == [("mymaster", Verb.ACQUIRE), ("six", Verb.RELEASE), ("gone", Verb.NOTHING)]


def _answer(port: int, host: str | None, epoch: int = 0) -> SentinelAnswer:
    ep = Endpoint("198.51.100.11", port)
    if host is None:
        return SentinelAnswer(ep, error="unreachable: timeout", reachable=False)
    return SentinelAnswer(ep, MasterInfo("mymaster", host, 6379, epoch, ("master",)))


def test_newest_configuration_wins_over_a_lagging_sentinel():
    answers = [_answer(1, "198.51.100.11", 3), _answer(2, "198.51.100.12", 4), _answer(3, None)]
    assert newest(answers).master.host == "198.51.100.12"
    assert newest([_answer(3, None)]) is None
