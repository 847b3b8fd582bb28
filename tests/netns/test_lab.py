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
    assert reaches("a", "b")
