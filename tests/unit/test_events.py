"""Sentinel's pub/sub payloads as the agent parses them (subscribe.parse_event):
every channel it uses, the exact event it makes, and the shapes it drops."""
from __future__ import annotations

import pytest

from vipfloat.subscribe import SentinelEvent, parse_event

A, C = "198.51.100.11", "198.51.100.13"


def test_switch_master():
    data = f"mymaster {A} 6379 {C} 6380"
    assert parse_event("+switch-master", data) == SentinelEvent("+switch-master", "mymaster", C,
                                                                6380, data)
    assert parse_event("+switch-master", f"mymaster {A} 6379 {C}") is None
    assert parse_event("+switch-master", f"mymaster {A} 6379 {C} port") is None


def test_promoted_slave():
    data = f"slave {C}:6380 {C} 6380 @ mymaster {A} 6379"
    assert parse_event("+promoted-slave", data) == SentinelEvent("+promoted-slave", "mymaster", C,
                                                                 6380, data)
    # Six words are enough (the master's address is not used); five are not.
    assert parse_event("+promoted-slave", f"slave {C}:6380 {C} 6380 @ m") == SentinelEvent(
        "+promoted-slave", "m", C, 6380, f"slave {C}:6380 {C} 6380 @ m")
    assert parse_event("+promoted-slave", f"slave {C}:6380 {C} 6380 @") is None
    assert parse_event("+promoted-slave", f"slave {C}:6380 {C} 6380 # m {A} 6379") is None


def test_new_epoch_and_promotion_steps_keep_their_payload():
    assert parse_event("+new-epoch", "7") == SentinelEvent("+new-epoch", None, data="7", epoch=7)
    biggest = "9" * 19
    assert parse_event("+new-epoch", biggest) == SentinelEvent("+new-epoch", None, data=biggest,
                                                               epoch=int(biggest))
    data = f"slave {C}:6380 {C} 6380 @ mymaster {A} 6379"
    assert parse_event("+selected-slave", data) == SentinelEvent(
        "+selected-slave", "mymaster", data=data, replica=(C, 6380), old_master=(A, 6379))


@pytest.mark.parametrize("channel", ["+tilt", "-tilt"])
def test_tilt_concerns_every_master(channel):
    assert parse_event(channel, "#tilt mode entered") == SentinelEvent(
        channel, None, data="#tilt mode entered")


@pytest.mark.parametrize("data, master", [
    (f"slave {C}:6380 {C} 6380 @ mymaster {A} 6379", "mymaster"),   # an instance of a master
    (f"master mymaster {A} 6379", "mymaster"),                       # the master itself
    ("master mymaster", "mymaster"),
    ("master", None),
    (f"sentinel abc {A} 26379", None),                               # neither
    (f"slave {C}:6380 {C} 6380 @", None),                            # @ with nothing after it
    (f"slave @ {C} 6380 @ mymaster {A} 6379", "{C}".format(C=C)),    # the first @ counts
])
def test_the_master_a_poke_event_concerns(data, master):
    assert parse_event("+sdown", data) == SentinelEvent("+sdown", master, data=data)


def test_events_not_followed_are_dropped():
    assert parse_event("+vote-for-leader", "abc 7") is None
    assert parse_event("+sentinel", f"sentinel abc {A} 26379 @ mymaster {A} 6379") is None


def test_tilt_names_no_master_whatever_its_payload():
    assert parse_event("+tilt", "master mymaster") == SentinelEvent("+tilt", None,
                                                                   data="master mymaster")
    assert parse_event("-tilt", "x @ mymaster") == SentinelEvent("-tilt", None,
                                                                data="x @ mymaster")


def test_the_master_right_after_the_last_word_but_one():
    assert parse_event("+sdown", "slave x @ mymaster").master == "mymaster"
