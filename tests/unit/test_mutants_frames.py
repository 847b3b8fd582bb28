"""Every field of every frame we build, dissected by scapy (the reference), for a
table of addresses and MACs: the fields `make mutate` showed unchecked (IPv6
version, traffic class and flow label, ICMPv6 code and reserved bits, the option
length), checksums wide enough to set the top bit, the checksum's carry folding,
and probe_frame's choice per family."""
from __future__ import annotations

import ipaddress
import random
import struct

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.utils import checksum as scapy_checksum

from vipfloat import announce

MACS = [bytes.fromhex("020000000011"), bytes.fromhex("ffeeddccbbaa")]
V4 = [ipaddress.IPv4Address(a) for a in ("198.51.100.250", "203.0.113.255", "10.255.0.1")]
V6 = [ipaddress.IPv6Address(a) for a in ("2001:db8:100::250", "fd00::abcd:1234", "fe80::1",
                                          "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe")]


def name(ip) -> str:
    return str(ip).replace(":", "-")            # '::' would split a pytest node id


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def ipv6_header_ok(pkt, src: str, dst: str) -> None:
    ip6 = pkt[IPv6]
    assert (ip6.version, ip6.tc, ip6.fl, ip6.nh, ip6.hlim) == (6, 0, 0, 58, 255)
    assert (ip6.src, ip6.dst) == (src, dst)
    assert ip6.plen == len(bytes(ip6.payload))


def checksum_ok(pkt, layer) -> None:
    claimed = pkt[layer].cksum
    del pkt[layer].cksum                       # scapy recomputes it when rebuilding
    assert Ether(bytes(pkt))[layer].cksum == claimed


@pytest.mark.parametrize("mac", MACS, ids=bytes.hex)
@pytest.mark.parametrize("ip", V6, ids=name)
def test_unsolicited_na_every_field(mac, ip):
    raw = announce.unsolicited_na(mac, ip)
    pkt = Ether(raw)
    assert (pkt.dst, pkt.src, pkt.type) == ("33:33:00:00:00:01", mac_text(mac), 0x86DD)
    ipv6_header_ok(pkt, str(ip), "ff02::1")
    na = pkt[ICMPv6ND_NA]
    assert (na.type, na.code, na.R, na.S, na.O, na.res, na.tgt) == (136, 0, 0, 0, 1, 0, str(ip))
    opt = pkt[ICMPv6NDOptDstLLAddr]
    assert (opt.type, opt.len, opt.lladdr) == (2, 1, mac_text(mac))   # len in units of 8 bytes
    assert len(raw) == 14 + 40 + 24 + 8
    checksum_ok(pkt, ICMPv6ND_NA)


@pytest.mark.parametrize("mac", MACS, ids=bytes.hex)
@pytest.mark.parametrize("ip", V6, ids=name)
def test_dad_solicitation_every_field(mac, ip):
    raw = announce.dad_solicitation(mac, ip)
    pkt = Ether(raw)
    group = ipaddress.IPv6Address(int(ipaddress.IPv6Address("ff02::1:ff00:0"))
                                  | (int(ip) & 0xFFFFFF))          # RFC 4291 2.7.1
    assert announce.solicited_node(ip) == group
    assert (pkt.dst, pkt.src, pkt.type) == (
        "33:33:" + mac_text(group.packed[12:]), mac_text(mac), 0x86DD)
    ipv6_header_ok(pkt, "::", str(group))
    ns = pkt[ICMPv6ND_NS]
    assert (ns.type, ns.code, ns.res, ns.tgt) == (135, 0, 0, str(ip))
    assert not ns.payload                      # no source link-layer option from ::
    assert len(raw) == 14 + 40 + 24
    checksum_ok(pkt, ICMPv6ND_NS)


@pytest.mark.parametrize("mac", MACS, ids=bytes.hex)
@pytest.mark.parametrize("ip", V4, ids=name)
@pytest.mark.parametrize("build, op, psrc, hwdst", [
    (announce.garp_request, 1, "vip", "zero"),
    (announce.garp_reply, 2, "vip", "own"),
    (announce.arp_probe, 1, "0.0.0.0", "zero"),
], ids=["garp-request", "garp-reply", "probe"])
def test_arp_frames_every_field(mac, ip, build, op, psrc, hwdst):
    raw = build(mac, ip)
    pkt = Ether(raw)
    assert (pkt.dst, pkt.src, pkt.type) == ("ff:ff:ff:ff:ff:ff", mac_text(mac), 0x0806)
    arp = pkt[ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen, arp.op) == (1, 0x0800, 6, 4, op)
    assert (arp.hwsrc, arp.psrc, arp.pdst) == (mac_text(mac), str(ip) if psrc == "vip" else psrc,
                                               str(ip))
    assert arp.hwdst == (mac_text(mac) if hwdst == "own" else "00:00:00:00:00:00")
    assert len(raw) == 14 + 28


@pytest.mark.parametrize("ip", V4 + V6, ids=name)
def test_probe_frame_asks_in_the_family_of_the_address(ip):
    pkt = Ether(announce.probe_frame(MACS[0], ip))
    if ip.version == 4:
        assert (pkt[ARP].op, pkt[ARP].psrc, pkt[ARP].pdst, pkt[ARP].hwsrc) == (
            1, "0.0.0.0", str(ip), mac_text(MACS[0]))
    else:
        assert (pkt[IPv6].src, pkt[ICMPv6ND_NS].tgt, pkt.src) == ("::", str(ip), mac_text(MACS[0]))


@pytest.mark.parametrize("ip", V4 + V6, ids=name)
def test_round_frames_announce_in_the_family_of_the_address(ip):
    frames = [Ether(f) for f in announce.round_frames(MACS[1], ip)]
    if ip.version == 4:
        assert [(f[ARP].op, f[ARP].psrc, f.src) for f in frames] == [
            (1, str(ip), mac_text(MACS[1])), (2, str(ip), mac_text(MACS[1]))]
    else:
        assert [(f[ICMPv6ND_NA].tgt, f.src) for f in frames] == [(str(ip), mac_text(MACS[1]))]


def _carry_heavy() -> list[bytes]:
    rng = random.Random(1071)
    cases = [b"", b"\x00", b"\xff", b"\xff\xff", b"\xff\xff\x00\x01", b"\xff\xff\xff\xff\x00\x02",
             b"\xff" * 64, b"\xff" * 63, b"\x80\x00" * 3]
    cases += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 90))) for _ in range(40)]
    return cases


@pytest.mark.parametrize("data", _carry_heavy(), ids=lambda d: d[:6].hex() + f"/{len(d)}")
def test_checksum_agrees_with_scapy_and_verifies_to_zero(data):
    ours = announce.checksum(data)
    assert ours == scapy_checksum(data)
    if len(data) % 2 == 0:
        # RFC 1071: the data followed by its checksum sums to all ones.
        assert announce.checksum(data + struct.pack("!H", ours)) == 0
