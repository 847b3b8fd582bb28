"""Acting on the failover leader's promotion (issue 13): the leader's steps as
parsed from pub/sub, the in-flight failover in the agent's state machine, and
the decision rows that bind early, hold the old master's writes and let go
when the new holder announces itself. Pure, on a fake clock."""
from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from vipfloat.authority import (DEFAULT_FAILOVER_TIMEOUT, Aborted, Attempted, Authority,
                                Checked, Hinted, NewEpoch, Polled, Promoting, Unsubscribed,
                                step)
from vipfloat.config import Endpoint, QuorumPolicy
from vipfloat.decide import (Binding, Claim, InFlight, LocalRole, Quorum, RedisRole, Snapshot,
                             Verb, VipView, decide)
from vipfloat.sentinel import MasterInfo, SentinelAnswer, parse_master_reply
from vipfloat.subscribe import CHANNELS, parse_event

ip = ipaddress.ip_address
A, B, C = "198.51.100.11", "198.51.100.12", "198.51.100.13"
LEADER = "198.51.100.12:26379"


# --- the leader's steps, as published --------------------------------------------------

def test_promotion_steps_name_the_replica_and_the_master_it_replaces():
    data = f"slave {C}:6379 {C} 6379 @ mymaster {A} 6379"
    for channel in ("+selected-slave", "+failover-state-send-slaveof-noone",
                    "+failover-state-wait-promotion"):
        e = parse_event(channel, data)
        assert e is not None and channel in CHANNELS
        assert (e.master, e.replica, e.old_master) == ("mymaster", (C, 6379), (A, 6379))
        assert not e.is_hint      # a step is no new master yet


@pytest.mark.parametrize("data", [
    f"master mymaster {A} 6379",                       # a master event, not a replica's
    f"slave {C}:6379 {C} 6379 @ mymaster {A}",          # truncated
    f"slave {C}:6379 {C} port @ mymaster {A} 6379",     # not a port
    f"slave {C}:6379 {C} 6379 # mymaster {A} 6379",     # no @
    f"slave {C}:6379 {C} 6379 @ mymaster {A} 6379 x",   # one word too many
])
def test_a_promotion_step_of_another_shape_is_dropped(data):
    assert parse_event("+selected-slave", data) is None


def test_new_epoch_and_try_failover():
    e = parse_event("+new-epoch", "7")
    assert e is not None and (e.master, e.epoch) == (None, 7) and "+new-epoch" in CHANNELS
    assert parse_event("+new-epoch", "seven") is None
    assert parse_event("+new-epoch", "7 8") is None
    assert parse_event("+new-epoch", "9" * 20) is None      # beyond a 64-bit epoch
    t = parse_event("+try-failover", f"master mymaster {A} 6379")
    assert t is not None and t.master == "mymaster" and "+try-failover" in CHANNELS
    for abort in ("-failover-abort-slave-timeout", "-failover-abort-not-elected",
                  "-failover-abort-no-good-slave"):
        a = parse_event(abort, f"master mymaster {A} 6379")
        assert a is not None and a.master == "mymaster" and abort in CHANNELS


def test_failover_timeout_is_read_from_sentinel_master():
    m = parse_master_reply(["name", "mymaster", "ip", A, "port", "6379", "config-epoch", "3",
                            "failover-timeout", "5000"])
    assert m.failover_timeout_ms == 5000


# --- the failover in flight, in the state machine ------------------------------------------

def ans(n: int, host: str, epoch: int, flags: tuple[str, ...] = ("master",),
        timeout_ms: int | None = 4000) -> SentinelAnswer:
    return SentinelAnswer(Endpoint(f"198.51.100.{n}", 26379),
                          MasterInfo("mymaster", host, 6379, epoch, flags,
                                     failover_timeout_ms=timeout_ms))


def polled(now: float, host: str = A, epoch: int = 6, timeout_ms: int | None = 4000) -> Polled:
    return Polled({"mymaster": tuple(ans(11 + i, host, epoch, timeout_ms=timeout_ms)
                                     for i in range(3))}, now)


def step_of(now: float, host: str = C, index: int = 1, stage: str = "+selected-slave",
            master: str = "mymaster") -> Promoting:
    return Promoting(master, index, LEADER, host, 6379, A, 6379, stage, now)


def run(*events, state: Authority | None = None) -> Authority:
    state = state or Authority.initial(3, now=0.0)
    for event in events:
        state = step(state, event)
    return state


def leading(epoch: int = 7, at: float = 1.0, index: int = 1) -> tuple:
    """The leader's +new-epoch and +try-failover, as sentinelStartFailover publishes them."""
    return (NewEpoch(index, epoch, at), Attempted("mymaster", index, at))


def test_a_leaders_step_at_a_newer_epoch_is_followed():
    state = run(polled(0.5), *leading(), step_of(1.1))
    f = state.failover("mymaster", 1.2)
    assert f is not None
    assert (f.leader, f.epoch, f.host, f.port, f.old_addr, f.since, f.timeout, f.stage) == (
        1, 7, C, 6379, f"{A}:6379", 1.1, 4.0, "+selected-slave")
    assert f.describe() == f"the failover leader (Sentinel {LEADER}, epoch 7)"


def test_later_steps_of_the_same_failover_keep_its_start():
    state = run(polled(0.5), *leading(), step_of(1.1),
                step_of(1.2, stage="+failover-state-send-slaveof-noone"),
                step_of(1.3, stage="+failover-state-wait-promotion"))
    f = state.failover("mymaster", 1.4)
    assert f is not None and f.since == 1.1 and f.stage == "+failover-state-wait-promotion"


def test_a_step_at_the_epoch_already_believed_is_stale():
    state = run(polled(0.5, epoch=7), *leading(epoch=7), step_of(1.1))
    assert state.failover("mymaster", 1.2) is None and not state.failovers


def test_a_step_whose_start_was_not_seen_is_not_followed():
    # Subscribed after +try-failover: the epoch it runs at is unknown.
    state = run(polled(0.5), NewEpoch(1, 7, 1.0), step_of(1.1))
    assert state.failover("mymaster", 1.2) is None
    # Another Sentinel's +try-failover gives no epoch to this leader's steps.
    state = run(polled(0.5), *leading(index=2), step_of(1.1, index=1))
    assert state.failover("mymaster", 1.2) is None
    # +try-failover before any +new-epoch from that Sentinel: nothing to run at.
    state = run(polled(0.5), Attempted("mymaster", 1, 1.0), step_of(1.1))
    assert state.failover("mymaster", 1.2) is None


def test_no_step_is_followed_before_any_configuration_is_known():
    state = run(*leading(), step_of(1.1))
    assert state.failover("mymaster", 1.2) is None


def test_an_older_failover_does_not_replace_a_newer_one():
    state = run(polled(0.5), *leading(epoch=8, index=1), step_of(1.1, host=C, index=1),
                *leading(epoch=7, index=2, at=1.2), step_of(1.3, host=B, index=2))
    f = state.failover("mymaster", 1.4)
    assert f is not None and (f.epoch, f.host) == (8, C)


def test_a_new_failover_replaces_an_older_one_and_starts_anew():
    state = run(polled(0.5), *leading(epoch=7, index=1), step_of(1.1, host=C, index=1),
                *leading(epoch=8, index=2, at=1.5), step_of(1.6, host=B, index=2))
    f = state.failover("mymaster", 1.7)
    assert f is not None and (f.epoch, f.host, f.leader, f.since) == (8, B, 2, 1.6)


def test_the_leaders_abort_ends_it_and_another_sentinels_does_not():
    state = run(polled(0.5), *leading(), step_of(1.1))
    kept = step(state, Aborted("mymaster", 0, 1.5))
    assert kept.failover("mymaster", 1.6) is not None
    ended = step(state, Aborted("mymaster", 1, 1.5))
    assert ended.failover("mymaster", 1.6) is None and not ended.failovers
    # The aborted attempt's epoch is forgotten: a late step of it is not followed.
    assert step(ended, step_of(1.7)).failover("mymaster", 1.8) is None
    # Another master's attempt by the same Sentinel is kept.
    other = run(polled(0.5), *leading(), Attempted("other", 1, 1.0), Aborted("mymaster", 1, 1.5))
    assert dict(other.attempts) == {("other", 1): 7}
    # A Sentinel's attempt for one master leaves its attempt for another.
    both = run(polled(0.5), NewEpoch(1, 7, 1.0), Attempted("other", 1, 1.0),
               Attempted("mymaster", 1, 1.1))
    assert dict(both.attempts) == {("other", 1): 7, ("mymaster", 1): 7}


def test_failover_timeout_ends_it():
    state = run(polled(0.5, timeout_ms=4000), *leading(), step_of(1.0))
    assert state.failover("mymaster", 5.0) is not None
    assert state.failover("mymaster", 5.01) is None
    assert step(state, Checked(5.01)).failovers == {}
    assert step(state, Checked(4.9)).failovers


def test_sentinels_default_failover_timeout_until_a_poll_tells():
    state = run(polled(0.5, timeout_ms=None), *leading(), step_of(1.0))
    f = state.failover("mymaster", 1.0)
    assert f is not None and f.timeout == DEFAULT_FAILOVER_TIMEOUT == 180.0


def test_sentinels_confirmation_ends_it():
    state = run(polled(0.5), *leading(), step_of(1.1))
    hinted = step(state, Hinted("mymaster", C, 6379, "+promoted-slave from Sentinel", 1.9))
    assert not hinted.failovers and hinted.belief("mymaster").host == C
    # A poll of the new configuration (observers after the leader's hello).
    confirmed = step(state, polled(2.5, host=C, epoch=7))
    assert not confirmed.failovers and confirmed.belief("mymaster").epoch == 7
    # Lagging observers and the leader itself (failover_in_progress) confirm nothing.
    lagging = step(state, Polled({"mymaster": (ans(11, A, 6), ans(12, A, 7, (
        "master", "failover_in_progress")), ans(13, A, 6))}, 1.5))
    assert lagging.failover("mymaster", 1.6) is not None


def test_losing_the_leaders_subscription_ends_it():
    state = run(polled(0.5), *leading(), step_of(1.1))
    assert step(state, Unsubscribed(0, 1.5)).failover("mymaster", 1.6) is not None
    assert step(state, Unsubscribed(1, 1.5)).failover("mymaster", 1.6) is None


# --- the decision rows ---------------------------------------------------------------------

HERE_C = frozenset({ip(C)})          # the chosen replica's host
HERE_A = frozenset({ip(A)})          # the old master's host, holding the VIP
OK = Quorum(reachable=3, configured=3)
OLD = Claim(source=f"newest config: Sentinel {A}:26379, config-epoch 6", new_master=A,
            new_master_addrs=frozenset({ip(A)}))
FLIGHT = InFlight(leader=f"the failover leader (Sentinel {LEADER}, epoch 7)",
                  replica=f"{C}:6379", replica_addrs=frozenset({ip(C)}),
                  old_addrs=frozenset({ip(A)}), age=0.05)
SOURCE = f" (newest config: Sentinel {A}:26379, config-epoch 6)"
MASTER, SLAVE = LocalRole(RedisRole.MASTER), LocalRole(RedisRole.SLAVE)


def one(cfg, local: frozenset, binding: Binding = Binding.ABSENT, **view):
    view.setdefault("quorum", OK)
    view.setdefault("in_flight", FLIGHT)
    snap = Snapshot(local, (VipView("mymaster", OLD, binding, **view),))
    (action,) = decide(snap, cfg)
    return action


def test_the_chosen_replica_binds_once_role_says_master(cfg):
    a = one(cfg, HERE_C, local_role=MASTER)
    assert a.verb is Verb.ACQUIRE and a.hold_writes is None
    assert a.reason == (f"the failover leader (Sentinel {LEADER}, epoch 7) promoted this "
                        f"host's Redis {C}:6379; ROLE is master, ahead of Sentinel's "
                        "+promoted-slave" + SOURCE)


@pytest.mark.parametrize("role, shown", [
    (SLAVE, "slave"), (None, "unasked"),
    (LocalRole(RedisRole.UNREACHABLE, "refused"), "unreachable (refused)"),
])
def test_the_chosen_replica_waits_while_role_is_not_master(cfg, role, shown):
    a = one(cfg, HERE_C, local_role=role)
    assert a.verb is Verb.NOTHING
    assert a.reason == (f"the failover leader (Sentinel {LEADER}, epoch 7) is promoting this "
                        f"host's Redis {C}:6379, but ROLE is still {shown}: waiting for the "
                        "promotion" + SOURCE)


def test_no_early_bind_without_a_majority(cfg):
    lost = Quorum(reachable=1, configured=3, below_for=0.4, grace=1.0)
    a = one(cfg, HERE_C, local_role=MASTER, quorum=lost)
    assert a.verb is Verb.NOTHING
    assert a.reason == ("only 1/3 Sentinels reachable for 0.4 s (majority 2, grace 1.0 s): "
                        "not acquiring anything" + SOURCE)
    stale = Quorum(reachable=3, configured=3, fresh=False)
    a = one(cfg, HERE_C, local_role=MASTER, quorum=stale)
    assert a.verb is Verb.NOTHING and "waiting for their answers" in a.reason


def test_early_bind_off_leaves_it_to_the_usual_rules(write_config):
    from vipfloat import config as config_mod
    from tests.unit.conftest import BASE

    cfg = config_mod.load(write_config(BASE.replace('[agent]\n', '[agent]\nearly_bind = false\n')))
    a = one(cfg, HERE_C, local_role=MASTER)
    assert a.verb is Verb.NOTHING
    assert a.reason == f"new master {A} is another host; VIP not bound here" + SOURCE


def test_the_chosen_replica_already_holding_does_nothing(cfg):
    a = one(cfg, HERE_C, Binding.PRESENT, local_role=MASTER)
    assert a.verb is Verb.NOTHING
    assert a.reason == (f"the failover leader (Sentinel {LEADER}, epoch 7) is promoting this "
                        f"host's Redis {C}:6379; VIP already bound here" + SOURCE)


def test_the_old_holder_holds_writes_until_the_new_holder_announces(cfg):
    a = one(cfg, HERE_A, Binding.PRESENT)
    assert a.verb is Verb.NOTHING and a.hold_writes is True
    assert a.reason == (f"the failover leader (Sentinel {LEADER}, epoch 7) is promoting "
                        f"{C}:6379, another host: holding this host's writes until the new "
                        "holder announces the VIP" + SOURCE)


def test_the_old_holder_releases_when_the_new_holder_announces(cfg):
    a = one(cfg, HERE_A, Binding.PRESENT, new_holder="02:00:00:00:00:0c", writes_held=True)
    assert a.verb is Verb.RELEASE and not a.graceful
    # The held writes fail with the connections reset by the release; then the
    # hold is lifted (left to run, it would hold Sentinel's link too).
    assert a.hold_writes is False
    assert a.reason == (f"the failover leader (Sentinel {LEADER}, epoch 7) is promoting "
                        f"{C}:6379, another host, and 02:00:00:00:00:0c announced the VIP: "
                        "releasing" + SOURCE + "; letting the held writes through")
    a = one(cfg, HERE_A, Binding.PRESENT, new_holder="02:00:00:00:00:0c")
    assert a.verb is Verb.RELEASE and a.hold_writes is None


def test_the_old_holder_releases_on_the_announcement_even_without_a_majority(cfg):
    lost = Quorum(reachable=1, configured=3, below_for=0.2, grace=1.0)
    a = one(cfg, HERE_A, Binding.PRESENT, new_holder="02:00:00:00:00:0c", quorum=lost)
    assert a.verb is Verb.RELEASE


def test_the_write_hold_is_bounded(cfg):
    a = one(cfg, HERE_A, Binding.PRESENT, in_flight=replace(FLIGHT, age=2.0), writes_held=True)
    assert a.verb is Verb.NOTHING and a.hold_writes is False
    assert a.reason == (f"the failover leader (Sentinel {LEADER}, epoch 7) is promoting "
                        f"{C}:6379, another host: keeping the VIP until the new holder "
                        "announces it" + SOURCE + "; letting the held writes through")
    a = one(cfg, HERE_A, Binding.PRESENT, in_flight=replace(FLIGHT, age=1.99))
    assert a.hold_writes is True


def test_no_write_hold_when_this_host_is_not_the_master_it_replaces(cfg):
    # The VIP is here but the leader replaces a Redis on another host (a VIP
    # left behind): nothing of ours to pause.
    a = one(cfg, HERE_A, Binding.PRESENT, in_flight=replace(FLIGHT, old_addrs=frozenset(
        {ip(B)})))
    assert a.verb is Verb.NOTHING and a.hold_writes is None
    assert "keeping the VIP until the new holder announces it" in a.reason


def test_write_hold_off(write_config):
    from vipfloat import config as config_mod
    from tests.unit.conftest import BASE

    cfg = config_mod.load(write_config(BASE.replace('[agent]\n',
                                                    '[agent]\nfailover_write_hold = 0\n')))
    a = one(cfg, HERE_A, Binding.PRESENT)
    assert a.verb is Verb.NOTHING and a.hold_writes is None


def test_nobody_else_takes_the_vip_while_it_is_in_flight(cfg):
    # The old master's host after letting go: its belief still names itself
    # until Sentinel confirms, and a reconcile must not take the VIP back.
    a = one(cfg, HERE_A, local_role=MASTER, periodic=True)
    assert a.verb is Verb.NOTHING
    assert a.reason == (f"the failover leader (Sentinel {LEADER}, epoch 7) is promoting "
                        f"{C}:6379, another host: not acquiring while it is in flight" + SOURCE)


def test_after_an_abort_the_held_writes_go_through_and_the_vip_stays(cfg):
    a = one(cfg, HERE_A, Binding.PRESENT, in_flight=None, writes_held=True, periodic=True)
    assert a.verb is Verb.NOTHING and a.hold_writes is False
    assert a.reason == (f"master {A} is this host and holds the VIP" + SOURCE
                        + "; letting the held writes through")


def test_after_an_abort_the_old_master_takes_the_vip_back(cfg):
    a = one(cfg, HERE_A, in_flight=None, local_role=MASTER)
    assert a.verb is Verb.ACQUIRE and a.hold_writes is None


def test_after_an_abort_the_early_holder_lets_go(cfg):
    a = one(cfg, HERE_C, Binding.PRESENT, in_flight=None)
    assert a.verb is Verb.RELEASE and a.graceful
    assert a.reason == f"new master {A} is another host; VIP bound here" + SOURCE


def test_a_released_vip_leaves_the_hold_to_run_out(cfg):
    a = one(cfg, HERE_A, in_flight=None, writes_held=True, local_role=SLAVE)
    assert a.verb is Verb.NOTHING and a.hold_writes is None


def test_operator_orders_override_a_failover_in_flight(cfg):
    snap = Snapshot(HERE_A, (VipView("mymaster", Claim(source="vipfloat release",
                                                       order=Verb.RELEASE),
                                     Binding.PRESENT, quorum=OK, in_flight=FLIGHT),))
    assert decide(snap, cfg)[0].verb is Verb.RELEASE


def test_a_foreign_binding_is_never_touched_in_flight(cfg):
    a = one(cfg, HERE_C, Binding.FOREIGN, local_role=MASTER, binding_detail="/32")
    assert a.verb is Verb.NOTHING and "not ours to touch" in a.reason


def test_quorum_policy_is_irrelevant_to_the_hold(cfg):
    keep = Quorum(reachable=1, configured=3, below_for=5.0, grace=1.0,
                  policy=QuorumPolicy.KEEP)
    a = one(cfg, HERE_A, Binding.PRESENT, quorum=keep)
    assert a.hold_writes is True


# --- after review: the early hold's limits ------------------------------------------------

def test_sentinel_has_confirm_within_to_confirm_an_early_bind():
    from vipfloat.authority import CONFIRM_WITHIN, EarlyBound

    state = run(polled(0.5, timeout_ms=180_000), *leading(), step_of(1.0))
    bound = step(state, EarlyBound("mymaster", 7, 1.2))
    assert bound.failover("mymaster", 1.2 + CONFIRM_WITHIN) is not None
    assert bound.failover("mymaster", 1.21 + CONFIRM_WITHIN) is None
    # Not bound early: the failover may take its whole failover-timeout.
    assert state.failover("mymaster", 1.21 + CONFIRM_WITHIN) is not None
    # An early bind for another epoch, or a second one, changes nothing.
    assert step(state, EarlyBound("mymaster", 6, 1.2)) is state
    assert step(bound, EarlyBound("mymaster", 7, 1.4)) is bound
    assert not step(bound, Checked(1.21 + CONFIRM_WITHIN)).failovers


def test_a_hint_naming_another_node_does_not_end_it():
    # A lagging Sentinel's +switch-master of an earlier failover, naming the old
    # master, while the failover to C is in flight.
    state = run(polled(0.5), *leading(), step_of(1.1))
    late = step(state, Hinted("mymaster", A, 6379, "+switch-master from Sentinel", 1.3))
    assert late.failover("mymaster", 1.4) is not None


def test_the_early_holder_lets_go_once_role_is_no_longer_master(cfg):
    # Bound early, then converted back to a replica (Sentinel never confirmed):
    # the usual rules decide, and Sentinel's newest config names A.
    a = one(cfg, HERE_C, Binding.PRESENT, local_role=SLAVE)
    assert a.verb is Verb.RELEASE
    assert a.reason == f"new master {A} is another host; VIP bound here" + SOURCE


def test_fencing_comes_before_a_failover_in_flight(cfg):
    lost = Quorum(reachable=1, configured=3, below_for=1.5, grace=1.0)
    a = one(cfg, HERE_A, Binding.PRESENT, quorum=lost)
    assert a.verb is Verb.RELEASE and not a.graceful
    assert a.reason.startswith("only 1/3 Sentinels reachable for 1.5 s (majority 2, grace "
                               "1.0 s): fencing")
    # Inside the grace, the hold goes on.
    a = one(cfg, HERE_A, Binding.PRESENT, quorum=replace(lost, below_for=0.5))
    assert a.verb is Verb.NOTHING and a.hold_writes is True
    # The early holder is fenced too.
    a = one(cfg, HERE_C, Binding.PRESENT, local_role=MASTER, quorum=lost)
    assert a.verb is Verb.RELEASE and "fencing" in a.reason


def test_a_host_neither_promoted_nor_believed_follows_the_usual_rules(cfg):
    # A VIP left on B while Sentinel names A and promotes C: released as usual.
    here_b = frozenset({ip(B)})
    a = one(cfg, here_b, Binding.PRESENT)
    assert a.verb is Verb.RELEASE and a.graceful
    assert a.reason == f"new master {A} is another host; VIP bound here" + SOURCE
    assert one(cfg, here_b).reason == f"new master {A} is another host; VIP not bound here" \
        + SOURCE


def test_no_write_hold_without_resetting_connections(write_config):
    from vipfloat import config as config_mod
    from tests.unit.conftest import BASE

    cfg = config_mod.load(write_config(BASE.replace('[agent]\n',
                                                    '[agent]\nreset_connections = false\n')))
    # The held writes would be acknowledged once the pause ends: pointless.
    a = one(cfg, HERE_A, Binding.PRESENT)
    assert a.verb is Verb.NOTHING and a.hold_writes is None


def test_non_ascii_digits_in_a_payload_are_dropped_not_raised():
    assert parse_event("+new-epoch", "\u00b2") is None
    assert parse_event("+selected-slave", f"slave {C}:6379 {C} \u00b2 @ mymaster {A} 6379") is None
    assert parse_event("+switch-master", f"mymaster {A} 6379 {B} \u00b2") is None
    assert parse_event("+promoted-slave", f"slave {C}:6379 {C} \u00b2 @ mymaster {A} 6379") is None


def test_the_write_hold_ends_by_half_of_down_after(cfg):
    # Sentinel's commands to the held Redis wait behind its blocked hello
    # PUBLISH: held for down-after-milliseconds, it would be taken for down.
    assert one(cfg, HERE_A, Binding.PRESENT, in_flight=replace(
        FLIGHT, age=0.49, down_after=1.0)).hold_writes is True
    a = one(cfg, HERE_A, Binding.PRESENT, in_flight=replace(FLIGHT, age=0.5, down_after=1.0),
            writes_held=True)
    assert a.verb is Verb.NOTHING and a.hold_writes is False
    # A long down-after leaves failover_write_hold (2 s) as the limit.
    assert one(cfg, HERE_A, Binding.PRESENT, in_flight=replace(
        FLIGHT, age=1.9, down_after=30.0)).hold_writes is True
