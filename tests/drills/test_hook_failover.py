"""Sentinel itself runs vipfloat-hook on every node after a real failover."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from vipfloat.lab.cluster import RedisLab, tool

VIP = "198.51.100.250"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["vipfloat-hook-fast", "vipfloat-hook"])
def hooked(request, lab, tmp_path):
    """Sentinel running the C fast hook (which, with no agent, execs the Python
    one) or the Python hook itself."""
    path = tool(request.param)
    if not Path(path).is_file():
        pytest.skip(f"{request.param} is not built (make fast-hook)")
    with RedisLab(lab, tmp_path, hook=path) as running:
        yield running


def test_failover_moves_the_vip_to_the_new_master(hooked):
    cluster = hooked
    lab = cluster.lab
    assert cluster.vipfloat("a", "acquire", "--master", "mymaster").returncode == 0
    assert cluster.holders() == ["a"]
    assert cluster.redis("client", "SET", "k", "before", host=VIP) == "OK"

    cluster.failover("a")
    cluster.wait(lambda: cluster.master_addr("a") not in (None, lab.hosts["a"].ip),
                 "Sentinel to name a new master", timeout=15)
    # Every node's Sentinel runs the hook: the new master binds, the old one
    # lets go; should Sentinel fail over again, the VIP follows it.
    new = cluster.until_settled(lambda m: cluster.wait(
        lambda: cluster.holders() == [m], f"the VIP on {m} only", timeout=15))
    assert lab.wait_for(lambda: lab.neigh_mac("client", VIP) in (None, lab.hosts[new].mac))
    cluster.wait(lambda: cluster.redis("client", "SET", "k", "after", host=VIP) == "OK",
                 "a write through the VIP", timeout=10)
    assert cluster.redis("client", "GET", "k", host=lab.hosts[new].ip) == "after"
    hook_log = (cluster.dir(new) / "sentinel.log").read_text()
    assert "+promoted-slave" in hook_log or "+switch-master" in hook_log


def test_status_reports_every_sentinel_and_agrees(cluster):
    assert cluster.vipfloat("a", "acquire", "--master", "mymaster").returncode == 0
    result = cluster.vipfloat("a", "status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (vip,) = json.loads(result.stdout)["vips"]
    assert (vip["master"], vip["bound_here"], vip["master_is_local"], vip["consistent"]) == (
        "mymaster", True, True, True)
    assert vip["master_addr"] == "198.51.100.11:6379"
    assert [s["address"] for s in vip["sentinels"]] == [
        "198.51.100.11:26379", "198.51.100.12:26379", "198.51.100.13:26379"]
    assert all(s["reachable"] and s["master_addr"] == "198.51.100.11:6379"
               for s in vip["sentinels"])

    on_b = cluster.vipfloat("b", "status", "--json")
    assert on_b.returncode == 0 and json.loads(on_b.stdout)["vips"][0]["master_is_local"] is False

    # What a failed drill's report shows (tests/drills/conftest.py).
    report = cluster.diagnose()
    assert "--- a (198.51.100.11): VIP HELD\n  redis ROLE: master" in report
    assert "--- b (198.51.100.12): VIP not held\n  redis ROLE: slave 198.51.100.11" in report
    assert report.count("sentinel master: ip=198.51.100.11 epoch=0 flags=master replicas=2") == 3
    assert "sentinel.log, last" in report


def test_status_shows_a_dead_sentinel_without_hanging(cluster):
    cluster.stop("sentinel:c")
    cluster.lab.run("c", "ip", "link", "set", "eth1", "down")  # c now drops every packet
    # Dead Sentinels are asked in parallel under a 0.5 s timeout: a hang would hit
    # this subprocess timeout and fail the test.
    result = cluster.lab.run("b", tool("vipfloat"), "status", "--config",
                             str(cluster.vipfloat_config("b")), timeout=10)
    assert result.returncode == 0, result.stdout  # b is no master and holds no VIP: fine
    assert "sentinel 198.51.100.13:26379: unreachable" in result.stdout
    assert "sentinel 198.51.100.11:26379: 198.51.100.11:6379 epoch 0" in result.stdout
    assert "master is elsewhere; VIP not here" in result.stdout


def test_release_disconnects_clients_that_came_through_the_vip(cluster):
    shutil.copy(REPO / "actions" / "pre-release.d" / "20-redis-kill-vip-clients",
                cluster.dir("a") / "pre-release.d")
    assert cluster.vipfloat("a", "acquire", "--master", "mymaster").returncode == 0
    lab = cluster.lab
    # A client blocked on the master through the VIP, and one connected directly.
    through_vip = lab.popen("client", "redis-cli", "-h", VIP, "BLPOP", "nothing", "0",
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    direct = lab.popen("client", "redis-cli", "-h", lab.hosts["a"].ip, "BLPOP", "nothing", "0",
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cluster.wait(lambda: cluster.redis("a", "CLIENT", "LIST").count("cmd=blpop") == 2,
                 "two blocked clients")
    r = cluster.vipfloat("a", "release", "--master", "mymaster")
    assert r.returncode == 0 and "disconnected 1 client(s)" in r.stderr, r.stderr
    assert through_vip.wait(timeout=5) is not None, "still connected"
    assert direct.poll() is None                         # the direct one is untouched
    direct.kill()
    direct.wait()
