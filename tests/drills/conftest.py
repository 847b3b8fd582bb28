"""Drills: real redis-server and redis-sentinel failovers in the namespace lab."""
from __future__ import annotations

import os
import shutil

import pytest

from vipfloat.lab.cluster import RedisLab
from vipfloat.lab.netns import Lab


@pytest.fixture
def lab():
    if os.geteuid() != 0:
        pytest.skip("drills need root")
    if not shutil.which("redis-sentinel"):
        pytest.skip("drills need redis-server and redis-sentinel (apt-get install them)")
    with Lab(["a", "b", "c", "client"]) as built:
        yield built


@pytest.fixture
def cluster(lab, tmp_path):
    with RedisLab(lab, tmp_path) as running:
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed drill's report carries every node's state and log tails, taken
    while its processes still run (fixtures are torn down after this)."""
    outcome = yield
    report = outcome.get_result()
    running = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and isinstance(running, RedisLab):
        report.sections.append(("vipfloat lab state at failure", running.diagnose()))
