"""The pyroute2 adapter: this host's addresses, and the VIP on and off.

Idempotent by contract: adding an address that is there (EEXIST) and removing one
that is not (EADDRNOTAVAIL) are successes. Only the exact configured address and
prefix on the configured interface is ever removed. pyroute2 costs 150-250 ms to
import even trimmed (see _pyroute2), so this module is imported only on paths
that change or read addresses.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable

from ._pyroute2 import IPRoute, NetlinkError

from .config import IPAddress, VipConfig
from .decide import Binding
from .errors import InterfaceError, NetlinkOperationError

log = logging.getLogger(__name__)

IFF_UP = 0x1
# Add IPv6 VIPs without duplicate address detection: DAD holds a new address
# "tentative" (unusable) for about a second, which is a second of failover.
IFA_F_NODAD = 0x02


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: bytes
    up: bool


@dataclass(frozen=True)
class AddrRow:
    """One address from a netlink dump, parsed."""

    index: int
    ip: IPAddress
    prefixlen: int


def usable(link: Link | None, ifname: str) -> Link:
    """``link`` if it can carry a VIP now: it must exist and be up."""
    if link is None:
        raise InterfaceError(f"interface {ifname} does not exist")
    if not link.up:
        raise InterfaceError(f"interface {ifname} is down")
    return link


def binding_of(rows: Iterable[AddrRow], index: int | None, vip: VipConfig) -> tuple[Binding, str]:
    """Pure: is ``vip`` bound on interface ``index``, per an address dump?"""
    if index is None:
        return Binding.ABSENT, ""
    for row in rows:
        if row.index == index and row.ip == vip.ip:
            if row.prefixlen == vip.address.network.prefixlen:
                return Binding.PRESENT, ""
            return Binding.FOREIGN, f"/{row.prefixlen}"
    return Binding.ABSENT, ""


class NetlinkHost:
    """One rtnetlink socket, in this process's namespace or in ``netns`` (tests)."""

    def __init__(self, netns: str | None = None) -> None:
        self._ipr = IPRoute(netns=netns) if netns else IPRoute()

    def __enter__(self) -> NetlinkHost:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        self._ipr.close()

    def addresses(self) -> tuple[AddrRow, ...]:
        rows = []
        for msg in self._ipr.get_addr():
            try:
                ip = ipaddress.ip_address(msg.get("IFA_ADDRESS"))
            except ValueError:
                continue
            rows.append(AddrRow(index=msg["index"], ip=ip, prefixlen=msg["prefixlen"]))
        return tuple(rows)

    def link(self, ifname: str) -> Link | None:
        """The interface, or None when it does not exist (one RTM_GETLINK by name)."""
        try:
            msg = self._ipr.link("get", ifname=ifname)[0]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise _netlink_error(f"looking up {ifname}", exc) from None
        mac = bytes.fromhex((msg.get("IFLA_ADDRESS") or "00:00:00:00:00:00").replace(":", ""))
        return Link(index=msg["index"], name=ifname, mac=mac, up=bool(msg["flags"] & IFF_UP))

    def usable_link(self, ifname: str) -> Link:
        """The interface for acquiring: it must exist and be up."""
        return usable(self.link(ifname), ifname)

    def add(self, vip: VipConfig, link: Link) -> bool:
        """Bind the VIP; True if added, False if it was there already."""
        flags = IFA_F_NODAD if vip.ip.version == 6 else 0
        try:
            self._ipr.addr("add", index=link.index, address=str(vip.ip),
                           prefixlen=vip.address.network.prefixlen, flags=flags)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise _netlink_error(f"adding {vip.address} to {link.name}", exc) from None
        return True

    def remove(self, vip: VipConfig, link: Link) -> bool:
        """Unbind the VIP; True if removed, False if it was not there."""
        try:
            self._ipr.addr("del", index=link.index, address=str(vip.ip),
                           prefixlen=vip.address.network.prefixlen)
        except NetlinkError as exc:
            if exc.code in (errno.EADDRNOTAVAIL, errno.ENODEV):
                return False
            raise _netlink_error(f"removing {vip.address} from {link.name}", exc) from None
        return True


def _netlink_error(what: str, exc: NetlinkError) -> NetlinkOperationError:
    hint = ""
    if exc.code == errno.EPERM:
        hint = " (needs CAP_NET_ADMIN: see systemd/redis-sentinel.service.d/vipfloat.conf)"
    return NetlinkOperationError(f"{what}: {os.strerror(exc.code)}{hint}")


def reset_connections(ip: IPAddress) -> None:
    """Destroy this host's TCP sockets whose local address is ``ip`` (sock_diag
    SOCK_DESTROY, as `ss -K` does): each peer gets a RST and reconnects at once,
    instead of hanging on a master that is about to be demoted. Must run while
    the address is still here, or the kernel cannot send the RST. Best effort."""
    import subprocess

    target = f"[{ip}]" if ip.version == 6 else str(ip)
    try:
        proc = subprocess.run(["ss", "-K", "-t", "-n", "src", target], capture_output=True,
                              text=True, timeout=2)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("resetting connections to %s failed: %s", ip, exc)
        return
    killed = max(0, len(proc.stdout.strip().splitlines()) - 1)  # minus the header line
    if proc.returncode != 0:
        log.warning("resetting connections to %s: ss exited %d: %s", ip, proc.returncode,
                    proc.stderr.strip())
    elif killed:
        log.info("reset %d TCP connection(s) to %s", killed, ip)
