"""The agent's Unix socket: one JSON line in, one JSON line out.

    {"op": "hook", "argv": [7 args]} -> {"exit": 0|1|2, "message": "..."}
    {"op": "status"}                  -> the agent's live view

Every client is treated as hostile, since the hook runs as Sentinel's user, the
one process here that faces the network:

- one thread and a selector serve every connection, so slow clients cost a
  file descriptor each, never a thread (1,500 clients dripping a byte at a time
  once held 1,510 threads and made the hook wait 3.5 s);
- each connection has one overall deadline for its request line, and a cap on
  its size; a hook request then waits for its verdict at most ``hook_timeout``;
- at most MAX_CONNECTIONS are open at once: past that, or when accept(2) runs out
  of descriptors, the oldest connection that has not sent its request is dropped,
  so a request that arrives whole (the hook's) is always read; the accept loop
  never ends on an error;
- every peer's credentials are read (SO_PEERCRED, SO_PEERGROUPS): only root, the
  agent's own user and members of the socket's group are served, and the peer's
  uid and pid go with its request to the agent, which decides how far to trust it.
"""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import selectors
import socket
import stat
import struct
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import PermanentError, VipfloatError

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256
ACCEPT_BATCH = 32             # connections accepted per turn of the loop
REQUEST_DEADLINE = 2.0        # seconds to deliver the request line
REPLY_DEADLINE = 2.0          # seconds for the client to take the answer
MAX_REQUEST = 64 * 1024       # bytes in one request line
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_NGROUPS_MAX = 65536
# Errors of accept(2) that mean "out of something, for now": free a descriptor.
_SHORTAGE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection (as the kernel says)."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"uid {self.uid}, pid {self.pid}"


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    groups: tuple[int, ...] = ()
    size = 64 * 4
    while True:  # the kernel says ERANGE when the buffer is too small
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == errno.ERANGE and size < _NGROUPS_MAX * 4:
                size *= 4
                continue
            break  # an old kernel: primary group only
        groups = struct.unpack(f"{len(raw) // 4}I", raw[:len(raw) // 4 * 4])
        break
    return Peer(pid, uid, gid, groups)


def allowed(peer: Peer, own_uid: int, group_gid: int) -> bool:
    """Pure: root, the agent's own user, or a member of the socket's group."""
    return (peer.uid in (0, own_uid) or peer.gid == group_gid or group_gid in peer.groups)


class Handler(Protocol):
    """What the socket asks of the agent."""

    @property
    def hook_timeout(self) -> float: ...

    def status(self) -> dict[str, Any]: ...

    def hook(self, argv: list[str], since: float, peer: Peer) -> Future[tuple[int, str]]: ...


class _Conn:
    __slots__ = ("sock", "peer", "since", "deadline", "inbuf", "outbuf", "waiting", "refused")

    def __init__(self, sock: socket.socket, peer: Peer, now: float) -> None:
        self.sock, self.peer, self.since = sock, peer, now
        self.deadline = now + REQUEST_DEADLINE
        self.inbuf = bytearray()
        self.outbuf = b""
        self.waiting = False      # a hook request handed to the agent, no verdict yet
        self.refused = False      # a peer the agent does not serve: told so, nothing more

    @property
    def silent(self) -> bool:
        """Still sending its request: the first to go when descriptors run short."""
        return not self.waiting and not self.outbuf


class AgentSocket:
    def __init__(self, path: Path, group: str | None, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._own_uid = os.geteuid()
        self._gid = os.getegid()
        if group:
            try:
                self._gid = grp.getgrnam(group).gr_gid
            except KeyError:
                log.error("socket_group %s does not exist: the socket stays in group %d",
                          group, self._gid)
                group = None
        self.sock = _bind(path, self._gid if group else None)
        self._conns: dict[int, _Conn] = {}      # by fd, in accept order
        self._done: deque[tuple[int, _Conn, Future[tuple[int, str]]]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self.sock, self._wake_r, self._wake_w):
            s.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._accepting = True
        self._resume_at = 0.0
        self._last_shortage_log = 0.0
        self._closed = threading.Event()
        self.beat = time.monotonic()            # the loop's last turn, for the watchdog
        self._thread = threading.Thread(target=self._loop, name="agent-socket", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        for conn in list(self._conns.values()):
            self._drop(conn)
        self._sel.close()
        for s in (self.sock, self._wake_r, self._wake_w):
            s.close()
        try:  # only our own socket: a file put there since is not ours to remove
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except OSError:
            pass

    # --- the loop --------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._turn()
            except Exception:  # noqa: BLE001 - the socket must outlive any one bug
                log.exception("agent socket: serving loop error; going on")
                time.sleep(0.05)

    def _turn(self) -> None:
        now = self.beat = time.monotonic()
        if not self._accepting and now >= self._resume_at:
            self._sel.register(self.sock, selectors.EVENT_READ, "listen")
            self._accepting = True
        deadlines = [c.deadline for c in self._conns.values()]
        if not self._accepting:
            deadlines.append(self._resume_at)
        timeout = max(0.0, min(deadlines) - now) if deadlines else 1.0
        for key, mask in self._sel.select(min(timeout, 1.0)):
            if key.data == "listen":
                self._accept()
            elif key.data == "wake":
                self._drain_wake()
            else:
                conn = self._conns.get(key.fd)
                if conn is None:
                    continue
                if mask & selectors.EVENT_READ and not conn.waiting and not conn.outbuf:
                    self._read(conn)
                if mask & selectors.EVENT_WRITE and conn.outbuf:
                    self._write(conn)
        self._deliver_verdicts()
        self._expire(time.monotonic())

    def _accept(self) -> None:
        # At most ACCEPT_BATCH per turn, each read at once: a client that connects
        # and hangs up in a loop must not keep this thread accepting (and evicting)
        # while the requests already queued on the connections it took wait unread.
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.sock.accept()
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if self._closed.is_set():
                    return
                if exc.errno in _SHORTAGE:
                    self._shortage(exc)
                    return
                if exc.errno != errno.ECONNABORTED:
                    log.warning("agent socket: accept failed: %s; going on", exc.strerror)
                continue
            sock.setblocking(False)
            try:
                peer = peer_of(sock)
            except OSError:
                sock.close()
                continue
            if len(self._conns) >= MAX_CONNECTIONS and not self._evict_oldest_silent():
                sock.close()  # every slot awaits a verdict: this client falls back
                continue
            conn = _Conn(sock, peer, time.monotonic())
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, "conn")
            # A peer it does not serve is told so once its request is in (answering
            # at once would meet a client still sending: a broken pipe, no word).
            conn.refused = not allowed(peer, self._own_uid, self._gid)
            # The hook sends its request as it connects: most often it is here
            # already, and is dispatched before anything could evict it.
            self._read(conn)

    def _shortage(self, exc: OSError) -> None:
        """Out of descriptors: free the oldest silent connection, or stop accepting
        for a moment (the kernel keeps queueing connections meanwhile)."""
        if self._evict_oldest_silent():
            return
        self._sel.unregister(self.sock)
        self._accepting = False
        self._resume_at = time.monotonic() + 0.1
        now = time.monotonic()
        if now - self._last_shortage_log > 10:
            self._last_shortage_log = now
            log.error("agent socket: accept failed (%s) with nothing to free: pausing 0.1 s",
                      exc.strerror)

    def _evict_oldest_silent(self) -> bool:
        for conn in self._conns.values():
            if conn.silent:
                self._drop(conn)
                return True
        return False

    def _read(self, conn: _Conn) -> None:
        while True:
            try:
                chunk = conn.sock.recv(65536)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError:
                self._drop(conn)
                return
            if not chunk:
                self._drop(conn)  # closed before a whole request: nothing to answer
                return
            conn.inbuf += chunk
            end = conn.inbuf.find(b"\n")
            if end >= 0:
                self._dispatch(conn, bytes(conn.inbuf[:end]))
                return
            if len(conn.inbuf) > MAX_REQUEST:
                self._reply(conn, {"exit": 2, "message": f"bad request: longer than "
                                                         f"{MAX_REQUEST} bytes"})
                return

    def _dispatch(self, conn: _Conn, line: bytes) -> None:
        if conn.refused:
            log.warning("agent socket: refused %s: not root, the agent's user or a member "
                        "of group %d", conn.peer, self._gid)
            self._reply(conn, {"exit": 2, "message": f"not allowed ({conn.peer}): the agent "
                               f"serves root, its own user and group {self._gid}"})
            return
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
            op = request.get("op")
            if op == "status":
                self._reply(conn, self.handler.status())
                return
            if op != "hook":
                raise ValueError(f"unknown op {str(op)[:40]!r}")
            argv = request.get("argv")
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise ValueError("argv must be a list of strings")
            future = self.handler.hook(argv, conn.since, conn.peer)
        except VipfloatError as exc:
            self._reply(conn, {"exit": exc.exit_code, "message": str(exc)})
            return
        except (ValueError, RecursionError) as exc:
            self._reply(conn, {"exit": 2, "message": f"bad request: {exc}"})
            return
        except Exception as exc:  # noqa: BLE001 - the client gets an answer, never a hang
            log.exception("agent socket: request failed")
            self._reply(conn, {"exit": 1, "message": f"agent: {type(exc).__name__}: {exc}"})
            return
        conn.waiting = True
        conn.deadline = time.monotonic() + self.handler.hook_timeout
        # Nothing more to read: a client that sends more or hangs up meanwhile
        # must not keep the selector spinning (it is level-triggered).
        self._sel.unregister(conn.sock)
        fd = conn.sock.fileno()
        future.add_done_callback(lambda f: self._verdict_ready(fd, conn, f))

    def _verdict_ready(self, fd: int, conn: _Conn, future: Future[tuple[int, str]]) -> None:
        # Called in the actor's thread: hand over to the loop, which alone writes.
        self._done.append((fd, conn, future))
        self._wake()

    def _deliver_verdicts(self) -> None:
        while self._done:
            fd, conn, future = self._done.popleft()
            if self._conns.get(fd) is not conn or not conn.waiting:
                continue  # timed out and closed meanwhile
            conn.waiting = False
            try:
                code, message = future.result()
                reply = {"exit": code, "message": message}
            except Exception as exc:  # noqa: BLE001
                reply = {"exit": 1, "message": f"agent: {type(exc).__name__}: {exc}"}
            self._reply(conn, reply)

    def _reply(self, conn: _Conn, reply: dict[str, Any]) -> None:
        conn.outbuf = json.dumps(reply).encode() + b"\n"
        conn.deadline = time.monotonic() + REPLY_DEADLINE
        self._write(conn)
        if conn.outbuf and conn.sock.fileno() in self._conns:
            try:
                self._sel.modify(conn.sock, selectors.EVENT_WRITE, "conn")
            except KeyError:  # unregistered while it waited for its verdict
                self._sel.register(conn.sock, selectors.EVENT_WRITE, "conn")

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        conn.outbuf = conn.outbuf[sent:]
        if not conn.outbuf:
            self._drop(conn)  # one request per connection: done

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            if conn.waiting:
                conn.waiting = False
                self._reply(conn, {"exit": 1, "message": "the agent gave no verdict within "
                                   f"hook_timeout ({self.handler.hook_timeout:g} s)"})
            else:
                self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if self._conns.get(fd) is conn:
            del self._conns[fd]
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.sock.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # already pending (buffer full) or closed: the loop wakes anyway

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass


def _bind(path: Path, gid: int | None) -> socket.socket:
    """Bind the socket at ``path`` without following or deleting anything that is
    not a socket, created with its final mode (no chmod by path afterwards)."""
    parent = path.parent
    parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    st = os.stat(parent)
    if st.st_mode & stat.S_IWOTH:
        raise PermanentError(f"the socket's directory {parent} is world-writable (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}): anyone could replace the "
                             "socket; choose a directory of vipfloat's own")
    if st.st_mode & stat.S_IWGRP and not st.st_mode & stat.S_ISVTX:
        raise PermanentError(f"the socket's directory {parent} is group-writable without the "
                             f"sticky bit (mode {stat.S_IMODE(st.st_mode):04o}): a group member "
                             "could rename the socket away and listen in its place; chmod +t "
                             "it (3770), or g-w")
    _refuse_if_running(path)
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(existing.st_mode):
            raise PermanentError(f"{path} exists and is not a socket: refusing to remove it")
        os.unlink(path)  # a stale socket of ours (nobody listens: checked above)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o117)  # the socket is born 0660: no window at a wider mode
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    if gid is not None:
        try:
            # follow_symlinks=False: if someone swapped a link in meanwhile, the
            # link changes group, never what it points at.
            os.chown(path, -1, gid, follow_symlinks=False)
        except OSError as exc:
            log.error("cannot give %s to group %d: %s", path, gid, exc.strerror)
    sock.listen(128)
    return sock


def _refuse_if_running(path: Path) -> None:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except OSError:
        return  # nobody listening: a stale socket, or none
    finally:
        probe.close()
    raise PermanentError(f"another agent is already listening on {path}")

