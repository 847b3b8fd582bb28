"""The crash watcher: one thread per VIP with ``crash_failover = true``.

While Sentinel's newest configuration names this host's Redis as the master, it
keeps one idle connection to it (subscribed, so Redis's client timeout never
closes it). When the Redis process dies the kernel closes that connection at
once; the watcher then probes every PROBE_INTERVAL, and once vipfloat.crash
confirms a crash and the Sentinels' view allows it, asks a Sentinel for
``SENTINEL FAILOVER``. The failover itself is Sentinel's: a new epoch, its
choice of replica, its config published everywhere; the agent only removes the
wait. Only a connection that was up and dropped starts a probe: a Redis that
is not yet listening when the agent starts (a boot) is never a crash.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from . import crash
from .config import VipConfig, hostport
from .crash import CrashView, Probe, Verdict, Watch
from .logs import escape
from .sentinel import Replica, connection, parse_replicas

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger(__name__)

# How long one probe may take: loopback answers in microseconds.
PROBE_TIMEOUT = 0.1
# A burst of probes after a drop ends after this long without a verdict (a
# Redis that keeps refusing but that Sentinel does not let us act on).
BURST_LIMIT = 2.0


def probe(host: str, port: int) -> Probe:
    """One TCP connection attempt: refused, timed out, up, or another error."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return Probe.UP
    except ConnectionRefusedError:
        return Probe.REFUSED
    except (socket.timeout, TimeoutError):
        return Probe.TIMEOUT
    except OSError as exc:
        return Probe.REFUSED if exc.errno == errno.ECONNREFUSED else Probe.ERROR


def _resp(*words: str) -> bytes:
    out = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class CrashWatcher:
    def __init__(self, agent: Agent, vip: VipConfig) -> None:
        self.agent = agent
        self.vip = vip
        self.watch = Watch()
        self.beat = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"crash-{vip.master}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=3)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat = time.monotonic()
            target = self.agent.local_master(self.vip)
            if target is None:
                self._stop.wait(0.5)
                continue
            try:
                dropped = self._hold_open(*target)
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("%s: crash watcher", self.vip.master)
                dropped = False
            if dropped and not self._stop.is_set():
                self._burst(*target)
            elif not self._stop.is_set():
                self._stop.wait(0.5)

    def _hold_open(self, host: str, port: int) -> bool:
        """Keep one connection open while the target stays the same; True when
        Redis closed it (or it broke), False when it never opened or the target
        changed."""
        cfg = self.agent.config.redis
        try:
            sock = socket.create_connection((host, port), timeout=cfg.timeout)
        except OSError:
            return False
        try:
            hello = b""
            if cfg.password is not None:
                hello += _resp("AUTH", *([cfg.username] if cfg.username else []),
                               cfg.password.value)
            sock.sendall(hello + _resp("SUBSCRIBE", "__vipfloat__:crash-watch"))
            sock.setblocking(False)
            while not self._stop.is_set():
                self.beat = time.monotonic()
                if self.agent.local_master(self.vip) != (host, port):
                    return False
                ready, _, _ = select.select([sock], [], [], 1.0)
                if not ready:
                    continue
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    return True
                if not data:
                    return True          # closed: died, or killed our client
                if data.startswith(b"-"):
                    log.warning("%s: crash watcher refused by %s: %s", self.vip.master,
                                hostport(host, port), escape(data[:120].decode(errors="replace")))
                    self._stop.wait(5.0)
                    return False
            return False
        finally:
            sock.close()

    def _burst(self, host: str, port: int) -> None:
        """Probe until Redis answers, times out, or a verdict is reached."""
        addr = hostport(host, port)
        end = time.monotonic() + BURST_LIMIT
        w = Watch(asked_epoch=self.watch.asked_epoch)
        while not self._stop.is_set() and time.monotonic() < end:
            self.beat = time.monotonic()
            before = w
            seen = probe(host, port)
            w = crash.observe(w, seen, time.monotonic())
            if w.down_since is None:
                # Up again, or not refused: no crash.
                if before.down_since is not None:
                    log.info("%s: %s refused %d connection(s) over %.0f ms, then %s: no crash",
                             self.vip.master, addr, before.refusals,
                             (time.monotonic() - before.down_since) * 1000,
                             "answered again" if seen is Probe.UP else seen.value)
                return
            now = time.monotonic()
            if crash.confirmed(w, now):
                self.watch = w
                self._decide(addr, now)
                return
            self._stop.wait(crash.PROBE_INTERVAL)

    def _decide(self, addr: str, now: float) -> None:
        agent, vip = self.agent, self.vip
        view, client = agent.crash_view(vip, addr)
        try:
            verdict, reason = crash.judge(self.watch, view, now)
            log_at = log.warning if verdict is Verdict.ASK else log.info
            log_at("%s: %s", vip.master, reason)
            if verdict is not Verdict.ASK or client is None:
                return
            self.watch = crash.asked(self.watch, view.epoch)
            answer = _failover(client, vip.master)
            agent.metrics.crash_failovers.labels(vip.master, answer.split()[0]).inc()
            log.warning("%s: SENTINEL FAILOVER %s: %s", vip.master, vip.master, answer)
        finally:
            if client is not None:
                client.disconnect()


def _failover(client: Any, master: str) -> str:
    """Sentinel's answer to SENTINEL FAILOVER, as one line: OK, or its error
    (-INPROG: one is running; -NOGOODSLAVE: no replica it would promote)."""
    import redis

    try:
        client.send_command("SENTINEL", "FAILOVER", master)
        return escape(str(client.read_response())[:120])
    except redis.ResponseError as exc:
        return escape(str(exc)[:200])
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        return escape(f"unanswered: {exc}"[:200])


def ask_replicas(agent: Agent, master: str) -> tuple[Any, tuple[Replica, ...]]:
    """The first Sentinel that answers SENTINEL REPLICAS, its connection kept
    open for the request that may follow (None when none answered)."""
    import redis

    cfg = agent.config.sentinel
    for endpoint in cfg.addresses:
        client = connection(endpoint.host, endpoint.port, cfg.username, cfg.password,
                            cfg.timeout)
        try:
            client.send_command("SENTINEL", "REPLICAS", master)
            return client, parse_replicas(client.read_response())
        except (redis.RedisError, OSError) as exc:
            log.info("%s: Sentinel %s: %s", master, endpoint, escape(str(exc)[:200]))
            client.disconnect()
    return None, ()


__all__ = ["CrashView", "CrashWatcher", "ask_replicas", "probe"]
