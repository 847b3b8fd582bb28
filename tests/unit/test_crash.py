"""Crash failover's rules (vipfloat.crash), row by row on a fake clock: what is
a crash, and when the agent may ask Sentinel to fail over now."""
from __future__ import annotations

from dataclasses import replace

import pytest

from vipfloat.crash import (CONFIRM_PROBES, CONFIRM_WINDOW, CrashView, Probe, Verdict, Watch,
                            asked, confirmed, healthy, judge, observe)
from vipfloat.decide import Quorum
from vipfloat.sentinel import MasterInfo, Replica, parse_replicas

ADDR = "198.51.100.11:6379"
B = Replica("198.51.100.12", 6379, ("slave",), True, 100, "bbbb", info_age_ms=800)
C = Replica("198.51.100.13", 6379, ("slave",), True, 100, "cccc", info_age_ms=5000)
SENTINEL = MasterInfo("mymaster", "198.51.100.11", 6379, 3, ("master",))
VIEW = CrashView(addr=ADDR, believed_here=True, epoch=3, quorum=Quorum(3, 3), replicas=(B, C),
                 sentinel_view=SENTINEL)
SEEN = f"{ADDR} refused 5 connection(s) over 52 ms"


def probes(*kinds: Probe, start: float = 10.0, step: float = 0.013) -> Watch:
    w = Watch()
    for i, kind in enumerate(kinds):
        w = observe(w, kind, start + i * step)
    return w


def crashed() -> Watch:
    return probes(*[Probe.REFUSED] * 5)     # 10.000 .. 10.052


def test_refusals_over_the_window_are_a_crash():
    w = crashed()
    assert (w.down_since, w.refusals) == (10.0, 5)
    assert confirmed(w, 10.0 + CONFIRM_WINDOW) and not confirmed(w, 10.0 + CONFIRM_WINDOW - 0.001)
    verdict, reason = judge(w, VIEW, 10.052)
    assert verdict is Verdict.ASK
    assert reason == (f"{SEEN}: crashed; replica(s) 198.51.100.12:6379, 198.51.100.13:6379 in "
                      "sync, asking Sentinel to fail over now (config-epoch 3)")


def test_too_few_refusals_even_over_a_long_time_are_not_yet():
    w = probes(Probe.REFUSED, Probe.REFUSED, step=0.2)
    assert w.refusals == CONFIRM_PROBES - 1 and not confirmed(w, 11.0)
    verdict, reason = judge(w, VIEW, 10.2)
    assert verdict is Verdict.WAIT
    assert reason == (f"{ADDR} refused 2 connection(s) over 200 ms: confirming (at least 3 over "
                      "50 ms)")


@pytest.mark.parametrize("kind", [Probe.TIMEOUT, Probe.UP, Probe.ERROR])
def test_a_timeout_a_success_or_an_error_is_no_crash(kind):
    # Refused, then anything else: the run is over (a slow or paused Redis is
    # Sentinel's to judge; one that answers again restarted in time).
    w = probes(Probe.REFUSED, Probe.REFUSED, kind, Probe.REFUSED, Probe.REFUSED)
    assert w.down_since == 10.0 + 3 * 0.013 and w.refusals == 2
    assert not confirmed(w, 10.2)
    assert judge(probes(kind), VIEW, 10.2) == (Verdict.NOTHING, f"{ADDR} answers")


def test_a_restart_inside_the_window_is_no_crash():
    w = probes(Probe.REFUSED, Probe.REFUSED, Probe.UP)
    assert w == Watch() and judge(w, VIEW, 10.03)[0] is Verdict.NOTHING


def test_only_while_sentinel_names_this_host():
    verdict, reason = judge(crashed(), replace(VIEW, believed_here=False), 10.052)
    assert (verdict, reason) == (Verdict.NOTHING,
                                 f"{SEEN}, but Sentinel's newest config names another master")


@pytest.mark.parametrize("quorum", [Quorum(1, 3, below_for=0.2), Quorum(3, 3, fresh=False)])
def test_only_with_a_majority_reachable_and_asked(quorum):
    verdict, reason = judge(crashed(), replace(VIEW, quorum=quorum), 10.052)
    assert verdict is Verdict.NOTHING
    assert reason == (f"{SEEN}, but only {quorum.reachable}/3 Sentinels reachable and asked: "
                      "leaving it to Sentinel")


def test_not_while_a_failover_is_in_progress():
    verdict, reason = judge(crashed(), replace(VIEW, in_flight="the failover leader (x)"), 10.052)
    assert (verdict, reason) == (Verdict.NOTHING, f"{SEEN}; a failover is already in progress "
                                                  "(the failover leader (x))")


def test_never_twice_for_one_configuration():
    w = asked(crashed(), 3)
    verdict, reason = judge(w, VIEW, 10.052)
    assert (verdict, reason) == (Verdict.NOTHING, f"{SEEN}; SENTINEL FAILOVER already asked at "
                                                  "config-epoch 3: not again")
    # A new configuration (Sentinel failed over meanwhile, and back): may ask again.
    assert judge(w, replace(VIEW, epoch=4, sentinel_view=replace(SENTINEL, config_epoch=4)),
                 10.052)[0] is Verdict.ASK
    # The asked epoch survives the runs of probes.
    assert observe(observe(w, Probe.UP, 11.0), Probe.REFUSED, 11.1).asked_epoch == 3


def test_not_without_a_replica_in_sync():
    bad = (replace(B, flags=("slave", "s_down")), replace(C, link_ok=False),
           replace(B, host="198.51.100.14", priority=0),
           replace(C, host="198.51.100.15", info_age_ms=30_001))
    verdict, reason = judge(crashed(), replace(VIEW, replicas=bad), 10.052)
    assert verdict is Verdict.NOTHING
    assert reason == (f"{SEEN}, but no replica is in sync (198.51.100.12:6379 flags slave,s_down, "
                      "link ok, priority 100; 198.51.100.13:6379 flags slave, link down, "
                      "priority 100; 198.51.100.14:6379 flags slave, link ok, priority 0; "
                      "198.51.100.15:6379 flags slave, link ok, priority 100): leaving it to "
                      "Sentinel")
    assert judge(crashed(), replace(VIEW, replicas=()), 10.052)[1].endswith(
        "(Sentinel knows none): leaving it to Sentinel")
    assert healthy(replace(C, info_age_ms=30_000)) and healthy(replace(B, priority=1))


def test_sentinel_replicas_is_parsed():
    reply = [None, 5, "junk",                      # not a replica's fields: skipped
             ["name", "x", "ip", "198.51.100.14", "port", "x", "info-refresh", "1"],
             ["ip", "198.51.100.16", "info-refresh", "1"],
             ["name", "x", "ip", "198.51.100.12", "port", "6379", "flags", "slave",
              "master-link-status", "ok", "slave-priority", "100", "info-refresh", "812",
              "runid", "bbbb"],
             {"ip": "2001:db8::13", "port": "6379", "flags": "slave,disconnected",
              "master-link-status": "err", "slave-priority": "0", "info-refresh": "5",
              "master-link-down-time": "1500"},
             ["ip", "198.51.100.15", "port", "6380"],
             ["port", "6379", "info-refresh", "1"]]
    assert parse_replicas(reply) == (
        Replica("198.51.100.12", 6379, ("slave",), True, 100, "bbbb", info_age_ms=812),
        Replica("2001:db8::13", 6379, ("slave", "disconnected"), False, 0, "", info_age_ms=5,
                link_down_ms=1500),
        Replica("198.51.100.15", 6380, (), False, 100, "", info_age_ms=None))
    assert parse_replicas(reply)[1].addr == "[2001:db8::13]:6379"


def test_the_edges_of_the_window():
    w = Watch()
    for t in (0.0, 0.02, 0.04):
        w = observe(w, Probe.REFUSED, t)
    assert w.refusals == CONFIRM_PROBES and confirmed(w, CONFIRM_WINDOW)
    assert not confirmed(w, CONFIRM_WINDOW - 1e-9)
    verdict, reason = judge(w, VIEW, 0.999)
    assert verdict is Verdict.ASK and reason.startswith(
        f"{ADDR} refused 3 connection(s) over 999 ms: crashed")
    assert not healthy(replace(B, info_age_ms=None))


def test_a_sentinel_is_consulted_only_when_all_else_allows_it():
    bare = replace(VIEW, replicas=None, sentinel_view=None)
    assert judge(crashed(), bare, 10.052) == (Verdict.CHECK, f"{SEEN}: asking a Sentinel for "
                                                             "its view")
    # Cheap refusals come first: no Sentinel is asked for them.
    assert judge(crashed(), replace(bare, believed_here=False), 10.052)[0] is Verdict.NOTHING
    assert judge(crashed(), replace(bare, sentinel_view=SENTINEL), 10.052)[0] is Verdict.CHECK
    assert judge(crashed(), replace(bare, replicas=(B,)), 10.052)[0] is Verdict.CHECK


@pytest.mark.parametrize("view, shown", [
    (replace(SENTINEL, host="198.51.100.12"), "198.51.100.12:6379 at config-epoch 3 (master)"),
    (replace(SENTINEL, config_epoch=2), "198.51.100.11:6379 at config-epoch 2 (master)"),
    (replace(SENTINEL, flags=("master", "failover_in_progress")),
     "198.51.100.11:6379 at config-epoch 3 (master,failover_in_progress)"),
])
def test_the_sentinel_to_ask_must_name_this_redis(view, shown):
    verdict, reason = judge(crashed(), replace(VIEW, sentinel_view=view), 10.052)
    assert (verdict, reason) == (Verdict.NOTHING, f"{SEEN}, but the Sentinel to ask names "
                                                  f"{shown}: leaving it to Sentinel")
    # A newer epoch than believed is fine (it names this Redis all the same).
    assert judge(crashed(), replace(VIEW, sentinel_view=replace(SENTINEL, config_epoch=4)),
                 10.052)[0] is Verdict.ASK


def test_a_replica_cut_off_only_by_the_crash_is_in_sync():
    down = replace(B, link_ok=False, link_down_ms=2000)
    assert healthy(down) and not healthy(replace(down, link_down_ms=2001))
    assert not healthy(replace(down, link_down_ms=None))


def test_numbers_of_up_to_18_digits():
    big = "9" * 18
    (r,) = parse_replicas([["ip", "198.51.100.12", "port", "6379", "info-refresh", big,
                            "master-link-down-time", "9" * 19]])
    assert r.info_age_ms == int(big) and r.link_down_ms is None
