"""The shipped action scripts (actions/) doing their job on a real kernel."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import HOOK, VIP4, hook_args

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not shutil.which("conntrack"), reason="needs conntrack")
def test_conntrack_flush_on_release(lab, host_config, tmp_path):
    cfg = host_config("a")
    scripts = tmp_path / "actions-a"
    scripts.mkdir()
    shutil.copy(REPO / "actions" / "actions.d" / "10-conntrack-flush", scripts)
    assert lab.run("a", HOOK, "--config", cfg, *hook_args("mymaster", "198.51.100.11")
                   ).returncode == 0
    flow = ["-p", "tcp", "-s", "198.51.100.14", "-d", VIP4, "--sport", "40000", "--dport", "6379"]
    other = ["-p", "tcp", "-s", "198.51.100.14", "-d", "198.51.100.11", "--sport", "40001",
             "--dport", "6379"]
    for f in (flow, other):
        r = lab.run("a", "conntrack", "-I", *f, "--state", "ESTABLISHED", "-t", "120", "-u",
                    "ASSURED")
        if r.returncode != 0:
            pytest.skip(f"cannot create conntrack entries here: {r.stderr.strip()}")
    assert VIP4 in lab.run("a", "conntrack", "-L").stdout
    r = lab.run("a", HOOK, "--config", cfg, *hook_args("mymaster", "198.51.100.12"))
    assert r.returncode == 0 and f"conntrack entries for {VIP4} flushed" in r.stderr
    listing = lab.run("a", "conntrack", "-L").stdout
    assert VIP4 not in listing and "198.51.100.11" in listing  # only the VIP's flows went
