"""The netlink adapter: this host's addresses, and the VIP on and off.

Idempotent by contract: adding an address that is there (EEXIST) and removing one
that is not (EADDRNOTAVAIL) are successes. Only the exact configured address and
prefix on the configured interface is ever removed. The messages themselves are
vipfloat.rtnl's (the standard library; pyroute2 is their reference in the tests).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from .config import IPAddress, VipConfig
from .decide import Binding
from .errors import InterfaceError, NetlinkOperationError
from .rtnl import Address as AddrRow  # one address of a dump: index, ip, prefixlen
from .rtnl import NetlinkError, Rtnl

if TYPE_CHECKING:
    from .netwatch import AddrChange

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


class KernelCache:
    """This host's addresses and links as netlink last told us.

    A dump seeds it, the agent's :class:`vipfloat.netwatch.NetWatcher` applies
    every change the kernel multicasts, and each add or remove of ours is applied
    as it returns. The failover's hot path then reads no kernel table: an address
    dump and a link lookup through pyroute2 cost 2-3 ms on a busy 2-core host,
    half the agent's share of the hook's hand-over (less through vipfloat.rtnl,
    but still a dump that grows with every address bound here). The agent's
    timer re-reads the kernel into it every tick (Agent.reconcile_all), so a
    view gone wrong despite all this lasts one tick at most. Shared by the
    agent's actors: every method takes the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: set[AddrRow] | None = None      # None: unknown, dump first
        self._links: dict[str, Link] = {}
        # Bumped by every change applied. A dump that a change overlapped may or may
        # not include it, and the change's notification is already consumed: such a
        # dump is not kept (see seed_*).
        self._generation = 0
        # Bumped whenever what the cache says may have changed (a change, a dump
        # that differs, a link looked up anew): a VIP whose decision was taken at
        # this version needs no quiet reconcile (Agent.reconcile_all).
        self._version = 0

    def version(self) -> int:
        with self._lock:
            return self._version

    def generation(self) -> int:
        with self._lock:
            return self._generation

    def addresses(self) -> tuple[AddrRow, ...] | None:
        with self._lock:
            return None if self._rows is None else tuple(self._rows)

    def seed_addresses(self, rows: Iterable[AddrRow], generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                seeded = set(rows)
                if seeded != self._rows:
                    self._version += 1
                self._rows = seeded

    def link(self, ifname: str) -> Link | None:
        with self._lock:
            return self._links.get(ifname)

    def seed_link(self, link: Link, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                if self._links.get(link.name) != link:
                    self._version += 1
                self._links[link.name] = link

    def applied(self, added: bool, row: AddrRow) -> None:
        """Our own add (or remove) succeeded: the kernel has (or lacks) ``row`` now."""
        with self._lock:
            self._generation += 1
            self._version += 1
            if self._rows is not None:
                (self._rows.add if added else self._rows.discard)(row)

    # --- what the NetWatcher tells us (vipfloat.netwatch.Listener) ---------------------
    def address_changed(self, change: AddrChange) -> None:
        # change.address was written by ipaddress from the kernel's bytes: it parses.
        self.applied(change.added, AddrRow(change.index, ipaddress.ip_address(change.address),
                                           change.prefixlen))

    def links_changed(self) -> None:
        # Rare (up/down, rename, MAC change): look the interface up again next time.
        with self._lock:
            self._generation += 1
            self._version += 1
            self._links.clear()

    def forget(self) -> None:
        with self._lock:
            self._generation += 1
            self._version += 1
            self._rows = None
            self._links.clear()


class NetlinkHost:
    """One rtnetlink socket, in this process's namespace or in ``netns`` (tests).

    With a :class:`KernelCache` (the agent's), reads are answered from it unless
    ``fresh`` is asked for, and every change made here is applied to it."""

    def __init__(self, netns: str | None = None, cache: KernelCache | None = None) -> None:
        try:
            self._rtnl = Rtnl(netns)
        except OSError as exc:
            raise NetlinkOperationError(f"opening rtnetlink: {exc}") from None
        self.cache = cache

    def __enter__(self) -> NetlinkHost:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        self._rtnl.close()

    def addresses(self, fresh: bool = False) -> tuple[AddrRow, ...]:
        cache = self.cache
        if cache is not None and not fresh:
            cached = cache.addresses()
            if cached is not None:
                return cached
        generation = cache.generation() if cache is not None else 0
        try:
            rows = self._rtnl.addresses()
        except OSError as exc:        # NetlinkError, or the deadline passed
            raise _netlink_error("reading addresses", exc) from None
        if cache is not None:
            cache.seed_addresses(rows, generation)
        return tuple(rows)

    def link(self, ifname: str, fresh: bool = False) -> Link | None:
        """The interface, or None when it does not exist (one RTM_GETLINK by name)."""
        cache = self.cache
        if cache is not None and not fresh:
            cached = cache.link(ifname)
            if cached is not None:
                return cached
        generation = cache.generation() if cache is not None else 0
        try:
            info = self._rtnl.link(ifname)
        except OSError as exc:        # a refusal (NetlinkError), or the deadline passed
            if isinstance(exc, NetlinkError) and exc.code == errno.ENODEV:
                return None
            raise _netlink_error(f"looking up {ifname}", exc) from None
        link = Link(index=info.index, name=ifname, mac=info.mac or bytes(6),
                    up=bool(info.flags & IFF_UP))
        if cache is not None:
            cache.seed_link(link, generation)
        return link

    def usable_link(self, ifname: str) -> Link:
        """The interface for acquiring: it must exist and be up."""
        return usable(self.link(ifname), ifname)

    def add(self, vip: VipConfig, link: Link) -> bool:
        """Bind the VIP; True if added, False if it was there already."""
        flags = IFA_F_NODAD if vip.ip.version == 6 else 0
        try:
            self._rtnl.change_address(True, link.index, vip.ip, vip.address.network.prefixlen,
                                      flags)
        except OSError as exc:
            if isinstance(exc, NetlinkError) and exc.code == errno.EEXIST:
                # There already, perhaps with another prefix (IPv6 keys on the
                # address alone): the cache was wrong about it, so drop it.
                if self.cache is not None:
                    self.cache.forget()
                return False
            raise _netlink_error(f"adding {vip.address} to {link.name}", exc) from None
        self._applied(True, vip, link)
        return True

    def remove(self, vip: VipConfig, link: Link) -> bool:
        """Unbind the VIP; True if removed, False if it was not there."""
        try:
            self._rtnl.change_address(False, link.index, vip.ip,
                                      vip.address.network.prefixlen)
        except OSError as exc:
            if isinstance(exc, NetlinkError) and exc.code in (errno.EADDRNOTAVAIL, errno.ENODEV):
                self._applied(False, vip, link)
                return False
            raise _netlink_error(f"removing {vip.address} from {link.name}", exc) from None
        self._applied(False, vip, link)
        return True

    def _applied(self, added: bool, vip: VipConfig, link: Link) -> None:
        if self.cache is not None:
            self.cache.applied(added, AddrRow(link.index, vip.ip, vip.address.network.prefixlen))


def _netlink_error(what: str, exc: OSError) -> NetlinkOperationError:
    """A refusal (NetlinkError: the kernel's errno) or a failure of the socket."""
    hint = ""
    if exc.errno == errno.EPERM:
        hint = " (needs CAP_NET_ADMIN: see systemd/redis-sentinel.service.d/vipfloat.conf)"
    return NetlinkOperationError(f"{what}: {exc.strerror or exc}{hint}")


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
