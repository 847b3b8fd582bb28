"""vipfloat doctor against real Redis and Sentinel: a healthy cluster reports no
problem; planted faults (a replica without masterauth, a Sentinel stopped, the
hook Sentinel runs deleted, a world-writable action script) are each reported."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from vipfloat.lab.cluster import RedisLab, tool
from vipfloat.lab.netns import Lab

VIP = "198.51.100.250"


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("drills need root")
    with tempfile.TemporaryDirectory(prefix="vipfloat-doctor-") as tmp:
        # The hook Sentinel runs is a wrapper of our own, so that a test can delete
        # it without touching the installed vipfloat-hook.
        hook = Path(tmp) / "bin" / "vipfloat-hook"
        hook.parent.mkdir()
        hook.write_text(f'#!/bin/sh\nexec {tool("vipfloat-hook")} "$@"\n')
        hook.chmod(0o755)
        with Lab(["a", "b", "c"]) as lab, \
                RedisLab(lab, Path(tmp), hook=str(hook), password="doctor-s3cret") as running:
            for node in running.nodes:
                running.start_agent(node)
            running.wait(lambda: lab.has_address("a", f"{VIP}/24"), "the VIP on a")
            running.hook_file = hook  # type: ignore[attr-defined]
            yield running


def doctor(cluster: RedisLab, node: str = "a") -> tuple[int, list[dict]]:
    r = cluster.vipfloat(node, "doctor", "--json")
    assert r.stderr == "" and "Traceback" not in r.stdout
    return r.returncode, json.loads(r.stdout)["findings"]


def problems(findings: list[dict]) -> set[tuple[str, str]]:
    return {(f["check"], f["subject"]) for f in findings if f["level"] == "problem"}


def test_healthy_cluster_has_no_problem(cluster):
    code, findings = doctor(cluster)
    assert problems(findings) == set() and code == 0
    checks = {f["check"] for f in findings if f["level"] == "ok"}
    assert {"sentinel.ckquorum", "sentinel.script", "redis.masterauth", "redis.bind",
            "redis.link", "host.vip", "host.caps.agent", "host.socket",
            "host.hook_path", "host.scripts"} <= checks
    # The lab's Sentinels may run as root with every capability (direct mode, a
    # warning) or with none (least-privilege, ok): either way the mode is named.
    assert {f["level"] for f in findings if f["check"] == "host.mode"} <= {"ok", "warning"}
    assert any(f["check"] == "host.mode" for f in findings)
    # Never prints the password it read through CONFIG GET or from the config.
    assert "doctor-s3cret" not in cluster.vipfloat("a", "doctor").stdout
    # A replica's view: the master and the VIP are elsewhere, and that is fine.
    code, findings = doctor(cluster, "b")
    assert code == 0, problems(findings)


def test_planted_faults_are_each_reported(cluster):
    lab = cluster.lab
    b, c = lab.hosts["b"].ip, lab.hosts["c"].ip
    cluster.redis("b", "CONFIG", "SET", "masterauth", "")
    cluster.stop("sentinel:c")
    cluster.hook_file.unlink()
    unsafe = cluster.dir("a") / "actions.d" / "50-unsafe"
    unsafe.write_text("#!/bin/sh\nexit 0\n")
    unsafe.chmod(0o777)
    code, findings = doctor(cluster)
    assert code == 1
    found = problems(findings)
    assert ("redis.masterauth", f"redis {b}:6379 (mymaster replica)") in found
    assert ("sentinel.reachable", f"sentinel {c}:26379") in found
    assert ("host.hook_path", f"hook {cluster.hook_file}") in found
    assert ("host.scripts", f"action script {unsafe}") in found
    text = cluster.vipfloat("a", "doctor")
    assert text.returncode == 1
    assert text.stdout.splitlines()[0].startswith("PROBLEM")
