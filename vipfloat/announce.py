"""Telling the network that the VIP moved: gratuitous ARP and unsolicited NA.

Frames are built by pure functions into bytes, and sent by a thin AF_PACKET
adapter. Why not scapy on this path: importing scapy's layers costs 0.3-1 s here,
and the hook's first announcement is on the failover's critical path, while these
three frame layouts are fixed and small. The tests dissect every frame with scapy
(the reference implementation) and capture them on a real peer.

Per round, IPv4 sends a gratuitous ARP request *and* reply, because switches and
hosts differ in which one they accept (kube-vip #80, IPaddr2 #977, vip-manager #12).
IPv6 sends an unsolicited neighbor advertisement with the override flag to
all-nodes. The first round goes out at once; the rest follow from one of two
strategies: the hook's (:class:`ForkAnnouncer`, a detached process, so the hook
can exit) or the agent's (:class:`ThreadAnnouncer`, a timer thread a release
cancels). Both stop as soon as the VIP is no longer bound here.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from .config import IPAddress, VipConfig
from .errors import TransientError

if TYPE_CHECKING:
    from .netlink import Link

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ARP_REQUEST = 1
ARP_REPLY = 2
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
ICMPV6_NA = 136
NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LLADDR = 2


def _ether(dst: bytes, src: bytes, ethertype: int) -> bytes:
    return dst + src + struct.pack("!H", ethertype)


def _arp(op: int, mac: bytes, ip: ipaddress.IPv4Address, target_mac: bytes) -> bytes:
    # Gratuitous: sender IP == target IP == the VIP. Linux treats a reply as
    # gratuitous only when the target MAC equals the sender's (arp_is_garp).
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, ip.packed, target_mac, ip.packed)
    return _ether(BROADCAST, mac, ETH_P_ARP) + body


def garp_request(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """RFC 5227 announcement: ARP request, target MAC zero, to broadcast."""
    return _arp(ARP_REQUEST, mac, ip, ZERO_MAC)


def garp_reply(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """Gratuitous ARP reply (what `arping -A` sends), to broadcast."""
    return _arp(ARP_REPLY, mac, ip, mac)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def unsolicited_na(mac: bytes, ip: ipaddress.IPv6Address) -> bytes:
    """Unsolicited neighbor advertisement (RFC 4861 7.2.6): override set, solicited
    clear, to all-nodes, hop limit 255, with the target link-layer address option."""
    option = struct.pack("!BB6s", ND_OPT_TARGET_LLADDR, 1, mac)
    icmp_wo_sum = struct.pack("!BBHI16s", ICMPV6_NA, 0, 0, NA_FLAG_OVERRIDE, ip.packed) + option
    pseudo = ip.packed + ALL_NODES.packed + struct.pack("!I3xB", len(icmp_wo_sum), 58)
    csum = checksum(pseudo + icmp_wo_sum)
    icmp = icmp_wo_sum[:2] + struct.pack("!H", csum) + icmp_wo_sum[4:]
    ipv6 = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 255, ip.packed, ALL_NODES.packed)
    return _ether(ALL_NODES_MAC, mac, ETH_P_IPV6) + ipv6 + icmp


def arp_probe(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """RFC 5227 probe: "who has ip?" from sender IP 0.0.0.0, so that asking never
    updates anybody's cache. Whoever holds ip answers with a reply."""
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, ARP_REQUEST, mac, b"\0" * 4, ZERO_MAC,
                       ip.packed)
    return _ether(BROADCAST, mac, ETH_P_ARP) + body


def solicited_node(ip: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + ip.packed[13:])


def dad_solicitation(mac: bytes, ip: ipaddress.IPv6Address) -> bytes:
    """RFC 4862 duplicate address detection probe: a neighbor solicitation for ip
    from the unspecified address to its solicited-node group. Whoever holds ip
    answers with a neighbor advertisement to all-nodes."""
    group = solicited_node(ip)
    icmp_wo_sum = struct.pack("!BBHI16s", 135, 0, 0, 0, ip.packed)
    unspecified = b"\0" * 16
    pseudo = unspecified + group.packed + struct.pack("!I3xB", len(icmp_wo_sum), 58)
    icmp = icmp_wo_sum[:2] + struct.pack("!H", checksum(pseudo + icmp_wo_sum)) + icmp_wo_sum[4:]
    ipv6 = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 255, unspecified, group.packed)
    dst_mac = b"\x33\x33" + group.packed[12:]
    return _ether(dst_mac, mac, ETH_P_IPV6) + ipv6 + icmp


def probe_frame(mac: bytes, ip: IPAddress) -> bytes:
    """The frame that makes any other holder of ip reveal itself."""
    if isinstance(ip, ipaddress.IPv4Address):
        return arp_probe(mac, ip)
    return dad_solicitation(mac, ip)


def round_frames(mac: bytes, ip: IPAddress) -> tuple[bytes, ...]:
    """The frames of one announcement round for ``ip`` owned by ``mac``."""
    if isinstance(ip, ipaddress.IPv4Address):
        return (garp_request(mac, ip), garp_reply(mac, ip))
    return (unsolicited_na(mac, ip),)


class RawSender:
    """An AF_PACKET socket on one interface (needs CAP_NET_RAW)."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        # Protocol 0: this socket only sends, so the kernel queues nothing to it.
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._sock.bind((ifname, 0))
        except OSError:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def send_round(self, frames: Sequence[bytes]) -> None:
        for frame in frames:
            self._sock.send(frame)

    def close(self) -> None:
        self._sock.close()


def spawn_rounds(sender: RawSender, frames: Sequence[bytes], rounds: int, interval: float,
                 still_bound: Callable[[], bool]) -> None:
    """Send ``rounds`` more rounds, ``interval`` apart, from a detached grandchild,
    so the caller (the hook, on Sentinel's clock) can exit now.

    The grandchild closes every inherited descriptor but the sender's: it must not
    keep the caller's VIP lock, nor a pipe that somebody waits on for EOF.
    """
    if rounds <= 0:
        return
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)  # the child exits at once; the grandchild is re-parented
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        _detach_stdio()
        os.closerange(3, sender.fileno())
        os.closerange(sender.fileno() + 1, _max_fd())
        for _ in range(rounds):
            time.sleep(interval)
            # Never announce an address this host no longer holds: a release (or a
            # newer failover) may have happened since the first round.
            if not still_bound():
                break
            sender.send_round(frames)
    except BaseException:  # noqa: BLE001 - nothing may escape a forked child
        pass
    os._exit(0)


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1024


# --- strategies: the first round now, the rest later --------------------------------

class AnnounceError(TransientError):
    """The VIP is bound but the announcement could not be sent."""


def _send_error(vip: VipConfig, ifname: str, exc: OSError) -> AnnounceError:
    hint = " (needs CAP_NET_RAW)" if exc.errno in (1, 13) else ""
    return AnnounceError(f"announcing {vip.ip} on {ifname}: {exc.strerror}{hint}")


class Announcer(Protocol):
    """Sends the announcement rounds for a VIP just bound (or re-announced)."""

    def start(self, vip: VipConfig, link: Link) -> None: ...   # first round now, the rest later
    def stop(self, vip: VipConfig) -> None: ...                # no more rounds: released


class ForkAnnouncer:
    """The hook's: first round now, the rest from a detached process, so the hook
    exits at once (Sentinel waits for it)."""

    def start(self, vip: VipConfig, link: Link) -> None:
        frames = round_frames(link.mac, vip.ip)
        try:
            sender = RawSender(link.name)
            sender.send_round(frames)
        except OSError as exc:
            raise _send_error(vip, link.name, exc) from None
        try:
            spawn_rounds(sender, frames, vip.announce_count - 1, vip.announce_interval,
                         still_bound=lambda: _still_bound(vip, link.index))
        finally:
            sender.close()

    def stop(self, vip: VipConfig) -> None:
        pass  # the detached rounds check the VIP is still bound before each one


def _still_bound(vip: VipConfig, index: int) -> bool:
    from .decide import Binding
    from .netlink import NetlinkHost, binding_of

    with NetlinkHost() as host:
        return binding_of(host.addresses(), index, vip)[0] is Binding.PRESENT


class ThreadAnnouncer:
    """The agent's: first round now, the rest from a timer thread per VIP, which a
    release (or a newer start) cancels. Keeps one packet socket per interface."""

    def __init__(self, on_round: Callable[[VipConfig], None] = lambda vip: None) -> None:
        self.on_round = on_round
        self.last_round: dict[str, float] = {}      # master -> when the last round went out
        self._senders: dict[str, RawSender] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def _sender(self, ifname: str) -> RawSender:
        with self._lock:
            sender = self._senders.get(ifname)
            if sender is None:
                sender = self._senders[ifname] = RawSender(ifname)
            return sender

    def send(self, vip: VipConfig, link: Link, frames: tuple[bytes, ...] | None = None) -> None:
        """One round now (also used for refreshes and conflict answers)."""
        try:
            self._sender(link.name).send_round(frames or round_frames(link.mac, vip.ip))
        except OSError as exc:
            with self._lock:  # the interface may have been recreated: reopen next time
                self._senders.pop(link.name, None)
            raise _send_error(vip, link.name, exc) from None
        self.last_round[vip.master] = time.time()
        self.on_round(vip)

    def start(self, vip: VipConfig, link: Link) -> None:
        self.stop(vip)
        self.send(vip, link)
        if vip.announce_count <= 1:
            return
        cancel = threading.Event()
        with self._lock:
            self._cancel[vip.master] = cancel

        def rounds() -> None:
            for _ in range(vip.announce_count - 1):
                if cancel.wait(vip.announce_interval):
                    return
                try:
                    self.send(vip, link)
                except AnnounceError as exc:
                    log.warning("%s", exc)

        threading.Thread(target=rounds, name=f"announce-{vip.master}", daemon=True).start()

    def stop(self, vip: VipConfig) -> None:
        with self._lock:
            cancel = self._cancel.pop(vip.master, None)
        if cancel is not None:
            cancel.set()

    def close(self) -> None:
        with self._lock:
            for cancel in self._cancel.values():
                cancel.set()
            for sender in self._senders.values():
                sender.close()
            self._senders.clear()
