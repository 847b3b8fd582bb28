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

from .config import Endpoint, SentinelConfig

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

    @property
    def addr(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
    )


def ask_sentinel(endpoint: Endpoint, masters: Sequence[str],
                 cfg: SentinelConfig) -> dict[str, SentinelAnswer]:
    """One connection to one Sentinel; an answer per master name."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # A bare Connection: redis-py's client-level response callbacks reshape
    # SENTINEL replies differently across versions; the raw reply is stable.
    conn = redis.Connection(host=endpoint.host, port=endpoint.port, username=cfg.username,
                            password=cfg.password.value if cfg.password else None,
                            socket_connect_timeout=cfg.timeout, socket_timeout=cfg.timeout,
                            decode_responses=True, retry=Retry(NoBackoff(), 0))
    answers: dict[str, SentinelAnswer] = {}
    try:
        conn.connect()
        for name in masters:
            try:
                conn.send_command("SENTINEL", "MASTER", name)
                reply = conn.read_response()
                answers[name] = SentinelAnswer(endpoint, master=parse_master_reply(reply))
            except redis.ResponseError as exc:
                # "No such master with that name", NOAUTH, NOPERM: it answered, but no.
                answers[name] = SentinelAnswer(endpoint, error=str(exc).splitlines()[0])
    except redis.AuthenticationError as exc:  # a ConnectionError subclass, but it answered
        for name in masters:
            answers.setdefault(name, SentinelAnswer(endpoint, error=f"auth failed: {exc}"))
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        for name in masters:
            answers.setdefault(name, SentinelAnswer(endpoint, error=f"unreachable: {exc}",
                                                    reachable=False))
    finally:
        conn.disconnect()
    return answers


def ask_all(cfg: SentinelConfig, masters: Sequence[str]) -> dict[str, tuple[SentinelAnswer, ...]]:
    """Every configured Sentinel at once: {master: (answer per Sentinel, in config order)}."""
    with ThreadPoolExecutor(max_workers=max(1, len(cfg.addresses))) as pool:
        results = list(pool.map(lambda ep: ask_sentinel(ep, masters, cfg), cfg.addresses))
    return {name: tuple(r[name] for r in results) for name in masters}
