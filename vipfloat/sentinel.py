"""Talking to Redis Sentinels: what each one says about each master.

Every Sentinel is asked on its own connection, all at once, each with a short
connect/read timeout, so one dead or firewalled Sentinel shows as unreachable
instead of hanging `vipfloat status`. redis-py is imported only when a query is
made (it costs ~250 ms), never on the hook's path.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .config import Endpoint, Secret, SentinelConfig, hostport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MasterInfo:
    """The useful part of a `SENTINEL MASTER <name>` reply."""

    name: str
    host: str
    port: int
    config_epoch: int
    flags: tuple[str, ...]
    down_after_ms: int | None = None
    quorum: int | None = None
    failover_timeout_ms: int | None = None

    @property
    def addr(self) -> str:
        return hostport(self.host, self.port)


@dataclass(frozen=True)
class SentinelAnswer:
    endpoint: Endpoint
    master: MasterInfo | None = None
    error: str | None = None           # why there is no answer
    reachable: bool = True

    def as_dict(self) -> dict[str, Any]:
        m = self.master
        return {
            "address": str(self.endpoint),
            "reachable": self.reachable,
            "master_addr": m.addr if m else None,
            "config_epoch": m.config_epoch if m else None,
            "flags": list(m.flags) if m else None,
            "error": self.error,
        }


def parse_master_reply(reply: Sequence[Any]) -> MasterInfo:
    """Pure: SENTINEL MASTER's flat [key, value, key, value ...] list (RESP2) or
    map (RESP3) -> MasterInfo."""
    if isinstance(reply, Mapping):
        fields = {str(k): v for k, v in reply.items()}
    else:
        fields = {str(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}

    def num(key: str) -> int | None:
        value = fields.get(key)
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    return MasterInfo(
        name=str(fields.get("name", "")),
        host=str(fields.get("ip", "")),
        port=num("port") or 0,
        config_epoch=num("config-epoch") or 0,
        flags=tuple(f for f in str(fields.get("flags", "")).split(",") if f),
        down_after_ms=num("down-after-milliseconds"),
        quorum=num("quorum"),
        failover_timeout_ms=num("failover-timeout"),
    )


@dataclass(frozen=True)
class Replica:
    """One replica as `SENTINEL REPLICAS` lists it."""

    host: str
    port: int
    flags: tuple[str, ...]
    link_ok: bool               # master-link-status ok
    priority: int               # slave-priority; 0 never promoted
    run_id: str
    info_age_ms: int | None = None  # info-refresh: ms since Sentinel's last INFO of it
    link_down_ms: int | None = None  # master-link-down-time at that INFO
    # Seconds since its last acknowledgement, per the master's INFO replication
    # (vipfloat switchover asks); None: not known.
    lag: int | None = None

    @property
    def addr(self) -> str:
        return hostport(self.host, self.port)


def parse_replicas(reply: Sequence[Any]) -> tuple[Replica, ...]:
    """Pure: SENTINEL REPLICAS' list of flat [key, value ...] lists (or maps)."""
    out = []
    for item in reply:
        if isinstance(item, Mapping):
            pairs: Any = item.items()
        elif isinstance(item, (list, tuple)):
            pairs = zip(item[::2], item[1::2])
        else:
            continue            # not a replica's fields: skipped, never raised on
        f = {str(k): str(v) for k, v in pairs}
        ip, port = f.get("ip"), uint(f.get("port"))
        if not ip or port is None:
            continue
        # A priority Sentinel did not report is its default, 100; 0 is never promoted.
        priority = uint(f.get("slave-priority"))
        out.append(Replica(ip, port, tuple(x for x in f.get("flags", "").split(",") if x),
                           f.get("master-link-status") == "ok",
                           100 if priority is None else priority, f.get("runid", ""),
                           uint(f.get("info-refresh")),
                           uint(f.get("master-link-down-time"))))
    return tuple(out)


def uint(text: str | None) -> int | None:
    """A non-negative decimal of at most 18 digits, else None (int() refuses more
    than 4300, and no field Sentinel sends needs more than 18)."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text)


def connection(host: str, port: int, username: str | None, password: Secret | None,
               timeout: float) -> Any:
    """A bare redis-py Connection: one socket, no retries, raw replies.

    redis-py's client-level response callbacks reshape SENTINEL replies
    differently across versions, and its default retries would turn one dead
    Sentinel into seconds of waiting; a Connection has neither."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Connection(host=host, port=port, username=username,
                            password=password.value if password else None,
                            socket_connect_timeout=timeout, socket_timeout=timeout,
                            decode_responses=True, retry=Retry(NoBackoff(), 0))


class SentinelClient:
    """One Sentinel, one connection kept open between questions and reopened
    after any failure."""

    def __init__(self, endpoint: Endpoint, cfg: SentinelConfig) -> None:
        self.endpoint = endpoint
        self._conn = connection(endpoint.host, endpoint.port, cfg.username, cfg.password,
                                cfg.timeout)

    def ask(self, masters: Sequence[str]) -> dict[str, SentinelAnswer]:
        """An answer per master name (SENTINEL MASTER), pipelined: every question
        in one write, then the replies in order, so a poll costs one round trip
        whatever the number of masters (64 masters, 3 Sentinels, every 2 s)."""
        import redis

        endpoint = self.endpoint
        answers: dict[str, SentinelAnswer] = {}
        if not masters:
            return answers
        try:
            self._conn.send_packed_command(self._conn.pack_commands(
                [("SENTINEL", "MASTER", name) for name in masters]))
            for name in masters:
                try:
                    reply = self._conn.read_response()
                    answers[name] = SentinelAnswer(endpoint, master=parse_master_reply(reply))
                except redis.ResponseError as exc:
                    # "No such master with that name", NOAUTH, NOPERM: it answered, but no.
                    answers[name] = SentinelAnswer(endpoint, error=str(exc).splitlines()[0])
        except redis.AuthenticationError as exc:  # a ConnectionError subclass, but it answered
            self._conn.disconnect()
            for name in masters:
                answers.setdefault(name, SentinelAnswer(endpoint, error=f"auth failed: {exc}"))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._conn.disconnect()
            for name in masters:
                answers.setdefault(name, SentinelAnswer(endpoint, error=f"unreachable: {exc}",
                                                        reachable=False))
        return answers

    def close(self) -> None:
        self._conn.disconnect()


class Poller:
    """Every configured Sentinel asked at once, on connections kept open."""

    def __init__(self, cfg: SentinelConfig) -> None:
        self.clients = [SentinelClient(ep, cfg) for ep in cfg.addresses]
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.clients)),
                                        thread_name_prefix="sentinel-poll")

    def poll(self, masters: Sequence[str]) -> dict[str, tuple[SentinelAnswer, ...]]:
        results = list(self._pool.map(lambda c: c.ask(masters), self.clients))
        return {name: tuple(r[name] for r in results) for name in masters}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for client in self.clients:
            client.close()


def ask_all(cfg: SentinelConfig, masters: Sequence[str]) -> dict[str, tuple[SentinelAnswer, ...]]:
    """Every configured Sentinel at once: {master: (answer per Sentinel, in config order)}."""
    poller = Poller(cfg)
    try:
        return poller.poll(masters)
    finally:
        poller.close()
