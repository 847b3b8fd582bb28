"""Sentinel's pub/sub events: parsed (pure) and followed (one thread per Sentinel).

Events are published only on the Sentinel where they happen and never replayed,
so the agent subscribes to every Sentinel. A subscription can die silently (a
firewall dropping the idle TCP flow, a half-open socket): each subscriber pings
through the subscription and counts one that stays silent as dead, reconnecting
with bounded backoff (tenacity) and asking the agent for a fresh poll, since
whatever was published meanwhile is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .config import Endpoint, SentinelConfig

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
    """A decimal number int() takes: str.isdigit() alone also accepts "²"."""
    return text.isascii() and text.isdigit()


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


class Subscriber:
    """Follows one Sentinel's events in a thread; reports events and liveness."""

    def __init__(self, endpoint: Endpoint, cfg: SentinelConfig,
                 on_event: Callable[[Endpoint, SentinelEvent], None],
                 on_link: Callable[[Endpoint, bool], None], ping_interval: float = 0.25,
                 on_contact: Callable[[Endpoint], None] = lambda endpoint: None,
                 dead_after: float = 3.0) -> None:
        self.endpoint = endpoint
        self.cfg = cfg
        self.on_event = on_event
        self.on_link = on_link
        self.ping_interval = ping_interval     # pongs measure contact (quorum), 4/s
        self.dead_after = dead_after           # no pong this long: reconnect
        self.on_contact = on_contact
        self.alive = False
        self.beat = time.monotonic()           # last sign of progress, for the watchdog
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"subscribe-{endpoint}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)

    def _run(self) -> None:
        from tenacity import Retrying, retry_if_exception_type, wait_exponential

        class Dropped(Exception):
            pass

        def session() -> None:
            self.beat = time.monotonic()
            try:
                self._listen()
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect with backoff
                if self._stop.is_set():
                    return
                raise Dropped(str(exc)) from exc

        retrying = Retrying(
            retry=retry_if_exception_type(Dropped),
            wait=wait_exponential(multiplier=0.1, max=2.0),   # bounded: at most 2 s apart
            stop=lambda _state: self._stop.is_set(),
            sleep=self._sleep,                                 # interrupted by stop()
            reraise=False,
            # tenacity sets the outcome (the failed attempt) before it calls before_sleep.
            before_sleep=lambda state: log.debug(
                "subscription to %s lost (%s), reconnecting", self.endpoint,
                state.outcome.exception() if state.outcome is not None else None),
        )
        try:
            retrying(session)
        except Exception:  # noqa: BLE001 - stop() while retrying ends here
            pass

    def _sleep(self, seconds: float) -> None:
        self.beat = time.monotonic() + seconds   # a back-off is progress, not a hang
        self._stop.wait(seconds)

    def _set_alive(self, alive: bool) -> None:
        if alive != self.alive:
            self.alive = alive
            log.info("subscription to Sentinel %s %s", self.endpoint, "up" if alive else "down")
            self.on_link(self.endpoint, alive)

    def _listen(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries inside redis-py (its default backs off for seconds): the
        # reconnect policy is ours, bounded and interruptible.
        client = redis.Redis(host=self.endpoint.host, port=self.endpoint.port,
                             retry=Retry(NoBackoff(), 0),
                             username=self.cfg.username,
                             password=self.cfg.password.value if self.cfg.password else None,
                             socket_connect_timeout=self.cfg.timeout,
                             socket_timeout=self.dead_after, decode_responses=True)
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(*CHANNELS)
            last_heard = time.monotonic()
            next_ping = last_heard + self.ping_interval
            while not self._stop.is_set():
                self.beat = time.monotonic()
                # Block until a message or the next ping is due (stop() waits for
                # at most one such slice).
                msg = pubsub.get_message(timeout=max(0.05, min(next_ping - time.monotonic(),
                                                               0.5)))
                now = time.monotonic()
                if msg is not None:
                    last_heard = now
                    self.on_contact(self.endpoint)
                    if msg["type"] == "subscribe" and msg["data"] == len(CHANNELS):
                        self._set_alive(True)  # subscribed to everything: nothing missed from now
                    elif msg["type"] == "message":
                        event = parse_event(msg["channel"], msg["data"])
                        if event is not None:
                            self.on_event(self.endpoint, event)
                if now >= next_ping:
                    pubsub.ping()
                    next_ping = now + self.ping_interval
                if now - last_heard > self.dead_after:
                    raise ConnectionError(f"no pong from {self.endpoint} "
                                          f"in {self.dead_after:.1f} s")
        finally:
            self._set_alive(False)
            pubsub.close()
            client.close()
