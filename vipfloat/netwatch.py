"""Watching this host's addresses and links through netlink multicast.

The kernel tells every listener when an address is added or removed and when a
link changes state. The agent listens for two reasons: a VIP lost to an
interface bounce (ifdown/ifup flushes addresses; IPv6 ones go with the link) is
bound again at once instead of at the next timer tick, and the agent's view of
addresses and links (:class:`vipfloat.netlink.KernelCache`) stays current without
a dump on the failover's hot path. The lab's observers use the same parser.
Standard library only: one datagram socket, parsed by vipfloat.rtnl.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import threading
from typing import Callable, NamedTuple, Protocol

from .rtnl import (RTM_DELADDR, RTM_DELLINK, RTM_NEWADDR, RTM_NEWLINK, messages,
                   parse_address)

log = logging.getLogger(__name__)

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
# Datagrams one drain() reads at most: a host churning addresses must not keep a
# caller (a VIP's actor, under the VIP's lock) reading for ever. The watcher's
# own thread comes back for the rest.
DRAIN_MAX = 256


class AddrChange(NamedTuple):
    added: bool
    address: str
    # The interface. Shadows tuple.index(), which nothing calls on an AddrChange.
    index: int  # type: ignore[assignment]
    prefixlen: int


def parse_addr_messages(data: bytes) -> list[AddrChange]:
    """Pure: each RTM_NEWADDR/RTM_DELADDR in a netlink datagram, parsed as a dump's
    rows are (vipfloat.rtnl.parse_address: IFA_LOCAL first, since on a
    point-to-point link IFA_ADDRESS is the peer's)."""
    out = []
    for msg in messages(data):
        if msg.kind in (RTM_NEWADDR, RTM_DELADDR):
            row = parse_address(msg.payload)
            if row is not None:
                out.append(AddrChange(msg.kind == RTM_NEWADDR, str(row.ip), row.index,
                                      row.prefixlen))
    return out


def link_changed(data: bytes) -> bool:
    """Pure: does the datagram hold an RTM_NEWLINK/RTM_DELLINK message?"""
    return any(msg.kind in (RTM_NEWLINK, RTM_DELLINK) for msg in messages(data))


class Listener(Protocol):
    """What the watcher tells a cache of the kernel's tables, as it happens."""

    def address_changed(self, change: AddrChange) -> None: ...
    def links_changed(self) -> None: ...
    def forget(self) -> None: ...          # messages were dropped: trust nothing cached


class NetWatcher:
    """Calls ``on_change()`` (from its own thread) when a watched address is added
    or removed or any link changes state, and feeds every change to ``listener``."""

    def __init__(self, addresses: set[str], on_change: Callable[[], None],
                 listener: Listener | None = None, sock: socket.socket | None = None) -> None:
        self.addresses = addresses
        self.on_change = on_change
        self.listener = listener
        self._stop = threading.Event()
        # ``sock``: any datagram socket carrying netlink messages (a test's).
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        self._sock = sock
        # One reader at a time (the thread, or drain() from a caller's), so the
        # changes reach the listener in the kernel's order.
        self._reading = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="netwatch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.5)
            if ready:
                self.drain()

    def drain(self) -> None:
        """Read and apply every message already queued, without waiting; then
        call on_change() once if any mattered. Also called from other threads
        that need the listener current now."""
        notify = False
        with self._reading:
            for _ in range(DRAIN_MAX):
                try:
                    data = self._sock.recv(65535, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:   # closed: nothing more to read
                        log.debug("netlink monitor: %s", exc)
                        break
                    # A burst overflowed the socket: we missed some, so look.
                    log.debug("netlink monitor: %s", exc)
                    if self.listener is not None:
                        self.listener.forget()
                    notify = True
                    continue
                changes = parse_addr_messages(data)
                links = link_changed(data)
                if self.listener is not None:
                    for change in changes:
                        self.listener.address_changed(change)
                    if links:
                        self.listener.links_changed()
                if links or any(change.address in self.addresses for change in changes):
                    notify = True
        if notify:
            self.on_change()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
