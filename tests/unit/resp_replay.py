"""A loopback server that answers RESP commands with recorded replies: the
doctor's gathering run against servers that cannot be installed here (Valkey)."""
from __future__ import annotations

import socket
import threading
from typing import Mapping


def bulk(text: str) -> bytes:
    data = text.replace("\n", "\r\n").encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def verbatim(text: str) -> bytes:
    """RESP3's verbatim string, as a server's INFO answers a RESP3 client."""
    data = b"txt:" + text.replace("\n", "\r\n").encode()
    return b"=%d\r\n%s\r\n" % (len(data), data)


def resp_map(pairs: list[tuple[str, str | int]]) -> bytes:
    """RESP3's map of bulk strings (integers as RESP integers)."""
    out = [b"%%%d\r\n" % len(pairs)]
    for key, value in pairs:
        out.append(bulk(key))
        out.append(b":%d\r\n" % value if isinstance(value, int) else bulk(value))
    return b"".join(out)


def _commands(buf: bytes) -> tuple[list[tuple[str, ...]], bytes]:
    """Complete RESP arrays of bulk strings in ``buf``, and what is left."""
    out = []
    while buf.startswith(b"*"):
        head, sep, rest = buf.partition(b"\r\n")
        if not sep:
            break
        args, ok = [], True
        for _ in range(int(head[1:])):
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep or len(rest) < int(size_line[1:]) + 2:
                ok = False
                break
            n = int(size_line[1:])
            args.append(rest[:n].decode())
            rest = rest[n + 2:]
        if not ok:
            break
        out.append(tuple(args))
        buf = rest
    return out, buf


class Replay:
    """``with Replay({("INFO", "server"): b"$..."}) as port:`` serves every
    connection until closed; CLIENT (redis-py's SETINFO on connect) gets +OK,
    anything not recorded an error, as a server that lacks the command would.
    Commands are matched on their first two words uppercased, the rest as sent."""

    def __init__(self, replies: Mapping[tuple[str, ...], bytes]) -> None:
        self.replies = {tuple(a.upper() for a in k[:2]) + k[2:]: v for k, v in replies.items()}
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.asked: list[tuple[str, ...]] = []
        self.chunks: list[int] = []      # commands per read from a client (pipelining)

    def __enter__(self) -> int:
        threading.Thread(target=self._accept, daemon=True).start()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                commands, buf = _commands(buf + chunk)
                if commands:
                    self.chunks.append(len(commands))
                for cmd in commands:
                    key = tuple(a.upper() for a in cmd[:2]) + cmd[2:]
                    self.asked.append(key)
                    if key[0] == "CLIENT":
                        conn.sendall(b"+OK\r\n")
                    else:
                        conn.sendall(self.replies.get(
                            key, b"-ERR unknown command '%s'\r\n" % " ".join(cmd).encode()))
