"""Sentinel's pub/sub events: parsed (pure) and followed (one thread for every
Sentinel).

Events are published only on the Sentinel where they happen and never replayed,
so the agent subscribes to every Sentinel. A subscription can die silently (a
firewall dropping the idle TCP flow, a half-open socket): each one is pinged
through, and one that stays silent is counted dead and reconnected with bounded
backoff, and the agent is asked for a fresh poll, since whatever was published
meanwhile is lost.

One thread multiplexes every subscription on non-blocking sockets, pinging them
all in one wake-up, and decodes replies with vipfloat.resp (bounded). A thread
per Sentinel in redis-py's PubSub cost 0.2 % of a core each, idle: two wake-ups
per ping, each running redis-py's generic reply path (README, "Many masters").
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

from .config import Endpoint, SentinelConfig
from .sentinel import (Waker, auth_command, connect_error, connect_next, lookup,
                       lookup_in_background, ready_now)
from .resp import Decoder, ErrorReply, ProtocolError, Reply, encode

log = logging.getLogger(__name__)

# A new master named in the payload: act at once on it (a provisional hint).
HINT_EVENTS = ("+promoted-slave", "+switch-master")
# The failover leader's steps, in order: the epoch it runs at (+new-epoch, then
# +try-failover at once, in one function of sentinel.c), then the replica it
# promotes (named in the payload) and the end of an attempt. The agent follows
# them to bind the VIP when the promotion happens rather than when Sentinel
# notices it (vipfloat.authority.Failover).
EPOCH_EVENT = "+new-epoch"
ATTEMPT_EVENT = "+try-failover"
PROMOTION_EVENTS = ("+selected-slave", "+failover-state-send-slaveof-noone",
                    "+failover-state-wait-promotion")
ABORT_EVENTS = ("-failover-abort-not-elected", "-failover-abort-no-good-slave",
                "-failover-abort-slave-timeout")
# Something changed that may change who should hold a VIP: poll now.
POKE_EVENTS = ("+sdown", "-sdown", "+odown", "-odown", "+failover-end", "+config-update-from",
               "+convert-to-slave", "+tilt", "-tilt", "+failover-state-reconf-slaves",
               *ABORT_EVENTS)
CHANNELS = HINT_EVENTS + POKE_EVENTS + (EPOCH_EVENT, ATTEMPT_EVENT) + PROMOTION_EVENTS


@dataclass(frozen=True)
class SentinelEvent:
    channel: str
    master: str | None          # the master name it concerns; None: all (tilt, +new-epoch)
    new_host: str | None = None  # for hints: the new master's address
    new_port: int | None = None
    data: str = ""
    epoch: int | None = None     # +new-epoch: the Sentinel's current epoch
    # The leader's promotion steps: the replica it promotes and the master it replaces.
    replica: tuple[str, int] | None = None
    old_master: tuple[str, int] | None = None

    @property
    def is_hint(self) -> bool:
        return self.new_host is not None


def _digits(text: str) -> bool:
    """A decimal number int() takes: str.isdigit() alone also accepts "²", and
    int() refuses more than 4,300 digits (a hostile payload's port)."""
    return text.isascii() and text.isdigit() and len(text) <= 19


def _instance(parts: list[str]) -> tuple[tuple[str, int], str, tuple[str, int]] | None:
    """``slave <ip:port> <ip> <port> @ <master> <mip> <mport>``: the replica, the
    master's name and the master's address; None for any other shape."""
    if (len(parts) != 8 or parts[0] != "slave" or parts[4] != "@"
            or not _digits(parts[3]) or not _digits(parts[7])):
        return None
    return (parts[2], int(parts[3])), parts[5], (parts[6], int(parts[7]))


def parse_event(channel: str, data: str) -> SentinelEvent | None:
    """Pure: one pub/sub message -> SentinelEvent, or None if it is not one we use.

    Payloads (Redis 7 sentinel.c):
      +switch-master  <master> <old-ip> <old-port> <new-ip> <new-port>
      +promoted-slave slave <ip:port> <ip> <port> @ <master> <old-ip> <old-port>
      +new-epoch      <epoch>
      instance events <type> <name> <ip> <port> [@ <master> <master-ip> <master-port>]
    """
    parts = data.split()
    if channel == "+switch-master":
        if len(parts) != 5 or not _digits(parts[4]):
            return None
        return SentinelEvent(channel, parts[0], parts[3], int(parts[4]), data)
    if channel == "+promoted-slave":
        if len(parts) < 6 or parts[4] != "@" or not _digits(parts[3]):
            return None
        return SentinelEvent(channel, parts[5], parts[2], int(parts[3]), data)
    if channel == EPOCH_EVENT:
        if len(parts) != 1 or not _digits(parts[0]) or len(parts[0]) > 19:
            return None
        return SentinelEvent(channel, None, data=data, epoch=int(parts[0]))
    if channel in PROMOTION_EVENTS:
        found = _instance(parts)
        if found is None:
            return None
        replica, name, old = found
        return SentinelEvent(channel, name, data=data, replica=replica, old_master=old)
    if channel in ("+tilt", "-tilt"):
        return SentinelEvent(channel, None, data=data)
    if channel in POKE_EVENTS or channel == ATTEMPT_EVENT:
        if "@" in parts:
            at = parts.index("@")
            master = parts[at + 1] if at + 1 < len(parts) else None
        elif parts[:1] == ["master"] and len(parts) > 1:
            master = parts[1]
        else:
            master = None
        return SentinelEvent(channel, master, data=data)
    return None


# Back-off between attempts at one Sentinel: 0.1 s, doubling, at most 2 s.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0
READ_SIZE = 65536
PING = encode("PING")


def backoff(failures: int) -> float:
    """Pure: the wait before attempt ``failures + 1`` at a Sentinel."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * float(2 ** min(max(failures - 1, 0), 10)))


def hello(cfg: SentinelConfig) -> bytes:
    """What a new connection sends first: AUTH when configured, then SUBSCRIBE."""
    return auth_command(cfg) + encode("SUBSCRIBE", *CHANNELS)


class State(Enum):
    DOWN = "down"               # waiting to try again (next_try)
    RESOLVING = "resolving"     # a name being looked up off the loop's thread
    CONNECTING = "connecting"   # a non-blocking connect in progress (deadline)
    UP = "up"                   # connected: subscribing, then subscribed


class Link:
    """One Sentinel's subscription: its state, for the loop and for the agent
    (``alive``, ``beat``)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.alive = False                     # subscribed to every channel
        self.beat = time.monotonic()           # last sign of progress, for the watchdog
        self.state = State.DOWN
        self.sock: socket.socket | None = None
        self.decoder = Decoder()
        self.next_try = 0.0                    # DOWN: when to try again
        self.deadline = 0.0                    # RESOLVING, CONNECTING: give up then
        self.last_heard = 0.0                  # UP: the last reply of any kind
        self.up_since: float | None = None     # subscribed to everything since
        self.failures = 0                      # attempts failed since the last success
        self.last_error = ""                   # logged once, not at every retry
        self.resolved: Future[Any] | None = None    # RESOLVING: getaddrinfo's rows
        self.rows: list[Any] = []              # CONNECTING: addresses left to try


class Subscriptions:
    """Follows every Sentinel's events in one thread; reports events, contact
    (any reply, for the quorum) and each subscription's liveness."""

    def __init__(self, cfg: SentinelConfig,
                 on_event: Callable[[Endpoint, SentinelEvent], None],
                 on_link: Callable[[Endpoint, bool], None], ping_interval: float = 0.25,
                 on_contact: Callable[[Endpoint], None] = lambda endpoint: None,
                 dead_after: float = 3.0) -> None:
        self.cfg = cfg
        self.on_event = on_event
        self.on_link = on_link
        self.on_contact = on_contact
        self.ping_interval = ping_interval     # pongs measure contact (quorum), 4/s
        self.dead_after = dead_after           # no reply this long: reconnect
        self.links = [Link(ep) for ep in cfg.addresses]
        self._hello = hello(cfg)
        self._stop = threading.Event()
        # Woken by a name's lookup finishing, and by stop.
        self._waker = Waker()
        self._poller = select.poll()
        self._poller.register(self._waker.fd, select.POLLIN)
        self._by_fd: dict[int, Link] = {}
        self._next_ping = 0.0
        self._thread = threading.Thread(target=self._run, name="subscriptions", daemon=True)

    # --- the agent's side ----------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake()

    def stop(self) -> None:
        self.request_stop()
        if self._thread.ident is not None:
            self._thread.join(timeout=3)
        if not self._thread.is_alive():
            for link in self.links:
                self._close(link)
            # A lookup finishing later must not write into whatever reuses these fds.
            self._waker.close()

    def _wake(self) -> None:
        self._waker.wake()

    # --- the loop --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for link in self.links:
                    link.beat = now
                    self._guarded(link, self._advance, link, now)
                if now >= self._next_ping:
                    self._next_ping = now + self.ping_interval
                    for link in self.links:
                        if link.state is State.UP:
                            self._send(link, PING)
                timeout = max(0.0, self._next_wake() - time.monotonic())
                for fd, events in self._poller.poll(timeout * 1000):
                    if fd == self._waker.fd:
                        self._waker.drain()
                        continue
                    ready = self._by_fd.get(fd)
                    if ready is not None:
                        self._guarded(ready, self._ready, ready, events)
        except Exception:  # noqa: BLE001 - logged; the watchdog sees the beats stop
            log.exception("the Sentinel subscriptions' loop failed")
        finally:
            for link in self.links:
                self._set_alive(link, False)

    def _guarded(self, link: Link, step: Callable[..., None], *args: Any) -> None:
        """One link's step: whatever it raises (a payload nobody foresaw, a
        callback's bug) ends that link's subscription, never the loop that
        follows every other Sentinel (their pongs are the agent's quorum)."""
        try:
            step(*args)
        except Exception as exc:  # noqa: BLE001 - isolated to this link, logged
            log.exception("subscription to Sentinel %s: internal error", link.endpoint)
            self._fail(link, time.monotonic(), f"internal error: {type(exc).__name__}")

    def _next_wake(self) -> float:
        """The earliest time the loop has something to do without any input."""
        at = self._next_ping
        for link in self.links:
            if link.state is State.DOWN:
                at = min(at, link.next_try)
            elif link.state in (State.RESOLVING, State.CONNECTING):
                at = min(at, link.deadline)
            else:
                at = min(at, link.last_heard + self.dead_after)
        return at

    def _advance(self, link: Link, now: float) -> None:
        """Time's effects on one link: an attempt due, a deadline passed."""
        if link.state is State.DOWN and now >= link.next_try:
            self._attempt(link, now)
        elif link.state is State.RESOLVING:
            if link.resolved is not None and link.resolved.done():
                self._resolved(link, now)
            elif now >= link.deadline:
                self._fail(link, now, f"cannot resolve {link.endpoint.host} within "
                           f"{self.cfg.timeout:.1f} s")
        elif link.state is State.CONNECTING and now >= link.deadline:
            if not self._waiting(link, select.POLLOUT):
                self._connect_failed(link, now,
                                     f"connect timed out after {self.cfg.timeout:.1f} s")
        elif link.state is State.UP and now - link.last_heard > self.dead_after:
            if not self._waiting(link, select.POLLIN):
                self._fail(link, now, f"no reply in {self.dead_after:.1f} s")
        elif link.up_since is not None and now - link.up_since >= self.dead_after:
            # Up for a while: the back-off starts afresh. Not at once: a Sentinel
            # (or a middlebox) dropping every connection right after SUBSCRIBE
            # would have us reconnect, and poll, ten times a second.
            link.failures, link.last_error, link.up_since = 0, "", None

    @staticmethod
    def _waiting(link: Link, events: int) -> bool:
        """Has ``link``'s socket something this loop has not read yet? Then a
        deadline just passed is this thread's stall (a VM's stolen time), not
        the Sentinel's silence: it is read first, in this turn of the loop."""
        return link.sock is not None and ready_now(link.sock, events)

    def _attempt(self, link: Link, now: float) -> None:
        host, port = link.endpoint.host, link.endpoint.port
        link.deadline = now + self.cfg.timeout
        try:
            rows = lookup(host, port, numeric=True)
        except (socket.gaierror, UnicodeError):
            # A name: looked up off this thread, so a slow resolver cannot hold up
            # the other Sentinels' pings (and with them, the quorum).
            link.state = State.RESOLVING
            if link.resolved is not None:
                return          # the last lookup still runs: wait for it, never queue more
            link.resolved = lookup_in_background(host, port)
            link.resolved.add_done_callback(lambda _f: self._wake())
            return
        self._connect(link, now, rows)

    def _resolved(self, link: Link, now: float) -> None:
        assert link.resolved is not None
        future, link.resolved = link.resolved, None
        try:
            rows = future.result()
        except Exception as exc:  # noqa: BLE001 - gaierror, UnicodeError: no address
            self._fail(link, now, f"cannot resolve {link.endpoint.host}: "
                       f"{exc or type(exc).__name__}")
            return
        self._connect(link, now, rows)

    def _connect(self, link: Link, now: float, rows: list[Any]) -> None:
        """A connect to the first of ``rows`` that does not refuse at once; the
        rest are tried in turn, each for the Sentinels' timeout, if it fails."""
        sock, why = connect_next(rows)
        if sock is None:
            self._fail(link, now, why)
            return
        link.sock, link.decoder, link.rows = sock, Decoder(), rows
        link.state, link.deadline = State.CONNECTING, now + self.cfg.timeout
        self._by_fd[sock.fileno()] = link
        self._poller.register(sock, select.POLLOUT)

    def _connect_failed(self, link: Link, now: float, why: str) -> None:
        """This address failed: the next one now, or, with none left, back off."""
        if not link.rows:
            self._fail(link, now, why)
            return
        log.debug("subscription to Sentinel %s: %s; trying its next address",
                  link.endpoint, why)
        self._close(link)
        self._connect(link, now, link.rows)

    def _ready(self, link: Link, events: int) -> None:
        now = time.monotonic()
        sock = link.sock
        if sock is None:
            return
        if link.state is State.CONNECTING:
            failed = connect_error(sock)
            if failed is not None:
                self._connect_failed(link, now, failed)
                return
            link.state, link.last_heard = State.UP, now
            self._poller.modify(sock, select.POLLIN)
            self._send(link, self._hello)
            return
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(link, now, f"recv: {exc.strerror or exc}")
            return
        if not data:
            self._fail(link, now, "closed by Sentinel")
            return
        try:
            replies = link.decoder.feed(data)
        except ProtocolError as exc:
            self._fail(link, now, f"not a Sentinel's reply: {exc}")
            return
        for reply in replies:
            if link.state is not State.UP:
                return          # failed on an earlier reply of this read
            self._reply(link, reply, now)

    def _reply(self, link: Link, reply: Reply, now: float) -> None:
        if isinstance(reply, ErrorReply):
            # NOAUTH, WRONGPASS, NOPERM: it answered, but will not let us listen.
            self._fail(link, now, f"refused: {reply.text}")
            return
        link.last_heard = now
        self.on_contact(link.endpoint)
        if not (isinstance(reply, list) and len(reply) == 3 and isinstance(reply[0], str)):
            return              # +OK to AUTH; a pong is ["pong", ""]
        kind, channel, data = reply
        if kind == "subscribe" and data == len(CHANNELS):
            # Subscribed to everything: nothing is missed from now.
            link.up_since = now
            self._set_alive(link, True)
        elif kind == "message" and isinstance(channel, str) and isinstance(data, str):
            event = parse_event(channel, data)
            if event is not None:
                self.on_event(link.endpoint, event)

    def _send(self, link: Link, data: bytes) -> None:
        assert link.sock is not None
        try:
            sent = link.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(link, time.monotonic(), f"send: {exc.strerror or exc}")
            return
        if sent != len(data):
            # Tens of bytes into an empty buffer: full means Sentinel stopped reading.
            self._fail(link, time.monotonic(), "Sentinel does not read what we send")

    def _fail(self, link: Link, now: float, why: str) -> None:
        """This attempt or subscription is over: close, and try again later."""
        was_alive = link.alive
        link.up_since = None
        self._close(link)
        link.failures += 1
        link.state, link.next_try = State.DOWN, now + backoff(link.failures)
        if why != link.last_error:
            (log.warning if was_alive or link.failures == 1 else log.debug)(
                "subscription to Sentinel %s: %s; reconnecting", link.endpoint, why)
            link.last_error = why
        else:
            log.debug("subscription to Sentinel %s: %s again", link.endpoint, why)
        self._set_alive(link, False)

    def _close(self, link: Link) -> None:
        sock, link.sock = link.sock, None
        if sock is None:
            return
        self._by_fd.pop(sock.fileno(), None)
        try:
            self._poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        sock.close()

    def _set_alive(self, link: Link, alive: bool) -> None:
        if alive != link.alive:
            link.alive = alive
            log.info("subscription to Sentinel %s %s", link.endpoint, "up" if alive else "down")
            self.on_link(link.endpoint, alive)
