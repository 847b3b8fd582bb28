"""The hook's trimmed pyroute2 import must leave the package fully usable."""
from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import vipfloat.netlink as nl
trimmed = sorted(m for m in ("pyroute2.ndb.main", "pyroute2.conntrack", "pyroute2.ipdb")
                 if m in sys.modules)
from pyroute2 import IPRoute, NDB, netns
from pyroute2.netlink.exceptions import NetlinkError
import pyroute2
print(trimmed, IPRoute is nl.IPRoute, NetlinkError is nl.NetlinkError,
      bool(pyroute2.__version__), callable(netns.pushns), NDB.__name__)
"""


def test_trimmed_import_then_full_package_in_one_process():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True", "True", "True", "True", "NDB"]


def test_full_package_first_is_left_alone():
    code = ("import pyroute2, sys; import vipfloat.netlink as nl; "
            "print(nl.IPRoute is pyroute2.IPRoute)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
