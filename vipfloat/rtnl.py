"""rtnetlink with the standard library: this host's addresses and links, and an
address added or removed.

Why not pyroute2 on these paths: importing ``pyroute2.iproute`` costs about
240 ms, half of the hook's direct path from exec to VIP, and one address dump
through its asyncio core took the idle agent tens of milliseconds of CPU per
tick at 64 VIPs (py-spy: 39 % of its samples). What vipfloat asks of the kernel
is four fixed messages, so they are built and parsed here by pure functions, as
the announcement frames are (vipfloat.announce). pyroute2 stays the reference:
tests/unit/test_rtnl.py decodes every request with pyroute2's message classes
and compares its parse of the kernel's replies with ours, and
tests/netns/test_netlink.py checks the kernel's state after our add against the
one after pyroute2's. The lab still uses pyroute2 for its namespaces.

The socket is the kernel's, not a peer's, but it is read as hostile all the
same: every message is bounds-checked, a reply must come from the kernel (port
id 0) and carry our sequence number (a late reply to a request that timed out
is skipped), a request has one overall deadline, and a dump is capped.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple

if TYPE_CHECKING:
    from .config import IPAddress

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP_INTR = 0x10          # the table changed while it was dumped: dump again
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFLA_ADDRESS, IFLA_IFNAME = 1, 3
IFA_ADDRESS, IFA_LOCAL = 1, 2

HEADER = struct.Struct("=IHHII")        # struct nlmsghdr: len, type, flags, seq, pid
IFADDRMSG = struct.Struct("=BBBBI")     # family, prefixlen, flags, scope, index
IFINFOMSG = struct.Struct("=BxHiII")    # family, pad, type, index, flags, change
ATTR = struct.Struct("=HH")             # struct nlattr: len, type

DEADLINE = 5.0            # seconds for one request and all of its replies
MAX_MESSAGES = 100_000    # in one dump: far more addresses than any host has
DUMP_TRIES = 3            # dumps interrupted by a change before giving up
RECV_SIZE = 1 << 16       # a datagram: the kernel's dump skbs are at most 32 KiB


class NetlinkError(OSError):
    """The kernel refused a request (``refused``: an error reply, the exchange
    complete), or the exchange failed; ``code`` is the errno."""

    def __init__(self, code: int, what: str = "", refused: bool = False) -> None:
        try:
            text = os.strerror(code)
        except (ValueError, OverflowError):
            text = f"error {code}"
        super().__init__(code, text + (f" ({what})" if what else ""))
        self.refused = refused

    @property
    def code(self) -> int:
        return self.errno or 0


class Message(NamedTuple):
    kind: int
    flags: int
    seq: int
    pid: int
    payload: bytes


class Address(NamedTuple):
    """One address of a dump: its interface, the address and the prefix."""

    # Shadows tuple.index(), which nothing calls on these.
    index: int  # type: ignore[assignment]
    ip: IPAddress
    prefixlen: int


class LinkInfo(NamedTuple):
    index: int  # type: ignore[assignment]
    flags: int               # IFF_UP and the others
    mac: bytes               # b"" when the link has no hardware address


# --- building (pure) ----------------------------------------------------------------------
def _pad(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """Pure: one netlink attribute, padded to 4 bytes."""
    raw = ATTR.pack(ATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (_pad(len(raw)) - len(raw))


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """Pure: one netlink message to the kernel (port id 0 on the way out: the
    kernel fills in ours)."""
    return HEADER.pack(HEADER.size + len(body), kind, flags, seq, 0) + body


def dump_addresses_request(seq: int) -> bytes:
    """Pure: RTM_GETADDR dump of every family's addresses."""
    return message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq,
                   IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))


def get_link_request(seq: int, ifname: str) -> bytes:
    """Pure: RTM_GETLINK of one interface by name (the kernel answers ENODEV for
    a name it does not know)."""
    return message(RTM_GETLINK, NLM_F_REQUEST, seq,
                   IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
                   + attr(IFLA_IFNAME, ifname.encode() + b"\0"))


def address_request(seq: int, add: bool, index: int, ip: IPAddress, prefixlen: int,
                    flags: int = 0) -> bytes:
    """Pure: RTM_NEWADDR (create, failing with EEXIST if it is there, as `ip addr
    add` does) or RTM_DELADDR of exactly ``ip``/``prefixlen`` on ``index``, with
    an acknowledgement. The attributes are pyroute2's and iproute2's: IPv4 gives
    IFA_LOCAL and IFA_ADDRESS, IPv6 IFA_ADDRESS alone."""
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    body = IFADDRMSG.pack(family, prefixlen, flags, 0, index)
    if ip.version == 4:
        body += attr(IFA_LOCAL, ip.packed)
    body += attr(IFA_ADDRESS, ip.packed)
    kind, extra = (RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL) if add else (RTM_DELADDR, 0)
    return message(kind, NLM_F_REQUEST | NLM_F_ACK | extra, seq, body)


# --- parsing (pure) -----------------------------------------------------------------------
def messages(data: bytes) -> Iterator[Message]:
    """Pure: each whole message in a datagram; a truncated or malformed tail ends it."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, flags, seq, pid = HEADER.unpack_from(data, offset)
        if length < HEADER.size or offset + length > len(data):
            return
        yield Message(kind, flags, seq, pid, data[offset + HEADER.size:offset + length])
        offset += _pad(length)


def attributes(data: bytes, offset: int) -> dict[int, bytes]:
    """Pure: the attributes from ``offset`` on (the first of a type wins; the type's
    nested and byte-order bits are masked off)."""
    found: dict[int, bytes] = {}
    while offset + ATTR.size <= len(data):
        length, kind = ATTR.unpack_from(data, offset)
        if length < ATTR.size or offset + length > len(data):
            break
        found.setdefault(kind & 0x3FFF, data[offset + ATTR.size:offset + length])
        offset += _pad(length)
    return found


def parse_address(payload: bytes) -> Address | None:
    """Pure: an RTM_NEWADDR's body -> Address; None for another family or a
    malformed one. IFA_LOCAL first: on a point-to-point link IFA_ADDRESS is the
    peer's."""
    if len(payload) < IFADDRMSG.size:
        return None
    family, prefixlen, _, _, index = IFADDRMSG.unpack_from(payload)
    found = attributes(payload, IFADDRMSG.size)
    raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
    if family == socket.AF_INET and raw is not None and len(raw) == 4:
        return Address(index, ipaddress.IPv4Address(raw), prefixlen)
    if family == socket.AF_INET6 and raw is not None and len(raw) == 16:
        return Address(index, ipaddress.IPv6Address(raw), prefixlen)
    return None


def parse_link(payload: bytes) -> LinkInfo | None:
    """Pure: an RTM_NEWLINK's body -> LinkInfo; None when malformed."""
    if len(payload) < IFINFOMSG.size:
        return None
    _, _, index, flags, _ = IFINFOMSG.unpack_from(payload)
    return LinkInfo(index, flags, attributes(payload, IFINFOMSG.size).get(IFLA_ADDRESS, b""))


def error_code(payload: bytes) -> int:
    """Pure: an NLMSG_ERROR's errno; 0 is an acknowledgement. A body too short to
    say is EPROTO."""
    if len(payload) < 4:
        return errno.EPROTO
    return -int(struct.unpack_from("=i", payload)[0])


# --- the socket ---------------------------------------------------------------------------
def _open(netns: str | None) -> socket.socket:
    if netns is None:
        return _new_socket()
    # A namespace is per thread: open the socket from a thread that enters it and
    # ends there; the socket stays in that namespace (the lab's tests).
    out: list[socket.socket | BaseException] = []

    def inside() -> None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(os.path.join("/run/netns", netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, 0x40000000) != 0:          # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            out.append(_new_socket())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            out.append(exc)

    thread = threading.Thread(target=inside, name=f"netns-{netns}")
    thread.start()
    thread.join()
    result = out[0] if out else OSError(errno.EIO, f"cannot open netlink in {netns}")
    if isinstance(result, BaseException):
        raise result
    return result


def _new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


class Rtnl:
    """One rtnetlink socket, safe to share between threads: one request at a
    time, under a lock (two requests interleaved on one socket took each other's
    replies: empty and partial dumps). After a failed exchange the socket is
    replaced, since a dump the kernel is still running on it would answer the
    next dump with EBUSY."""

    def __init__(self, netns: str | None = None, deadline: float = DEADLINE) -> None:
        self._netns = netns
        self._sock = _open(netns)
        self._seq = int(time.monotonic() * 1000) & 0x7FFFFFFF
        self._lock = threading.Lock()
        self._closed = False
        self.deadline = deadline

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._sock.close()

    def addresses(self) -> list[Address]:
        """Every address of every interface (dumped again when the kernel flags the
        dump as interrupted by a change, up to DUMP_TRIES times within one
        deadline)."""
        with self._lock:
            end = time.monotonic() + self.deadline
            for _ in range(DUMP_TRIES):
                rows: list[Address] = []
                replies, interrupted = self._exchange(dump_addresses_request, end, dump=True)
                for msg in replies:
                    if msg.kind == RTM_NEWADDR:
                        row = parse_address(msg.payload)
                        if row is not None:
                            rows.append(row)
                if not interrupted:
                    return rows
        raise NetlinkError(errno.EAGAIN, "address dump interrupted by changes")

    def link(self, ifname: str) -> LinkInfo:
        """The interface named ``ifname``; NetlinkError(ENODEV) when there is none."""
        with self._lock:
            replies, _ = self._exchange(lambda seq: get_link_request(seq, ifname),
                                        time.monotonic() + self.deadline)
        for msg in replies:
            if msg.kind == RTM_NEWLINK:
                info = parse_link(msg.payload)
                if info is not None:
                    return info
        raise NetlinkError(errno.EPROTO, f"no link in the reply for {ifname}")

    def change_address(self, add: bool, index: int, ip: IPAddress, prefixlen: int,
                       flags: int = 0) -> None:
        """Add or remove one address; NetlinkError with the kernel's errno if refused."""
        with self._lock:
            self._exchange(lambda seq: address_request(seq, add, index, ip, prefixlen, flags),
                           time.monotonic() + self.deadline)

    def _exchange(self, build: Callable[[int], bytes], end: float,
                  dump: bool = False) -> tuple[list[Message], bool]:
        """Send one request and collect its replies until ``end``: up to NLMSG_DONE
        for a dump, the one reply (or error) otherwise; and whether the kernel
        flagged the dump as interrupted. Raises NetlinkError for an error reply
        (the socket is kept: the exchange is over) and, after replacing the
        socket, TimeoutError or NetlinkError when it cannot finish."""
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        seq = self._seq
        try:
            return self._collect(seq, build(seq), end, dump)
        except OSError as exc:
            if not (isinstance(exc, NetlinkError) and exc.refused):
                self._renew()
            raise

    def _renew(self) -> None:
        self._sock.close()
        if not self._closed:          # a closed Rtnl stays closed (EBADF from here on)
            self._sock = _open(self._netns)

    def _collect(self, seq: int, request: bytes, end: float,
                 dump: bool) -> tuple[list[Message], bool]:
        self._sock.send(request)
        replies: list[Message] = []
        interrupted = False
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(errno.ETIMEDOUT, "no answer from the kernel's rtnetlink")
            self._sock.settimeout(left)
            data, _, msg_flags, addr = self._sock.recvmsg(RECV_SIZE)
            if addr[0] != 0:
                continue                      # not from the kernel
            if msg_flags & socket.MSG_TRUNC:
                raise NetlinkError(errno.EMSGSIZE, "netlink reply truncated")
            for msg in messages(data):
                if msg.seq != seq:
                    continue                  # a late reply to an earlier request
                interrupted |= bool(msg.flags & NLM_F_DUMP_INTR)
                if msg.kind in (NLMSG_ERROR, NLMSG_DONE):
                    # DONE carries the dump's own error (0 when it completed).
                    code = error_code(msg.payload)
                    if code:
                        raise NetlinkError(code, refused=msg.kind == NLMSG_ERROR)
                    return replies, interrupted     # acknowledged, or the dump's end
                replies.append(msg)
                if len(replies) > MAX_MESSAGES:
                    raise NetlinkError(errno.E2BIG, "netlink dump too long")
                if not dump and not msg.flags & NLM_F_MULTI:
                    return replies, interrupted
