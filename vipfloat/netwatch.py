"""Watching this host's addresses and links through netlink multicast.

The kernel tells every listener when an address is added or removed and when a
link changes state. The agent listens so that a VIP lost to an interface bounce
(ifdown/ifup flushes addresses; IPv6 ones go with the link) is bound again at
once instead of at the next timer tick. The lab's observers use the same parser.
Standard library only: one datagram socket, no pyroute2 dump.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import struct
import threading
from typing import Callable, Iterator

log = logging.getLogger(__name__)

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
IFA_ADDRESS, IFA_LOCAL = 1, 2


def _messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, offset, length) of each netlink message in a datagram."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            return
        yield kind, offset, length
        offset += (length + 3) & ~3


def parse_addr_messages(data: bytes) -> list[tuple[bool, str]]:
    """Pure: (added?, address) for each RTM_NEWADDR/RTM_DELADDR in a netlink datagram."""
    out = []
    for kind, offset, length in _messages(data):
        if kind not in (RTM_NEWADDR, RTM_DELADDR):
            continue
        family = data[offset + 16]
        attrs, end = offset + 16 + 8, offset + length
        found: dict[int, bytes] = {}
        while attrs + 4 <= end:
            alen, atype = struct.unpack_from("=HH", data, attrs)
            if alen < 4:
                break
            found[atype] = data[attrs + 4:attrs + alen]
            attrs += (alen + 3) & ~3
        raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
        if raw and family in (socket.AF_INET, socket.AF_INET6):
            out.append((kind == RTM_NEWADDR, str(ipaddress.ip_address(raw))))
    return out


def link_changed(data: bytes) -> bool:
    """Pure: does the datagram hold an RTM_NEWLINK/RTM_DELLINK message?"""
    return any(kind in (RTM_NEWLINK, RTM_DELLINK) for kind, _, _ in _messages(data))


class NetWatcher:
    """Calls ``on_change()`` (from its own thread) when a watched address is added
    or removed or any link changes state."""

    def __init__(self, addresses: set[str], on_change: Callable[[], None]) -> None:
        self.addresses = addresses
        self.on_change = on_change
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        self._sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        self._thread = threading.Thread(target=self._loop, name="netwatch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.5)
            if not ready:
                continue
            try:
                data = self._sock.recv(65535)
            except OSError as exc:  # ENOBUFS after a burst: we missed some, so look
                log.debug("netlink monitor: %s", exc)
                self.on_change()
                continue
            if link_changed(data) or any(addr in self.addresses
                                         for _, addr in parse_addr_messages(data)):
                self.on_change()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
