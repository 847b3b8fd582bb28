"""Claims on the wire: parse_claim, and the SightingLog that keeps only our VIPs'
claims, bounded, whatever floods the interface. No socket needed."""
from __future__ import annotations

import inspect
import ipaddress
import random
import struct
import threading

import pytest

from vipfloat import wire
from vipfloat.announce import arp_probe, garp_reply, garp_request, unsolicited_na
from vipfloat.wire import SightingLog, WireWatcher, claimed_bytes, parse_claim

V4 = ipaddress.IPv4Address("198.51.100.250")
V6 = ipaddress.IPv6Address("2001:db8:100::250")
OWN = bytes.fromhex("020000000001")
OTHER = bytes.fromhex("020000000002")
ETH_SRC = bytes.fromhex("020000000003")


def arp(sender_ip: bytes, mac: bytes = OTHER, op: int = 2) -> bytes:
    """An ARP frame from ``mac`` saying ``sender_ip`` is its own."""
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, sender_ip, b"\0" * 6,
                       bytes(4))
    return b"\xff" * 6 + mac + b"\x08\x06" + body


def na(target: ipaddress.IPv6Address, options: bytes = b"", icmp_type: int = 136) -> bytes:
    """A neighbor advertisement from ETH_SRC (no checksum: parse_claim reads none)."""
    icmp = struct.pack("!BBHI16s", icmp_type, 0, 0, 0x20000000, target.packed) + options
    ipv6 = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 255, target.packed,
                       bytes(16))
    return b"\x33\x33\x00\x00\x00\x01" + ETH_SRC + b"\x86\xdd" + ipv6 + icmp


LLADDR = struct.pack("!BB6s", 2, 1, OTHER)         # target link-layer address option


@pytest.mark.parametrize("frame,expected", [
    (garp_request(OTHER, V4), (V4, OTHER)),
    (garp_reply(OTHER, V4), (V4, OTHER)),
    (arp(V4.packed, op=1), (V4, OTHER)),                        # any request with a sender
    (arp_probe(OTHER, V4), None),                               # 0.0.0.0 claims nothing
    (garp_request(OTHER, V4)[:41], None),                       # truncated
    (unsolicited_na(OTHER, V6), (V6, OTHER)),
    (na(V6, LLADDR), (V6, OTHER)),                              # the option names the owner
    (na(V6), (V6, ETH_SRC)),                                    # else the Ethernet source
    (na(V6, b"\x01\x00" + LLADDR), (V6, ETH_SRC)),             # zero-length option: stop
    (na(V6, struct.pack("!BB6s", 1, 1, OTHER)), (V6, ETH_SRC)),  # source lladdr: not ours
    (na(V6, LLADDR, icmp_type=135), None),                      # a solicitation claims nothing
    (b"\0" * 12 + b"\x08\x00" + b"\0" * 80, None),              # IPv4, not ARP
])
def test_parse_claim(frame, expected):
    assert parse_claim(frame) == expected


def test_claimed_bytes_are_what_parse_claim_reads():
    for frame in (garp_request(OTHER, V4), unsolicited_na(OTHER, V6), na(V6, LLADDR)):
        claim = parse_claim(frame)
        assert claim is not None and claimed_bytes(frame) == claim[0].packed


def log_of(*vips) -> SightingLog:
    return SightingLog(OWN, frozenset(vips))


def test_only_claims_of_our_vips_by_other_macs_are_kept():
    log = log_of(V4, V6)
    assert log.record(garp_request(OTHER, V4), 1.0) == wire.Sighting(1.0, V4, OTHER)
    assert log.record(unsolicited_na(OTHER, V6), 2.0) == wire.Sighting(2.0, V6, OTHER)
    assert log.record(garp_request(OWN, V4), 3.0) is None              # our own
    assert log.record(garp_request(OTHER, V4 + 1), 4.0) is None        # not a VIP
    assert log.record(unsolicited_na(OTHER, V6 + 1), 5.0) is None
    assert log.record(arp_probe(OTHER, V4), 6.0) is None
    assert len(log) == 2
    assert log.sightings(V4, since=0) == [wire.Sighting(1.0, V4, OTHER)]
    assert log.sightings(V4, since=1.5) == []


def test_no_vip_records_nothing():
    log = log_of()
    assert log.record(garp_request(OTHER, V4), 1.0) is None and len(log) == 0


def random_ip(rng: random.Random) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if rng.random() < 0.5:
        return ipaddress.IPv4Address(rng.getrandbits(32))
    return ipaddress.IPv6Address(rng.getrandbits(128))


def announcement(ip, mac: bytes) -> bytes:
    return garp_request(mac, ip) if ip.version == 4 else unsolicited_na(mac, ip)


def test_a_flood_of_other_senders_is_dropped_before_parsing(monkeypatch):
    # At 1,000 ARP frames/s from random senders the old watcher kept (and re-copied,
    # per frame) every one of them. Now a frame that is not about a VIP never gets
    # as far as parse_claim, let alone into the history.
    parsed = []
    monkeypatch.setattr(wire, "parse_claim", lambda frame: parsed.append(frame))
    rng = random.Random(5227)
    log = log_of(V4, V6)
    for i in range(10_000):
        ip = random_ip(rng)
        if ip not in (V4, V6):
            assert log.record(announcement(ip, rng.randbytes(6)), float(i)) is None
    assert parsed == [] and len(log) == 0


def test_the_history_stays_bounded_oldest_dropped():
    rng = random.Random(4861)
    log = log_of(V4, V6)
    for i in range(10_000):
        ip = rng.choice((V4, V6))
        log.record(announcement(ip, rng.randbytes(6)), i / 1000)   # 10 s of claims
    assert len(log) == SightingLog.LIMIT
    kept = log.sightings(V4, since=0) + log.sightings(V6, since=0)
    assert min(c.t for c in kept) == (10_000 - SightingLog.LIMIT) / 1000


def test_claims_older_than_keep_are_forgotten():
    log = SightingLog(OWN, frozenset({V4}), keep=60.0)
    log.record(garp_request(OTHER, V4), 0.0)
    log.record(garp_request(OTHER, V4), 30.0)
    log.record(garp_request(OTHER, V4), 61.0)
    assert [c.t for c in log.sightings(V4, since=-1)] == [30.0, 61.0]


def test_watch_changes_the_vips_cared_about():
    log = log_of(V4)
    log.watch(frozenset({V6}))
    assert log.record(garp_request(OTHER, V4), 1.0) is None
    assert log.record(unsolicited_na(OTHER, V6), 1.0) is not None


def test_wait_sighting_returns_a_sighting_recorded_while_waiting_and_close_wakes_it():
    log = log_of(V4)
    got = []
    waiter = threading.Thread(target=lambda: got.append(log.wait_sighting(V4, 0.0, 30.0)))
    waiter.start()
    log.record(garp_request(OTHER, V4), 1.0)
    waiter.join(10)
    assert got == [wire.Sighting(1.0, V4, OTHER)]
    assert log.wait_sighting(V4, since=2.0, timeout=0) is None
    waiter = threading.Thread(target=lambda: got.append(log.wait_sighting(V6, 0.0, 30.0)))
    waiter.start()
    log.close()
    waiter.join(10)
    assert not waiter.is_alive() and got[-1] is None


def test_wire_watcher_must_be_told_its_vips():
    # Keyword-only and without a default: a watcher that recorded every sender is
    # what let an ARP flood cost a core.
    vips = inspect.signature(WireWatcher).parameters["vips"]
    assert vips.kind is inspect.Parameter.KEYWORD_ONLY and vips.default is inspect.Parameter.empty
