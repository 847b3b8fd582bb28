"""The agent's rules as one state machine (vipfloat.authority.step): what it
believes, whether that is fresh enough to act on, and the quorum a VIP's
decision reads, driven event by event on a fake clock."""
from __future__ import annotations

import ipaddress

import pytest

from vipfloat.authority import (DEFAULT_GRACE, Authority, Checked, Heard, Hinted, Polled,
                                Started, Trust, claim, quorum, regained, step, trust)
from vipfloat.config import Endpoint, QuorumPolicy
from vipfloat.sentinel import MasterInfo, SentinelAnswer

A, B, C = "198.51.100.11", "198.51.100.12", "198.51.100.13"
RELEASE = QuorumPolicy.RELEASE


def ans(n: int, host: str | None, epoch: int = 0, down_ms: int = 1000) -> SentinelAnswer:
    ep = Endpoint(f"198.51.100.{n}", 26379)
    if host is None:
        return SentinelAnswer(ep, error="unreachable", reachable=False)
    return SentinelAnswer(ep, MasterInfo("mymaster", host, 6379, epoch, ("master",),
                                         down_after_ms=down_ms))


def polled(now: float, *hosts: str | None, epoch: int = 1) -> Polled:
    """One poll of three Sentinels; None for one that did not answer."""
    return Polled({"mymaster": tuple(ans(11 + i, h, epoch) for i, h in enumerate(hosts))}, now)


def fresh(state: Authority, now: float) -> bool:
    return quorum(state, "mymaster", now, None, RELEASE).fresh


def run(*events, state: Authority | None = None) -> Authority:
    state = state or Authority.initial(3, now=0.0)
    for event in events:
        state = step(state, event)
    return state


# --- confirmed: beliefs are acted on only after a poll a majority answered -----------

def test_nothing_is_fresh_before_the_first_poll():
    state = run(Heard(0, 0.1), Heard(1, 0.1), Heard(2, 0.1))
    assert not fresh(state, 0.2) and state.belief("mymaster") is None


def test_a_poll_a_majority_answered_confirms():
    state = run(polled(0.5, A, A, None))
    assert fresh(state, 0.6) and state.belief("mymaster").host == A


def test_one_sentinels_answer_after_a_quorum_loss_confirms_nothing():
    # Cut off (silent from 0.5 to 3.0), then a poll only our own Sentinel answers:
    # even with the other two's pongs back, the belief stays stale until a
    # majority has answered a poll.
    state = run(polled(0.5, A, A, A), Checked(3.0))
    assert not fresh(state, 3.0) and not state.quorum_ok
    state = run(Heard(1, 3.1), Heard(2, 3.1), polled(3.2, A, None, None), state=state)
    assert state.quorum_ok and not fresh(state, 3.3)
    state = step(state, polled(3.5, A, B, None))
    assert fresh(state, 3.6)


def test_a_silence_nobody_checked_still_unconfirms():
    # The main loop never ran between the cut and the pongs' return (a starved
    # host): the contact that ends the silence sees it, and clears confirmed.
    state = run(polled(0.5, A, A, A))
    state = run(Heard(0, 5.0), Heard(1, 5.0), state=state)
    assert not state.below(5.0) and not fresh(state, 5.0)


def test_a_missed_pong_inside_the_window_keeps_it_confirmed():
    state = run(polled(0.5, A, A, A), Heard(0, 1.2), Heard(1, 1.2), Checked(1.4))
    assert fresh(state, 1.4) and state.quorum_ok


def test_below_a_majority_the_quorum_is_never_fresh_even_if_still_confirmed():
    state = run(polled(0.5, A, A, A))
    # No event since: a view at 3.0 must already say stale.
    assert state.confirmed and not fresh(state, 3.0)


def test_a_poll_below_a_majority_unconfirms_and_reports_the_loss():
    state = run(polled(0.5, A, A, A))
    state = step(state, polled(2.0, A, None, None))
    assert not state.quorum_ok and not state.confirmed


def test_checked_within_the_majority_changes_nothing():
    state = run(polled(0.5, A, A, A))
    assert step(state, Checked(1.0)) is state


# --- hints and polls --------------------------------------------------------------------

def test_a_hint_is_recorded_as_the_belief():
    state = run(polled(0.5, A, A, A), Hinted("mymaster", B, 6379, "hook (observer) via agent", 1.0))
    belief = state.belief("mymaster")
    assert (belief.host, belief.provisional, belief.source) == (
        B, True, "hook (observer) via agent")


def test_a_repeated_hint_is_the_same_state():
    state = run(Hinted("mymaster", B, 6379, "+switch-master from a", 1.0))
    assert step(state, Hinted("mymaster", B, 6379, "+switch-master from b", 1.1)) is state


def test_a_hint_for_one_master_leaves_the_others():
    state = run(Polled({"other": (ans(11, C, 2),) * 3}, 0.5),
                Hinted("mymaster", B, 6379, "hook", 1.0))
    assert state.belief("other").host == C and state.belief("mymaster").host == B


def test_a_poll_counts_as_contact_with_those_that_answered():
    state = Authority.initial(3, now=0.0)
    state = step(state, polled(5.0, A, None, A))
    assert state.contacts.reachable(5.0) == 2


def test_a_poll_nobody_answered_keeps_the_belief():
    state = run(polled(0.5, A, A, A))
    assert step(state, polled(0.9, None, None, None)).belief("mymaster") == \
        state.belief("mymaster")


def test_started_counts_every_sentinel_as_heard_and_keeps_what_was_learnt():
    state = run(polled(0.5, A, A, A))
    restarted = step(state, Started(50.0))
    assert restarted.contacts.reachable(50.5) == 3
    assert restarted.belief("mymaster") == state.belief("mymaster")


def test_regained_is_the_event_that_brings_back_a_majority():
    state = Authority.initial(3, now=0.0)
    one = step(state, Heard(0, 9.0))
    two = step(one, Heard(1, 9.0))
    assert (regained(state, one, 9.0), regained(one, two, 9.0),
            regained(two, step(two, Heard(2, 9.0)), 9.0)) == (False, True, False)


# --- the quorum a decision reads ------------------------------------------------------

def test_the_grace_follows_sentinels_down_after_unless_configured():
    state = run(Polled({"mymaster": (ans(11, A, down_ms=1500), ans(12, A, down_ms=3000),
                                     ans(13, None))}, 0.5))
    assert quorum(state, "mymaster", 1.0, None, RELEASE).grace == 3.0
    assert quorum(state, "mymaster", 1.0, 7.0, RELEASE).grace == 7.0
    # Never heard down-after-milliseconds: Sentinel's own default, 30 s. A shorter
    # one would fence a healthy master whose Sentinels are slow to answer.
    assert quorum(state, "unknown", 1.0, None, RELEASE).grace == DEFAULT_GRACE == 30.0


def test_the_quorum_view_counts_from_the_real_cut():
    state = run(polled(0.5, A, A, A))
    q = quorum(state, "mymaster", 2.0, None, QuorumPolicy.KEEP)
    assert (q.reachable, q.configured, q.policy, q.fresh) == (0, 3, QuorumPolicy.KEEP, False)
    assert q.below_for == pytest.approx(1.5)          # from the last contact, at 0.5


# --- the claim a belief makes -----------------------------------------------------------

def test_claims_say_where_the_belief_came_from():
    addrs = frozenset({ipaddress.ip_address(B)})
    state = run(polled(0.5, A, A, A), Hinted("mymaster", B, 6379, "+promoted-slave", 1.0))
    c = claim(state.belief("mymaster"), addrs)
    assert (c.source, c.new_master, c.new_master_addrs) == ("hint: +promoted-slave", B, addrs)
    c = claim(run(polled(0.5, A, A, A)).belief("mymaster"), addrs)
    assert c.source == "newest config: Sentinel 198.51.100.11:26379, config-epoch 1"
    assert claim(None, addrs).source == "no Sentinel answer yet"
    assert claim(None, addrs).new_master is None


# --- how far a hook request is believed ------------------------------------------------

def test_a_trusted_sender_is_believed_whatever_it_names():
    b = run(polled(0.5, A, A, A)).belief("mymaster")
    assert trust(b, True, C, 6379) is Trust.SENDER and trust(None, True, C, 6379) is Trust.SENDER


def test_anyone_else_is_acted_on_only_when_naming_the_believed_master():
    b = run(polled(0.5, A, A, A)).belief("mymaster")
    assert trust(b, False, A, 6379) is Trust.BELIEVED
    assert trust(b, False, A, 6380) is Trust.POLL_FIRST       # same host, another port
    assert trust(b, False, C, 6379) is Trust.POLL_FIRST
    assert trust(None, False, A, 6379) is Trust.POLL_FIRST    # nothing believed yet
    assert Trust.POLL_FIRST.value == "none: polling the Sentinels first"


def test_a_master_may_be_named_anything_even_mapping():
    # A review found _frozen(mapping, **{master: belief}) raising TypeError for
    # a master named "mapping": every hint for it was lost.
    state = run(Hinted("mapping", B, 6379, "+switch-master", 0.5))
    assert state.belief("mapping").host == B



# --- edges `make mutate` showed untested ----------------------------------------------

def test_exactly_a_majority_answering_a_poll_is_a_quorum():
    state = step(Authority.initial(3, now=0.0), polled(5.0, A, A, None))
    assert state.quorum_ok is True and state.confirmed is True
    assert state.contacts.reachable(5.0) == 2


def test_a_poll_with_fewer_answers_than_sentinels_counts_only_those():
    # A master's answers tuple shorter than the Sentinels configured (a
    # half-built round) must not raise, nor count the missing ones.
    state = step(Authority.initial(3, now=0.0),
                 Polled({"mymaster": (ans(11, A, 1), ans(12, A, 1))}, 5.0))
    assert state.contacts.reachable(5.0) == 2 and state.belief("mymaster").host == A


def test_through_the_machine_a_hint_survives_a_lagging_poll_until_its_ttl():
    from vipfloat.authority import HINT_TTL

    state = run(polled(0.5, A, A, A), Hinted("mymaster", B, 6380, "+promoted-slave", 1.0))
    belief = state.belief("mymaster")
    assert (belief.host, belief.port, belief.since, belief.provisional) == (B, 6380, 1.0, True)
    state = step(state, polled(2.0, A, A, A))                      # laggards: ignored
    assert state.belief("mymaster").host == B
    state = step(state, polled(1.0 + HINT_TTL + 1, A, A, A))       # never confirmed
    assert state.belief("mymaster").host == A


def test_through_the_machine_a_majority_at_a_lower_epoch_is_believed_after_a_while():
    from vipfloat.authority import EPOCH_RESET_AFTER

    state = run(polled(0.5, A, A, A, epoch=9))
    for t in (1.0, 1.0 + EPOCH_RESET_AFTER / 2):
        state = step(state, polled(t, B, B, None, epoch=1))
        assert state.belief("mymaster").host == A
    state = step(state, polled(1.0 + EPOCH_RESET_AFTER + 0.1, B, B, None, epoch=1))
    assert (state.belief("mymaster").host, state.belief("mymaster").epoch) == (B, 1)


def test_checked_below_a_majority_records_false_not_just_falsy():
    state = run(polled(0.5, A, A, A), Checked(3.0))
    assert state.quorum_ok is False and state.confirmed is False


def test_the_contact_window_is_kept_through_start_and_restart():
    state = Authority.initial(3, now=0.0, window=0.5)
    assert state.contacts.window == 0.5
    assert step(state, Started(10.0)).contacts.window == 0.5
    # Heard at 0; at 0.7 the 0.5 s window has passed: below, for 0.7 s.
    assert state.below(0.7) and not state.below(0.5)
