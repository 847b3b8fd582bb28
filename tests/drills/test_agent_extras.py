"""The agent's other duties on one running cluster (no failover here): conflicts,
metrics, reload, systemd notification, running unprivileged, the hook's fast path."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from vipfloat.lab.cluster import RedisLab, tool
from vipfloat.lab.netns import Lab

VIP = "198.51.100.250"
HOOK_ARGS = ["mymaster", "observer", "start", "198.51.100.12", "6379", "198.51.100.11", "6379"]


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("drills need root")
    with tempfile.TemporaryDirectory(prefix="vipfloat-drill-") as tmp, \
            Lab(["a", "b", "c", "client"]) as lab, \
            RedisLab(lab, Path(tmp), hook=False, agent_options={
                "conflict_probe_interval": 0.5, "metrics_listen": "127.0.0.1:9851"}) as running:
        for node in running.nodes:
            running.start_agent(node)
        running.wait(lambda: lab.has_address("a", f"{VIP}/24"), "the VIP on a")
        yield running


def live(cluster: RedisLab, node: str) -> dict:
    result = cluster.vipfloat(node, "status", "--json")
    return json.loads(result.stdout)["vips"][0]["agent"]


def test_conflict_is_detected_reported_and_the_vip_kept(cluster):
    lab = cluster.lab
    # A misconfigured host (c) also carries the VIP: the kernel there answers
    # ARP probes for it, as a real second holder would.
    lab.run("c", "ip", "addr", "add", f"{VIP}/32", "dev", "eth1", check=True)
    try:
        cluster.wait(lambda: live(cluster, "a")["conflict_mac"] == lab.hosts["c"].mac,
                     "the agent on a to see the conflict", timeout=10)
        assert "CONFLICT" in cluster.agent_log("a") and lab.hosts["c"].mac in cluster.agent_log("a")
        assert lab.has_address("a", f"{VIP}/24")          # kept, and announced again
        out = cluster.vipfloat("a", "status").stdout
        assert f"CONFLICT: {lab.hosts['c'].mac} also answers for {VIP}" in out
        metrics = lab.run("a", "python3", "-c", "import urllib.request;print(urllib.request."
                          "urlopen('http://127.0.0.1:9851/metrics').read().decode())").stdout
        assert 'vipfloat_conflict{master="mymaster",vip="198.51.100.250/24"} 1.0' in metrics
    finally:
        lab.run("c", "ip", "addr", "del", f"{VIP}/32", "dev", "eth1")
    cluster.wait(lambda: live(cluster, "a")["conflict_mac"] is None, "the conflict to clear",
                 timeout=10)


def test_metrics(cluster):
    text = cluster.lab.run("a", "python3", "-c", "import urllib.request;print(urllib.request."
                           "urlopen('http://127.0.0.1:9851/metrics').read().decode())").stdout
    assert 'vipfloat_vip_held{master="mymaster",vip="198.51.100.250/24"} 1.0' in text
    assert "vipfloat_sentinels_reachable 3.0" in text and "vipfloat_quorum_ok 1.0" in text
    assert 'vipfloat_transitions_total{action="acquire",master="mymaster"} 1.0' in text
    assert 'vipfloat_announcement_rounds_total{master="mymaster"}' in text
    assert "vipfloat_last_reconcile_timestamp_seconds" in text


@pytest.mark.parametrize("hook", ["vipfloat-hook", "vipfloat-hook-fast"])
def test_hook_hands_over_to_the_agent(cluster, hook):
    if not Path(tool(hook)).is_file():
        pytest.skip(f"{hook} is not built (make fast-hook)")
    env = cluster.env("a")
    r = cluster.lab.run("a", tool(hook), *HOOK_ARGS, env=env)
    assert r.returncode == 0, r.stderr
    assert "via=agent" in r.stderr and "exit=0" in r.stderr
    # The agent decided: its log has the decision, with the hook's role.
    assert "role=observer" in cluster.agent_log("a")
    bad = cluster.lab.run("a", tool(hook), "nosuch", *HOOK_ARGS[1:], env=env)
    assert bad.returncode == 2 and "via=agent" in bad.stderr


def test_sighup_reloads_and_a_bad_config_is_refused(cluster):
    proc = cluster.procs["agent:a"]
    config = cluster.vipfloat_config("a")
    good = config.read_text()
    try:
        config.write_text(good.replace("[agent]", "[agent]\nannounce_refresh = 30.0"))
        proc.send_signal(signal.SIGHUP)
        cluster.wait(lambda: "config reloaded" in cluster.agent_log("a"), "the reload")
        config.write_text(good + "\n[bogus]\n")
        proc.send_signal(signal.SIGHUP)
        cluster.wait(lambda: "reload refused" in cluster.agent_log("a"), "the refusal")
        assert "bogus: unknown key" in cluster.agent_log("a")
    finally:
        config.write_text(good)
    assert proc.poll() is None                      # still running
    assert cluster.lab.has_address("a", f"{VIP}/24")  # a reload never drops the VIP
    cluster.wait(lambda: live(cluster, "a")["held"], "the agent to serve status again")


def test_systemd_notifications(cluster, tmp_path):
    lab = cluster.lab
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(10)
        config = tmp_path / "b.toml"   # a second agent on b, on its own socket
        config.write_text(cluster.vipfloat_config("b").read_text().replace(
            "agent.sock", "agent2.sock").replace("127.0.0.1:9851", "127.0.0.1:9852"))
        proc = lab.popen("b", tool("vipfloat"), "watch", "--config", str(config),
                         env={"NOTIFY_SOCKET": str(path)}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        try:
            assert listener.recv(256).startswith(b"READY=1")
            proc.send_signal(signal.SIGHUP)
            assert listener.recv(256) == b"RELOADING=1"
            assert listener.recv(256).startswith(b"READY=1")
            proc.send_signal(signal.SIGTERM)
            assert listener.recv(256) == b"STOPPING=1"
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_agent_runs_unprivileged_with_two_capabilities(cluster, tmp_path):
    """As the systemd unit runs it: a plain user with CAP_NET_ADMIN + CAP_NET_RAW.

    CAP_DAC_READ_SEARCH is added only because this machine's Python lives under
    /root (mode 700), which a plain user cannot otherwise reach; it grants nothing
    on the network side."""
    lab = cluster.lab
    cluster.stop("agent:a")
    work = Path(tempfile.mkdtemp(prefix="vipfloat-unpriv-"))
    work.chmod(0o755)
    # Its own state_dir, as RuntimeDirectory= makes it: owned by the agent's user,
    # writable by nobody else (a world-writable one is refused).
    (work / "state").mkdir(mode=0o750)
    os.chown(work / "state", 65534, 65534)
    config = work / "a.toml"
    config.write_text(cluster.vipfloat_config("a").read_text()
                      .replace(str(cluster.dir("a") / "state"), str(work / "state")))
    lab.run("a", "ip", "addr", "del", f"{VIP}/24", "dev", "eth1", check=True)
    proc = lab.popen("a", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     "--inh-caps=+net_admin,+net_raw,+dac_read_search",
                     "--ambient-caps=+net_admin,+net_raw,+dac_read_search",
                     tool("vipfloat"), "watch", "--config", str(config),
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        bound = lab.wait_for(lambda: lab.has_address("a", f"{VIP}/24"), timeout=10)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=10)[0]
        import shutil
        shutil.rmtree(work)
        cluster.start_agent("a")
    assert bound, out
    assert "action=acquire" in out and "Operation not permitted" not in out, out
