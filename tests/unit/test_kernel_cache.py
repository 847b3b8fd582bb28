"""The agent's KernelCache: seeded by a dump, kept current by netlink changes, so
the hot path reads no kernel table; the timer's fresh read re-seeds it."""
from __future__ import annotations

import ipaddress
import socket

import pytest

from vipfloat import config as config_mod
from vipfloat.netlink import IFF_UP, AddrRow, KernelCache, NetlinkHost
from vipfloat.netwatch import parse_addr_messages
from vipfloat.rtnl import RTM_DELADDR, RTM_NEWADDR, LinkInfo, NetlinkError

from .test_netwatch import addr_msg

ETH1 = 3
LOCAL = AddrRow(ETH1, ipaddress.ip_address("198.51.100.11"), 24)


class FakeRtnl:
    """Stands in for vipfloat.rtnl.Rtnl: a kernel with some addresses and one link,
    recording every request."""

    def __init__(self) -> None:
        self.rows = [LOCAL]
        self.up = True
        self.calls: list[str] = []

    def addresses(self) -> list[AddrRow]:
        self.calls.append("dump")
        return list(self.rows)

    def link(self, ifname: str) -> LinkInfo:
        self.calls.append(f"link {ifname}")
        return LinkInfo(ETH1, IFF_UP if self.up else 0, bytes.fromhex("02000000000a"))

    def change_address(self, add: bool, index: int, ip, prefixlen: int, flags: int = 0) -> None:
        self.calls.append(f"{'add' if add else 'del'} {ip}")
        row = AddrRow(index, ip, prefixlen)
        if add:
            self.rows.append(row)
        else:
            self.rows.remove(row)

    def close(self) -> None:
        pass


@pytest.fixture
def vip(write_config):
    return config_mod.load(write_config()).vip_for("mymaster")


@pytest.fixture
def kernel():
    return KernelCache()


@pytest.fixture
def host(kernel):
    host = NetlinkHost(cache=kernel)
    host._rtnl.close()
    host._rtnl = FakeRtnl()
    yield host


def test_the_hot_path_reads_the_kernel_once_then_the_cache(host, kernel):
    assert host.addresses() == (LOCAL,)
    assert host.link("eth1").up
    assert host.addresses() == (LOCAL,) and host.link("eth1").index == ETH1
    assert host._rtnl.calls == ["dump", "link eth1"]
    # The timer's reconcile asks for a fresh read: the kernel again, and a re-seed.
    host._rtnl.rows.clear()
    assert host.addresses(fresh=True) == ()
    assert host.addresses() == ()
    assert host._rtnl.calls == ["dump", "link eth1", "dump"]


def test_our_own_add_and_remove_are_applied_at_once(host, vip):
    link = host.link("eth1")
    host.addresses()
    assert host.add(vip, link)
    vip_row = AddrRow(ETH1, vip.ip, 24)
    assert set(host.addresses()) == {LOCAL, vip_row}
    assert host.remove(vip, link)
    assert host.addresses() == (LOCAL,)
    assert host._rtnl.calls == ["link eth1", "dump", "add 198.51.100.250", "del 198.51.100.250"]


def test_changes_the_kernel_announces_are_applied(kernel):
    kernel.seed_addresses([LOCAL], kernel.generation())
    data = (addr_msg(RTM_NEWADDR, socket.AF_INET, socket.inet_aton("198.51.100.250"), 24, ETH1)
            + addr_msg(RTM_DELADDR, socket.AF_INET, socket.inet_aton("198.51.100.11"), 24, ETH1))
    for change in parse_addr_messages(data):
        kernel.address_changed(change)
    assert kernel.addresses() == (AddrRow(ETH1, ipaddress.ip_address("198.51.100.250"), 24),)


def test_a_dump_overlapped_by_a_change_is_not_kept(kernel):
    # The change may or may not be in the dump, and its notification is consumed:
    # keeping the dump could keep a stale view until the next fresh read.
    before = kernel.generation()
    kernel.applied(True, LOCAL)
    kernel.seed_addresses([], before)
    assert kernel.addresses() is None
    kernel.seed_addresses([LOCAL], kernel.generation())
    assert kernel.addresses() == (LOCAL,)


def test_link_changes_and_lost_messages_drop_what_they_touch(host, kernel):
    host.addresses()
    host.link("eth1")
    host._rtnl.up = False
    kernel.links_changed()                       # e.g. `ip link set eth1 down`
    assert host.addresses() == (LOCAL,)          # addresses are still known
    assert not host.link("eth1").up              # the link is looked up again
    kernel.forget()                              # ENOBUFS: messages were dropped
    assert kernel.addresses() is None and kernel.link("eth1") is None
    assert host._rtnl.calls == ["dump", "link eth1", "link eth1"]


def test_an_add_that_finds_the_address_there_drops_the_cache(host, kernel, vip):
    def exists(*_: object, **__: object) -> None:
        raise NetlinkError(17)                   # EEXIST: perhaps with another prefix

    host.addresses()
    host._rtnl.change_address = exists
    assert host.add(vip, host.link("eth1")) is False
    assert kernel.addresses() is None


def test_a_tick_costs_one_dump_whatever_the_number_of_vips(host, kernel, vip):
    # The agent's timer reads the kernel once (Agent.reconcile_all), then every
    # VIP's actor gathers its snapshot from the cache it re-seeded.
    from vipfloat.apply import gather
    from vipfloat.decide import Claim

    host._rtnl.rows.append(AddrRow(ETH1, ipaddress.ip_address("198.51.100.250"), 24))
    for _tick in range(3):
        host.addresses(fresh=True)
        host.link("eth1", fresh=True)
        for _ in range(64):
            snapshot, _ = gather(host, vip, Claim(source="test"), fresh=False)
            assert snapshot.vips[0].binding.value == "present"
    assert host._rtnl.calls.count("dump") == 3
    assert host._rtnl.calls.count("link eth1") == 3
