"""The default, least-privilege mode on real Sentinels: each Sentinel runs as
`nobody` with no capability in any set and VIPFLOAT_HANDOVER_ONLY=1, as the
shipped drop-in makes it on a real host. Its hook can only hand over to the
agent, which serves it as a member of the socket's group: a sender it trusts
only as far as what Sentinel itself has said."""
from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from vipfloat.lab.cluster import RedisLab
from vipfloat.lab.drill import Recorder

from .test_failure_drills import VIP, follows_sentinel, new_master


@pytest.fixture
def cluster(lab):
    # Not under pytest's tmp_path: its parents are 0700, and Sentinel's user
    # must reach its own directory and the agent's socket.
    work = Path(tempfile.mkdtemp(prefix="vipfloat-least-"))
    try:
        with RedisLab(lab, work, hook=True, sentinel_user="nobody") as running:
            yield running
    finally:
        shutil.rmtree(work, ignore_errors=True)


def hook_lines(cluster: RedisLab, node: str) -> list[str]:
    return [line for line in (cluster.dir(node) / "sentinel.log").read_text().splitlines()
            if line.startswith("vipfloat-hook:")]


def test_sentinel_holds_no_capability(cluster):
    for node in cluster.nodes:
        pid = cluster.procs[f"sentinel:{node}"].pid
        # setpriv execs redis-sentinel in place: the same pid.
        status = dict(line.split(":\t", 1) for line in
                      open(f"/proc/{pid}/status").read().splitlines() if ":\t" in line)
        assert status["Uid"].split()[0] == "65534"
        for key in ("CapEff", "CapPrm", "CapAmb", "CapBnd", "CapInh"):
            assert int(status[key], 16) == 0, (node, key, status[key])


def test_the_agents_move_the_vip_on_the_hooks_of_an_unprivileged_sentinel(cluster):
    for node in cluster.nodes:
        cluster.start_agent(node)
    cluster.wait(lambda: cluster.holders() == ["a"], "the VIP on a")
    with Recorder(cluster) as rec:
        cluster.wait(lambda: rec.first_write(rec.t0) is not None, "the client's first write")
        kill = rec.mark("SIGKILL redis-server on a")
        cluster.stop("redis:a", sig=signal.SIGKILL)
        new = new_master(cluster)
        final = follows_sentinel(cluster, rec, kill)
    # Every node's hook ran as nobody and was served by its agent, as a sender
    # trusted only as far as what Sentinel had said ("believed master" or a poll
    # first), never as root.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(hook_lines(cluster, n) for n in ("b", "c")):
        time.sleep(0.2)
    for node in ("b", "c"):
        lines = hook_lines(cluster, node)
        assert lines and all("via=agent" in line for line in lines), lines
        log = cluster.agent_log(node)
        assert "hook request from uid 65534, pid " in log
        assert "trust=sender" not in log
    print(f"\nnew master {new}, settled on {final}")


def test_with_no_agent_the_hook_exits_1_and_the_agent_catches_up(cluster):
    kill = time.monotonic()
    cluster.stop("redis:a", sig=signal.SIGKILL)
    new = new_master(cluster)
    # The hooks ran, could not act (no capability, no agent) and said so.
    cluster.wait(lambda: any("may only hand over (VIPFLOAT_HANDOVER_ONLY=1): exit 1" in line
                             for n in cluster.nodes for line in hook_lines(cluster, n)),
                 "a hook to report that it can only hand over", timeout=20)
    assert cluster.holders() in ([], ["a"])     # nothing could move it
    for node in cluster.nodes:
        cluster.start_agent(node)
    final = cluster.until_settled(lambda m: cluster.wait(
        lambda: cluster.holders() == [m], f"the VIP on {m} only", timeout=15))
    print(f"\nno agent: VIP unmoved; agents started: VIP on {final} "
          f"({time.monotonic() - kill:.1f} s after the kill; first new master {new})")
    assert cluster.lab.has_address(final, f"{VIP}/24")


def test_agents_paused_through_a_failover_move_the_vip_as_soon_as_they_resume(cluster):
    """Every agent hangs (SIGSTOP) as the master dies; Sentinel fails over and the
    hooks' hand-overs sit in the agents' listen queues. Nothing can move the VIP
    meanwhile: that is the window of a hung agent (bounded by systemd's watchdog,
    40 s, on a real host). Once they resume, the VIP is on the new master within
    a few seconds (the resumed agents have not heard a Sentinel majority for
    longer than the grace: they poll before acting)."""
    for node in cluster.nodes:
        cluster.start_agent(node)
    cluster.wait(lambda: cluster.holders() == ["a"], "the VIP on a")
    for node in cluster.nodes:
        cluster.procs[f"agent:{node}"].send_signal(signal.SIGSTOP)
    try:
        cluster.stop("redis:a", sig=signal.SIGKILL)
        new = new_master(cluster)
        time.sleep(3)                               # the hooks ran and are waiting
        assert cluster.holders() in ([], ["a"])     # nothing could move it
    finally:
        resumed = time.monotonic()
        for node in cluster.nodes:
            cluster.procs[f"agent:{node}"].send_signal(signal.SIGCONT)
    final = cluster.until_settled(lambda m: cluster.wait(
        lambda: cluster.holders() == [m], f"the VIP on {m} only", timeout=10))
    print(f"\nagents paused through the failover to {new}: VIP on {final} "
          f"{time.monotonic() - resumed:.2f} s after they resumed")
