"""Who claims our VIPs on the wire: ARP and neighbor advertisements, as they pass.

One thread per interface reads ARP frames (an AF_PACKET socket bound to
ETH_P_ARP) and ICMPv6 neighbor advertisements (an ETH_P_IPV6 socket with a
classic BPF filter, so Redis's own IPv6 traffic never reaches Python). A frame
in which another MAC says "this IP is mine" is a *claim*. Claims tell the old
holder that the new one has announced itself (so it can release without a
black hole), and reveal conflicts when nobody else should hold the VIP.

Only claims of the configured VIPs are kept, and only the last few hundred: the
wire carries every host's ARP, and a flood of it must cost a bytes comparison
per frame, not memory and a copy of the history.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .announce import ETH_P_ARP, ETH_P_IPV6
from .config import IPAddress

log = logging.getLogger(__name__)

SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
# ldh [12]; jeq 0x86dd; ldb [20]; jeq 58 (ICMPv6); ldb [54]; jeq 136 (NA); accept; drop.
# Neighbor advertisements carry no extension headers, so the offsets are fixed.
_NA_FILTER = [(0x28, 0, 0, 12), (0x15, 0, 5, ETH_P_IPV6), (0x30, 0, 0, 20), (0x15, 0, 3, 58),
              (0x30, 0, 0, 54), (0x15, 0, 1, 136), (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)]


@dataclass(frozen=True)
class Sighting:
    """Another MAC seen on the wire saying one of our VIPs is its own (not to be
    confused with decide.Claim, what Sentinel says about the master)."""

    t: float
    ip: IPAddress
    mac: bytes


def parse_claim(frame: bytes) -> tuple[IPAddress, bytes] | None:
    """Pure: (ip, mac) if ``frame`` says ip belongs to mac, else None.

    ARP request or reply with a sender IP (not a probe's 0.0.0.0): the sender
    claims it. Neighbor advertisement: the target, owned by the target
    link-layer address option, else by the Ethernet source."""
    if len(frame) >= 42 and frame[12:14] == b"\x08\x06":
        sender_ip = frame[28:32]
        if sender_ip == b"\0\0\0\0":
            return None
        return ipaddress.IPv4Address(sender_ip), frame[22:28]
    if (len(frame) >= 78 and frame[12:14] == b"\x86\xdd" and frame[20] == 58
            and frame[54] == 136):
        target = ipaddress.IPv6Address(frame[62:78])
        mac = frame[6:12]
        opt = 78
        while opt + 2 <= len(frame):
            kind, length = frame[opt], frame[opt + 1] * 8
            if length == 0:
                break
            if kind == 2 and length >= 8:
                mac = frame[opt + 2:opt + 8]
            opt += length
        return target, mac
    return None


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def claimed_bytes(frame: bytes) -> bytes:
    """Pure: the raw address a frame would claim, without parsing it: an ARP
    frame's sender IP, otherwise where a neighbor advertisement carries its target.
    Exactly the bytes parse_claim turns into the claimed IP, so a frame whose
    bytes are none of our VIPs' can be dropped without building anything."""
    if frame[12:14] == b"\x08\x06":
        return frame[28:32]
    return frame[62:78]


class SightingLog:
    """The recent claims of our VIPs by other MACs on one interface, for the agent
    to wait on. Fed frame by frame by WireWatcher's socket thread (or a test).

    Only claims of ``vips`` are kept, at most ``limit`` of them and none older
    than ``keep`` seconds: everything else on the wire (every host's ARP, and at
    1,000 frames/s with random senders, a flood) is dropped after one bytes
    comparison, and the history is a bounded deque, so a frame costs O(1)."""

    KEEP = 60.0   # seconds of history
    LIMIT = 256   # claims kept at most; the oldest go first

    def __init__(self, own_mac: bytes, vips: frozenset[IPAddress], keep: float = KEEP,
                 limit: int = LIMIT,
                 on_claim: Callable[[Sighting], None] = lambda claim: None) -> None:
        self.own_mac = own_mac
        self.on_claim = on_claim   # told of each claim kept, outside the lock
        self.keep = keep
        self._claims: deque[Sighting] = deque(maxlen=limit)
        self._cond = threading.Condition()
        self._closed = False
        self.watch(vips)

    def watch(self, vips: frozenset[IPAddress]) -> None:
        """Care about these VIPs from now on (after a config reload)."""
        # One assignment: the socket thread sees the old set or the new, never half.
        self._packed = frozenset(ip.packed for ip in vips)

    def record(self, frame: bytes, t: float) -> Sighting | None:
        """Keep the claim ``frame`` makes, seen at ``t``, if it is one of our VIPs
        by another MAC; returns it, or None when the frame was dropped."""
        if claimed_bytes(frame) not in self._packed:
            return None
        parsed = parse_claim(frame)
        if parsed is None or parsed[1] == self.own_mac:
            return None
        claim = Sighting(t, parsed[0], parsed[1])
        with self._cond:
            horizon = t - self.keep
            while self._claims and self._claims[0].t < horizon:  # oldest first
                self._claims.popleft()
            self._claims.append(claim)
            self._cond.notify_all()
        try:
            self.on_claim(claim)
        except Exception:  # noqa: BLE001 - the watcher must outlive its listener's bugs
            log.exception("telling the agent of a claim of %s", claim.ip)
        return claim

    def __len__(self) -> int:
        return len(self._claims)

    def sightings(self, ip: IPAddress, since: float) -> list[Sighting]:
        with self._cond:
            return [c for c in self._claims if c.ip == ip and c.t >= since]

    def wait_sighting(self, ip: IPAddress, since: float, timeout: float) -> Sighting | None:
        """The first claim of ``ip`` by another MAC at or after ``since``, waiting up
        to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [c for c in self._claims if c.ip == ip and c.t >= since]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class WireWatcher:
    """Claims of ``vips`` seen on one interface, kept for a while, waited on by
    the agent. ``vips`` is required: a watcher that recorded every sender would
    let any host's ARP traffic fill its memory and its CPU."""

    KEEP = SightingLog.KEEP

    def __init__(self, ifname: str, own_mac: bytes, *, vips: frozenset[IPAddress],
                 on_claim: Callable[[Sighting], None] = lambda claim: None) -> None:
        self.ifname = ifname
        self.own_mac = own_mac
        self.history = SightingLog(own_mac, vips, on_claim=on_claim)
        self._stop = threading.Event()
        self._arp = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        self._arp.bind((ifname, 0))
        self._na = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
        _attach_filter(self._na, _NA_FILTER)
        self._na.bind((ifname, 0))
        _drain(self._na)  # frames queued before the filter was attached
        for sock in (self._arp, self._na):
            sock.setblocking(False)
        self._thread = threading.Thread(target=self._loop, name=f"wire-{ifname}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        socks = [self._arp, self._na]
        record = self.history.record  # drops all but our VIPs' claims, cheaply
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(socks, [], [], 1.0)
            except (OSError, ValueError):
                return
            for sock in ready:
                while True:
                    try:
                        frame, addr = sock.recvfrom(2048)
                    except (BlockingIOError, OSError):
                        break
                    if addr[2] != PACKET_OUTGOING:
                        record(frame, time.monotonic())

    def watch(self, vips: frozenset[IPAddress]) -> None:
        self.history.watch(vips)

    def sightings(self, ip: IPAddress, since: float) -> list[Sighting]:
        return self.history.sightings(ip, since)

    def wait_sighting(self, ip: IPAddress, since: float, timeout: float) -> Sighting | None:
        return self.history.wait_sighting(ip, since, timeout)

    def close(self) -> None:
        self._stop.set()
        self.history.close()
        self._thread.join(timeout=2)
        self._arp.close()
        self._na.close()


def _drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    while True:
        try:
            sock.recv(2048)
        except (BlockingIOError, OSError):
            return
