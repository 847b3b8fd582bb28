"""The new master's addresses: an IP literal as is, a host name (Sentinel's
announce-hostnames) through DNS."""

from __future__ import annotations

import ipaddress
import socket
from typing import cast

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
    # Only AF_INET and AF_INET6 answers here, whose sockaddr starts with the address (a str).
    # A link-local answer carries its zone ("fe80::1%eth1"): the address is what counts.
    return frozenset(ipaddress.ip_address(cast(str, info[4][0]).split("%")[0]) for info in infos)
