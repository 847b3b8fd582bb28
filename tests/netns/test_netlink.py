"""The netlink adapter (vipfloat.rtnl) against a real kernel, in a lab namespace."""
from __future__ import annotations

import ipaddress

import pytest

from vipfloat import config as config_mod
from vipfloat.decide import Binding
from vipfloat.errors import InterfaceError
from vipfloat.netlink import NetlinkHost, binding_of

from .conftest import VIP4, VIP6


@pytest.fixture
def cfg(lab, host_config):
    return config_mod.load(host_config("a"))


def test_add_and_remove_are_idempotent(lab, cfg):
    with NetlinkHost(netns=lab.hosts["a"].netns) as host:
        for vip in cfg.vips:
            link = host.usable_link("eth1")
            assert host.add(vip, link) is True
            assert host.add(vip, link) is False          # EEXIST is success
            assert lab.addresses("a").count(str(vip.address)) == 1
            assert binding_of(host.addresses(), link.index, vip)[0] is Binding.PRESENT
            assert host.remove(vip, link) is True
            assert host.remove(vip, link) is False       # EADDRNOTAVAIL is success
            assert not lab.has_address("a", str(vip.address))


def test_ipv6_vip_is_usable_at_once(lab, cfg):
    # Added with IFA_F_NODAD: no "tentative" second of duplicate address detection.
    with NetlinkHost(netns=lab.hosts["a"].netns) as host:
        host.add(cfg.vip_for("six"), host.usable_link("eth1"))
    out = lab.run("a", "ip", "-6", "addr", "show", "dev", "eth1").stdout
    line = next(row for row in out.splitlines() if VIP6 in row)
    assert "nodad" in line and "tentative" not in line


def test_local_addresses_are_parsed(lab, cfg):
    with NetlinkHost(netns=lab.hosts["a"].netns) as host:
        ips = {row.ip for row in host.addresses()}
    assert ipaddress.ip_address("198.51.100.11") in ips
    assert ipaddress.ip_address("2001:db8:100::b") in ips
    assert ipaddress.ip_address(VIP4) not in ips


def test_foreign_prefix_is_seen_as_foreign(lab, cfg):
    lab.run("a", "ip", "addr", "add", f"{VIP4}/32", "dev", "eth1", check=True)
    with NetlinkHost(netns=lab.hosts["a"].netns) as host:
        link = host.usable_link("eth1")
        assert binding_of(host.addresses(), link.index, cfg.vips[0]) == (Binding.FOREIGN, "/32")


def test_missing_and_down_interfaces(lab, cfg):
    with NetlinkHost(netns=lab.hosts["a"].netns) as host:
        assert host.link("eth9") is None
        with pytest.raises(InterfaceError, match="eth9 does not exist"):
            host.usable_link("eth9")
        lab.run("a", "ip", "link", "set", "eth1", "down", check=True)
        with pytest.raises(InterfaceError, match="eth1 is down"):
            host.usable_link("eth1")


def test_netwatch_keeps_the_agents_cache_current(lab, cfg):
    """What `ip` does behind the agent's back reaches its cache through netlink,
    without a dump: the hot path's view follows the kernel."""
    import time

    from vipfloat.netlink import KernelCache
    from vipfloat.netwatch import NetWatcher

    def soon(predicate) -> bool:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return False

    kernel = KernelCache()
    wakes: list[float] = []
    with lab.inside("a"):
        watcher = NetWatcher({VIP4}, lambda: wakes.append(time.monotonic()), listener=kernel)
    try:
        with NetlinkHost(netns=lab.hosts["a"].netns, cache=kernel) as host:
            vip = cfg.vips[0]
            link = host.link("eth1")
            host.addresses()                                  # seeds the cache
            host._rtnl.addresses = None                         # from here on, no dump may run

            lab.run("a", "ip", "addr", "add", f"{VIP4}/24", "dev", "eth1", check=True)
            assert soon(lambda: binding_of(host.addresses(), link.index, vip)[0]
                        is Binding.PRESENT)
            assert wakes                                      # and the agent was woken
            lab.run("a", "ip", "addr", "del", f"{VIP4}/24", "dev", "eth1", check=True)
            assert soon(lambda: binding_of(host.addresses(), link.index, vip)[0]
                        is Binding.ABSENT)

            lab.run("a", "ip", "link", "set", "eth1", "down", check=True)
            assert soon(lambda: not host.link("eth1").up)
    finally:
        watcher.close()


def _kernel_view(ipr, ip: str) -> list[tuple]:
    """What the kernel keeps for ``ip``, as pyroute2 reads it (times left out)."""
    out = []
    for msg in ipr.get_addr():
        if (msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")) == ip:
            attrs = sorted((k, str(v)) for k, v in msg["attrs"] if k != "IFA_CACHEINFO")
            out.append((msg["family"], msg["prefixlen"], msg["scope"], msg["index"], attrs))
    return out


def test_the_kernel_keeps_the_same_address_from_our_add_as_from_pyroute2s(lab, cfg):
    """vipfloat.rtnl builds its messages itself; pyroute2 is the reference: the
    address the kernel ends up with is the same, flags (nodad) included."""
    from pyroute2 import IPRoute

    from vipfloat.netlink import IFA_F_NODAD

    with IPRoute(netns=lab.hosts["a"].netns) as ipr, \
            NetlinkHost(netns=lab.hosts["a"].netns) as host:
        link = host.usable_link("eth1")
        for vip in cfg.vips:
            ip = str(vip.ip)
            host.add(vip, link)
            ours = _kernel_view(ipr, ip)
            host.remove(vip, link)
            assert _kernel_view(ipr, ip) == []
            ipr.addr("add", index=link.index, address=ip, prefixlen=vip.address.network.prefixlen,
                     flags=IFA_F_NODAD if vip.ip.version == 6 else 0)
            theirs = _kernel_view(ipr, ip)
            ipr.addr("del", index=link.index, address=ip, prefixlen=vip.address.network.prefixlen)
            assert ours == theirs and len(ours) == 1


def test_our_dump_and_link_read_what_pyroute2_reads(lab, cfg):
    from pyroute2 import IPRoute

    lab.run("a", "ip", "addr", "add", "203.0.113.9", "peer", "203.0.113.10/32", "dev", "eth1",
            check=True)                      # point-to-point: IFA_LOCAL is ours
    with IPRoute(netns=lab.hosts["a"].netns) as ipr, \
            NetlinkHost(netns=lab.hosts["a"].netns) as host:
        theirs = {(m["index"], ipaddress.ip_address(m.get("IFA_LOCAL") or m.get("IFA_ADDRESS")),
                   m["prefixlen"]) for m in ipr.get_addr()}
        assert set(host.addresses()) == theirs
        assert ipaddress.ip_address("203.0.113.9") in {row.ip for row in host.addresses()}
        for name in ("lo", "eth1"):
            ref = ipr.link("get", ifname=name)[0]
            link = host.link(name)
            assert (link.index, link.up) == (ref["index"], bool(ref["flags"] & 1))
            assert link.mac.hex(":") == ref.get("IFLA_ADDRESS")
