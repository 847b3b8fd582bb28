"""A throwaway network of hosts in network namespaces, on the real kernel.

Each host is a namespace with an ``eth1`` veth whose peer sits on a bridge in a
separate "switch" namespace, so nothing is added to the machine's own namespace
and the switch can later be used to cut links (partition drills). Addresses are
documentation ranges only (198.51.100.0/24, 2001:db8::/32).

Used by the namespace tests, the demo and the benchmarks: one implementation.
Always tears down what it built: use it as a context manager.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

V4_NET = ipaddress.ip_network("198.51.100.0/24")
V6_NET = ipaddress.ip_network("2001:db8:100::/64")
_ALLOWED = [ipaddress.ip_network(n) for n in
            ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


class LabError(RuntimeError):
    pass


def _check_documentation(address: str) -> None:
    ip = ipaddress.ip_interface(address).ip
    if not any(ip in net for net in _ALLOWED):
        raise LabError(f"{address} is outside the documentation ranges; refusing")


def sh(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


_TAG = re.compile(r"^vf(\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def refuse_if_up() -> None:
    """One lab at a time: the labs share addresses, and two on one machine would
    confuse every measurement. A lab whose owner is gone (a run killed with
    SIGKILL cannot tear down) is removed instead, with a note on stderr."""
    names = sh("ip", "netns", "list").stdout.split("\n")
    owned: dict[int, list[str]] = {}
    for line in names:
        name = line.split(" ")[0]
        m = _TAG.match(name)
        if m:
            owned.setdefault(int(m.group(1)), []).append(name)
    for pid, namespaces in owned.items():
        if _alive(pid):
            raise LabError(f"a lab is already up (namespaces {', '.join(sorted(namespaces))}, "
                           f"built by pid {pid}): wait for it to finish, or stop it")
        print(f"removing a lab left behind by pid {pid}: {', '.join(sorted(namespaces))}",
              file=sys.stderr)
        for name in namespaces:
            for pid_in in sh("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_in), 9)
            sh("ip", "netns", "del", name, check=False)


@dataclass
class Host:
    name: str            # short name, e.g. "a"
    netns: str           # namespace name
    v4: str              # e.g. 198.51.100.11/24
    v6: str              # e.g. 2001:db8:100::11/64
    mac: str = ""

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.v4).ip)

    @property
    def ip6(self) -> str:
        return str(ipaddress.ip_interface(self.v6).ip)


@dataclass
class Lab:
    """``Lab(["a", "b", "peer"])``: hosts numbered .11, .12, ... on one bridge."""

    names: Sequence[str]
    # Namespace names start with the owner's pid, so a second lab (or one left by a
    # killed run) is recognised: see refuse_if_up().
    tag: str = field(default_factory=lambda: f"vf{os.getpid()}")
    first: int = 11
    hosts: dict[str, Host] = field(default_factory=dict)
    _built: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def __enter__(self) -> Lab:
        if os.geteuid() != 0:
            raise LabError("the namespace lab needs root (network namespaces, veth, bridge)")
        refuse_if_up()
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *_: Any) -> None:
        self.down()

    def up(self) -> None:
        self._add_ns(self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        # No STP delay and no forwarding delay: ports forward as soon as they are up.
        sh("ip", "-n", self.switch, "link", "set", "br0", "type", "bridge", "stp_state", "0",
           "forward_delay", "0")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        for i, name in enumerate(self.names):
            n = self.first + i
            host = Host(name=name, netns=f"{self.tag}-{name}", v4=f"198.51.100.{n}/24",
                        v6=f"2001:db8:100::{n:x}/64")
            _check_documentation(host.v4)
            _check_documentation(host.v6)
            self._add_ns(host.netns)
            port = f"p-{name}"[:15]
            sh("ip", "link", "add", "vfeth1tmp", "netns", host.netns, "type", "veth", "peer",
               "name", port, "netns", self.switch)
            sh("ip", "-n", host.netns, "link", "set", "vfeth1tmp", "name", "eth1")
            sh("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", host.netns, "link", "set", "lo", "up")
            sh("ip", "-n", host.netns, "addr", "add", host.v4, "dev", "eth1")
            sh("ip", "-n", host.netns, "addr", "add", host.v6, "dev", "eth1", "nodad")
            sh("ip", "-n", host.netns, "link", "set", "eth1", "up")
            self.hosts[name] = host
            host.mac = self.link_mac(name, "eth1")

    def _add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self._built.append(name)

    def down(self) -> None:
        # Kill whatever still runs inside our namespaces, then delete them; the
        # veths and the bridge go with them.
        for name in reversed(self._built):
            pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            sh("ip", "netns", "del", name, check=False)
        self._built.clear()

    # --- cutting links (partition drills) -------------------------------------------
    def partition(self, side: Sequence[str], others: Sequence[str]) -> None:
        """Drop every frame between the hosts in ``side`` and those in ``others`` at
        the switch (nftables bridge filter), both ways; traffic with any host in
        neither group (the client) still flows."""
        sh("ip", "netns", "exec", self.switch, "nft", "add", "table", "bridge", "vipfloat_lab")
        sh("ip", "netns", "exec", self.switch, "nft", "add", "chain", "bridge", "vipfloat_lab",
           "forward", "{ type filter hook forward priority 0; }")
        for x in side:
            for y in others:
                for src, dst in ((x, y), (y, x)):
                    sh("ip", "netns", "exec", self.switch, "nft", "add", "rule", "bridge",
                       "vipfloat_lab", "forward", "iifname", f"p-{src}"[:15], "oifname",
                       f"p-{dst}"[:15], "drop")

    def heal(self) -> None:
        sh("ip", "netns", "exec", self.switch, "nft", "delete", "table", "bridge",
           "vipfloat_lab", check=False)

    # --- running things on a host -------------------------------------------------
    def cmd(self, host: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[host].netns, *argv]

    def run(self, host: str, *argv: str, check: bool = False, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(host, *argv), text=True, capture_output=True,
                              env={**os.environ, **(env or {})}, timeout=timeout, check=check)

    def popen(self, host: str, *argv: str, env: dict[str, str] | None = None,
              **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.cmd(host, *argv), text=True,
                                env={**os.environ, **(env or {})}, **kw)

    # --- looking at a host --------------------------------------------------------
    def link_mac(self, host_or_ns: str, ifname: str) -> str:
        ns = self.hosts[host_or_ns].netns if host_or_ns in self.hosts else host_or_ns
        out = sh("ip", "-n", ns, "-o", "link", "show", ifname).stdout
        return out.split("link/ether", 1)[1].split()[0]

    def addresses(self, host: str, ifname: str = "eth1") -> list[str]:
        out = sh("ip", "-n", self.hosts[host].netns, "-o", "addr", "show", "dev", ifname).stdout
        return [line.split()[3] for line in out.splitlines() if " inet" in line]

    def has_address(self, host: str, address: str, ifname: str = "eth1") -> bool:
        want = ipaddress.ip_interface(address)
        return any(ipaddress.ip_interface(a) == want for a in self.addresses(host, ifname))

    def neigh_mac(self, host: str, ip: str, ifname: str = "eth1") -> str | None:
        """The MAC in ``host``'s neighbour table for ``ip``, or None."""
        out = sh("ip", "-n", self.hosts[host].netns, "neigh", "show", ip, "dev", ifname).stdout
        for line in out.splitlines():
            parts = line.split()
            if "lladdr" in parts:
                return parts[parts.index("lladdr") + 1]
        return None

    def wait_for(self, predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return bool(predicate())

    @contextlib.contextmanager
    def inside(self, host: str) -> Iterator[None]:
        """Run this thread inside ``host``'s namespace (sockets opened here stay there)."""
        from pyroute2 import netns

        netns.pushns(self.hosts[host].netns)
        try:
            yield
        finally:
            netns.popns()
