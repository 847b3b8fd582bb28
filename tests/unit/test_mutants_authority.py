"""Which master the agent believes, and when it counts itself cut off: the edges
`make mutate` showed untested (exact boundaries of the hint TTL, the epoch-reset
wait and the contact window; five Sentinels and an even number of them; a reset
timer that must restart; polls nobody answered)."""
from __future__ import annotations

import pytest

from vipfloat.authority import EPOCH_RESET_AFTER, HINT_TTL, Contacts, on_hint, on_poll
from vipfloat.config import Endpoint
from vipfloat.sentinel import MasterInfo, SentinelAnswer

A, B = "198.51.100.11", "198.51.100.12"


def ans(n: int, host: str | None, epoch: int = 0) -> SentinelAnswer:
    ep = Endpoint(f"198.51.100.{n}", 26379)
    if host is None:
        return SentinelAnswer(ep, error="unreachable", reachable=False)
    return SentinelAnswer(ep, MasterInfo("mymaster", host, 6379, epoch, ("master",)))


def poll(belief, answers, now, configured=3):
    return on_poll(belief, answers, configured, now)


# --- hints --------------------------------------------------------------------------

def test_a_hint_names_the_host_and_port_it_was_given():
    b = on_hint(None, B, 6380, "+switch-master from 198.51.100.13", now=2.0)
    assert (b.addr, b.provisional, b.source, b.since) == (
        "198.51.100.12:6380", True, "+switch-master from 198.51.100.13", 2.0)
    assert on_hint(None, "2001:db8::12", 6380, "hook", now=0).addr == "[2001:db8::12]:6380"


def test_a_hint_with_nothing_believed_before_yields_to_any_sentinel_configuration():
    # No configuration is superseded, so even config-epoch 0 is newer.
    b = on_hint(None, B, 6379, "hook", now=0)
    b = poll(b, [ans(11, A, 0)] * 3, now=1)
    assert (b.host, b.epoch, b.provisional) == (A, 0, False)


def test_the_hint_ttl_is_inclusive():
    b = poll(None, [ans(11, A, 4)] * 3, now=0)
    b = on_hint(b, B, 6379, "hook", now=1.0)
    lagging = [ans(11, A, 4)] * 3
    assert poll(b, lagging, now=1.0 + HINT_TTL).host == B             # still within the TTL
    assert poll(b, lagging, now=1.0 + HINT_TTL + 0.25).host == A      # expired


# --- polls --------------------------------------------------------------------------

@pytest.mark.parametrize("answers", [[], [ans(11, None)] * 3])
def test_a_poll_nobody_answered_changes_nothing(answers):
    b = poll(None, [ans(11, A, 4)] * 3, now=0)
    assert poll(b, answers, now=5) == b
    assert poll(None, answers, now=5) is None


def test_a_belief_records_the_sentinel_and_the_moment_it_came_from():
    b = poll(None, [ans(12, A, 4), ans(11, B, 5)], now=7.5)
    assert (b.addr, b.epoch, b.provisional, b.source, b.since, b.lower_since) == (
        "198.51.100.12:6379", 5, False, "Sentinel 198.51.100.11:26379, config-epoch 5", 7.5, None)


def test_the_same_configuration_polled_again_keeps_the_belief():
    b = poll(None, [ans(11, A, 4)] * 3, now=0)
    assert poll(b, [ans(11, A, 4)] * 3, now=5) == b


# --- epochs reset by a majority -------------------------------------------------------

def test_the_reset_is_believed_exactly_when_the_wait_is_over():
    b = poll(None, [ans(11, A, 9)] * 3, now=0)
    low = [ans(11, B, 2)] * 3
    b = poll(b, low, now=10.0)                                        # the wait starts
    assert poll(b, low, now=10.0 + EPOCH_RESET_AFTER - 0.5).epoch == 9
    assert poll(b, low, now=10.0 + EPOCH_RESET_AFTER).host == B


@pytest.mark.parametrize("interruption", [
    [ans(11, A, 9)] * 3,                      # the majority names the believed epoch again
    [ans(11, B, 2), ans(12, None), ans(13, None)],   # only one Sentinel says the lower one
], ids=["same-epoch", "minority"])
def test_the_reset_wait_starts_again_after_an_interruption(interruption):
    b = poll(None, [ans(11, A, 9)] * 3, now=0)
    low = [ans(11, B, 2)] * 3
    b = poll(b, low, now=1.0)
    b = poll(b, interruption, now=10.0)
    assert b.lower_since is None
    b = poll(b, low, now=20.0)                                        # the wait starts again
    assert (b.host, b.lower_since) == (A, 20.0)
    assert poll(b, low, now=1.0 + EPOCH_RESET_AFTER).host == A        # not from the first
    assert poll(b, low, now=20.0 + EPOCH_RESET_AFTER).host == B


@pytest.mark.parametrize("agreeing, reset", [(2, False), (3, True)])
def test_a_reset_needs_a_majority_of_five(agreeing, reset):
    b = poll(None, [ans(11, A, 9)] * 5, now=0, configured=5)
    low = [ans(11 + i, B, 2) for i in range(agreeing)] + [ans(20, None)] * (5 - agreeing)
    for t in (1.0, 1.0 + EPOCH_RESET_AFTER, 100.0):
        b = poll(b, low, now=t, configured=5)
    assert b.host == (B if reset else A)


# --- contacts and quorum -----------------------------------------------------------------

def test_the_agent_default_window_is_one_second_from_construction():
    q = Contacts.start(3, now=0.0)
    assert [q.reachable(t) for t in (0.0, 1.0, 1.25)] == [3, 3, 0]


def test_a_sentinel_heard_exactly_one_window_ago_still_counts():
    q = Contacts.start(3, now=0, window=0.5)
    for i in range(3):
        q = q.heard(i, 4.0)
    assert q.reachable(4.5) == 3 and q.below_for(4.5) == 0
    assert q.reachable(4.75) == 0


@pytest.mark.parametrize("configured, heard, lost_at", [
    (4, (10.0, 9.5, 9.0, 8.5), 9.0),           # majority 3: the third most recent contact
    (2, (10.0, 9.0), 9.0),                      # majority 2: both, so the older one
    (5, (10.0, 9.75, 9.5, 9.0, 8.5), 9.5),
])
def test_the_quorum_is_lost_when_the_majority_th_most_recent_contact_goes_stale(
        configured, heard, lost_at):
    q = Contacts.start(configured, now=0, window=1.0)
    for i, t in enumerate(heard):
        q = q.heard(i, t)
    assert q.next_check(lost_at) == lost_at + 1.0 + 0.001
    assert q.below_for(lost_at + 1.0) == 0
    assert q.below_for(lost_at + 1.25) == 1.25
