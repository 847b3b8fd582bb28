"""Who answers for a VIP on the wire, asked the way a client's kernel would,
with scapy.

`vipfloat doctor` sends one probe per VIP on its interface and lists the MACs
that answer: an ARP probe (RFC 5227: sender address 0.0.0.0, so no cache
learns anything from it) for IPv4; for IPv6 a neighbour solicitation from this
host's link-local address, which holders answer to it alone (a solicitation
from :: would have every holder answer all nodes with the override flag, and
move clients' caches: only used when the interface has no link-local address).
Two MACs answering, or one besides this host's own binding, is two holders;
none is a VIP nobody serves.

scapy here, not the hand-built frames of :mod:`vipfloat.announce`: this is an
operator's command, off the failover path, where scapy's import time (0.3-1 s)
costs nothing that matters, and an independent implementation is the better
witness of what the agent's own frames claim. Needs CAP_NET_RAW.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any

from ..config import IPAddress
from ..logs import escape

# Long enough for a host on the same segment to answer under load, short enough
# that a doctor run with a few VIPs stays quick.
PROBE_TIMEOUT = 0.5
# Two answering MACs already make a problem; more only lengthen the report.
MAX_ANSWERS = 16


def who_answers(ifname: str, ip: IPAddress, timeout: float = PROBE_TIMEOUT) -> tuple[str, ...]:
    """The MACs (lower case, sorted) that answered one probe for ``ip`` sent on
    ``ifname`` within ``timeout`` seconds. Raises OSError (no CAP_NET_RAW, no
    such interface) and ImportError (scapy missing)."""
    # scapy logs warnings about routes and interfaces as it is imported: not the
    # doctor's report (its stderr stays empty).
    for name in ("scapy.runtime", "scapy.loading", "scapy.interactive"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from scapy.arch import get_if_hwaddr
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import AsyncSniffer, sendp
    from scapy.utils6 import in6_getnsma, in6_getnsmac

    # Without CAP_NET_RAW this fails at once, rather than after the sniffer's wait.
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    mac = get_if_hwaddr(ifname)
    if isinstance(ip, ipaddress.IPv4Address):
        frame = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=mac, psrc="0.0.0.0", hwdst="00:00:00:00:00:00", pdst=str(ip))

        def answer(p: object) -> bool:
            return ARP in p and p[ARP].op == 2 and p[ARP].psrc == str(ip)  # type: ignore[index,operator]
    else:
        group = in6_getnsma(ip.packed)
        nsma = str(ipaddress.IPv6Address(group))
        source = link_local(ifname)
        ns = ICMPv6ND_NS(tgt=str(ip))
        if source is not None:
            ns = ns / ICMPv6NDOptSrcLLAddr(lladdr=mac)
        frame = Ether(src=mac, dst=in6_getnsmac(group)) / IPv6(
            src=source or "::", dst=nsma, hlim=255) / ns

        def answer(p: object) -> bool:
            return (ICMPv6ND_NA in p  # type: ignore[operator]
                    and ipaddress.ip_address(p[ICMPv6ND_NA].tgt) == ip)  # type: ignore[index]

    # AsyncSniffer opens its socket in its own thread: the probe goes out only
    # once it listens, or an answer could come before anyone does.
    listening = threading.Event()
    # Not promiscuous: the answers come to this MAC (or to all nodes), and every
    # other frame on a busy segment would only cost Python time, and drops.
    # Only the answering MACs are kept, and few of them: a flood of forged
    # answers costs a set of MAX_ANSWERS strings, not a list of every frame.
    macs: set[str] = set()

    def keep(p: Any) -> None:
        if len(macs) < MAX_ANSWERS:
            macs.add(p[Ether].src.lower())

    sniffer = AsyncSniffer(iface=ifname, lfilter=answer, prn=keep, store=False,
                           promisc=False, started_callback=listening.set)
    sniffer.start()
    if not listening.wait(2.0):
        try:
            sniffer.stop()
        except Exception:  # noqa: BLE001 - never started, or failed: either way, stopped
            pass
        raise OSError(f"could not listen on {ifname}")
    try:
        sendp(frame, iface=ifname, verbose=False)
        time.sleep(timeout)
    finally:
        sniffer.stop()
    return tuple(sorted(macs - {mac.lower()}))


def link_local(ifname: str) -> str | None:
    """This host's IPv6 link-local address on ``ifname`` (/proc/net/if_inet6), if any."""
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as table:
            return link_local_in(table.read(), ifname)
    except OSError:
        return None


def link_local_in(table: str, ifname: str) -> str | None:
    """Pure: the link-local address of ``ifname`` in /proc/net/if_inet6's text."""
    for line in table.splitlines():
        fields = line.split()
        # address (32 hex digits), index, prefix length, scope (0x20: link), flags, name
        if len(fields) == 6 and fields[5] == ifname and fields[3] == "20":
            return str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
    return None


def probe(ifname: str, ip: IPAddress,
          timeout: float = PROBE_TIMEOUT) -> tuple[tuple[str, ...] | None, str | None]:
    """(MACs, None), or (None, why it could not probe) for the doctor's report."""
    try:
        return who_answers(ifname, ip, timeout), None
    except ImportError as exc:
        return None, f"scapy is not installed ({escape(str(exc))})"
    except PermissionError:
        return None, "needs CAP_NET_RAW (run as root)"
    except OSError as exc:
        return None, escape(f"cannot probe on {ifname}: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - scapy raises its own: a report, not a traceback
        return None, escape(f"cannot probe on {ifname}: {type(exc).__name__}: {exc}")
