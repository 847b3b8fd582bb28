"""Talking to a running agent over its Unix socket: standard library only, so the
hook can use it without paying for anything it does not need."""

from __future__ import annotations

import json
import socket
import time

# Not `from typing import ...`: importing typing costs the hook ~4 ms at run time.
# Type checkers take any TYPE_CHECKING constant as true; the annotations are
# never evaluated (the __future__ import postpones them).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The longest answer we read. The agent's answers are a few hundred bytes (a
# status view with many VIPs a few KiB); whoever holds the socket path must not
# make the hook (or `vipfloat status`) buffer megabytes.
REPLY_MAX = 64 * 1024


class NoAgent(Exception):
    """Nobody answers on the socket (not running, stale socket, no permission)."""


def _left(sock: socket.socket, deadline: float) -> None:
    """Give the next socket call only what is left of the request's time: a peer
    that sends one byte a second must not stretch the request, call by call."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no answer in time")
    sock.settimeout(left)


def request(path: str, payload: dict[str, Any], timeout: float,
            connect_timeout: float = 0.5) -> dict[str, Any]:
    """One JSON line out, one JSON line back, all within `timeout` seconds after
    connecting (connect has its own `connect_timeout`). NoAgent if nobody
    listens; OSError (TimeoutError past the deadline) or ValueError (a bad or
    over-long answer) if the agent took the request but did not answer well."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(connect_timeout)
        connect_by = time.monotonic() + connect_timeout
        while True:
            try:
                sock.connect(path)
                break
            except BlockingIOError as exc:
                # A full listen queue (EAGAIN at once, for a Unix socket): the
                # agent is busy, not gone. Try again until connect_timeout, as the
                # C hook does, before acting without it.
                if time.monotonic() >= connect_by:
                    raise NoAgent(str(exc)) from None
                time.sleep(0.005)
            except OSError as exc:
                raise NoAgent(str(exc)) from None
        # One deadline for the send and the whole answer.
        deadline = time.monotonic() + timeout
        _left(sock, deadline)
        sock.sendall(json.dumps(payload).encode() + b"\n")  # its timeout bounds it whole
        chunks: list[bytes] = []
        size = 0
        while True:
            _left(sock, deadline)
            # Never more than one byte past the cap: enough to know it is exceeded.
            chunk = sock.recv(min(65536, REPLY_MAX + 1 - size))
            if not chunk:
                break
            end = chunk.find(b"\n")
            if end >= 0:
                chunks.append(chunk[:end])
                size += end
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > REPLY_MAX:
                raise ValueError("reply too long")
        answer = json.loads(b"".join(chunks))
        if not isinstance(answer, dict):
            raise ValueError("the agent's answer is not a JSON object")
        return answer
    finally:
        sock.close()
