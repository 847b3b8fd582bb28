"""Our hand-built frames, dissected by scapy (the reference implementation)."""
from __future__ import annotations

import ipaddress

from scapy.layers.inet6 import IPv6, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr
from scapy.layers.l2 import ARP, Ether

from vipfloat import announce

MAC = bytes.fromhex("020000000011")
MAC_TEXT = "02:00:00:00:00:11"
V4 = ipaddress.ip_address("198.51.100.250")
V6 = ipaddress.ip_address("2001:db8:100::250")


def test_gratuitous_arp_request():
    pkt = Ether(announce.garp_request(MAC, V4))
    assert pkt.dst == "ff:ff:ff:ff:ff:ff" and pkt.src == MAC_TEXT and pkt.type == 0x0806
    arp = pkt[ARP]
    assert (arp.op, arp.hwsrc, arp.psrc, arp.pdst) == (1, MAC_TEXT, str(V4), str(V4))
    assert arp.hwdst == "00:00:00:00:00:00"  # RFC 5227 announcement
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen) == (1, 0x0800, 6, 4)


def test_gratuitous_arp_reply_targets_its_own_mac():
    # Linux's arp_is_garp() takes a reply as gratuitous only if tha == sha.
    arp = Ether(announce.garp_reply(MAC, V4))[ARP]
    assert (arp.op, arp.hwsrc, arp.hwdst, arp.psrc, arp.pdst) == (2, MAC_TEXT, MAC_TEXT,
                                                                  str(V4), str(V4))


def test_unsolicited_na_fields_and_checksum():
    raw = announce.unsolicited_na(MAC, V6)
    pkt = Ether(raw)
    assert pkt.dst == "33:33:00:00:00:01" and pkt.type == 0x86DD
    ip6 = pkt[IPv6]
    assert (ip6.src, ip6.dst, ip6.hlim, ip6.nh, ip6.plen) == (str(V6), "ff02::1", 255, 58, 32)
    na = pkt[ICMPv6ND_NA]
    assert (na.R, na.S, na.O, na.tgt) == (0, 0, 1, str(V6))
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == MAC_TEXT
    # scapy recomputes the checksum when it builds the packet with cksum unset.
    claimed = na.cksum
    del pkt[ICMPv6ND_NA].cksum
    assert Ether(bytes(pkt))[ICMPv6ND_NA].cksum == claimed


def test_round_frames_per_family():
    v4 = announce.round_frames(MAC, V4)
    assert [Ether(f)[ARP].op for f in v4] == [1, 2]
    v6 = announce.round_frames(MAC, V6)
    assert len(v6) == 1 and Ether(v6[0]).haslayer(ICMPv6ND_NA)


def test_checksum_known_value():
    # RFC 1071's worked example: 0001 f203 f4f5 f6f7 sums to ddf2 (one's complement 220d).
    assert announce.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert announce.checksum(b"\x01") == (~0x0100) & 0xFFFF


def test_arp_probe_asks_without_claiming():
    from scapy.layers.l2 import ARP, Ether
    arp = Ether(announce.arp_probe(MAC, V4))[ARP]
    assert (arp.op, arp.psrc, arp.pdst, arp.hwsrc, arp.hwdst) == (
        1, "0.0.0.0", str(V4), MAC_TEXT, "00:00:00:00:00:00")


def test_dad_solicitation():
    from scapy.layers.inet6 import ICMPv6ND_NS
    pkt = Ether(announce.dad_solicitation(MAC, V6))
    assert pkt[IPv6].src == "::" and pkt[IPv6].dst == "ff02::1:ff00:250"
    assert pkt.dst == "33:33:ff:00:02:50" and pkt[IPv6].hlim == 255
    ns = pkt[ICMPv6ND_NS]
    assert ns.tgt == str(V6)
    claimed = ns.cksum
    del pkt[ICMPv6ND_NS].cksum
    assert Ether(bytes(pkt))[ICMPv6ND_NS].cksum == claimed
