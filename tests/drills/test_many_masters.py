"""Many masters on one Sentinel set (issue 16): eight masters spread round-robin
over three nodes, one Sentinel per node watching them all, an agent per node
with the fast hook. The node that masters three of them loses every Redis at
once; each of those VIPs must end on the master Sentinel settled on for it,
alone, having been bound there before that master's own +switch-master, and
the other five must not move."""
from __future__ import annotations

import signal
import time

import pytest

from vipfloat.lab.cluster import RedisLab
from vipfloat.lab.configs import Master
from vipfloat.lab.observe import AddrEvents, SentinelEvents

N = 8


@pytest.fixture
def many(lab, tmp_path):
    with RedisLab(lab, tmp_path, masters=N) as running:
        yield running


def bound_at(addrs: AddrEvents, host: str, vip: str, after: float) -> float | None:
    seen = [e.t for e in addrs.matching(vip.split("/")[0], added=True, after=after)
            if e.host == host]
    return min(seen, default=None)


def switched_at(events: SentinelEvents, master: Master, new_ip: str, after: float) -> float | None:
    """The first +switch-master any watched Sentinel published for ``master``
    naming ``new_ip`` (data: name old-ip old-port new-ip new-port)."""
    seen = [e.t for e in events.matching("+switch-master", after)
            if e.data.split()[:1] == [master.name] and e.data.split()[3:4] == [new_ip]]
    return min(seen, default=None)


def test_a_host_losing_three_masters_moves_each_vip_to_its_own_new_master(many):
    cluster, lab = many, many.lab
    masters = cluster.cluster.all_masters()
    lost = [m for m in masters if m.initial == lab.hosts["a"].ip]
    kept = [m for m in masters if m not in lost]
    assert len(lost) == 3 and len(kept) == 5
    for node in cluster.nodes:
        cluster.start_agent(node)
    for m in masters:
        home = cluster.node_of(m.initial)
        cluster.wait(lambda m=m, home=home: cluster.holders(vip=m.vip) == [home],
                     f"{m.name}'s VIP on {home} only", timeout=20)
    addrs = AddrEvents(lab, list(cluster.nodes))
    events = SentinelEvents(lab, ["b", "c"])
    try:
        kill = time.monotonic()
        cluster.stop_redis("a", sig=signal.SIGKILL)
        finals = {}
        for m in lost:
            finals[m.name] = cluster.until_settled(
                lambda node, m=m: cluster.wait(lambda: cluster.holders(vip=m.vip) == [node],
                                               f"{m.name}'s VIP on {node} only", timeout=15),
                among=["b", "c"], master=m.name, timeout=60)
        # The others never moved: still on their first master, alone.
        for m in kept:
            home = cluster.node_of(m.initial)
            assert cluster.holders(vip=m.vip) == [home], m
            assert not [e for e in addrs.matching(m.vip.split("/")[0], after=kill)], m
        time.sleep(0.5)   # the last events reach the watchers
        for m in lost:
            node = finals[m.name]
            assert node in ("b", "c"), (m, node)
            switched = switched_at(events, m, lab.hosts[node].ip, kill)
            bound = bound_at(addrs, node, m.vip, kill)
            assert switched is not None and bound is not None, (m, node, switched, bound)
            assert bound < switched, (f"{m.name}: VIP bound on {node} "
                                      f"{(bound - switched) * 1000:+.0f} ms after +switch-master")
    finally:
        addrs.close()
        events.close()
