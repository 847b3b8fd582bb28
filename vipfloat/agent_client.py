"""Talking to a running agent over its Unix socket: standard library only, so the
hook can use it without paying for anything it does not need."""

from __future__ import annotations

import json
import socket

# Not `from typing import ...`: importing typing costs the hook ~4 ms at run time.
# Type checkers take any TYPE_CHECKING constant as true; the annotations are
# never evaluated (the __future__ import postpones them).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class NoAgent(Exception):
    """Nobody answers on the socket (not running, stale socket, no permission)."""


def request(path: str, payload: dict[str, Any], timeout: float,
            connect_timeout: float = 0.5) -> dict[str, Any]:
    """One JSON line out, one JSON line back. NoAgent if nobody listens;
    OSError/ValueError if the agent took the request but did not answer well."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(connect_timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise NoAgent(str(exc)) from None
        sock.settimeout(timeout)
        sock.sendall(json.dumps(payload).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        answer = json.loads(reply)
        if not isinstance(answer, dict):
            raise ValueError("the agent's answer is not a JSON object")
        return answer
    finally:
        sock.close()
