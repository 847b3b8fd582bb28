"""One blocking connection to a Redis: the agent's ROLE checks and write holds
on this host's Redis, and its INFO server.

A socket, RESP2 read by hiredis, AUTH when the connection is made; one
deadline for making the connection (a name's lookup, off this thread, the
connect, AUTH) and one per command, covering the send and the whole reply (a
Redis trickling its answer cannot stretch it). A kept connection with anything
unasked waiting on it, or a second reply to one command, is closed, never read
as the next answer. redis-py did this before, but
importing it took 100-150 ms and 10 MiB here, and the agent paid that on a
failover's critical path: at the first ROLE question of a promotion it was
following, or the first CLIENT PAUSE of a planned failover. hiredis is
already loaded by the Sentinel poll.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from .config import Secret
from . import sentinel
from .sentinel import auth_args, lookup, ready_now

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
    """One connection, made on first use and again after anything but an error
    reply. Commands from several threads take turns."""

    def __init__(self, host: str, port: int, username: str | None, password: Secret | None,
                 timeout: float) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.reader: Any = None
        self._lock = threading.Lock()
        # A name's lookup, on a thread of its own: one at a time, kept until done.
        self._lookup: Future[list[Any]] | None = None

    def command(self, *args: str) -> Any:
        """The reply to one command (str, int, list, None): the connection, when
        it is made (its lookup, connect and AUTH), within the timeout, and the
        command within the timeout again."""
        with self._lock:
            try:
                sock = self.sock
                if sock is not None and ready_now(sock):
                    self.close()    # bytes nobody asked for: never read as this answer
                if self.sock is None:
                    self._connect(time.monotonic() + self.timeout)
                return self._ask(args, time.monotonic() + self.timeout)
            except ReplyError:
                raise               # it answered: the connection is in step
            except (OSError, RuntimeError) as exc:
                # No socket or thread to be had (EMFILE, TasksMax): no answer.
                self.close()
                raise ConnectionLost(f"{type(exc).__name__}: {exc}") from None
            except BaseException:
                self.close()        # anything else may leave a reply half read
                raise

    def close(self) -> None:
        """Also from another thread: a command blocked on the socket ends at once."""
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass                # never connected, or already reset
            sock.close()

    def _rows(self, deadline: float) -> list[Any]:

        try:
            return lookup(self.host, self.port, numeric=True)
        except (socket.gaierror, UnicodeError):
            pass
        # A name: looked up off this thread, so the deadline holds (an isolated
        # host's resolver may take 30 s); a lookup still running is waited for,
        # never doubled.
        if self._lookup is None:
            self._lookup = sentinel.lookup_in_background(self.host, self.port)
        try:
            rows = self._lookup.result(timeout=self._left(deadline))
        except FutureTimeout:
            raise Timeout(f"cannot resolve {self.host} within {self.timeout:g} s") from None
        except Exception as exc:  # noqa: BLE001 - gaierror, UnicodeError: no address
            self._lookup = None
            raise ConnectionLost(f"cannot resolve {self.host}: "
                                 f"{exc or type(exc).__name__}") from None
        self._lookup = None
        return rows

    def _connect(self, deadline: float) -> None:
        import hiredis

        rows = self._rows(deadline)
        why = "no address"
        for i, (family, kind, proto, _, addr) in enumerate(rows):
            # Each address its share of what is left, so a dead first one does
            # not use up the time of the next.
            share = self._left(deadline) / (len(rows) - i)
            sock = socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
            try:
                sock.settimeout(share)
                sock.connect(addr)
            except TimeoutError:
                sock.close()
                why = "timed out"
                continue
            except OSError as exc:
                sock.close()
                why = exc.strerror or str(exc)
                continue
            self.sock = sock
            break
        if self.sock is None:
            if why == "timed out":
                raise Timeout(f"connect to {self.host}:{self.port} timed out")
            raise ConnectionLost(f"connect to {self.host}:{self.port}: {why}")
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace")
        auth = auth_args(self.username, self.password)
        if auth:
            try:
                self._ask(auth, deadline)
            except ReplyError:
                self.close()        # refused: never left open unauthenticated
                raise

    def _ask(self, args: tuple[str, ...], deadline: float) -> Any:
        import hiredis

        from .resp import encode

        sock = self.sock
        if sock is None:
            raise ConnectionLost("closed")
        try:
            sock.settimeout(self._left(deadline))
            sock.sendall(encode(*args))
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
                sock.settimeout(self._left(deadline))
                data = sock.recv(READ_SIZE)
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
        if self.reader.has_data():
            # A second reply to one command: the next answer would be off by one.
            raise ConnectionLost("more replies than commands")
        if isinstance(reply, hiredis.ReplyError):
            raise ReplyError(str(reply))
        return reply

    def _left(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"no answer within {self.timeout:g} s")
        return left
