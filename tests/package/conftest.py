"""The installed Debian package, tested as installed (tools/package-test builds
it, apt-installs it, runs these and the namespace tests and drills against
/usr/bin with VIPFLOAT_BIN=/usr/bin, then purges it). Collected only when
VIPFLOAT_PACKAGE names the .deb (tests/conftest.py)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vipfloat.lab.netns import Lab


@pytest.fixture(scope="session")
def deb() -> Path:
    return Path(os.environ["VIPFLOAT_PACKAGE"]).resolve()


@pytest.fixture
def lab():
    if os.geteuid() != 0 or not shutil.which("redis-sentinel"):
        pytest.fail("the package tests need root and redis-sentinel (tools/package-test)")
    with Lab(["a", "b", "c", "client"]) as built:
        yield built
