"""Talking to Redis Sentinels: what each one says about each master.

Every Sentinel is asked on its own connection, all at once from one thread
(exchange), within one overall budget, so one dead or firewalled Sentinel shows
as unreachable instead of hanging `vipfloat status` or the agent's poll. Replies
are decoded by hiredis (C), imported only when a query is made, never on the
hook's path; redis-py is kept for the one-off connections of switchover and the
crash watcher.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .config import Endpoint, Secret, SentinelConfig, hostport

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
    failover_timeout_ms: int | None = None

    @property
    def addr(self) -> str:
        return hostport(self.host, self.port)


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


def parse_master_reply(reply: Sequence[Any] | Mapping[Any, Any]) -> MasterInfo:
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
        except (TypeError, ValueError, OverflowError):  # OverflowError: RESP3's ,inf
            return None

    return MasterInfo(
        name=str(fields.get("name", "")),
        host=str(fields.get("ip", "")),
        port=num("port") or 0,
        config_epoch=num("config-epoch") or 0,
        flags=tuple(f for f in str(fields.get("flags", "")).split(",") if f),
        down_after_ms=num("down-after-milliseconds"),
        quorum=num("quorum"),
        failover_timeout_ms=num("failover-timeout"),
    )


@dataclass(frozen=True)
class Replica:
    """One replica as `SENTINEL REPLICAS` lists it."""

    host: str
    port: int
    flags: tuple[str, ...]
    link_ok: bool               # master-link-status ok
    priority: int               # slave-priority; 0 never promoted
    run_id: str
    info_age_ms: int | None = None  # info-refresh: ms since Sentinel's last INFO of it
    link_down_ms: int | None = None  # master-link-down-time at that INFO
    # Seconds since its last acknowledgement, per the master's INFO replication
    # (vipfloat switchover asks); None: not known.
    lag: int | None = None

    @property
    def addr(self) -> str:
        return hostport(self.host, self.port)


def parse_replicas(reply: Sequence[Any]) -> tuple[Replica, ...]:
    """Pure: SENTINEL REPLICAS' list of flat [key, value ...] lists (or maps)."""
    out = []
    for item in reply:
        if isinstance(item, Mapping):
            pairs: Any = item.items()
        elif isinstance(item, (list, tuple)):
            pairs = zip(item[::2], item[1::2])
        else:
            continue            # not a replica's fields: skipped, never raised on
        f = {str(k): str(v) for k, v in pairs}
        ip, port = f.get("ip"), uint(f.get("port"))
        if not ip or port is None:
            continue
        # A priority Sentinel did not report is its default, 100; 0 is never promoted.
        priority = uint(f.get("slave-priority"))
        out.append(Replica(ip, port, tuple(x for x in f.get("flags", "").split(",") if x),
                           f.get("master-link-status") == "ok",
                           100 if priority is None else priority, f.get("runid", ""),
                           uint(f.get("info-refresh")),
                           uint(f.get("master-link-down-time"))))
    return tuple(out)


def uint(text: str | None) -> int | None:
    """A non-negative decimal of at most 18 digits, else None (int() refuses more
    than 4300, and no field Sentinel sends needs more than 18)."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text)


def connection(host: str, port: int, username: str | None, password: Secret | None,
               timeout: float) -> Any:
    """A bare redis-py Connection: one socket, no retries, raw replies.

    redis-py's client-level response callbacks reshape SENTINEL replies
    differently across versions, and its default retries would turn one dead
    Sentinel into seconds of waiting; a Connection has neither."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Connection(host=host, port=port, username=username,
                            password=password.value if password else None,
                            socket_connect_timeout=timeout, socket_timeout=timeout,
                            decode_responses=True, retry=Retry(NoBackoff(), 0))


def auth_args(username: str | None, password: Secret | None) -> tuple[str, ...]:
    """``AUTH [username] password``'s words, or none without a password."""
    if password is None:
        return ()
    return ("AUTH", *([username] if username else []), password.value)


def auth_command(cfg: SentinelConfig) -> bytes:
    """``AUTH [username] password`` as a connection's first command, when a
    password is configured; nothing otherwise."""
    from .resp import encode

    args = auth_args(cfg.username, cfg.password)
    return encode(*args) if args else b""


def ready_now(sock: socket.socket, events: int = select.POLLIN) -> bool:
    """Has ``sock`` ``events`` (or an error, or the peer's close) this instant?"""
    check = select.poll()
    check.register(sock, events)
    return bool(check.poll(0))


def lookup(host: str, port: int, numeric: bool = False) -> list[Any]:
    """A Sentinel's addresses (getaddrinfo rows, TCP), in the resolver's order of
    preference; each is tried in turn, as redis-py did. ``numeric``: only an IP
    address (socket.gaierror for a name, which is then looked up off the loop)."""
    rows = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                              flags=socket.AI_NUMERICHOST if numeric else 0)
    if not rows:
        raise socket.gaierror(f"no address for {host}")
    return rows


def lookup_in_background(host: str, port: int) -> Future[list[Any]]:
    """lookup() of a name on a daemon thread of its own: a resolver that hangs
    (an isolated host's DNS: up to 30 s with resolv.conf's defaults) holds up
    neither the caller's loop nor the process's exit. Callers keep at most one
    per Sentinel, so the threads are bounded by the Sentinels configured."""
    future: Future[list[Any]] = Future()

    def run() -> None:
        try:
            future.set_result(lookup(host, port))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            future.set_exception(exc)

    threading.Thread(target=run, name=f"lookup {host}", daemon=True).start()
    return future


class Waker:
    """A self-pipe that another thread writes to wake a poll() loop (a lookup
    done). Closed once; a write after that (a lookup finishing late) goes
    nowhere, never into whatever has reused the pipe's numbers."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._open = True

    def wake(self) -> None:
        with self._lock:
            if not self._open:
                return
            try:
                os.write(self._w, b"x")
            except OSError:
                pass            # the pipe is full: already woken

    def drain(self) -> None:
        try:
            os.read(self.fd, 4096)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                os.close(self.fd)
                os.close(self._w)


def connect_next(rows: list[Any]) -> tuple[socket.socket | None, str]:
    """A connect started to the first of ``rows`` that does not refuse at once
    (each tried is taken off the list); (None, why the last refused) if none."""
    why = "no address"
    while rows:
        try:
            return start_connect(rows.pop(0)), ""
        except OSError as exc:
            why = f"connect: {exc.strerror or exc}"
    return None, why


def start_connect(info: Any) -> socket.socket:
    """A non-blocking socket connecting to ``info`` (a getaddrinfo row): done
    when it polls writable, then see connect_error. OSError when refused at once."""
    family, kind, proto, _, addr = info
    sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
    code = sock.connect_ex(addr)
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(code, os.strerror(code))
    return sock


def connect_error(sock: socket.socket) -> str | None:
    """Why a non-blocking connect that polled writable failed; None: connected."""
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return f"connect: {os.strerror(code)}" if code else None


# What one Sentinel may send for one poll: a SENTINEL MASTER reply is about 1.2
# KiB (Redis 7). More is not a Sentinel's answer, and is cut off.
MAX_REPLY_BYTES = 16 * 1024
READ_SIZE = 65536


class SentinelClient:
    """One Sentinel, one connection kept open between questions and reopened
    after any failure. Its questions are asked by exchange(), alone or beside
    the other Sentinels'."""

    def __init__(self, endpoint: Endpoint, cfg: SentinelConfig) -> None:
        self.endpoint = endpoint
        self.cfg = cfg
        self.sock: socket.socket | None = None
        self.connecting = False
        self.reader: Any = None
        # One exchange's progress: bytes still to send, replies still to read.
        self._out = b""
        self._want = 0
        self._got: list[Any] = []
        self._received = 0
        self._cap = 0               # bytes this exchange may receive
        self._auth = False          # the first reply answers AUTH
        self.failure: str | None = None
        self.refused: str | None = None
        self._rows: list[Any] = []  # addresses still to try when a connect fails
        self._connect_by = 0.0      # when a connect with addresses left gives way to the next
        # A name's lookup, off this thread: kept across polls until it is done,
        # never a second one beside it.
        self._lookup: Future[list[Any]] | None = None
        self.resolving = False
        # The connection finished an exchange, every reply read: it may be kept.
        self._clean = False
        # The exchange in progress's waker, woken when the lookup ends.
        self.waker: Waker | None = None

    def ask(self, masters: Sequence[str]) -> dict[str, SentinelAnswer]:
        """An answer per master name (SENTINEL MASTER), pipelined: every question
        in one write, then the replies in order, so a poll costs one round trip
        whatever the number of masters (64 masters, 3 Sentinels, every 2 s)."""
        return exchange([self], masters)[0]

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self.connecting = False
        if sock is not None:
            sock.close()

    # --- one exchange, driven by exchange() -------------------------------------------
    def _begin(self, masters: Sequence[str]) -> None:
        import hiredis

        from .resp import encode

        self.failure = self.refused = None
        self._got, self._received = [], 0
        self._want = len(masters)
        self._out = b"".join(encode("SENTINEL", "MASTER", name) for name in masters)
        self._auth = False
        self._cap = MAX_REPLY_BYTES * (len(masters) + 1)
        if self.sock is not None:
            if self._clean and not self._stale():
                self._clean = False     # until this exchange, too, ends well
                return
            # Something came between polls (never read as an answer), or the
            # last exchange never finished (its AUTH may not have been sent).
            self.close()
        self._clean = False
        auth = auth_command(self.cfg)
        if auth:
            self._auth = True
            self._want += 1
            self._out = auth + self._out
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace")
        if self._lookup is None:
            try:
                self._rows = lookup(self.endpoint.host, self.endpoint.port, numeric=True)
            except (socket.gaierror, UnicodeError):
                # A name: the poll's thread is the agent's main loop, which fences
                # on a lost quorum; an isolated host's resolver must not hold it.
                try:
                    self._lookup = lookup_in_background(self.endpoint.host, self.endpoint.port)
                except RuntimeError as exc:     # no thread to be had (TasksMax)
                    self.failure = f"cannot resolve {self.endpoint.host}: {exc}"
                    return
                # One callback for the lookup's life, however many polls wait on it.
                self._lookup.add_done_callback(self._lookup_done)
        self.resolving = self._lookup is not None
        if self.resolving:
            self._resolved()
        else:
            self._connect_next()

    def _lookup_done(self, _done: Future[list[Any]]) -> None:
        waker = self.waker
        if waker is not None:
            waker.wake()

    def _resolved(self) -> None:
        """The name's lookup, if done: its addresses tried in turn."""
        if self._lookup is None or not self._lookup.done():
            return
        lookup_done, self._lookup, self.resolving = self._lookup, None, False
        try:
            self._rows = lookup_done.result()
        except Exception as exc:  # noqa: BLE001 - gaierror, UnicodeError: no address
            self.failure = f"cannot resolve {self.endpoint.host}: {exc or type(exc).__name__}"
            return
        self._connect_next()

    def _connect_next(self) -> None:
        """A connect to the next address left, or the failure when none is."""
        sock, why = connect_next(self._rows)
        self.sock, self.connecting = sock, sock is not None
        self._connect_by = time.monotonic() + self.cfg.timeout
        if sock is None:
            self.failure = why

    def _connect_failed(self, why: str) -> None:
        """This address failed: the next one, within the same budget, or none left."""
        self.close()
        if self._rows:
            self._connect_next()
        else:
            self.failure = why

    def _stale(self) -> bool:
        """A kept connection with anything waiting on it (a reply nobody asked
        for, half a reply, the peer's close): its next bytes are not this poll's."""
        assert self.sock is not None
        return self.reader is None or self.reader.has_data() or ready_now(self.sock)

    @property
    def _busy(self) -> bool:
        return self.failure is None and self.refused is None and (
            bool(self._out) or self._want > 0)

    def _events(self) -> int:
        return select.POLLOUT if (self.connecting or self._out) else select.POLLIN

    def _ready(self, events: int) -> None:
        import hiredis

        assert self.sock is not None
        if self.connecting:
            why = connect_error(self.sock)
            if why is not None:
                self._connect_failed(why)
                return
            self.connecting = False
        if self._out:
            try:
                sent = self.sock.send(self._out)
            except BlockingIOError:
                return
            except OSError as exc:
                self.failure = f"send: {exc.strerror or exc}"
                return
            self._out = self._out[sent:]
            return
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self.failure = f"recv: {exc.strerror or exc}"
            return
        if not data:
            self.failure = "closed by Sentinel"
            return
        self._received += len(data)
        if self._received > self._cap:
            self.failure = f"over {MAX_REPLY_BYTES} bytes a reply: not a Sentinel's answer"
            return
        self.reader.feed(data)
        try:
            while self._want > 0:
                reply = self.reader.gets()
                if reply is False:
                    break
                self._want -= 1
                if self._auth:
                    self._auth = False
                    if isinstance(reply, hiredis.ReplyError):
                        self.refused = str(reply).splitlines()[0] if str(reply) else "refused"
                        return
                    continue
                self._got.append(reply)
            if self._want == 0 and self.reader.gets() is not False:
                # Later replies would be taken for the next poll's answers.
                self.failure = "more replies than questions"
        except hiredis.ProtocolError as exc:
            self.failure = f"not RESP: {exc}"
        except Exception as exc:  # noqa: BLE001 - MemoryError: an array header of 10^9
            self.failure = f"unreadable reply: {type(exc).__name__}"

    def _answers(self, masters: Sequence[str], budget: float) -> dict[str, SentinelAnswer]:
        import hiredis

        endpoint = self.endpoint
        if self.refused is not None:
            self.close()
            return {n: SentinelAnswer(endpoint, error=f"auth failed: {self.refused}")
                    for n in masters}
        if self.failure is not None or self._busy:
            why = self.failure or (f"cannot resolve {endpoint.host} within {budget:.1f} s"
                                   if self.resolving else f"no answer within {budget:.1f} s")
            self.close()
            return {n: SentinelAnswer(endpoint, error=f"unreachable: {why}", reachable=False)
                    for n in masters}
        self._clean = True
        answers: dict[str, SentinelAnswer] = {}
        for name, reply in zip(masters, self._got):
            if isinstance(reply, hiredis.ReplyError):
                # "No such master with that name", NOAUTH, NOPERM: it answered, but no.
                answers[name] = SentinelAnswer(endpoint, error=str(reply).splitlines()[0]
                                               if str(reply) else "error")
            elif isinstance(reply, (list, dict)):
                info = parse_master_reply(reply)
                answers[name] = SentinelAnswer(endpoint, master=info) if info.name == name \
                    else SentinelAnswer(endpoint, error=f"an answer about {info.name!r}")
            else:
                answers[name] = SentinelAnswer(endpoint, error="not a SENTINEL MASTER reply")
        return answers


def exchange(clients: Sequence[SentinelClient],
             masters: Sequence[str]) -> list[dict[str, SentinelAnswer]]:
    """Every client's questions at once, in this thread: each Sentinel's
    connection made (if closed), its questions sent in one write, its replies
    read as they come, all on non-blocking sockets, within one overall budget of
    twice the Sentinels' timeout (connect, then answer). A Sentinel that has not
    answered everything by then counts as unreachable, whatever it sent: a slow
    or trickling one cannot stretch the poll. Three threads asking one Sentinel
    each woke 15 times per poll, mostly handing the GIL to each other."""
    if not masters:
        return [{} for _ in clients]
    budget = 2 * max((c.cfg.timeout for c in clients), default=0.5)
    deadline = time.monotonic() + budget
    waker: Waker | None = None
    try:
        for client in clients:
            client._begin(masters)
        # A name's lookup runs off this thread, within the budget like a connect;
        # its end wakes the poll (through the client's one callback).
        if any(client.resolving for client in clients):
            waker = Waker()
            for client in clients:
                client.waker = waker
        _exchange(clients, deadline, waker)
    except BaseException:
        for client in clients:
            client.close()      # half an exchange must not be read, or kept, by the next
        raise
    finally:
        if waker is not None:
            for client in clients:
                client.waker = None
            waker.close()
    return [_answers_of(c, masters, budget) for c in clients]


def _answers_of(client: SentinelClient, masters: Sequence[str],
                budget: float) -> dict[str, SentinelAnswer]:
    """One Sentinel's answers; a reply that breaks their reading (a field no
    Sentinel sends) is that Sentinel's error, never the whole poll's."""
    try:
        return client._answers(masters, budget)
    except Exception as exc:  # noqa: BLE001 - the reply is anyone's
        client.close()
        return {n: SentinelAnswer(client.endpoint, error=f"unreadable reply: "
                                  f"{type(exc).__name__}") for n in masters}


# Once the budget is spent, what had already arrived is still read, in a few
# rounds that do not wait, before anyone is judged unreachable: the one stalled
# may have been this thread (a VM's stolen time), not the Sentinels.
LATE_ROUNDS = 8


def _exchange(clients: Sequence[SentinelClient], deadline: float, waker: Waker | None) -> None:
    poller = select.poll()
    late = 0
    while True:
        now = time.monotonic()
        wake = deadline
        for c in clients:
            if c.resolving and c._busy:
                c._resolved()
            # A name's address that does not answer its connect within the
            # timeout gives way to the next one (the budget is twice the timeout),
            # but not once the budget is spent.
            if c.connecting and c._rows and c._busy:
                if deadline > now >= c._connect_by:
                    c._connect_failed(f"connect timed out after {c.cfg.timeout:.1f} s")
                if c.connecting and c._rows:
                    wake = min(wake, c._connect_by)
        busy = {c.sock.fileno(): c for c in clients if c._busy and c.sock is not None}
        resolving = any(c.resolving and c._busy for c in clients)
        left = wake - time.monotonic()
        over = deadline - time.monotonic() <= 0
        if not (busy or resolving) or (over and late >= LATE_ROUNDS):
            break
        if over:
            late, left = late + 1, 0.0
        for fd, client in busy.items():
            poller.register(fd, client._events())
        if resolving and waker is not None:
            poller.register(waker.fd, select.POLLIN)
        try:
            ready = poller.poll(max(0.0, left) * 1000)
        finally:
            for fd in busy:
                poller.unregister(fd)
            if resolving and waker is not None:
                poller.unregister(waker.fd)
        if over and not ready:
            break
        for fd, events in ready:
            if waker is not None and fd == waker.fd:
                waker.drain()
            elif fd in busy:
                busy[fd]._ready(events)


class Poller:
    """Every configured Sentinel asked at once, on connections kept open."""

    def __init__(self, cfg: SentinelConfig) -> None:
        self.clients = [SentinelClient(ep, cfg) for ep in cfg.addresses]

    def poll(self, masters: Sequence[str]) -> dict[str, tuple[SentinelAnswer, ...]]:
        results = exchange(self.clients, masters)
        return {name: tuple(r[name] for r in results) for name in masters}

    def close(self) -> None:
        for client in self.clients:
            client.close()


def ask_all(cfg: SentinelConfig, masters: Sequence[str]) -> dict[str, tuple[SentinelAnswer, ...]]:
    """Every configured Sentinel at once: {master: (answer per Sentinel, in config order)}."""
    poller = Poller(cfg)
    try:
        return poller.poll(masters)
    finally:
        poller.close()
