"""The chaos checker's rules, on made-up histories: each invariant goes red when
broken, and stays green in the windows the README names."""
from __future__ import annotations

from vipfloat.lab.chaos import (ACK_LAG, CONVERGE_MAX, GRACE, OVERLAP_MAX, AckedWrite, Fault,
                                HolderChange, History, SentinelSample, judge, schedule)

IPS = {"a": "198.51.100.11", "b": "198.51.100.12", "c": "198.51.100.13"}


def history(changes=(), faults=(), samples=(), end=60.0, initial=("a",)) -> History:
    return History(start=100.0, end=100.0 + end, node_ips=IPS,
                   initial_holders=frozenset(initial),
                   holder_changes=[HolderChange(100.0 + t, n, added) for t, n, added in changes],
                   faults=list(faults),
                   samples=[SentinelSample(100.0 + t, tuple((n, ip, epoch) for n in IPS))
                            for t, ip, epoch in samples])


def agreeing(ip: str, epoch: int, start: float, end: float, step: float = 0.05):
    for i in range(round((end - start) / step)):
        yield (round(start + i * step, 3), ip, epoch)


# --- two holders ---------------------------------------------------------------------------

def test_a_graceful_move_may_overlap_briefly():
    h = history(changes=[(10.0, "b", True), (10.0 + OVERLAP_MAX - 0.1, "a", False)])
    assert judge(h).violations == ()


def test_two_holders_for_longer_with_nothing_to_excuse_it_is_a_violation():
    h = history(changes=[(10.0, "b", True), (14.0, "a", False)])
    (v,) = judge(h).violations
    assert v == ("two holders (a, b) from 10.00 s to 14.00 s with nothing to excuse it: "
                 f"longer than {OVERLAP_MAX:g} s")


def test_a_paused_holder_is_excused_while_paused_and_for_the_grace_after():
    pause = Fault("pause", "a", start=8.0, duration=6.0, target="node")
    ok = history(changes=[(10.0, "b", True), (14.0 + GRACE - 0.5, "a", False)], faults=[pause])
    assert judge(ok).violations == ()
    late = history(changes=[(10.0, "b", True), (14.0 + GRACE + OVERLAP_MAX + 1, "a", False)],
                   faults=[pause])
    (v,) = judge(late).violations
    assert v.startswith(f"two holders (a, b) from {14.0 + GRACE:.2f} s") and "pause node on a" in v


def test_a_fault_elsewhere_excuses_nothing():
    # Sentinel paused on c keeps neither a nor b from letting go.
    h = history(changes=[(10.0, "b", True), (16.0, "a", False)],
                faults=[Fault("pause", "c", 8.0, 6.0, "sentinel")])
    assert len(judge(h).violations) == 1


def test_faults_that_keep_a_holder_from_letting_go():
    assert Fault("kill", "a", 0, 1, "agent").stops_release("a")
    assert Fault("pause", "a", 0, 1, "node").stops_release("a")
    assert Fault("isolate", "a", 0, 1).stops_release("a")
    assert Fault("partial", "a", 0, 1).stops_release("a")
    assert Fault("link", "a", 0, 1).stops_release("a")
    assert not Fault("kill", "a", 0, 1, "redis").stops_release("a")
    assert not Fault("pause", "a", 0, 1, "sentinel").stops_release("a")
    assert not Fault("flush", "a", 0, 1).stops_release("a")
    assert not Fault("kill", "a", 0, 1, "agent").stops_release("b")


# --- convergence ---------------------------------------------------------------------------

def test_the_vip_must_reach_the_master_sentinels_agree_on():
    samples = list(agreeing(IPS["b"], 1, 20.0, 40.0))
    ok = history(changes=[(21.0, "b", True), (21.5, "a", False)], samples=samples)
    v = judge(ok)
    assert v.violations == () and v.max_converge_ms == 1500.0
    never = history(samples=samples)
    (msg,) = judge(never).violations
    assert msg == ("every Sentinel named b from 20.00 s to 39.95 s with no fault active, but "
                   "the VIP was on a")
    slow = history(changes=[(20.0 + CONVERGE_MAX + 1, "b", True),
                            (20.0 + CONVERGE_MAX + 1.2, "a", False)], samples=samples)
    (msg,) = judge(slow).violations
    assert msg.startswith("the VIP reached b, the master every Sentinel names, only 6.20 s after")


def test_converging_includes_the_clients_neighbour_entry():
    from vipfloat.lab.chaos import NeighSample

    samples = list(agreeing(IPS["b"], 1, 20.0, 40.0))
    h = history(changes=[(21.0, "b", True), (21.5, "a", False)], samples=samples)
    h.node_macs = {"a": "02:00:00:00:00:0a", "b": "02:00:00:00:00:0b"}
    # The client still sends to a's MAC until 23.0 s: converged then, not at 21.5 s.
    h.neigh = [NeighSample(100.0 + t / 10, "02:00:00:00:00:0a" if t < 230 else
                           "02:00:00:00:00:0b") for t in range(150, 400)]
    v = judge(h)
    assert v.violations == () and v.max_converge_ms == 3000.0
    # A client that never follows is a violation, whatever the holders say.
    h.neigh = [NeighSample(100.0 + t / 10, "02:00:00:00:00:0a") for t in range(150, 400)]
    (msg,) = judge(h).violations
    assert msg == ("every Sentinel named b from 20.00 s to 39.95 s with no fault active, but "
                   "the VIP was on b, and the client's neighbour entry named a")


def test_no_convergence_is_asked_while_a_fault_is_active_or_sentinels_disagree():
    samples = list(agreeing(IPS["b"], 1, 20.0, 40.0))
    busy = history(samples=samples, faults=[Fault("kill", "c", 19.0, 22.0, "sentinel")])
    assert judge(busy).violations == ()
    # A lagging Sentinel still naming a at epoch 0: no agreement, nothing asked.
    disagreeing = History(start=100.0, end=160.0, node_ips=IPS, initial_holders=frozenset("a"),
                          samples=[SentinelSample(100.0 + t, (("a", IPS["a"], 0),
                                                              ("b", IPS["b"], 1),
                                                              ("c", IPS["b"], 1)))
                                   for t, _, _ in agreeing("", 0, 20.0, 40.0)])
    assert judge(disagreeing).violations == ()


# --- writes and processes ------------------------------------------------------------------

def test_lost_writes_are_counted_and_attributed_to_their_fault():
    h = history(faults=[Fault("partial", "a", 10.0, 5.0)])
    h.acked = [AckedWrite(100.0 + 5.0, 1), AckedWrite(100.0 + 11.0, 2),
               AckedWrite(100.0 + 12.0, 3), AckedWrite(100.0 + 50.0, 4),
               AckedWrite(100.0 + 59.0, 5)]
    h.kept = frozenset({1, 4})
    h.read_at = 100.0 + 58.0     # write 5 came after the read: not lost
    v = judge(h)
    assert (v.acked, v.lost, v.lost_by_fault) == (4, 2, (("partial", 2),))


def test_a_write_acknowledged_just_before_a_fault_is_that_faults_loss():
    # Replication is asynchronous: acknowledged 0.5 s before the cut, never
    # replicated, lost when a replica is promoted.
    h = history(faults=[Fault("isolate", "a", 10.0, 5.0)])
    h.acked = [AckedWrite(100.0 + 10.0 - ACK_LAG + 0.5, 1),
               AckedWrite(100.0 + 10.0 - ACK_LAG - 0.5, 2)]
    h.kept = frozenset()
    h.read_at = 100.0 + 58.0
    assert judge(h).lost_by_fault == (("isolate", 1), ("no fault", 1))


def test_process_problems_are_violations():
    h = history()
    h.process_problems = ["agent on b exited 1 (the nemesis did not stop it)"]
    assert judge(h).violations == ("agent on b exited 1 (the nemesis did not stop it)",)


# --- the schedule --------------------------------------------------------------------------

def test_the_schedule_is_seeded_bounded_and_one_fault_per_node():
    one = schedule(7, 600, ["a", "b", "c"])
    assert one == schedule(7, 600, ["a", "b", "c"]) != schedule(8, 600, ["a", "b", "c"])
    assert len(one) > 40
    for f in one:
        assert 5.0 <= f.start and f.end <= 600 - 15
        active = [g for g in one if g.start <= f.start < g.end]
        assert len(active) <= 2
        assert len({g.node for g in active}) == len(active)
    assert {f.label for f in one} >= {"kill-redis", "kill-sentinel", "kill-agent", "pause-node",
                                      "isolate", "partial", "link", "flush"}
    only = schedule(7, 300, ["a", "b", "c"], kinds=["pause"])
    assert {f.kind for f in only} == {"pause"}
