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
