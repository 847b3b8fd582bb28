"""Loopback servers speaking RESP: one answering with recorded replies (the
doctor's gathering run against servers that cannot be installed here: Valkey),
and one answering as a test scripts it (Sentinels well-behaved and not, for the
poll and the subscriptions)."""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable, Mapping


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


class Scripted:
    """A loopback server whose answer to each command is ``answer(cmd)`` (None:
    silence), sent ``trickle`` bytes at a time, 50 ms apart, when set. Keeps
    every command, per connection (``commands``) and in all (``asked``)."""

    def __init__(self, answer: Callable[[tuple[str, ...]], bytes | None],
                 trickle: int = 0) -> None:
        self.answer, self.trickle = answer, trickle
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.asked: list[tuple[str, ...]] = []
        self.chunks: list[int] = []      # commands per read from a client (pipelining)
        self.commands: list[list[tuple[str, ...]]] = []
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self.accepted_at: list[float] = []     # when each connection was accepted
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.accepted_at.append(time.monotonic())
            self.conns.append(conn)
            got: list[tuple[str, ...]] = []
            self.commands.append(got)
            threading.Thread(target=self._serve, args=(conn, got), daemon=True).start()

    def _serve(self, conn: socket.socket, got: list[tuple[str, ...]]) -> None:
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            cmds, buf = _commands(buf + chunk)
            if cmds:
                self.chunks.append(len(cmds))
            out = b""
            for cmd in cmds:
                got.append(cmd)
                self.asked.append(cmd)
                out += self.answer(cmd) or b""
            try:
                step = self.trickle or len(out) or 1
                for i in range(0, len(out), step):
                    conn.sendall(out[i:i + step])
                    if self.trickle:
                        threading.Event().wait(0.05)
            except OSError:
                return

    def push(self, data: bytes) -> None:
        """Unasked bytes to every connection (a published message)."""
        for conn in list(self.conns):
            try:
                conn.sendall(data)
            except OSError:
                pass

    def drop_connections(self) -> None:
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self.conns = []

    def close(self) -> None:
        try:
            # Wakes the blocked accept() and stops listening (close() alone does
            # neither while accept() holds the socket): connections refused.
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.drop_connections()


class Replay(Scripted):
    """``with Replay({("INFO", "server"): b"$..."}) as port:`` serves every
    connection until closed; CLIENT (redis-py's SETINFO on connect) gets +OK,
    anything not recorded an error, as a server that lacks the command would.
    Commands are matched on their first two words uppercased, the rest as sent."""

    def __init__(self, replies: Mapping[tuple[str, ...], bytes]) -> None:
        self.replies = {tuple(a.upper() for a in k[:2]) + k[2:]: v for k, v in replies.items()}
        super().__init__(self._reply)

    def _reply(self, cmd: tuple[str, ...]) -> bytes:
        key = tuple(a.upper() for a in cmd[:2]) + cmd[2:]
        if key[0] == "CLIENT":
            return b"+OK\r\n"
        return self.replies.get(key, b"-ERR unknown command '%s'\r\n" % " ".join(cmd).encode())

    def __enter__(self) -> int:
        return self.port

    def __exit__(self, *exc: object) -> None:
        self.close()


class Blackhole:
    """A loopback address whose connects never complete, as a firewalled or
    dead host's look: a listener that never accepts, its one place in the
    accept queue taken, so the kernel drops every later SYN."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = int(self.listener.getsockname()[1])
        self.filler = socket.create_connection(("127.0.0.1", self.port), timeout=2)

    def close(self) -> None:
        self.filler.close()
        self.listener.close()


class Names:
    """socket.getaddrinfo for a test (monkeypatched in): each name in ``names``
    resolves to its (ip, port) rows, in that order; a numeric-only lookup of it
    fails as for any name; everything else is the real getaddrinfo's. With a
    ``gate``, a name's lookup hangs until the gate is set, for 5 s at most; a
    name in ``errors`` raises its exception (getaddrinfo raises UnicodeError, not
    gaierror, for a label over 63 bytes)."""

    def __init__(self, names: dict[str, list[tuple[str, int]]],
                 gate: threading.Event | None = None,
                 errors: dict[str, Exception] | None = None) -> None:
        self.names = names
        self.gate = gate            # set: lookups answer; clear: they hang until it is
        self.errors = errors or {}  # names whose every lookup raises this
        self.looked_up: list[str] = []
        self.real = socket.getaddrinfo

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        if host in self.errors:
            raise self.errors[host]
        if host not in self.names:
            return self.real(host, port, family, type, proto, flags)
        if flags & socket.AI_NUMERICHOST:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        self.looked_up.append(host)
        if self.gate is not None:
            self.gate.wait(timeout=5)      # a resolver that answers late, if never set
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", addr)
                for addr in self.names[host]]
