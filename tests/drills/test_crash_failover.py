"""Crash failover (issue 17) against real redis-server and redis-sentinel: the
agent on the master's host asks Sentinel to fail over as soon as its Redis
refuses connections; a quick restart and a paused Redis are left alone.

Every check is over what Sentinel decided."""
from __future__ import annotations

import re
import signal
import socket
import threading
import time

import pytest

from vipfloat.lab.cluster import RedisLab
from vipfloat.crash import CONFIRM_WINDOW
from vipfloat.lab.observe import SentinelEvents, Writer, in_netns_thread

VIP = "198.51.100.250"
# A write acknowledged this long before the kill had reached the replicas
# (replication on the lab's bridge takes well under a millisecond).
REPLICATED_AFTER = 0.1


@pytest.fixture
def cluster(lab, tmp_path):
    """The recommended setup, with crash_failover on the VIP."""
    with RedisLab(lab, tmp_path, vip_options={"crash_failover": True}) as running:
        for node in running.nodes:
            running.start_agent(node)
        running.wait(lambda: running.holders() == ["a"], "the agents to put the VIP on a")
        # The watcher holds its connection once the agent believes a is master.
        running.wait(lambda: "__vipfloat__:crash-watch" in running.redis(
            "a", "PUBSUB", "CHANNELS"), "the crash watcher on a", timeout=10)
        yield running


def test_a_crashed_master_is_failed_over_at_once(cluster):
    lab = cluster.lab
    events = SentinelEvents(lab, list(cluster.nodes))
    writer = Writer(lab, "client", VIP, interval=0.01)
    try:
        time.sleep(1.0)
        kill_at = time.monotonic()
        cluster.stop("redis:a", sig=signal.SIGKILL)
        final, landed, writes = cluster.after_failover(writer, kill_at)
        tried = events.matching("+try-failover", kill_at)
        odown = events.matching("+odown", kill_at)
    finally:
        writer.close()
        events.close()
    log = cluster.agent_log("a")
    assert "crashed; replica(s)" in log and "SENTINEL FAILOVER mymaster: OK" in log, log[-2000:]
    # The failover Sentinel ran was the one the agent asked for: it started
    # before Sentinel itself could agree the master was down.
    assert tried, "no +try-failover"
    assert not odown or tried[0].t < odown[0].t, (tried[0], odown[0])
    lost = [w for w in writes if w.ok and w.value not in landed]
    assert all(w.done >= kill_at - REPLICATED_AFTER for w in lost), \
        [(w.value, round(w.done - kill_at, 3)) for w in lost]


class Refusals:
    """The harness's own probes of a's Redis (every millisecond, from a's
    namespace): how long it refused connections."""

    def __init__(self, lab, node: str = "a") -> None:
        self.refused: list[float] = []
        self._stop = threading.Event()
        ip = lab.hosts[node].ip

        def run() -> None:
            while not self._stop.is_set():
                try:
                    with socket.create_connection((ip, 6379), timeout=0.05):
                        pass
                except ConnectionRefusedError:
                    self.refused.append(time.monotonic())
                except OSError:
                    pass
                time.sleep(0.001)

        self._thread = in_netns_thread(lab, node, run)

    def close(self) -> float:
        """Seconds from the first refusal to the last (0 if none)."""
        self._stop.set()
        self._thread.join(timeout=2)
        return self.refused[-1] - self.refused[0] if self.refused else 0.0


def test_a_restart_inside_the_window_is_no_failover(cluster):
    """SIGKILL and an immediate restart. Whenever the Redis refused connections
    for clearly less than the confirmation window (the harness measures it),
    there must be no failover at all; on a machine that restarts it more slowly,
    a failover is right, and the VIP follows what Sentinel did."""
    lab = cluster.lab
    events = SentinelEvents(lab, list(cluster.nodes))
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        refusals = Refusals(lab)
        time.sleep(0.1)
        cluster.stop("redis:a", sig=signal.SIGKILL)
        cluster.start_redis("a")
        cluster.wait(lambda: cluster.redis("a", "PING") == "PONG", "a's Redis back", timeout=10)
        time.sleep(0.2)
        refused_for = refusals.close()
        time.sleep(3.0)       # three times Sentinel's down-after-milliseconds
        tried = events.matching("+try-failover", t0)
    finally:
        events.close()
    log = cluster.agent_log("a")
    # The harness's probe thread may be starved and miss refusals at either end;
    # the agent's own count is the other witness: the longer of the two stands.
    seen_ms = [int(ms) for ms in re.findall(r"refused \d+ connection\(s\) over (\d+) ms", log)]
    refused_for = max([refused_for, *(ms / 1000 for ms in seen_ms)])
    if refused_for < CONFIRM_WINDOW * 0.8:
        assert "SENTINEL FAILOVER" not in log, log[-1500:]
        assert not tried, [e.data for e in tried]
        cluster.holds_only("a", timeout=1)
        assert cluster.master_addr("b") == lab.hosts["a"].ip
    else:
        print(f"\n  the restart refused connections for {refused_for * 1000:.0f} ms on this "
              "machine, not clearly inside the window: following Sentinel")
        cluster.until_settled(lambda m: cluster.holds_only(m), timeout=45)


def test_a_paused_master_is_left_to_sentinel(cluster):
    lab = cluster.lab
    events = SentinelEvents(lab, list(cluster.nodes))
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        cluster.procs["redis:a"].send_signal(signal.SIGSTOP)
        cluster.wait(lambda: cluster.master_addr("b") not in (None, lab.hosts["a"].ip),
                     "Sentinel's own failover", timeout=30)
        cluster.procs["redis:a"].send_signal(signal.SIGCONT)
        final = cluster.until_settled(lambda m: cluster.holds_only(m), timeout=45)
        odown = events.matching("+odown", t0)
        tried = events.matching("+try-failover", t0)
    finally:
        cluster.procs["redis:a"].send_signal(signal.SIGCONT)
        events.close()
    assert "SENTINEL FAILOVER" not in cluster.agent_log("a")
    # Sentinel's own detection: the master was objectively down before any
    # failover started.
    assert odown and tried and odown[0].t <= tried[0].t, (odown, tried)
    assert final in cluster.nodes
