"""The Vagrant drill's watcher and merged timeline (vipfloat.lab.vmwatch): what
it keeps of the agent's journal, who holds the VIP after each move, and a drill
that saw nothing exiting 1."""
from __future__ import annotations

import json

from vipfloat.lab import vmwatch
from vipfloat.lab.vmwatch import Line, agent_event, journal_event, merge, parse_lines

DECISION = ('master=mymaster vip=198.51.100.250/24 role=agent from=- to=198.51.100.13:6379 '
            'action=release reason="new master 198.51.100.13 is another host; VIP bound here '
            '(hint: +switch-master from Sentinel 198.51.100.12:26379)" duration_ms=894.2 '
            'result=ok')


def test_the_agents_decisions_conflicts_and_quorum_are_kept_and_the_rest_dropped():
    assert agent_event(DECISION) == (
        "agent: release: new master 198.51.100.13 is another host; VIP bound here "
        "(hint: +switch-master from Sentinel 198.51.100.12:26379)")
    conflict = ("mymaster: CONFLICT: 52:54:00:4b:13:1d also answers for 198.51.100.250 on "
                "eth1; keeping it and announcing again")
    assert agent_event(conflict) == f"agent: {conflict}"
    assert agent_event("mymaster: conflict over: nobody else answers for 198.51.100.250") \
        == "agent: mymaster: conflict over: nobody else answers for 198.51.100.250"
    assert agent_event("QUORUM LOST: 1 of 3 Sentinels reachable").startswith("agent: QUORUM")
    handover = ("mymaster: 52:54:00:06:26:e3 answers for 198.51.100.250: the new holder, as "
                "the move to 198.51.100.11 expects; not announcing again")
    assert agent_event(handover) == f"agent: {handover}"
    assert agent_event("sentinel 198.51.100.11:26379: +sdown master mymaster") is None
    assert agent_event(DECISION.replace("action=release", "action=nothing")) is None


def test_journal_lines_are_parsed_whatever_journald_sends():
    entry = {"__REALTIME_TIMESTAMP": "1764700000123456", "MESSAGE": DECISION}
    at, text = journal_event(json.dumps(entry))
    assert at == 1764700000.123456 and text.startswith("agent: release: ")
    # Non-UTF-8 messages come as a list of byte values.
    raw = {"__REALTIME_TIMESTAMP": "1", "MESSAGE": list(b"QUORUM LOST \xff")}
    assert journal_event(json.dumps(raw))[1].startswith("agent: QUORUM LOST")
    for junk in ("", "not json", "[]", json.dumps({"MESSAGE": DECISION}),
                 json.dumps({"__REALTIME_TIMESTAMP": "x", "MESSAGE": DECISION}),
                 json.dumps({"__REALTIME_TIMESTAMP": "1", "MESSAGE": 7})):
        assert journal_event(junk) is None


def test_the_timeline_says_who_holds_the_vip_and_how_long_two_did():
    lines = parse_lines([
        "99.0 node1 ready\n",
        "100.000 node1 DRILL: kill\n",
        "105.500 node3 VIP bound here\n",
        "105.400 node2 sentinel: +promoted-slave slave 198.51.100.13:6379 ...\n",
        "garbage\n", "x node1 y\n",
        "107.250 node1 VIP removed here\n",
        "107.300 node3 agent: mymaster: conflict over: nobody else answers\n",
    ])
    # node1 held it when the drill started: its bind came before the watchers.
    timeline, saw = merge([Line(90.0, "node1", "VIP bound here"), *lines], start=100.0)
    assert saw
    assert [tuple(part.strip() for part in row.split(" ms  ", 1)) for row in timeline] == [
        ("-10000.0", "node1: VIP bound here"),
        ("+0.0", "node1: DRILL: kill"),
        ("+5400.0", "node2: sentinel: +promoted-slave slave 198.51.100.13:6379 ..."),
        ("+5500.0", "node3: VIP bound here"),
        ("+5500.0", "TWO HOLDERS: node1, node3"),
        ("+7250.0", "node1: VIP removed here"),
        ("+7250.0", "one holder again (node3) after 1750 ms of two"),
        ("+7300.0", "node3: agent: mymaster: conflict over: nobody else answers"),
    ]


def test_a_drill_that_saw_nothing_exits_1(tmp_path, capsys):
    quiet = tmp_path / "node1.log"
    quiet.write_text("99.0 node1 ready\n99.5 node1 sentinel: +sdown before the drill\n"
                     "100.0 node1 DRILL: kill\n")
    assert vmwatch.main(["merge", "--start", "100.0", str(quiet)]) == 1
    assert "the drill saw nothing happen" in capsys.readouterr().out
    busy = tmp_path / "node2.log"
    busy.write_text("101.0 node2 sentinel: +sdown master mymaster 198.51.100.11 6379\n")
    assert vmwatch.main(["merge", "--start", "100.0", str(quiet), str(busy)]) == 0


def test_a_vip_bound_before_the_watchers_counts_as_held_and_is_no_move():
    lines = parse_lines([
        f"90.0 node1 {vmwatch.HELD}\n", "91.0 node1 tick\n",
        "100.0 node1 DRILL: kill\n",
        "105.5 node2 VIP bound here\n",
        "106.0 node1 VIP removed here\n",
    ])
    timeline, saw = merge(lines, start=100.0)
    assert saw
    rows = [row.strip() for row in timeline]
    assert rows == ["-10000.0 ms  node1: VIP bound here when watching began",
                    "+0.0 ms  node1: DRILL: kill",
                    "+5500.0 ms  node2: VIP bound here",
                    "+5500.0 ms  TWO HOLDERS: node1, node2",
                    "+6000.0 ms  node1: VIP removed here",
                    "+6000.0 ms  one holder again (node2) after 500 ms of two"]
    # Two holders already when watching began: said, and when one lets go too.
    timeline, _ = merge(parse_lines([f"90.0 node1 {vmwatch.HELD}\n",
                                     f"91.0 node2 {vmwatch.HELD}\n",
                                     "101.0 node1 VIP removed here\n"]), start=100.0)
    assert [row.strip() for row in timeline][1:] == [
        "-9000.0 ms  node2: VIP bound here when watching began",
        "-9000.0 ms  TWO HOLDERS: node1, node2",
        "+1000.0 ms  node1: VIP removed here",
        "+1000.0 ms  one holder again (node2) after 10000 ms of two"]
    # Held at the start and never moved: the drill saw no move.
    assert merge(parse_lines([f"90.0 node1 {vmwatch.HELD}\n"]), start=100.0)[1] is False


def test_stamped_lines_put_every_vm_on_the_hosts_clock():
    # node1's clock runs 3 s ahead of the host's, node2's 1 s behind; lines take
    # 5 to 900 ms to arrive. The offset is the largest (printed - arrived).
    lines = parse_lines([
        "@1000.900 1003.000 node1 ready\n",      # 900 ms in transit
        "@1001.005 1004.000 node1 tick\n",       # 5 ms: the best bound
        "@1001.100 1000.000 node2 ready\n",      # 100 ms
        "@1002.020 1001.000 node2 tick\n",       # 20 ms
        "1010.0 node3 unstamped\n",
    ])
    assert lines[0] == Line(1003.0, "node1", "ready", 1000.9)
    assert lines[-1] == Line(1010.0, "node3", "unstamped", None)
    # A node named like a number, a what starting with one: never a stamp.
    assert parse_lines(["100.0 7 VIP bound here\n", "100.0 node1 5 s later\n",
                        "@x 1.0 node1 ready\n", "@2.0 1.0 node1\n"]) == [
        Line(100.0, "7", "VIP bound here"), Line(100.0, "node1", "5 s later")]
    offset = vmwatch.offsets(lines)
    assert set(offset) == {"node1", "node2"}
    assert abs(offset["node1"] - 2.995) < 1e-9 and abs(offset["node2"] - (-1.02)) < 1e-9
    on_host = vmwatch.on_host_clock(lines, offset)
    assert [round(x.t, 3) for x in on_host] == [1000.005, 1001.005, 1001.02, 1002.02, 1010.0]
    assert [x.what for x in on_host] == [x.what for x in lines]


def test_stamp_prefixes_each_line_with_its_arrival():
    import io

    times = iter([5.0, 6.25])
    sink = io.StringIO()
    vmwatch.stamp(io.StringIO("1.0 node1 ready\n2.0 node1 tick\n"), sink, clock=lambda: next(times))
    assert sink.getvalue() == "@5.000000 1.0 node1 ready\n@6.250000 2.0 node1 tick\n"
    assert [x.arrived for x in parse_lines(sink.getvalue().splitlines())] == [5.0, 6.25]


def test_merge_puts_the_start_on_its_nodes_clock(tmp_path, capsys):
    # node1 is 2 s ahead: its break at 102.0 (its clock) is 100.0 on the host's,
    # and node2's bind at 101.5 (host clock, offset 0) comes 1500 ms after it.
    (tmp_path / "node1.log").write_text("@101.0 103.0 node1 tick\n102.0 node1 DRILL: kill\n")
    (tmp_path / "node2.log").write_text("@101.0 101.0 node2 tick\n101.5 node2 VIP bound here\n")
    files = [str(tmp_path / "node1.log"), str(tmp_path / "node2.log")]
    assert vmwatch.main(["merge", "--start", "102.0", "--start-node", "node1", *files]) == 0
    out = capsys.readouterr().out
    assert "  node1: +2000 ms\n  node2: +0 ms\n" in out
    assert "+0.0 ms  node1: DRILL: kill" in out and "+1500.0 ms  node2: VIP bound here" in out
