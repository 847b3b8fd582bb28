"""Who answers for a VIP on the wire, asked the way a client's kernel would,
with scapy.

`vipfloat doctor` sends one probe per VIP on its interface and lists the MACs
that answer: an ARP probe (RFC 5227: sender address 0.0.0.0, so no cache
learns anything from it) for IPv4, a duplicate-address-detection neighbour
solicitation (source ::) for IPv6. Two MACs answering, or one besides this
host's own binding, is two holders; none is a VIP nobody serves.

scapy here, not the hand-built frames of :mod:`vipfloat.announce`: this is an
operator's command, off the failover path, where scapy's import time (0.3-1 s)
costs nothing that matters, and an independent implementation is the better
witness of what the agent's own frames claim. Needs CAP_NET_RAW.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any

from ..config import IPAddress
from ..logs import escape

# Long enough for a host on the same segment to answer under load, short enough
# that a doctor run with a few VIPs stays quick.
PROBE_TIMEOUT = 0.5


def who_answers(ifname: str, ip: IPAddress, timeout: float = PROBE_TIMEOUT) -> tuple[str, ...]:
    """The MACs (lower case, sorted) that answered one probe for ``ip`` sent on
    ``ifname`` within ``timeout`` seconds. Raises OSError (no CAP_NET_RAW, no
    such interface) and ImportError (scapy missing)."""
    # scapy logs warnings about routes and interfaces as it is imported.
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.arch import get_if_hwaddr
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, IPv6
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import AsyncSniffer, sendp
    from scapy.utils6 import in6_getnsma, in6_getnsmac

    mac = get_if_hwaddr(ifname)
    if isinstance(ip, ipaddress.IPv4Address):
        frame = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=mac, psrc="0.0.0.0", hwdst="00:00:00:00:00:00", pdst=str(ip))

        def answer(p: object) -> bool:
            return ARP in p and p[ARP].op == 2 and p[ARP].psrc == str(ip)  # type: ignore[index,operator]
    else:
        group = in6_getnsma(ip.packed)
        nsma = str(ipaddress.IPv6Address(group))
        frame = Ether(src=mac, dst=in6_getnsmac(group)) / IPv6(src="::", dst=nsma, hlim=255) / \
            ICMPv6ND_NS(tgt=str(ip))

        def answer(p: object) -> bool:
            return (ICMPv6ND_NA in p  # type: ignore[operator]
                    and ipaddress.ip_address(p[ICMPv6ND_NA].tgt) == ip)  # type: ignore[index]

    # AsyncSniffer opens its socket in its own thread: the probe goes out only
    # once it listens, or an answer could come before anyone does.
    listening = threading.Event()
    sniffer = AsyncSniffer(iface=ifname, lfilter=answer, store=True,
                           started_callback=listening.set)
    sniffer.start()
    if not listening.wait(2.0):
        sniffer.join(2.0)          # raises what kept it from listening (PermissionError)
        raise OSError(f"could not listen on {ifname}")
    try:
        sendp(frame, iface=ifname, verbose=False)
        time.sleep(timeout)
    finally:
        packets: list[Any] = list(sniffer.stop() or [])
    own = mac.lower()
    return tuple(sorted({p[Ether].src.lower() for p in packets} - {own}))


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
