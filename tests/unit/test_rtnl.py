"""vipfloat.rtnl: every request checked by pyroute2's decoder, every reply parser
against pyroute2's encoder (pyroute2 is the reference, as scapy is for frames),
and the exchange loop against a fake kernel socket."""
from __future__ import annotations

import errno
import ipaddress
import random
import socket
import struct
import threading
import types

import pytest
from pyroute2.netlink import nlmsgerr
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from vipfloat import rtnl
from vipfloat.rtnl import (NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
                           NLM_F_MULTI, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, RTM_DELADDR,
                           RTM_GETADDR, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, Address, LinkInfo,
                           NetlinkError, Rtnl)

V4 = ipaddress.ip_address("198.51.100.250")
V6 = ipaddress.ip_address("2001:db8:100::250")


# --- requests, decoded by pyroute2 -------------------------------------------------------
def decoded(cls, data: bytes):
    msg = cls(data)
    msg.decode()
    assert msg["header"]["length"] == len(data)          # nothing before or after
    return msg


@pytest.mark.parametrize("add,kind,flags", [
    (True, RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL),
    (False, RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK),
])
def test_an_ipv4_address_request_is_what_pyroute2_and_ip_send(add, kind, flags):
    msg = decoded(ifaddrmsg, rtnl.address_request(41, add, 3, V4, 24))
    assert (msg["header"]["type"], msg["header"]["flags"], msg["header"]["sequence_number"]) \
        == (kind, flags, 41)
    assert (msg["family"], msg["prefixlen"], msg["flags"], msg["scope"], msg["index"]) \
        == (socket.AF_INET, 24, 0, 0, 3)
    assert [name for name, _ in msg["attrs"]] == ["IFA_LOCAL", "IFA_ADDRESS"]
    assert msg.get_attr("IFA_LOCAL") == msg.get_attr("IFA_ADDRESS") == str(V4)


def test_an_ipv6_address_request_carries_the_address_and_its_flags():
    msg = decoded(ifaddrmsg, rtnl.address_request(42, True, 7, V6, 64, flags=0x02))
    assert (msg["family"], msg["prefixlen"], msg["flags"], msg["index"]) \
        == (socket.AF_INET6, 64, 0x02, 7)                     # IFA_F_NODAD
    assert [name for name, _ in msg["attrs"]] == ["IFA_ADDRESS"]
    assert msg.get_attr("IFA_ADDRESS") == str(V6)


def test_the_dump_and_link_requests():
    dump = decoded(ifaddrmsg, rtnl.dump_addresses_request(5))
    assert (dump["header"]["type"], dump["header"]["flags"], dump["family"]) \
        == (RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, socket.AF_UNSPEC)
    link = decoded(ifinfmsg, rtnl.get_link_request(6, "eth1"))
    assert (link["header"]["type"], link["header"]["flags"], link["index"]) \
        == (RTM_GETLINK, NLM_F_REQUEST, 0)
    assert link.get_attr("IFLA_IFNAME") == "eth1"


# --- replies, encoded by pyroute2 -------------------------------------------------------
def encoded(msg, kind: int, flags: int = 0, seq: int = 0) -> bytes:
    msg["header"]["type"], msg["header"]["flags"] = kind, flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def addr_reply(family: int, prefixlen: int, index: int, attrs: list, **header) -> bytes:
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"], msg["attrs"] = family, prefixlen, index, attrs
    return encoded(msg, RTM_NEWADDR, **header)


def link_reply(index: int, flags: int, attrs: list, **header) -> bytes:
    msg = ifinfmsg()
    msg["index"], msg["flags"], msg["attrs"] = index, flags, attrs
    return encoded(msg, RTM_NEWLINK, **header)


def error_reply(code: int, seq: int) -> bytes:
    msg = nlmsgerr()
    msg["error"] = -code
    return encoded(msg, NLMSG_ERROR, seq=seq)


def done(seq: int) -> bytes:
    return rtnl.message(NLMSG_DONE, NLM_F_MULTI, seq, b"\0\0\0\0")


def payload(data: bytes) -> bytes:
    return data[16:]


def test_addresses_parse_as_pyroute2_encodes_them():
    cases = [
        ([("IFA_ADDRESS", str(V4)), ("IFA_LOCAL", str(V4)), ("IFA_LABEL", "eth1")],
         socket.AF_INET, Address(3, V4, 24)),
        # Point-to-point: IFA_ADDRESS is the peer's, IFA_LOCAL ours, whatever the order.
        ([("IFA_LOCAL", "198.51.100.1"), ("IFA_ADDRESS", "198.51.100.2")],
         socket.AF_INET, Address(3, ipaddress.ip_address("198.51.100.1"), 24)),
        ([("IFA_ADDRESS", str(V6)), ("IFA_FLAGS", 0x82)], socket.AF_INET6, Address(3, V6, 24)),
    ]
    for attrs, family, want in cases:
        assert rtnl.parse_address(payload(addr_reply(family, 24, 3, attrs))) == want


def test_addresses_of_other_families_or_sizes_are_skipped():
    assert rtnl.parse_address(payload(addr_reply(socket.AF_PACKET, 0, 3, []))) is None
    assert rtnl.parse_address(payload(addr_reply(socket.AF_INET, 24, 3, []))) is None
    # An IPv6-sized address under AF_INET: not taken for anything.
    raw = struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 3) + rtnl.attr(rtnl.IFA_LOCAL, V6.packed)
    assert rtnl.parse_address(raw) is None


def test_links_parse_as_pyroute2_encodes_them():
    data = link_reply(4, 0x1043, [("IFLA_IFNAME", "eth1"), ("IFLA_ADDRESS", "02:00:00:00:00:0a"),
                                  ("IFLA_MTU", 1500)])
    assert rtnl.parse_link(payload(data)) == LinkInfo(4, 0x1043, bytes.fromhex("02000000000a"))
    assert rtnl.parse_link(payload(link_reply(1, 0x49, [("IFLA_IFNAME", "tun0")]))) \
        == LinkInfo(1, 0x49, b"")                          # no hardware address


def test_error_codes_as_pyroute2_encodes_them():
    for code in (0, errno.EEXIST, errno.EADDRNOTAVAIL, errno.EPERM, errno.ENODEV):
        assert rtnl.error_code(payload(error_reply(code, 1))) == code
    assert rtnl.error_code(b"\x01") == errno.EPROTO


def test_malformed_data_never_raises_and_never_reads_past_its_end():
    good = addr_reply(socket.AF_INET, 24, 3, [("IFA_LOCAL", str(V4))]) \
        + link_reply(4, 1, [("IFLA_IFNAME", "eth1")])
    assert [m.kind for m in rtnl.messages(good)] == [RTM_NEWADDR, RTM_NEWLINK]
    # Truncated anywhere: only the whole messages before the cut.
    first = len(addr_reply(socket.AF_INET, 24, 3, [("IFA_LOCAL", str(V4))]))
    for cut in range(len(good)):
        kinds = [m.kind for m in rtnl.messages(good[:cut])]
        assert kinds == ([RTM_NEWADDR] if cut >= first else [])
    # A length below the header's size would loop for ever: it ends the datagram.
    assert list(rtnl.messages(struct.pack("=IHHII", 8, RTM_NEWADDR, 0, 0, 0) * 3)) == []
    # An attribute claiming more than there is: ignored, with those after it.
    body = struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 3) + struct.pack("=HH", 200, 2) + b"x"
    assert rtnl.parse_address(body) is None
    rng = random.Random(1202)
    for _ in range(3000):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        for msg in rtnl.messages(blob):
            rtnl.parse_address(msg.payload)
            rtnl.parse_link(msg.payload)
            rtnl.error_code(msg.payload)
        rtnl.parse_address(blob)
        rtnl.parse_link(blob)


# --- the exchange, against a fake kernel ------------------------------------------------
class FakeKernel:
    """A socket answering each request with scripted datagrams: ``script(seq)``
    returns [(datagram, sender port id), ...]."""

    def __init__(self, script) -> None:
        self.script = script
        self.sent: list[bytes] = []
        self.queue: list[tuple[bytes, int]] = []
        self.timeouts: list[float] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        seq = struct.unpack_from("=IHHII", data)[3]
        self.queue.extend(self.script(seq))
        return len(data)

    def settimeout(self, seconds: float) -> None:
        self.timeouts.append(seconds)

    def recvmsg(self, size: int):
        if not self.queue:
            raise TimeoutError("timed out")
        data, sender = self.queue.pop(0)
        flags = socket.MSG_TRUNC if len(data) > size else 0
        return data[:size], [], flags, (sender, 0)

    def close(self) -> None:
        pass


def fake(script) -> Rtnl:
    r = Rtnl.__new__(Rtnl)
    r._sock, r._seq, r.deadline = FakeKernel(script), 100, 5.0
    r._lock, r._netns, r.renewed, r._closed = threading.Lock(), None, 0, False

    def renew() -> None:                       # a new socket, the same fake kernel
        r.renewed += 1
        r._sock.queue.clear()
    r._renew = renew
    return r


def row(ip: str, seq: int, flags: int = NLM_F_MULTI) -> bytes:
    return addr_reply(socket.AF_INET, 24, 3, [("IFA_LOCAL", ip)], seq=seq, flags=flags)


def test_a_dump_collects_every_datagram_up_to_done_and_skips_strangers():
    def script(seq):
        return [(row("198.51.100.1", seq - 1), 0),             # late, for an earlier request
                (row("198.51.100.66", seq), 4242),             # not from the kernel
                (row("198.51.100.2", seq) + row("198.51.100.3", seq), 0),
                (row("198.51.100.4", seq) + done(seq), 0)]
    got = fake(script).addresses()
    assert [str(a.ip) for a in got] == ["198.51.100.2", "198.51.100.3", "198.51.100.4"]


def test_an_interrupted_dump_is_dumped_again_then_given_up():
    tries = []

    def script(seq):
        tries.append(seq)
        intr = NLM_F_MULTI | (NLM_F_DUMP_INTR if len(tries) == 1 else 0)
        return [(row(f"198.51.100.{len(tries)}", seq, intr) + done(seq), 0)]
    assert [str(a.ip) for a in fake(script).addresses()] == ["198.51.100.2"]
    assert len(tries) == 2 and tries[0] != tries[1]            # a new sequence number

    always = fake(lambda seq: [(row("198.51.100.9", seq, NLM_F_MULTI | NLM_F_DUMP_INTR)
                                + done(seq), 0)])
    with pytest.raises(NetlinkError) as err:
        always.addresses()
    assert err.value.code == errno.EAGAIN and len(always._sock.sent) == rtnl.DUMP_TRIES


def test_errors_acknowledgements_and_single_replies():
    r = fake(lambda seq: [(error_reply(errno.EEXIST, seq), 0)])
    with pytest.raises(NetlinkError) as err:
        r.change_address(True, 3, V4, 24)
    assert err.value.code == errno.EEXIST and "File exists" in str(err.value)

    fake(lambda seq: [(error_reply(0, seq), 0)]).change_address(False, 3, V4, 24)  # the ack

    link = fake(lambda seq: [(link_reply(4, 1, [("IFLA_ADDRESS", "02:00:00:00:00:0b")], seq=seq),
                              0)]).link("eth1")
    assert link == LinkInfo(4, 1, bytes.fromhex("02000000000b"))
    with pytest.raises(NetlinkError) as err:
        fake(lambda seq: [(error_reply(errno.ENODEV, seq), 0)]).link("eth9")
    assert err.value.code == errno.ENODEV


def test_truncation_silence_and_an_endless_dump_are_errors_and_renew_the_socket():
    # A dump the kernel still runs on the socket would answer the next one EBUSY.
    big = fake(lambda seq: [(row("198.51.100.1", seq) * 9000, 0)])
    with pytest.raises(NetlinkError) as err:
        big.addresses()
    assert err.value.code == errno.EMSGSIZE and big.renewed == 1
    silent = fake(lambda seq: [])
    with pytest.raises(TimeoutError):
        silent.addresses()
    assert silent.renewed == 1

    def endless(seq):
        return [(row("198.51.100.1", seq) * 1000, 0)] * (rtnl.MAX_MESSAGES // 1000 + 2)
    with pytest.raises(NetlinkError) as err:
        fake(endless).addresses()
    assert err.value.code == errno.E2BIG
    # A refusal ends the exchange cleanly: the socket is kept.
    refused = fake(lambda seq: [(error_reply(errno.EEXIST, seq), 0)])
    with pytest.raises(NetlinkError):
        refused.change_address(True, 3, V4, 24)
    assert refused.renewed == 0


def test_the_dumps_end_carries_its_error_and_its_interruption():
    def failed_done(seq):
        return [(row("198.51.100.1", seq) + rtnl.message(NLMSG_DONE, NLM_F_MULTI, seq,
                                                         struct.pack("=i", -errno.ENOBUFS)), 0)]
    with pytest.raises(NetlinkError) as err:
        fake(failed_done).addresses()
    assert err.value.code == errno.ENOBUFS              # not a short dump taken as whole
    tries = []

    def intr_on_done(seq):
        tries.append(seq)
        flags = NLM_F_MULTI | (NLM_F_DUMP_INTR if len(tries) == 1 else 0)
        return [(row("198.51.100.1", seq) + rtnl.message(NLMSG_DONE, flags, seq, b"\0" * 4), 0)]
    assert len(fake(intr_on_done).addresses()) == 1 and len(tries) == 2


def test_one_deadline_for_the_whole_exchange(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 4.5, 6.0])
    monkeypatch.setattr(rtnl, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    r = fake(lambda seq: [(row("198.51.100.1", seq), 0)] * 10)   # never done
    with pytest.raises(TimeoutError):
        r.addresses()
    # Each wait gets what is left of the one deadline, not a fresh 5 s.
    assert r._sock.timeouts == [4.0, 3.0, 0.5]


def test_one_socket_shared_by_threads_answers_each_its_own_request():
    """The agent's tick host is read from its main loop, the netlink watcher's
    thread and actors' at once: no request may take another's replies (an empty
    or partial dump would read as VIPs and local addresses gone)."""
    shared = Rtnl()
    try:
        want = sorted(map(str, shared.addresses()))
        assert want                                   # lo at least
        results: list[object] = []

        def worker() -> None:
            for _ in range(60):
                try:
                    results.append(sorted(map(str, shared.addresses())) == want)
                    results.append(shared.link("lo").index == 1)
                except Exception as exc:  # noqa: BLE001 - reported below
                    results.append(exc)
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [True] * 480
    finally:
        shared.close()
