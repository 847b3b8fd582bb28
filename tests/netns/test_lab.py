"""The lab itself: partitions cut exactly the links they should."""
from __future__ import annotations

import shutil

import pytest


@pytest.mark.skipif(not shutil.which("nft"), reason="needs nftables")
def test_partition_cuts_one_side_from_the_other_only(lab):
    def reaches(src: str, dst: str) -> bool:
        return lab.run(src, "ping", "-c1", "-W1", lab.hosts[dst].ip).returncode == 0

    lab.partition(["a"], ["b"])
    assert not reaches("a", "b") and not reaches("b", "a")
    assert reaches("a", "peer") and reaches("b", "peer")
    lab.heal()
    # The neighbour entries that failed during the cut resolve again within a
    # retransmission or two.
    assert lab.wait_for(lambda: reaches("a", "b"), timeout=5, interval=0.1)


def test_a_second_lab_is_refused_while_one_is_up(lab):
    from vipfloat.lab.netns import Lab, LabError

    with pytest.raises(LabError, match="a lab is already up"):
        with Lab(["x"]):
            pass
    assert lab.run("a", "true").returncode == 0        # the first one is untouched


def test_a_lab_left_by_a_dead_process_is_removed(capfd):
    import os
    import subprocess

    from vipfloat.lab.netns import Lab, sh

    if os.geteuid() != 0:
        pytest.skip("needs root")
    dead = subprocess.Popen(["true"])
    dead.wait()                                         # its pid is now free
    stale = f"vf{dead.pid}-sw"
    sh("ip", "netns", "add", stale)
    try:
        with Lab(["x"]) as fresh:
            assert fresh.run("x", "true").returncode == 0
        assert stale not in sh("ip", "netns", "list").stdout
        assert f"removing a lab left behind by pid {dead.pid}" in capfd.readouterr().err
    finally:
        sh("ip", "netns", "del", stale, check=False)
