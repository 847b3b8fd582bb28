"""Shared helpers for the benchmarks: timing a process, medians, tables."""

from __future__ import annotations

import os
import select
import socket
import statistics
import struct
import threading
import time
from pathlib import Path
from typing import Sequence

from vipfloat.lab.netns import Lab

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO.parent / "shared" / "baseline" / "notify_mymaster.sh"

RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTM_NEWADDR = 20


class AddrWatch:
    """Arrival time of every RTM_NEWADDR in one lab host's namespace, from a
    netlink multicast socket: when the kernel had the VIP, to the microsecond,
    without polling."""

    def __init__(self, lab: Lab, host: str) -> None:
        with lab.inside(host):
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
            self._sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.05)
            if not ready:
                continue
            data = self._sock.recv(65535)
            now = time.monotonic()
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == RTM_NEWADDR:
                    self.times.append(now)
                offset += max(16, (length + 3) & ~3)

    def first_after(self, t0: float, timeout: float = 5.0) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in self.times if t >= t0]
            if later:
                return later[0]
            time.sleep(0.005)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def wait_rusage(pid: int) -> tuple[int, float, int]:
    """Reap ``pid``: (exit status, time reaped, max RSS in KiB of it and its children)."""
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), time.monotonic(), usage.ru_maxrss


def ms(values: Sequence[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    return f"{statistics.median(got) * 1000:.1f}"


def median(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))) for r in rows)
