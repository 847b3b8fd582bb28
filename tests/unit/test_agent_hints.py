"""How far the agent trusts a hook request, by who sent it; and the main loop's
sleep, which must not spin when every Sentinel fails fast."""
from __future__ import annotations

import pytest

from vipfloat.agent import Agent, sleep_for
from vipfloat.agent_socket import Peer
from vipfloat.authority import Polled
from vipfloat.errors import TransientError
from vipfloat.sentinel import MasterInfo, SentinelAnswer

ROOT = Peer(pid=100, uid=0, gid=0)
SENTINEL_USER = Peer(pid=200, uid=105, gid=105, groups=(998,))   # redis, in group vipfloat
TO_B = ["mymaster", "observer", "start", "198.51.100.11", "6379", "198.51.100.12", "6379"]
TO_C = ["mymaster", "observer", "start", "198.51.100.11", "6379", "198.51.100.13", "6379"]


class Inbox:
    """Stands in for a VIP actor: records what it is handed."""

    def __init__(self) -> None:
        self.requests: list = []

    def submit(self, request) -> None:
        self.requests.append(request)

    class inbox:  # noqa: N801 - mimics VipActor.inbox
        @staticmethod
        def qsize() -> int:
            return 0


@pytest.fixture
def agent(cfg):
    a = Agent(cfg)
    a.actors = {"mymaster": Inbox()}
    yield a
    a.actors = {}
    a.stop()


def believe_b(agent: Agent, cfg) -> None:
    """What a poll of the Sentinels makes the agent believe: b, epoch 3."""
    info = MasterInfo("mymaster", "198.51.100.12", 6379, 3, ("master",))
    answers = tuple(SentinelAnswer(ep, info) for ep in cfg.sentinel.addresses)
    agent.feed(Polled({"mymaster": answers}, 0.0))


def test_sentinels_user_naming_the_believed_master_is_acted_on_at_once(agent, cfg):
    believe_b(agent, cfg)
    agent.hook(TO_B, 1.0, SENTINEL_USER)
    (request,) = agent.actors["mymaster"].requests
    assert request.kind == "hook" and request.event.new_master == "198.51.100.12:6379"
    assert request.event.role == "hook (unverified sender)"
    assert agent.belief("mymaster").source == "Sentinel 198.51.100.11:26379, config-epoch 3"


def test_sentinels_user_naming_another_master_changes_no_belief_and_waits_for_a_poll(agent,
                                                                                      cfg):
    # A forged request naming another host released the VIP, and the hint
    # lasted 15 s and could be renewed; naming 127.0.0.1 and a port of its own
    # sent the ROLE probe (with the Redis password) there.
    believe_b(agent, cfg)
    first = agent.hook(TO_C, 1.0, SENTINEL_USER)
    second = agent.hook(TO_C, 1.1, SENTINEL_USER)
    assert agent.actors["mymaster"].requests == []            # not acted on yet
    assert agent.belief("mymaster").host == "198.51.100.12"   # belief untouched
    agent.release_after_poll()                                # after the next poll
    (request,) = agent.actors["mymaster"].requests             # one reconcile for both
    assert request.event.role == "hook (unverified sender)" and request.event.new_master == ""
    request.reply.set_result((0, "new master 198.51.100.12 is another host"))
    assert first.result(0) == second.result(0) == (0, "new master 198.51.100.12 is another host")
    assert agent.belief("mymaster").host == "198.51.100.12"


def test_parked_requests_are_bounded(agent, cfg):
    from vipfloat.agent import MAX_QUEUED

    believe_b(agent, cfg)
    for _ in range(MAX_QUEUED):
        agent.hook(TO_C, 1.0, SENTINEL_USER)
    with pytest.raises(TransientError, match="agent busy: 64 requests wait for a poll"):
        agent.hook(TO_C, 1.0, SENTINEL_USER)


def test_an_agreeing_request_passes_on_the_belief_not_its_own_text(agent, cfg):
    # Its role and from-address are anyone's words: the action scripts, the
    # record and the decision line get the belief's.
    believe_b(agent, cfg)
    argv = ["mymaster", "x$(id)", "start", "203.0.113.9", "1", "198.51.100.12", "6379"]
    agent.hook(argv, 1.0, SENTINEL_USER)
    (request,) = agent.actors["mymaster"].requests
    assert (request.event.role, request.event.old_master, request.event.new_master) == (
        "hook (unverified sender)", "", "198.51.100.12:6379")


def test_root_is_trusted_as_a_direct_hook_would_be(agent, cfg):
    believe_b(agent, cfg)
    agent.hook(TO_C, 1.0, ROOT)
    assert len(agent.actors["mymaster"].requests) == 1
    belief = agent.belief("mymaster")
    assert (belief.host, belief.provisional, belief.source) == (
        "198.51.100.13", True, "hook (observer) via agent")


def test_with_no_belief_yet_a_group_member_waits_for_the_poll(agent):
    agent.hook(TO_B, 1.0, SENTINEL_USER)
    assert agent.actors["mymaster"].requests == [] and agent.belief("mymaster") is None


def test_a_flood_of_requests_for_one_vip_is_refused_as_busy(agent, cfg):
    class Full(Inbox):
        class inbox:  # noqa: N801
            @staticmethod
            def qsize() -> int:
                return 64

    agent.actors = {"mymaster": Full()}
    with pytest.raises(TransientError, match="agent busy: 64 requests queued for mymaster"):
        agent.hook(TO_B, 1.0, ROOT)


def test_ipv6_masters_are_bracketed_for_the_action_scripts(agent):
    argv = ["mymaster", "leader", "start", "2001:db8::11", "6379", "2001:db8::12", "6379"]
    agent.hook(argv, 1.0, ROOT)
    event = agent.actors["mymaster"].requests[0].event
    assert (event.old_master, event.new_master) == ("[2001:db8::11]:6379", "[2001:db8::12]:6379")


# --- the main loop's sleep -----------------------------------------------------------------

def test_the_loop_sleeps_to_its_tick_when_the_quorum_was_already_lost():
    # Every Sentinel refusing at once: the old loop never slept (77 % of a core).
    assert sleep_for(now=10.0, deadline=10.25, below_at_start=True, below_now=True,
                     next_check=10.0) == pytest.approx(0.25)


def test_the_loop_wakes_when_the_quorum_is_lost_during_its_sleep():
    assert sleep_for(now=10.0, deadline=12.0, below_at_start=False, below_now=True,
                     next_check=10.0) == 0.0
    # ... and otherwise sleeps until the loss could happen, or its tick.
    assert sleep_for(now=10.0, deadline=12.0, below_at_start=False, below_now=False,
                     next_check=11.0) == pytest.approx(1.0)
    assert sleep_for(now=10.0, deadline=12.0, below_at_start=False, below_now=False,
                     next_check=13.0) == pytest.approx(2.0)
    assert sleep_for(now=12.0, deadline=12.0, below_at_start=True, below_now=True,
                     next_check=0.0) == 0.0


# --- the systemd watchdog ------------------------------------------------------------------

def test_the_watchdog_names_every_thread_that_made_no_progress(agent, cfg):
    import time

    from vipfloat.agent import STALL_LIMIT

    class Beating:
        def __init__(self, beat: float, endpoint: str = "") -> None:
            self.beat, self.endpoint = beat, endpoint

    now = time.monotonic()
    agent.beat = now
    agent.actors = {"mymaster": Beating(now - 1), "six": Beating(now - STALL_LIMIT - 5)}
    agent.subscribers = [Beating(now, "198.51.100.11:26379"),
                         Beating(now - STALL_LIMIT - 1, "198.51.100.12:26379")]
    assert agent.stalled(now) == ["actor of six (35 s)",
                                  "subscription to 198.51.100.12:26379 (31 s)"]
    agent.beat = now - STALL_LIMIT - 2
    assert agent.stalled(now)[0] == "main loop (32 s)"
    agent.subscribers = []


def test_watchdog_interval_is_half_of_watchdogsec(monkeypatch):
    import os

    from vipfloat.sdnotify import watchdog_interval

    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", "1")           # meant for another process
    assert watchdog_interval() is None


def test_a_stopped_agent_stops_feeding_the_watchdog(cfg, monkeypatch):
    # After a reload the old agent's watchdog thread watched threads that no
    # longer ran, and would have logged them as hung.
    import os
    import threading

    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    a = Agent(cfg)
    a.actors = {}
    thread = threading.Thread(target=a.feed_watchdog, args=(0.05,), daemon=True)
    thread.start()
    a.stop()
    thread.join(2)
    assert not thread.is_alive()


def test_the_role_questions_of_many_promotions_share_one_rate():
    # One promotion followed: a question every 3 ms for its first 2 s, then every
    # 100 ms. Twenty-two at once (a host that mastered them died): together still
    # one question per 3 ms, never slower than the slow pace.
    from vipfloat.agent import ROLE_POLL_FAST, ROLE_POLL_FAST_FOR, ROLE_POLL_SLOW, role_poll_pause

    assert role_poll_pause(0.0, 0) == role_poll_pause(0.5, 1) == ROLE_POLL_FAST
    assert role_poll_pause(0.5, 22) == pytest.approx(22 * ROLE_POLL_FAST)
    assert role_poll_pause(0.5, 64) == ROLE_POLL_SLOW
    assert role_poll_pause(ROLE_POLL_FAST_FOR, 1) == ROLE_POLL_SLOW
    assert role_poll_pause(ROLE_POLL_FAST_FOR + 5, 64) == ROLE_POLL_SLOW


def test_a_kernel_change_wakes_the_main_loop_and_reconciles_nothing_in_the_callers_thread(agent):
    # The netlink watcher calls this from whichever thread drains it: an actor
    # under its VIP's lock, in the middle of a failover burst.
    agent._poke.clear()
    agent.kernel_changed()
    assert agent._poke.is_set() and agent.actors["mymaster"].requests == []
