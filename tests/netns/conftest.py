"""Namespace tests: real kernel, real pyroute2, real frames on a veth bridge."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from vipfloat.lab.cluster import tool
from vipfloat.lab.netns import Lab

HOOK = tool("vipfloat-hook")
VIPFLOAT = tool("vipfloat")
VIP4 = "198.51.100.250"
VIP6 = "2001:db8:100::250"

CONFIG = """
[sentinel]
addresses = ["198.51.100.11:26379"]

[agent]
state_dir = "{state}"
lock_timeout = 10
retry_timeout = {retry}

[actions]
scripts_dir = "{scripts}"
pre_release_dir = "{scripts}-pre"
timeout = 5

[[vip]]
master = "mymaster"
address = "{vip4}/24"
interface = "{iface}"
announce_count = {count}
announce_interval = {interval}

[[vip]]
master = "six"
address = "{vip6}/64"
interface = "{iface}"
announce_count = {count}
announce_interval = {interval}
"""


@pytest.fixture
def lab():
    if os.geteuid() != 0:
        pytest.skip("namespace tests need root")
    with Lab(["a", "b", "peer"]) as built:
        yield built


@pytest.fixture
def host_config(tmp_path) -> Callable[..., str]:
    """Write a config for one lab host (each host has its own state_dir, as on real hosts)."""
    def write(host: str, iface: str = "eth1", count: int = 2, interval: float = 0.2,
              retry: float = 0.3, base: Path | None = None) -> str:
        base = base or tmp_path
        path = base / f"{host}.toml"
        path.write_text(CONFIG.format(state=base / f"state-{host}",
                                      scripts=base / f"actions-{host}", iface=iface,
                                      count=count, interval=interval, retry=retry,
                                      vip4=VIP4, vip6=VIP6))
        return str(path)
    return write


def hook_args(master: str, to: str, role: str = "leader", frm: str = "198.51.100.99") -> list[str]:
    return [master, role, "start", frm, "6379", to, "6379"]
