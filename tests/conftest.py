"""Marks each test with its tier, from the folder it lives in: `-m "not drill"` etc."""
from __future__ import annotations

import pytest

TIERS = {"netns": pytest.mark.netns, "drills": pytest.mark.drill}


def pytest_collection_modifyitems(items):
    for item in items:
        for folder, mark in TIERS.items():
            if f"/tests/{folder}/" in str(item.fspath):
                item.add_marker(mark)
