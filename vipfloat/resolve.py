"""The new master's addresses: an IP literal as is, a host name (Sentinel's
announce-hostnames) through DNS."""

from __future__ import annotations

import ipaddress
import socket

from .config import IPAddress
from .errors import ResolveError


def resolve_host(host: str) -> frozenset[IPAddress]:
    try:
        return frozenset({ipaddress.ip_address(host)})
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(f"cannot resolve new master {host!r}: {exc}") from None
    # A link-local answer carries its zone ("fe80::1%eth1"): the address is what counts.
    return frozenset(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos)
