"""Local health: does this host's Redis answer ROLE as master?

The agent never binds a VIP in front of a Redis that is not (yet, or any more)
the master: writes through the VIP would fail with READONLY or connection
refused. One connection per address, kept open, so the check costs a round trip
on the loopback path (well under a millisecond) on the failover's critical path.
"""

from __future__ import annotations

import logging
import threading

from .config import RedisConfig
from .decide import LocalRole, RedisRole
from .logs import escape
from .redisconn import Conn, ConnectionLost, RedisError, ReplyError, Timeout
from .sentinel import uint

log = logging.getLogger(__name__)

# CLIENT PAUSE's own deadline: a Redis that does not answer on loopback within
# this is hung, and a hung Redis acknowledges nothing anyway; the actor must not
# wait the usual timeout for it while the VIP moves.
HOLD_TIMEOUT = 0.1


def parse_role(reply: object) -> LocalRole:
    """Pure: ROLE's reply -> master, slave, sentinel, or unknown (with what it said,
    escaped and capped: the reply is anyone's)."""
    if isinstance(reply, (list, tuple)) and reply:
        first = reply[0]
        text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
        if text in (RedisRole.MASTER, RedisRole.SLAVE, RedisRole.SENTINEL):
            return LocalRole(RedisRole(text))
        return LocalRole(RedisRole.UNKNOWN, escape(text[:64]))
    return LocalRole(RedisRole.UNKNOWN)


class LocalRedis:
    def __init__(self, cfg: RedisConfig) -> None:
        self.cfg = cfg
        self._conns: dict[tuple[str, int], Conn] = {}
        self._holds: dict[tuple[str, int], Conn] = {}   # CLIENT PAUSE's, short timeout
        self._lock = threading.Lock()

    def _conn(self, host: str, port: int) -> Conn:
        with self._lock:
            conn = self._conns.get((host, port))
            if conn is None:
                conn = Conn(host, port, self.cfg.username, self.cfg.password, self.cfg.timeout)
                self._conns[(host, port)] = conn
        return conn

    def role(self, host: str, port: int) -> LocalRole:
        """Master, slave, ... or unreachable / error, with why."""
        conn = self._conn(host, port)
        # Two tries: a Redis that was just demoted or promoted closes its clients,
        # so the kept connection is often dead exactly when it matters.
        for attempt in (1, 2):
            try:
                return parse_role(conn.command("ROLE"))
            except ReplyError as exc:
                first = (str(exc).splitlines() or ["error"])[0]
                return LocalRole(RedisRole.ERROR, escape(first[:200]))
            except ConnectionLost as exc:
                if attempt == 2:
                    return LocalRole(RedisRole.UNREACHABLE, escape(str(exc)[:200]))
        return LocalRole(RedisRole.UNKNOWN)

    def process_id(self, host: str, port: int) -> int | None:
        """INFO server's process_id, or None when it cannot be asked."""
        # A connection of its own: the kept ones belong to the actors' ROLE
        # checks, and two threads on one connection would read each other's
        # replies.
        conn = Conn(host, port, self.cfg.username, self.cfg.password, self.cfg.timeout)
        try:
            info = str(conn.command("INFO", "server"))
        except RedisError:
            return None
        finally:
            conn.close()
        for line in info.splitlines():
            if line.startswith("process_id:"):
                return uint(line.split(":", 1)[1].strip())
        return None

    def hold_writes(self, host: str, port: int, ms: int | None) -> str | None:
        """``CLIENT PAUSE <ms> WRITE`` (Redis >= 6.2): writes block until the
        pause ends by itself, ``ms`` later; None lifts it (``CLIENT UNPAUSE``).
        Renewing extends it. Returns why it failed, or None."""
        with self._lock:
            conn = self._holds.get((host, port))
            if conn is None:
                conn = Conn(host, port, self.cfg.username, self.cfg.password, HOLD_TIMEOUT)
                self._holds[(host, port)] = conn
        command = ("CLIENT", "PAUSE", str(ms), "WRITE") if ms is not None else (
            "CLIENT", "UNPAUSE")
        for attempt in (1, 2):
            try:
                conn.command(*command)
                return None
            except ReplyError as exc:
                return escape((str(exc).splitlines() or ["error"])[0][:200])
            except Timeout as exc:
                return escape(str(exc)[:200])
            except ConnectionLost as exc:
                # Once more on a fresh connection: the kept one may have been
                # closed by a CLIENT KILL since its last use.
                if attempt == 2:
                    return escape(str(exc)[:200])
        return None

    def close(self) -> None:
        with self._lock:
            for conn in [*self._conns.values(), *self._holds.values()]:
                conn.close()
            self._conns.clear()
            self._holds.clear()
