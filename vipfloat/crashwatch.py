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
import os
import select
import socket
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import crash
from .config import VipConfig, hostport
from .crash import Probe, Verdict, Watch
from .logs import escape
from .redisconn import Conn, ReplyError
from .sentinel import MasterInfo, Replica, parse_master_reply, parse_replicas

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger(__name__)

# How long one probe may take: loopback answers in microseconds.
PROBE_TIMEOUT = 0.1
# A burst of probes after a drop ends after this long without a verdict (a
# bound: a burst reaches its verdict within the confirmation window).
BURST_LIMIT = 2.0
# Asking the Sentinels for their view before SENTINEL FAILOVER, all of them
# together: a watcher must never hang on silent Sentinels.
ASK_LIMIT = 2.0
# A watched connection that lived less than this is not reopened sooner.
MIN_HELD = 0.5


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
        self._churn_logged = False
        # The Redis this watcher held a connection to since the target last
        # changed: a refused connect to it is a drop too (it may have died while
        # the watcher was between two connections). Never set at a boot.
        self._armed: tuple[str, int] | None = None
        self._thread = threading.Thread(target=self._run, name=f"crash-{vip.master}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=BURST_LIMIT + ASK_LIMIT + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat = time.monotonic()
            try:
                self._turn()
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("%s: crash watcher", self.vip.master)
                self._stop.wait(1.0)

    def _turn(self) -> None:
        target = self.agent.local_master(self.vip)
        if target is None:
            self._stop.wait(0.5)
            return
        if target != self._armed:
            self._armed = None
        opened = time.monotonic()
        dropped = self._hold_open(*target)
        # A crash already judged (not seen up since) is not judged again: its
        # verdict was logged, and a request is never repeated in a loop.
        judged = self.watch.down_since is not None
        if (not dropped and not judged and self._armed == target
                and probe(*target) is Probe.REFUSED):
            dropped = True
        last = self._burst(*target) if dropped and not self._stop.is_set() else None
        if time.monotonic() - opened < MIN_HELD:
            # Opened and closed at once while Redis listens (a TLS port, a proxy):
            # no busy loop; crash failover cannot watch it.
            if last is Probe.UP and not self._churn_logged:
                log.warning("%s: %s closes the crash watcher's connection at once; "
                            "retrying every %.1f s", self.vip.master, hostport(*target),
                            MIN_HELD)
                self._churn_logged = True
            self._stop.wait(MIN_HELD)

    def _hold_open(self, host: str, port: int) -> bool:
        """Keep one connection open while the target stays the same; True when
        Redis closed it (or it broke), or its process exited (a fork child
        saving keeps the connection open); False when it never opened or the
        target changed."""
        cfg = self.agent.config.redis
        try:
            sock = socket.create_connection((host, port), timeout=cfg.timeout)
        except OSError:
            return False
        pidfd = _pidfd(self.agent.local_redis.process_id(host, port))
        try:
            hello = b""
            if cfg.password is not None:
                hello += _resp("AUTH", *([cfg.username] if cfg.username else []),
                               cfg.password.value)
            try:
                sock.sendall(hello + _resp("SUBSCRIBE", "__vipfloat__:crash-watch"))
            except OSError:
                return True              # reset as it opened: dying, or killed us
            sock.setblocking(False)
            # Up again: a crash after this one is another crash.
            self.watch = Watch()
            self._armed = (host, port)
            watched: list[Any] = [sock] if pidfd is None else [sock, pidfd]
            while not self._stop.is_set():
                self.beat = time.monotonic()
                # Sentinel moved on (not a kernel cache reset by a netlink
                # overrun, which local_master would see as "not local").
                if not self.agent.believes(self.vip.master, host, port):
                    self._armed = None
                    return False
                ready, _, _ = select.select(watched, [], [], 1.0)
                if pidfd is not None and pidfd in ready:
                    return True          # the process exited
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
            if pidfd is not None:
                os.close(pidfd)

    def _burst(self, host: str, port: int) -> Probe | None:
        """Probe until Redis answers, times out, or a verdict is reached; the
        last probe's result."""
        addr = hostport(host, port)
        end = time.monotonic() + BURST_LIMIT
        w = self.watch
        seen = None
        while not self._stop.is_set() and time.monotonic() < end:
            self.beat = time.monotonic()
            before = w
            seen = probe(host, port)
            w = crash.observe(w, seen, time.monotonic())
            if w.down_since is None:
                # Up again, or not refused: no crash.
                if before.down_since is None:
                    log.info("%s: connection to %s dropped, and it %s: no crash", self.vip.master,
                             addr, "answers" if seen is Probe.UP else seen.value)
                else:
                    log.info("%s: %s refused %d connection(s) over %.0f ms, then %s: no crash",
                             self.vip.master, addr, before.refusals,
                             (time.monotonic() - before.down_since) * 1000,
                             "answered again" if seen is Probe.UP else seen.value)
                return seen
            now = time.monotonic()
            if crash.confirmed(w, now):
                self.watch = w
                self._decide(addr, now)
                return seen
            self._stop.wait(crash.PROBE_INTERVAL)
        return seen

    def _decide(self, addr: str, now: float) -> None:
        agent, vip = self.agent, self.vip
        view = agent.crash_view(vip, addr)
        verdict, reason = crash.judge(self.watch, view, now)
        client = None
        try:
            if verdict is Verdict.CHECK:
                client, replicas, master = ask_sentinel(agent, vip.master, self._beat)
                view = replace(view, replicas=replicas, sentinel_view=master)
                verdict, reason = crash.judge(self.watch, view, now)
            (log.warning if verdict is Verdict.ASK else log.info)("%s: %s", vip.master, reason)
            if verdict is not Verdict.ASK or client is None or self._stop.is_set():
                return
            self.watch = crash.asked(self.watch, view.epoch)
            result, answer = _failover(client, vip.master)
            agent.metrics.crash_failovers.labels(vip.master, result).inc()
            log.warning("%s: SENTINEL FAILOVER %s: %s", vip.master, vip.master, answer)
        finally:
            if client is not None:
                client.close()

    def _beat(self) -> None:
        self.beat = time.monotonic()


def _pidfd(pid: int | None) -> int | None:
    """A pidfd for Redis's process (readable when it exits), when its pid is
    this namespace's: a Redis in a container reports a pid of its own."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/comm", encoding="ascii", errors="replace") as f:
            if not f.read().startswith(("redis", "valkey")):
                return None
        return os.pidfd_open(pid)
    except OSError:
        return None


def _failover(client: Conn, master: str) -> tuple[str, str]:
    """Sentinel's answer to SENTINEL FAILOVER: (ok | refused | unanswered, the
    answer as one line). Refused: -INPROG (one is running), -NOGOODSLAVE (no
    replica it would promote)."""
    try:
        return "ok", escape(str(client.command("SENTINEL", "FAILOVER", master))[:120])
    except ReplyError as exc:
        return "refused", escape(str(exc)[:200])
    except Exception as exc:  # noqa: BLE001 - a lost answer is logged, never raised
        return "unanswered", escape(f"{type(exc).__name__}: {exc}"[:200])


def ask_sentinel(agent: Agent, master: str, beat: Any = lambda: None
                 ) -> tuple[Any, tuple[Replica, ...] | None, MasterInfo | None]:
    """The first Sentinel (in the config's order) that answers SENTINEL REPLICAS
    and SENTINEL MASTER, within ASK_LIMIT in all: its connection (kept open for
    the request that may follow), its replicas and its view of the master.
    (None, None, None) when none did."""
    cfg = agent.config.sentinel
    deadline = time.monotonic() + ASK_LIMIT
    for endpoint in cfg.addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        beat()
        client = Conn(endpoint.host, endpoint.port, cfg.username, cfg.password,
                      min(cfg.timeout, left))
        try:
            replicas = parse_replicas(client.command("SENTINEL", "REPLICAS", master))
            return client, replicas, parse_master_reply(client.command("SENTINEL", "MASTER",
                                                                       master))
        except Exception as exc:  # noqa: BLE001 - any failure: the next Sentinel
            log.info("%s: Sentinel %s: %s", master, endpoint, escape(str(exc)[:200]))
            client.close()
    return None, None, None

