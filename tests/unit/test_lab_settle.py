"""RedisLab.until_settled: the drills' rule for following whatever Sentinel
decides, on a scripted sequence of agreements (no lab: agreement() and the
holds check are fakes)."""
from __future__ import annotations

import pytest

from vipfloat.lab.cluster import RedisLab
from vipfloat.lab.netns import LabError


class Scripted(RedisLab):
    """A RedisLab whose Sentinels answer from a script, one view per ask."""

    def __init__(self, views: list[tuple[str, int] | None]) -> None:  # no lab
        self.views = views
        self.asked = 0

    def agreement(self, among=None, master=None):
        view = self.views[min(self.asked, len(self.views) - 1)]
        self.asked += 1
        return view

    def wait(self, predicate, what, timeout=10.0):
        for _ in range(len(self.views) + 1):
            if predicate():
                return
        raise LabError(f"timed out waiting for {what}")


def test_returns_the_master_the_check_held_for_while_still_agreed():
    lab = Scripted([None, ("b", 1), ("b", 1)])
    seen: list[str] = []
    assert lab.until_settled(seen.append) == "b" and seen == ["b"]


def test_follows_a_second_failover_that_came_while_waiting():
    lab = Scripted([("b", 1), ("c", 2), ("c", 2), ("c", 2)])
    seen: list[str] = []

    def holds(master: str) -> None:
        seen.append(master)
        if master == "b":
            raise LabError("the VIP never reached b")

    assert lab.until_settled(holds) == "c" and seen == ["b", "c"]


def test_a_failure_while_sentinel_still_agrees_is_vipfloats():
    lab = Scripted([("b", 1)])

    def holds(master: str) -> None:
        raise LabError(f"the VIP never reached {master}")

    with pytest.raises(LabError, match="never reached b"):
        lab.until_settled(holds)


def test_checks_again_when_sentinel_moved_on_after_the_check_passed():
    # The check held for b, but by then Sentinel had failed over to c: b is no
    # longer what it settled on, so the check runs again on c.
    lab = Scripted([("b", 1), ("c", 2), ("c", 2), ("c", 2)])
    seen: list[str] = []
    assert lab.until_settled(seen.append) == "c" and seen == ["b", "c"]


def test_same_node_at_a_new_epoch_is_a_new_decision():
    lab = Scripted([("b", 1), ("b", 3), ("b", 3), ("b", 3)])
    seen: list[str] = []
    assert lab.until_settled(seen.append) == "b" and seen == ["b", "b"]
