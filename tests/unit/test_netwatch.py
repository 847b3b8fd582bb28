"""Parsing netlink multicast datagrams (the agent's wake-up on address/link changes)."""
from __future__ import annotations

import socket
import struct

from vipfloat.netwatch import (IFA_LOCAL, RTM_DELADDR, RTM_NEWADDR, RTM_NEWLINK, AddrChange,
                               link_changed, parse_addr_messages)


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
