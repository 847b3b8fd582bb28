from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vipfloat import config as config_mod

BASE = """
[sentinel]
addresses = ["198.51.100.11:26379", "198.51.100.12:26379", "198.51.100.13:26379"]

[agent]
state_dir = "{state}"

[actions]
scripts_dir = "{scripts}"

[[vip]]
master = "mymaster"
address = "198.51.100.250/24"
interface = "eth1"

[[vip]]
master = "six"
address = "2001:db8:100::250/64"
interface = "eth1"
"""


@pytest.fixture
def write_config(tmp_path: Path):
    def write(text: str = BASE, name: str = "vipfloat.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).format(state=tmp_path / "state",
                                                     scripts=tmp_path / "actions.d"))
        return path
    return write


@pytest.fixture
def cfg(write_config) -> config_mod.Config:
    return config_mod.load(write_config())
