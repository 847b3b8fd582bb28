"""RESP2, as much of it as a pub/sub subscription needs: commands encoded, and
replies decoded from a byte stream a Sentinel (or anything pretending to be one)
sends. Pure, and bounded: every length is checked against a cap as soon as its
header is complete, so a hostile peer can neither make us allocate for a
billion-element array (hiredis would) nor grow the buffer past one capped reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

# A pub/sub message is ["message", channel, payload]; a subscription's replies
# have three elements too. Sentinel's payloads are a few hundred bytes.
MAX_ELEMENTS = 8
MAX_BULK = 16 * 1024
MAX_LINE = 512          # a header or simple string, CRLF included
MAX_DEPTH = 1           # an array holds scalars only (pub/sub never nests)


class ProtocolError(Exception):
    """Not RESP2, or beyond the caps: the connection cannot be trusted further."""


@dataclass(frozen=True)
class ErrorReply:
    """A ``-ERR ...`` reply: the peer answered, and said no."""

    text: str


Reply = Union[str, int, None, ErrorReply, list["Reply"]]


def encode(*args: str | bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _line(buf: bytes, start: int) -> tuple[bytes, int] | None:
    """The line at ``start`` without its CRLF, and where the next begins."""
    end = buf.find(b"\r\n", start, start + MAX_LINE)
    if end < 0:
        if len(buf) - start >= MAX_LINE:
            raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
        return None
    return buf[start:end], end + 2


def _length(text: bytes, cap: int, what: str) -> int:
    """A header's length: -1 (null) or 0..cap."""
    if text == b"-1":
        return -1
    if not (text.isdigit() and len(text) <= 10):
        raise ProtocolError(f"bad {what} length {text[:20]!r}")
    n = int(text)
    if n > cap:
        raise ProtocolError(f"{what} of {n} over the cap of {cap}")
    return n


def decode(buf: bytes, start: int = 0, depth: int = 0) -> tuple[Reply, int] | None:
    """The reply at ``start`` and where the next begins; None while incomplete.
    Raises ProtocolError for anything else than RESP2 within the caps."""
    got = _line(buf, start)
    if got is None:
        return None
    line, pos = got
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode("utf-8", "replace"), pos
    if kind == b"-":
        return ErrorReply(rest.decode("utf-8", "replace")), pos
    if kind == b":":
        digits = rest[1:] if rest[:1] == b"-" else rest
        if not (digits.isdigit() and len(digits) <= 19):
            raise ProtocolError(f"bad integer {rest[:20]!r}")
        return int(rest), pos
    if kind == b"$":
        n = _length(rest, MAX_BULK, "bulk string")
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            return None
        if buf[pos + n:pos + n + 2] != b"\r\n":
            raise ProtocolError("a bulk string not ended by CRLF")
        return buf[pos:pos + n].decode("utf-8", "replace"), pos + n + 2
    if kind == b"*":
        n = _length(rest, MAX_ELEMENTS, "array")
        if n < 0:
            return None, pos
        if depth >= MAX_DEPTH:
            raise ProtocolError(f"arrays nested deeper than {MAX_DEPTH}")
        items: list[Reply] = []
        for _ in range(n):
            got_item = decode(buf, pos, depth + 1)
            if got_item is None:
                return None
            item, pos = got_item
            items.append(item)
        return items, pos
    raise ProtocolError(f"unknown reply type {kind!r}")


class Decoder:
    """Replies from a stream fed in pieces. The buffer never holds more than
    one capped reply plus what came with it in the last read."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Reply]:
        """Every reply ``data`` completes, in order."""
        buf = self._buf + data if self._buf else data
        out: list[Reply] = []
        pos = 0
        while pos < len(buf):
            got = decode(buf, pos)
            if got is None:
                break
            reply, pos = got
            out.append(reply)
        self._buf = buf[pos:]
        return out

    def __len__(self) -> int:
        return len(self._buf)
