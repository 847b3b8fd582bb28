"""The agent's decisions: config-epochs, hints, quorum and its grace timer, local
health. All on a fake clock."""
from __future__ import annotations

import ipaddress

from vipfloat.authority import (EPOCH_RESET_AFTER, HINT_TTL, Authority, Contacts, Heard, Started,
                                on_hint, on_poll, regained, step)
from vipfloat.config import Endpoint, QuorumPolicy
from vipfloat.decide import (Binding, Claim, LocalRole, Quorum, RedisRole, Snapshot, Verb,
                             VipView, decide)
from vipfloat.sentinel import MasterInfo, SentinelAnswer

ip = ipaddress.ip_address
HERE = frozenset({ip("198.51.100.11")})


def ans(n: int, host: str | None, epoch: int = 0) -> SentinelAnswer:
    ep = Endpoint(f"198.51.100.{n}", 26379)
    if host is None:
        return SentinelAnswer(ep, error="unreachable", reachable=False)
    return SentinelAnswer(ep, MasterInfo("mymaster", host, 6379, epoch, ("master",)))


# --- belief: the newest configuration wins, hints are not undone by laggards -------

def test_first_poll_takes_the_highest_epoch():
    b = on_poll(None, [ans(11, "198.51.100.11", 3), ans(12, "198.51.100.12", 4)], 3, now=0)
    assert (b.host, b.epoch, b.provisional) == ("198.51.100.12", 4, False)


def test_hint_is_believed_at_once_and_a_lagging_poll_cannot_undo_it():
    b = on_poll(None, [ans(11, "198.51.100.11", 4)] * 3, 3, now=0)
    b = on_hint(b, "198.51.100.12", 6379, "+promoted-slave from 198.51.100.13", now=1)
    assert (b.host, b.provisional, b.epoch) == ("198.51.100.12", True, 4)
    # Observers still say .11 at epoch 4 until their next hello: ignored.
    for t in (1.5, 2.0, 3.0):
        b = on_poll(b, [ans(11, "198.51.100.11", 4)] * 3, 3, now=t)
        assert b.host == "198.51.100.12"
    # The new configuration arrives with epoch 5: confirmed.
    b = on_poll(b, [ans(11, "198.51.100.11", 4), ans(12, "198.51.100.12", 5)], 3, now=3.5)
    assert (b.host, b.epoch, b.provisional) == ("198.51.100.12", 5, False)
    # And once confirmed, a laggard at epoch 4 changes nothing.
    assert on_poll(b, [ans(11, "198.51.100.11", 4)] * 3, 3, now=4).host == "198.51.100.12"


def test_unconfirmed_hint_expires():
    b = on_poll(None, [ans(11, "198.51.100.11", 4)] * 3, 3, now=0)
    b = on_hint(b, "198.51.100.12", 6379, "hook", now=1)
    assert on_poll(b, [ans(11, "198.51.100.11", 4)] * 3, 3, now=1 + HINT_TTL - 1).provisional
    b = on_poll(b, [ans(11, "198.51.100.11", 4)] * 3, 3, now=1 + HINT_TTL + 1)
    assert (b.host, b.provisional) == ("198.51.100.11", False)


def test_newer_epoch_overrides_a_hint_naming_someone_else():
    b = on_hint(None, "198.51.100.12", 6379, "hook", now=0)
    b = on_poll(b, [ans(11, "198.51.100.13", 7)], 3, now=1)
    assert (b.host, b.epoch) == ("198.51.100.13", 7)


def test_epochs_reset_by_a_majority_are_believed_after_a_while():
    b = on_poll(None, [ans(11, "198.51.100.11", 9)] * 3, 3, now=0)
    low = [ans(11, "198.51.100.12", 1), ans(12, "198.51.100.12", 1), ans(13, None)]
    b = on_poll(b, low, 3, now=1)
    assert b.host == "198.51.100.11"
    b = on_poll(b, low, 3, now=1 + EPOCH_RESET_AFTER / 2)
    assert b.host == "198.51.100.11"
    b = on_poll(b, low, 3, now=1 + EPOCH_RESET_AFTER + 0.1)
    assert (b.host, b.epoch) == ("198.51.100.12", 1)


def test_a_single_lagging_sentinel_never_resets():
    b = on_poll(None, [ans(11, "198.51.100.11", 9)] * 3, 3, now=0)
    lone = [ans(11, "198.51.100.12", 1), ans(12, None), ans(13, None)]
    for t in range(0, 100, 5):
        b = on_poll(b, lone, 3, now=t)
    assert b.host == "198.51.100.11"


# --- contacts and quorum ----------------------------------------------------------------

def test_quorum_is_lost_from_the_last_contact_not_from_when_it_is_noticed():
    q = Contacts.start(3, now=0, window=1.0)
    for t in (0.25, 0.5, 0.75, 1.0):           # pongs from all three
        for i in range(3):
            q = q.heard(i, t)
    q = q.heard(0, 1.25)                         # then only our own Sentinel answers
    q = q.heard(0, 1.5)
    assert q.reachable(1.5) == 3 and q.below_for(1.5) == 0   # within the window
    q = q.heard(0, 2.25)
    assert q.reachable(2.25) == 1
    assert q.below_for(2.25) == 1.25           # since the last contact at 1.0


def test_a_single_missed_pong_is_no_quorum_loss():
    q = Contacts.start(3, now=0, window=1.0)
    for i in range(3):
        q = q.heard(i, 0.0)
    q = q.heard(0, 0.6)
    q = q.heard(1, 0.6)                          # the third is silent for 0.7 s
    assert q.below_for(0.7) == 0 and q.reachable(0.7) == 3
    q = q.heard(2, 0.8)
    assert q.reachable(1.2) == 3


def test_two_of_three_is_a_majority():
    q = Contacts.start(3, now=0, window=1.0)
    q = q.heard(0, 5)
    q = q.heard(1, 5)
    assert q.reachable(5.5) == 2 and q.below_for(5.5) == 0


# --- decide with quorum and local health ---------------------------------------------

def view(to: str | None, binding: Binding, quorum: Quorum | None = None, role: str | None = None,
         periodic: bool = True) -> VipView:
    claim = Claim(source="Sentinel 198.51.100.12:26379, config-epoch 5", new_master=to,
                  new_master_addrs=frozenset({ip(to)}) if to else frozenset())
    local = None if role is None else LocalRole(RedisRole(role))
    return VipView("mymaster", claim, binding, quorum=quorum, local_role=local, periodic=periodic)


def one(cfg, v: VipView):
    (action,) = decide(Snapshot(HERE, (v,)), cfg)
    return action


OK = Quorum(reachable=3, configured=3)


def test_isolated_holder_keeps_the_vip_during_the_grace_then_fences(cfg):
    q = Quorum(reachable=1, configured=3, below_for=0.4, grace=1.0)
    a = one(cfg, view("198.51.100.11", Binding.PRESENT, q))
    assert a.verb is Verb.NOTHING and "until the grace period ends" in a.reason
    assert "only 1/3 Sentinels reachable for 0.4 s (majority 2, grace 1.0 s)" in a.reason
    q = Quorum(reachable=1, configured=3, below_for=1.2, grace=1.0)
    a = one(cfg, view("198.51.100.11", Binding.PRESENT, q))
    assert a.verb is Verb.RELEASE and not a.graceful
    assert "fencing, this host is probably isolated" in a.reason


def test_keep_policy_never_fences(cfg):
    q = Quorum(reachable=0, configured=3, below_for=100, grace=1.0, policy=QuorumPolicy.KEEP)
    a = one(cfg, view("198.51.100.11", Binding.PRESENT, q))
    assert a.verb is Verb.NOTHING and "on_quorum_loss = keep" in a.reason


def test_no_acquiring_without_quorum(cfg):
    q = Quorum(reachable=1, configured=3, below_for=0.1, grace=5)
    a = one(cfg, view("198.51.100.11", Binding.ABSENT, q, role="master"))
    assert a.verb is Verb.NOTHING and "not acquiring anything" in a.reason


def test_healed_host_acts_only_after_a_majority_has_answered_again(cfg):
    """Back in contact after an isolation, this host still believes what its own
    Sentinel told it while cut off (itself as master): it must not take the VIP
    back on that."""
    stale = Quorum(reachable=3, configured=3, fresh=False)
    a = one(cfg, view("198.51.100.11", Binding.ABSENT, stale, role="master"))
    assert a.verb is Verb.NOTHING and "waiting for their answers before acting" in a.reason
    fresh = Quorum(reachable=3, configured=3, fresh=True)
    assert one(cfg, view("198.51.100.11", Binding.ABSENT, fresh, role="master")).verb \
        is Verb.ACQUIRE


def test_local_redis_must_be_master_before_acquiring(cfg):
    a = one(cfg, view("198.51.100.11", Binding.ABSENT, OK, role="slave"))
    assert a.verb is Verb.NOTHING
    assert "local Redis answers ROLE as slave: not acquiring" in a.reason
    a = one(cfg, view("198.51.100.11", Binding.ABSENT, OK, role="unreachable"))
    assert a.verb is Verb.NOTHING and "ROLE as unreachable" in a.reason
    assert one(cfg, view("198.51.100.11", Binding.ABSENT, OK, role="master")).verb is Verb.ACQUIRE


def test_periodic_reconcile_does_not_reannounce(cfg):
    a = one(cfg, view("198.51.100.11", Binding.PRESENT, OK, role="master"))
    assert a.verb is Verb.NOTHING and "is this host and holds the VIP" in a.reason
    a = one(cfg, view("198.51.100.11", Binding.PRESENT, OK, role="master", periodic=False))
    assert a.verb is Verb.ANNOUNCE


def test_master_elsewhere_releases_gracefully(cfg):
    a = one(cfg, view("198.51.100.12", Binding.PRESENT, OK))
    assert a.verb is Verb.RELEASE and a.graceful
    assert a.reason == ("new master 198.51.100.12 is another host; VIP bound here "
                        "(Sentinel 198.51.100.12:26379, config-epoch 5)")


def test_no_belief_yet_does_nothing(cfg):
    a = one(cfg, view(None, Binding.PRESENT, OK))
    assert a.verb is Verb.NOTHING and "no Sentinel has named a master yet" in a.reason


def test_operator_order_works_without_quorum(cfg):
    q = Quorum(reachable=0, configured=3, below_for=100, grace=1.0)
    v = VipView("mymaster", Claim(source="vipfloat release", order=Verb.RELEASE),
                Binding.PRESENT, quorum=q)
    a = one(cfg, v)
    assert a.verb is Verb.RELEASE and not a.graceful


def test_a_leader_in_the_middle_of_a_failover_is_no_authority():
    # From +promoted-slave until +switch-master, the leader reports the new epoch
    # with the old address: believing it would undo the promotion.
    b = on_poll(None, [ans(11, "198.51.100.11", 0)] * 3, 3, now=0)
    b = on_hint(b, "198.51.100.12", 6379, "+promoted-slave", now=1)
    leader = SentinelAnswer(Endpoint("198.51.100.13", 26379),
                            MasterInfo("mymaster", "198.51.100.11", 6379, 1,
                                       ("master", "failover_in_progress")))
    b = on_poll(b, [ans(11, "198.51.100.11", 0), ans(12, "198.51.100.11", 0), leader], 3, now=1.1)
    assert (b.host, b.provisional) == ("198.51.100.12", True)
    b = on_poll(b, [ans(11, "198.51.100.12", 1)], 3, now=2)
    assert (b.host, b.epoch, b.provisional) == ("198.51.100.12", 1, False)


def test_next_check_is_when_the_majority_would_go_stale():
    q = Contacts.start(3, now=0, window=1.0)
    q = q.heard(0, 2.0)
    q = q.heard(1, 1.5)
    q = q.heard(2, 1.0)
    # The second most recent contact (1.5) decides: silence after it loses the majority.
    assert abs(q.next_check(1.6) - 2.501) < 1e-9
    assert q.below_for(2.4) == 0 and q.below_for(2.51) > 0
    assert q.next_check(3.0) == 3.0            # already stale: check now


def test_a_slow_start_is_no_quorum_loss():
    # Built at 0, listening only from 5 (a slow host's imports and setup).
    state = Authority.initial(3, now=0)
    assert state.below(5.0)
    state = step(state, Started(5.0))
    assert state.contacts.reachable(5.5) == 3 and not state.below(5.5)


def test_regaining_the_majority_polls_at_once():
    # Beliefs are acted on again only after a poll a majority answered: the
    # agent must not sit out a whole reconcile interval before asking.
    state = Authority.initial(3, now=0)                      # silent since 0
    polls = []
    for index in range(3):
        before, state = state, step(state, Heard(index, 10.0))
        polls.append(regained(before, state, 10.0))
    assert polls == [False, True, False]   # 1 of 3: still cut off; 2 of 3: poll; 3: in touch


def test_a_host_without_quorum_still_lets_go_for_another_master(cfg):
    """Releasing needs no quorum (it never makes two holders); a host too starved
    to hear the pongs, or hearing only one Sentinel that names another master,
    must not keep the VIP until the grace or the next poll."""
    for q in (Quorum(reachable=1, configured=3, below_for=0.2, grace=5.0),
              Quorum(reachable=3, configured=3, fresh=False)):
        a = one(cfg, view("198.51.100.12", Binding.PRESENT, q))
        assert a.verb is Verb.RELEASE and a.graceful, a.reason
        assert "new master 198.51.100.12 is another host; VIP bound here (" in a.reason
    # ... but it keeps one it believes is its own until the grace ends.
    q = Quorum(reachable=1, configured=3, below_for=0.2, grace=5.0)
    assert one(cfg, view("198.51.100.11", Binding.PRESENT, q)).verb is Verb.NOTHING


def test_a_graceful_release_counts_an_announcement_made_just_before_the_event(cfg, caplog):
    """The new master announces on +promoted-slave, often before this host hears
    of the failover: that announcement must end the wait, not a second one."""
    import logging

    from vipfloat import apply, wire

    vip = cfg.vips[0]
    asked = []

    class FakeWire:
        def wait_sighting(self, ip, since, timeout):
            asked.append((ip, since, timeout))
            return wire.Sighting(t=99.2, ip=ip, mac=bytes.fromhex("020000000002"))

    effects = apply.Effects(host=None, wire=FakeWire(), since=100.0, release_wait=1.0)
    with caplog.at_level(logging.INFO):
        apply.await_new_holder(vip, effects)
    assert asked == [(vip.ip, 100.0 - apply.RECENT_CLAIM, 1.0)]
    assert "02:00:00:00:00:02 announced itself 800.0 ms before the event" in caplog.text


def test_a_release_resets_connections_before_and_after_removing_the_vip(cfg, monkeypatch):
    """A client reconnecting between the first reset and the removal must not keep
    a socket on a host that has let go (seen in the partial-partition drill: a
    fenced host acknowledged writes after its fence)."""
    from vipfloat import apply
    from vipfloat.decide import Action
    from vipfloat.netlink import Link

    vip = cfg.vips[0]
    calls = []
    monkeypatch.setattr(apply, "reset_connections", lambda ip: calls.append(("reset", ip)))

    class Host:
        def remove(self, v, link):
            calls.append(("remove", v.ip))
            return True

    class Announcer:
        def stop(self, v):
            calls.append(("stop announcing", v.ip))

    effects = apply.Effects(Host(), announcer=Announcer(), reset_connections=True)
    action = Action(Verb.RELEASE, vip.master, "fencing")
    link = Link(index=2, name=vip.interface, mac=bytes(6), up=True)
    event = apply.Event(role="agent")
    assert apply.execute(action, vip, link, effects, cfg, event) is True
    assert calls == [("reset", vip.ip), ("stop announcing", vip.ip), ("remove", vip.ip),
                     ("reset", vip.ip)]
