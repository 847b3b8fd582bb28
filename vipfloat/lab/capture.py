"""Capture frames on a lab host's interface, with arrival times.

A raw AF_PACKET socket opened inside the host's namespace and read by a thread;
each frame is kept with its ``time.monotonic()`` arrival so tests and benchmarks
can say when the first announcement reached the wire.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from typing import Any, Callable

from .netns import Lab

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

Frame = tuple[float, bytes]


def is_arp_for(frame: bytes, ip: str) -> bool:
    return (len(frame) >= 42 and frame[12:14] == b"\x08\x06"
            and frame[28:32] == socket.inet_aton(ip))


def is_na_for(frame: bytes, ip6: str) -> bool:
    # Ethernet (14) + IPv6 (40): next header 58 at 20, ICMPv6 type at 54, target at 62.
    return (len(frame) >= 78 and frame[12:14] == b"\x86\xdd" and frame[20] == 58
            and frame[54] == 136 and frame[62:78] == socket.inet_pton(socket.AF_INET6, ip6))


def arp_op(frame: bytes) -> int:
    op: int = struct.unpack("!H", frame[20:22])[0]
    return op


class Capture:
    def __init__(self, lab: Lab, host: str, ifname: str = "eth1") -> None:
        self.frames: list[Frame] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        with lab.inside(host):
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                       socket.htons(ETH_P_ALL))
            self._sock.bind((ifname, 0))
        self._sock.setblocking(False)
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Capture:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.05)
            if not ready:
                continue
            while True:
                try:
                    data, addr = self._sock.recvfrom(65535)
                except BlockingIOError:
                    break
                now = time.monotonic()
                if addr[2] == PACKET_OUTGOING:
                    continue  # only what arrives at this host
                with self._lock:
                    self.frames.append((now, data))

    def matching(self, predicate: Callable[[bytes], bool]) -> list[Frame]:
        with self._lock:
            return [f for f in self.frames if predicate(f[1])]

    def wait(self, predicate: Callable[[bytes], bool], count: int = 1,
             timeout: float = 5.0) -> list[Frame]:
        """Frames matching ``predicate``, waiting up to ``timeout`` for ``count`` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(predicate)
            if len(found) >= count:
                return found
            time.sleep(0.01)
        return self.matching(predicate)
