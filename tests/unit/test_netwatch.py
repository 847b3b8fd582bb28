"""Parsing netlink multicast datagrams (the agent's wake-up on address/link changes)."""
from __future__ import annotations

import socket
import struct
import time

from vipfloat.netwatch import AddrChange, link_changed, parse_addr_messages
from vipfloat.rtnl import IFA_LOCAL, RTM_DELADDR, RTM_NEWADDR, RTM_NEWLINK


def addr_msg(kind: int, family: int, raw: bytes, prefixlen: int = 24, index: int = 2) -> bytes:
    attr = struct.pack("=HH", 4 + len(raw), IFA_LOCAL) + raw
    attr += b"\0" * (-len(attr) % 4)
    ifaddrmsg = struct.pack("=BBBBI", family, prefixlen, 0, 0, index)
    body = ifaddrmsg + attr
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def link_msg() -> bytes:
    body = struct.pack("=BxHiII", 0, 1, 2, 0, 0)
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, 0, 0, 0) + body


def test_addresses_added_and_removed_in_one_datagram():
    data = (addr_msg(RTM_NEWADDR, socket.AF_INET, socket.inet_aton("198.51.100.250"))
            + addr_msg(RTM_DELADDR, socket.AF_INET6,
                       socket.inet_pton(socket.AF_INET6, "2001:db8:100::250"), 64, 7))
    assert parse_addr_messages(data) == [AddrChange(True, "198.51.100.250", 2, 24),
                                         AddrChange(False, "2001:db8:100::250", 7, 64)]
    assert not link_changed(data)


def test_link_messages_are_recognised_and_truncated_data_is_ignored():
    assert link_changed(link_msg())
    assert parse_addr_messages(link_msg()) == []
    assert parse_addr_messages(b"\x03\x00") == [] and not link_changed(b"")



class Cache:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def address_changed(self, change: AddrChange) -> None:
        self.seen.append(change)

    def links_changed(self) -> None:
        self.seen.append("links")

    def forget(self) -> None:
        self.seen.append("forget")


def test_drain_applies_what_is_queued_now_in_order_and_wakes_once():
    """The VIP's actor calls drain() under the lock: every change the kernel has
    already queued must be in the cache when it returns, in the kernel's order."""
    from vipfloat.netwatch import NetWatcher

    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    cache, woken = Cache(), []
    watcher = NetWatcher({"198.51.100.250"}, lambda: woken.append(1), listener=cache, sock=ours)
    try:
        vip = socket.inet_aton("198.51.100.250")
        kernel.send(addr_msg(RTM_NEWADDR, socket.AF_INET, vip)
                    + addr_msg(RTM_DELADDR, socket.AF_INET, vip) + link_msg())
        # Whether the watcher's own thread got to it first or not, it is all
        # applied when drain() returns (one reader at a time).
        watcher.drain()
        assert cache.seen == [AddrChange(True, "198.51.100.250", 2, 24),
                              AddrChange(False, "198.51.100.250", 2, 24), "links"]
        # The wake-up is not part of that promise: whichever reader applied the
        # changes calls on_change() after releasing the lock, so if it was the
        # watcher's thread, it may not have happened yet. Wait for it (10 s: a
        # guard a correct run never approaches), then it must be just one.
        deadline = time.monotonic() + 10
        while not woken and time.monotonic() < deadline:
            time.sleep(0.01)
        assert woken == [1]
        watcher.drain()                      # nothing queued: returns at once, no wake-up
        assert woken == [1] and len(cache.seen) == 3
    finally:
        watcher.close()
        kernel.close()
