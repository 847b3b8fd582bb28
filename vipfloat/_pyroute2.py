"""IPRoute without the cost of pyroute2's package ``__init__``.

``import pyroute2`` runs an ``__init__`` that imports every subsystem it has (NDB,
IPDB, conntrack, nftables, wireguard, nl80211 ...): about 100 ms here, on the
hook's critical path, for classes the hook never uses. Python always runs a
package's ``__init__`` before any of its submodules, so we put the package in
``sys.modules`` ourselves, uninitialised, import just ``pyroute2.iproute.linux``,
and run the real ``__init__`` the first time anybody asks the package for a name
that is not a submodule (PEP 562 ``__getattr__``), so ``from pyroute2 import X``
elsewhere in the same process still works (tests/unit/test_pyroute2_lazy.py).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any


def _install_lazy_package() -> None:
    if "pyroute2" in sys.modules:
        return  # already imported (the agent, the tests): nothing to save
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # let the normal import raise its normal error
    package = types.ModuleType("pyroute2")
    package.__spec__ = spec
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    package.__package__ = "pyroute2"
    loader = spec.loader  # not None (checked above), also inside __getattr__
    package.__loader__ = loader

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        # `from pyroute2 import config` (submodules do this): load just that one.
        try:
            return importlib.import_module(f"pyroute2.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pyroute2.{name}":
                raise
        # A name only the real __init__ defines (IPRoute, NDB ...): run it, once.
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, name)

    # PEP 562: a module's __getattr__ is an attribute of the module object.
    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["pyroute2"] = package


_install_lazy_package()

from pyroute2.iproute.linux import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

__all__ = ["IPRoute", "NetlinkError"]
