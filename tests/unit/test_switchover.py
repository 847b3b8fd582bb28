"""`vipfloat switchover`'s rules on recorded replies and events: when it may
start, and what each event adds to the timeline."""
from __future__ import annotations

from typer.testing import CliRunner

from vipfloat.cli import app
from vipfloat.config import Endpoint
from vipfloat.sentinel import MasterInfo, SentinelAnswer
from vipfloat.switchover import (Progress, Published, Replica, VipAnswered, WritesHeld,
                                 follow, parse_lags, parse_replicas, preflight)

A, B, C = "198.51.100.11", "198.51.100.12", "198.51.100.13"


def ans(n: int, host: str | None = A, epoch: int = 3,
        flags: tuple[str, ...] = ("master",)) -> SentinelAnswer:
    ep = Endpoint(f"198.51.100.{n}", 26379)
    if host is None:
        return SentinelAnswer(ep, error="unreachable", reachable=False)
    return SentinelAnswer(ep, MasterInfo("mymaster", host, 6379, epoch, flags))


REPLIES = [
    ["name", f"{B}:6379", "ip", B, "port", "6379", "run-id", "bbbb", "flags", "slave",
     "master-link-status", "ok", "slave-priority", "100"],
    ["name", f"{C}:6379", "ip", C, "port", "6379", "run-id", "cccc", "flags", "slave",
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
                    )


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
    for seen in (VipAnswered("aaaa", "master"), VipAnswered("bbbb", "slave"),
                 WritesHeld(f"{A}:6379"), WritesHeld(f"{A}:6379"),
                 Published(LEADER, "+selected-slave", f"slave {B}:6379 {B} 6379 @ other {A} 6379"),
                 Published(LEADER, "+new-epoch", "x")):
        p, lines = follow(p, seen)
        assert len(lines) <= 1
        if isinstance(seen, WritesHeld):
            continue
        assert lines == [], seen
    assert p.chosen is None and p.vip == f"{A}:6379"


def test_switched_but_the_vip_still_on_the_old_master_is_not_done():
    p = start()
    for seen in (VipAnswered("aaaa", "master"),
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
