"""`vipfloat switchover`'s rules on recorded replies and events: when it may
start, and what each event adds to the timeline."""
from __future__ import annotations

from dataclasses import replace

import pytest
from typer.testing import CliRunner

from vipfloat.cli import app
from vipfloat.config import Endpoint
from vipfloat.sentinel import MasterInfo, SentinelAnswer
from vipfloat.sentinel import Replica, parse_replicas
from vipfloat.switchover import (Progress, Published, VipAnswered, WritesHeld, follow,
                                 parse_lags, preflight)

A, B, C = "198.51.100.11", "198.51.100.12", "198.51.100.13"


def ans(n: int, host: str | None = A, epoch: int = 3,
        flags: tuple[str, ...] = ("master",)) -> SentinelAnswer:
    ep = Endpoint(f"198.51.100.{n}", 26379)
    if host is None:
        return SentinelAnswer(ep, error="unreachable", reachable=False)
    return SentinelAnswer(ep, MasterInfo("mymaster", host, 6379, epoch, flags))


REPLIES = [
    ["name", f"{B}:6379", "ip", B, "port", "6379", "runid", "bbbb", "flags", "slave",
     "master-link-status", "ok", "slave-priority", "100"],
    ["name", f"{C}:6379", "ip", C, "port", "6379", "runid", "cccc", "flags", "slave",
     "master-link-status", "ok", "slave-priority", "0"],
]
INFO = ("# Replication\r\nrole:master\r\nconnected_slaves:2\r\n"
        f"slave0:ip={B},port=6379,state=online,offset=1000,lag=0\r\n"
        f"slave1:ip={C},port=6379,state=online,offset=1000,lag=1\r\n"
        "master_repl_offset:1000\r\n")


def test_replies_are_parsed():
    b, c = parse_replicas(REPLIES)
    assert (b.addr, b.flags, b.link_ok, b.priority, b.run_id) == (f"{B}:6379", ("slave",), True,
                                                                  100, "bbbb")
    assert c.priority == 0
    assert parse_replicas([{"ip": B, "port": "x"}]) == ()
    assert parse_lags(INFO) == {(B, 6379): 0, (C, 6379): 1}
    assert parse_lags("slave0:ip=x,port=1,state=wait_bgsave,offset=0,lag=0") == {}
    assert parse_lags("slave0:ip=x,port=y,state=online,lag=0\nslaveX:ip=x") == {}


def test_a_replica_in_sync_and_agreeing_sentinels_may_start():
    plan, problems = preflight([ans(11), ans(12), ans(13)], parse_replicas(REPLIES),
                               parse_lags(INFO))
    assert problems == [] and plan is not None
    assert plan.sentinel == 0 and plan.master.addr == f"{A}:6379"
    assert [r.addr for r in plan.ready] == [f"{B}:6379"]      # C has priority 0
    # The first Sentinel that answered is the one asked.
    plan, _ = preflight([ans(11, None), ans(12), ans(13)], parse_replicas(REPLIES),
                        parse_lags(INFO))
    assert plan is not None and plan.sentinel == 1


def test_every_reason_to_refuse_is_given():
    plan, problems = preflight(
        [ans(11, epoch=3), ans(12, B, epoch=4), ans(13, None)],
        [Replica(B, 6379, ("slave", "s_down"), True, 100, "bbbb"),
         Replica(C, 6379, ("slave",), False, 100, "cccc")],
        {(B, 6379): 0, (C, 6379): 0})
    assert plan is None
    assert problems == [
        "the Sentinels disagree: 198.51.100.11:26379 names 198.51.100.11:6379 at epoch 3; "
        "198.51.100.12:26379 names 198.51.100.12:6379 at epoch 4",
        f"no replica is in sync: {B}:6379 flags slave,s_down, link ok, priority 100, lag 0; "
        f"{C}:6379 flags slave, link down, priority 100, lag 0"]


def test_refused_without_a_majority_a_running_failover_or_the_masters_word():
    _, problems = preflight([ans(11), ans(12, None), ans(13, None)], parse_replicas(REPLIES),
                            parse_lags(INFO))
    assert problems == ["only 1 of 3 Sentinels answered (majority 2)"]
    _, problems = preflight([ans(11, flags=("master", "failover_in_progress")), ans(12), ans(13)],
                            parse_replicas(REPLIES), parse_lags(INFO))
    assert problems == ["Sentinel 198.51.100.11:26379 flags the master failover_in_progress"]
    _, problems = preflight([ans(11), ans(12), ans(13)], parse_replicas(REPLIES), None)
    assert problems == ["cannot ask the master for its replicas' lag (INFO replication)"]
    lagging = INFO.replace("lag=0", "lag=2")
    _, problems = preflight([ans(11), ans(12), ans(13)], parse_replicas(REPLIES),
                            parse_lags(lagging))
    assert problems and problems[0].startswith("no replica is in sync")


LEADER = f"{A}:26379"
RUN = [
    Published(LEADER, "+new-epoch", "4"),
    Published(LEADER, "+try-failover", f"master mymaster {A} 6379"),
    Published(LEADER, "+selected-slave", f"slave {B}:6379 {B} 6379 @ mymaster {A} 6379"),
    WritesHeld(f"{A}:6379"),
    Published(LEADER, "+failover-state-wait-promotion",
              f"slave {B}:6379 {B} 6379 @ mymaster {A} 6379"),
    VipAnswered("bbbb", "master"),
    Published(LEADER, "+promoted-slave", f"slave {B}:6379 {B} 6379 @ mymaster {A} 6379"),
    Published(f"{C}:26379", "+switch-master", f"mymaster {A} 6379 {B} 6379"),
]
EXPECTED = [
    f"Sentinel {LEADER} starts the failover at epoch 4",
    f"Sentinel selected replica {B}:6379",
    f"old master {A}:6379 holds its writes (CLIENT PAUSE WRITE by its agent)",
    f"Sentinel sent SLAVEOF NO ONE to {B}:6379",
    f"VIP answers from {B}:6379 (ROLE master)",
    f"Sentinel saw {B}:6379 promoted (+promoted-slave)",
    f"Sentinel {C}:26379 switched mymaster to {B}:6379 (+switch-master)",
]


def start() -> Progress:
    return Progress("mymaster", f"{A}:6379", {"aaaa": f"{A}:6379", "bbbb": f"{B}:6379"},
                    ready=frozenset({f"{B}:6379"}))


def test_the_timeline_of_a_switchover():
    p, lines = start(), []
    for seen in RUN:
        assert not p.done
        p, more = follow(p, seen)
        lines += more
    assert lines == EXPECTED and p.done and p.failed is None


def test_repeats_and_other_masters_add_nothing():
    p = start()
    p, _ = follow(p, VipAnswered("aaaa", "master"))
    p, lines = follow(p, WritesHeld(f"{A}:6379"))
    assert len(lines) == 1
    for seen in (VipAnswered("aaaa", "master"), WritesHeld(f"{A}:6379"),
                 Published(LEADER, "+selected-slave", f"slave {B}:6379 {B} 6379 @ other {A} 6379"),
                 Published(LEADER, "+new-epoch", "x")):
        p, lines = follow(p, seen)
        assert lines == [], seen
    assert p.chosen is None and p.vip == f"{A}:6379"
    # A replica, or nobody, behind the VIP: nobody answers as master any more.
    assert follow(p, VipAnswered("bbbb", "slave"))[0].vip is None
    assert follow(p, VipAnswered("", "unreachable"))[0].vip is None


def test_switched_but_the_vip_still_on_the_old_master_is_not_done():
    p = start()
    for seen in (VipAnswered("aaaa", "master"), *RUN[:3],
                 Published(LEADER, "+switch-master", f"mymaster {A} 6379 {B} 6379")):
        p, _ = follow(p, seen)
    assert not p.done
    p, lines = follow(p, VipAnswered("bbbb", "master"))
    assert p.done and lines == [f"VIP answers from {B}:6379 (ROLE master)"]


def test_an_abort_fails_it():
    p = start()
    for seen in RUN[:3]:
        p, _ = follow(p, seen)
    p, lines = follow(p, Published(LEADER, "-failover-abort-slave-timeout",
                                   f"master mymaster {A} 6379"))
    assert p.done and p.failed == f"Sentinel {LEADER} aborted: -failover-abort-slave-timeout"
    assert lines == [f"Sentinel {LEADER} aborted the failover (-failover-abort-slave-timeout)"]


def test_an_unknown_master_is_a_usage_error(cfg):
    result = CliRunner().invoke(app, ["switchover", "--master", "nope", "--config",
                                      str(cfg.path)])
    assert result.exit_code == 2
    assert "master 'nope' has no [[vip]] block" in result.output


def test_a_switch_to_another_node_than_the_chosen_one_is_not_this_switchover():
    p = start()
    # A lagging Sentinel's +switch-master naming the current master, before any
    # replica is chosen, then one naming a node Sentinel did not choose.
    for seen in (VipAnswered("aaaa", "master"),
                 Published(LEADER, "+switch-master", f"mymaster {C} 6379 {A} 6379"),
                 *RUN[:3], Published(LEADER, "+switch-master", f"mymaster {A} 6379 {C} 6379")):
        p, _ = follow(p, seen)
    assert p.switched is None and not p.done


def test_the_vip_that_stops_answering_as_master_is_not_done():
    p = start()
    for seen in RUN:
        p, _ = follow(p, seen)
    assert p.done
    p, _ = follow(p, VipAnswered("", "unreachable"))
    assert not p.done


def test_a_chosen_replica_the_preflight_did_not_find_in_sync_is_said():
    p = replace(start(), ready=frozenset())
    for seen in RUN[:2]:
        p, _ = follow(p, seen)
    _, lines = follow(p, RUN[2])
    assert lines == [f"Sentinel selected replica {B}:6379 (not one the preflight found in sync)"]


# --- every rule, row by row (mutation testing found them untested) -----------------------

def test_replies_of_every_shape():
    (r,) = parse_replicas([{"ip": B, "port": "6379", "runid": "bbbb", "flags": "slave,s_down",
                            "master-link-status": "err", "slave-priority": "1"}])
    assert (r.host, r.port, r.run_id, r.flags, r.link_ok, r.priority) == (
        B, 6379, "bbbb", ("slave", "s_down"), False, 1)
    # Missing fields: no address, no replica; the priority Sentinel's default.
    got = parse_replicas([["ip", B], ["port", "6379"], ["ip", B, "port", "x"],
                          ["ip", C, "port", "6380"]])
    assert got == (Replica(C, 6380, (), False, 100, "", info_age_ms=None),)


def test_lags_of_every_shape():
    info = ("slave0:ip=2001:db8::12,port=6379,state=online,offset=1,lag=0\n"
            "slave1:ip=x=y,port=1,state=online,offset=1,lag=3\n"
            "slave2:ip=a,port=p,state=online,lag=0\n"
            "slave3:ip=b,port=2,state=online,offset=1,lag=1\n"
            "slavefoo:ip=c,port=3,state=online,offset=1,lag=0\n"
            "slave4:ip=d,port=4,state=online,offset=1\n")
    assert parse_lags(info) == {("2001:db8::12", 6379): 0, ("x=y", 1): 3, ("b", 2): 1}


@pytest.mark.parametrize("flag", ["failover_in_progress", "s_down", "o_down", "disconnected"])
def test_each_master_flag_refuses(flag):
    _, problems = preflight([ans(11, flags=("master", flag)), ans(12), ans(13)],
                            parse_replicas(REPLIES), parse_lags(INFO))
    assert problems == [f"Sentinel 198.51.100.11:26379 flags the master {flag}"]


def test_flags_are_listed_together():
    _, problems = preflight([ans(11, flags=("master", "s_down", "o_down")), ans(12), ans(13)],
                            parse_replicas(REPLIES), parse_lags(INFO))
    assert problems == ["Sentinel 198.51.100.11:26379 flags the master o_down,s_down"]


def test_the_edges_of_in_sync():
    one = [Replica(B, 6379, ("slave",), True, 1, "bbbb")]
    plan, _ = preflight([ans(11), ans(12), ans(13)], one, {(B, 6379): 1})   # lag 1, priority 1
    assert plan is not None and plan.ready == (replace(one[0], lag=1),)
    _, problems = preflight([ans(11), ans(12), ans(13)], one, {})
    assert problems == [f"no replica is in sync: {B}:6379 flags slave, link ok, priority 1, "
                        "lag unknown"]
    _, problems = preflight([ans(11), ans(12), ans(13)], [], {})
    assert problems == ["no replica is in sync: Sentinel knows none"]


def test_each_line_of_the_timeline_is_exact():
    p = start()
    p, lines = follow(p, VipAnswered("0123456789abcdef", "master"))
    assert lines == ["VIP answers from run_id 0123456789ab (ROLE master)"]
    p, lines = follow(p, Published(LEADER, "+try-failover", f"master mymaster {A} 6379"))
    assert lines == [f"Sentinel {LEADER} starts the failover"]           # its epoch unseen
    # SLAVEOF NO ONE before any selection seen: said, but chooses nothing.
    p, lines = follow(p, RUN[4])
    assert lines == [f"Sentinel sent SLAVEOF NO ONE to {B}:6379"] and p.chosen is None
    p, _ = follow(p, RUN[2])
    again = Published(LEADER, "+selected-slave", f"slave {C}:6379 {C} 6379 @ mymaster {A} 6379")
    p, lines = follow(p, again)
    assert lines == [] and p.chosen == f"{B}:6379"                      # the first one holds
    p, lines = follow(p, RUN[6])
    assert lines == [f"Sentinel saw {B}:6379 promoted (+promoted-slave)"] and p.promoted is True
    p, lines = follow(p, RUN[6])
    assert lines == [] and p.promoted is True
    # Once promoted, an abort (of another attempt) fails nothing.
    p, lines = follow(p, Published(LEADER, "-failover-abort-not-elected",
                                   f"master mymaster {A} 6379"))
    assert lines == [] and p.failed is None


def test_a_second_abort_adds_nothing():
    p = start()
    abort = Published(LEADER, "-failover-abort-no-good-slave", f"master mymaster {A} 6379")
    p, _ = follow(p, abort)
    p, lines = follow(p, replace(abort, source=f"{B}:26379"))
    assert lines == [] and p.failed == f"Sentinel {LEADER} aborted: -failover-abort-no-good-slave"
