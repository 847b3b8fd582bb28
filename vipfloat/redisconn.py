"""One blocking connection to a Redis: the agent's ROLE checks and write holds
on this host's Redis, and its INFO server.

A socket, RESP2 read by hiredis, AUTH when the connection is made, and one
deadline per command covering the connect, the send and the whole reply (a
Redis trickling its answer cannot stretch it). redis-py did this before, but
importing it took 100-150 ms and 10 MiB here, and the agent paid that on a
failover's critical path: at the first ROLE question of a promotion it was
following, or the first CLIENT PAUSE of a planned failover. hiredis is
already loaded by the Sentinel poll.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from .config import Secret

# ROLE of a master with many replicas, or INFO server, is a few KiB: more is not
# an answer to what we ask, and is cut off.
MAX_REPLY_BYTES = 256 * 1024
READ_SIZE = 65536


class RedisError(Exception):
    """Anything that kept a command from its answer."""


class ReplyError(RedisError):
    """The server's error reply (-ERR, -NOAUTH, -WRONGPASS): it answered, but no."""


class ConnectionLost(RedisError):
    """Refused, reset, closed, or an answer that is not RESP: the connection is
    closed, and the next command makes a new one."""


class Timeout(ConnectionLost):
    """No whole answer within the command's deadline."""


class Conn:
    """One connection, made on first use and again after any ConnectionLost.
    Not shared between threads."""

    def __init__(self, host: str, port: int, username: str | None, password: Secret | None,
                 timeout: float) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.reader: Any = None

    def command(self, *args: str) -> Any:
        """The reply to one command (str, int, list, None), within the timeout."""
        deadline = time.monotonic() + self.timeout
        try:
            if self.sock is None:
                self._connect(deadline)
            return self._ask(args, deadline)
        except ConnectionLost:
            self.close()
            raise

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def _connect(self, deadline: float) -> None:
        import hiredis

        try:
            self.sock = socket.create_connection((self.host, self.port),
                                                 timeout=self._left(deadline))
        except TimeoutError:
            raise Timeout(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise ConnectionLost(f"connect to {self.host}:{self.port}: "
                                 f"{exc.strerror or exc}") from None
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace")
        if self.password is not None:
            try:
                self._ask(("AUTH", *([self.username] if self.username else []),
                           self.password.value), deadline)
            except ReplyError:
                self.close()        # refused: never left open unauthenticated
                raise

    def _ask(self, args: tuple[str, ...], deadline: float) -> Any:
        import hiredis

        from .resp import encode

        assert self.sock is not None
        try:
            self.sock.settimeout(self._left(deadline))
            self.sock.sendall(encode(*args))
            received = 0
            while True:
                try:
                    reply = self.reader.gets()
                except hiredis.ProtocolError as exc:
                    raise ConnectionLost(f"not a Redis reply: {exc}") from None
                except Exception as exc:  # noqa: BLE001 - MemoryError: an array of 10^9
                    raise ConnectionLost(f"unreadable reply: {type(exc).__name__}") from None
                if reply is not False:
                    break
                self.sock.settimeout(self._left(deadline))
                data = self.sock.recv(READ_SIZE)
                if not data:
                    raise ConnectionLost("closed by Redis")
                received += len(data)
                if received > MAX_REPLY_BYTES:
                    raise ConnectionLost(f"a reply over {MAX_REPLY_BYTES} bytes")
                self.reader.feed(data)
        except TimeoutError:
            raise Timeout(f"no answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise ConnectionLost(exc.strerror or str(exc)) from None
        if isinstance(reply, hiredis.ReplyError):
            raise ReplyError(str(reply))
        return reply

    def _left(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"no answer within {self.timeout:g} s")
        return left
