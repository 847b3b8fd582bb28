"""Watching a lab failover: address changes, Sentinel events, client writes.

Each watcher runs in a thread that has entered a lab host's namespace (setns is
per thread), records ``time.monotonic()`` stamps, and stops on ``close()``. The
demo prints from them, the drills assert on them, the benchmarks time them.
"""

from __future__ import annotations

import functools
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..netwatch import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, parse_addr_messages
from .netns import Lab

def in_netns_thread(lab: Lab, host: str, target: Callable[[], None]) -> threading.Thread:
    """Start ``target`` in a daemon thread that lives in ``host``'s namespace."""
    def run() -> None:
        from pyroute2 import netns

        netns.setns(lab.hosts[host].netns)  # this thread only
        target()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class AddrEvent:
    t: float
    host: str
    added: bool
    address: str


class AddrEvents:
    """Every address added or removed on the given hosts, as it happens (netlink)."""

    def __init__(self, lab: Lab, hosts: list[str]) -> None:
        self.events: list[AddrEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks = {}
        for host in hosts:
            with lab.inside(host):
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
                sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            self._socks[sock] = host
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select(list(self._socks), [], [], 0.05)
            for sock in ready:
                data = sock.recv(65535)
                now = time.monotonic()
                with self._lock:
                    for change in parse_addr_messages(data):
                        self.events.append(AddrEvent(now, self._socks[sock], change.added,
                                                     change.address))

    def matching(self, address: str, added: bool | None = None, after: float = 0.0,
                 host: str | None = None) -> list[AddrEvent]:
        with self._lock:
            return [e for e in self.events if e.address == address and e.t >= after
                    and (added is None or e.added == added) and (host is None or e.host == host)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for sock in self._socks:
            sock.close()


@dataclass(frozen=True)
class SentinelEvent:
    t: float
    source: str      # which host's Sentinel published it
    channel: str
    data: str


class SentinelEvents:
    """PSUBSCRIBE * on each host's Sentinel (events are not forwarded between them)."""

    def __init__(self, lab: Lab, hosts: list[str], port: int = 26379) -> None:
        self.events: list[SentinelEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [in_netns_thread(lab, h, functools.partial(self._listen, lab, h, port))
                         for h in hosts]

    def _listen(self, lab: Lab, host: str, port: int) -> None:
        import redis

        while not self._stop.is_set():
            try:
                client = redis.Redis(host=lab.hosts[host].ip, port=port, socket_timeout=0.2,
                                     socket_connect_timeout=0.5, decode_responses=True)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe("*")
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.1)
                    if msg:
                        with self._lock:
                            self.events.append(SentinelEvent(time.monotonic(), host,
                                                             msg["channel"], msg["data"]))
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                time.sleep(0.2)  # Sentinel restarting or its host cut off: try again

    def matching(self, channel: str, after: float = 0.0) -> list[SentinelEvent]:
        with self._lock:
            return [e for e in self.events if e.channel == channel and e.t >= after]

    def since(self, after: float) -> list[SentinelEvent]:
        with self._lock:
            return [e for e in self.events if e.t >= after]

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)


@dataclass(frozen=True)
class Write:
    t: float          # when the write was sent
    done: float       # when it was acknowledged or failed
    ok: bool
    value: int | None
    error: str = ""


class Writer:
    """A client in the lab writing through the VIP every ``interval`` s: each write
    is `RPUSH log <n>` so the writes acknowledged but lost can be counted later."""

    def __init__(self, lab: Lab, host: str, vip: str, interval: float = 0.01,
                 timeout: float = 0.25, port: int = 6379,
                 sentinels: Sequence[str] = (), master: str = "mymaster") -> None:
        # With ``sentinels`` ("ip:port"), no VIP: the client is redis-py's
        # Sentinel-aware one, the alternative users would pick instead of a VIP.
        self.sentinels = list(sentinels)
        self.master = master
        self.writes: list[Write] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._args: dict[str, Any] = dict(host=vip, port=port, socket_timeout=timeout,
                                          socket_connect_timeout=timeout)
        self.interval = interval
        self._thread = in_netns_thread(lab, host, self._loop)

    def _loop(self) -> None:
        import redis

        # No retries inside redis-py: every write is one attempt with a 250 ms
        # timeout, as a latency-sensitive client would do, so the gap is visible.
        client = self._client()
        n = 0
        while not self._stop.is_set():
            n += 1
            start = time.monotonic()
            try:
                client.rpush("vipfloat:log", n)
                write = Write(start, time.monotonic(), True, n)
            except (redis.RedisError, OSError) as exc:
                write = Write(start, time.monotonic(), False, n, type(exc).__name__)
                client.close()  # drop the pooled connection: reconnect on the next write
            with self._lock:
                self.writes.append(write)
            time.sleep(self.interval)

    def _client(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if not self.sentinels:
            return redis.Redis(**self._args, retry=Retry(NoBackoff(), 0))
        from redis.sentinel import Sentinel

        timeout = self._args["socket_timeout"]
        sentinel = Sentinel([(s.rpartition(":")[0], int(s.rpartition(":")[2]))
                             for s in self.sentinels], socket_timeout=timeout,
                            socket_connect_timeout=timeout)
        # Asks the Sentinels for the master on every new connection, and checks
        # that the server it reached still says role:master.
        return sentinel.master_for(self.master, socket_timeout=timeout,
                                   socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))

    def snapshot(self) -> list[Write]:
        with self._lock:
            return list(self.writes)

    def first_ok_after(self, t: float) -> Write | None:
        return next((w for w in self.snapshot() if w.ok and w.t >= t), None)

    def gap(self, after: float) -> tuple[float, float] | None:
        """The longest stretch without an acknowledged write, starting after ``after``:
        (start, end) of the gap, from the last ok write before it to the first after."""
        oks = [w.done for w in self.snapshot() if w.ok and w.done >= after]
        before = [w.done for w in self.snapshot() if w.ok and w.done < after]
        points = ([before[-1]] if before else []) + oks
        if len(points) < 2:
            return None
        return max(zip(points, points[1:]), key=lambda p: p[1] - p[0])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
