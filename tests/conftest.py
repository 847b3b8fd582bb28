"""Marks each test with its tier, from the folder it lives in: `-m "not drill"` etc."""
from __future__ import annotations

import os

import pytest

# The installed Debian package's tests run only from tools/package-test, which
# installs it first and names it here.
collect_ignore = [] if os.environ.get("VIPFLOAT_PACKAGE") else ["package"]

TIERS = {"netns": pytest.mark.netns, "drills": pytest.mark.drill, "package": pytest.mark.drill}


def pytest_collection_modifyitems(items):
    for item in items:
        for folder, mark in TIERS.items():
            if f"/tests/{folder}/" in str(item.fspath):
                item.add_marker(mark)
