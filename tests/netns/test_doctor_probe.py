"""vipfloat doctor's probe on a real segment: who answers for a VIP, asked with
scapy from a third host, and learnt by nobody (RFC 5227 probe, DAD solicitation)."""
from __future__ import annotations

import sys

from .conftest import VIP4, VIP6


def ask(lab, ip: str) -> list[str]:
    code = ("import ipaddress; from vipfloat.doctor.probe import who_answers; "
            f"print(','.join(who_answers('eth1', ipaddress.ip_address('{ip}'))))")
    r = lab.run("peer", sys.executable, "-c", code, timeout=30)
    assert r.returncode == 0, r.stderr
    return [m for m in r.stdout.strip().split(",") if m]


def bind(lab, host: str) -> None:
    lab.run(host, "ip", "addr", "add", f"{VIP4}/24", "dev", "eth1", check=True)
    # nodad: the second holder's kernel would otherwise refuse a duplicate.
    lab.run(host, "ip", "addr", "add", f"{VIP6}/64", "dev", "eth1", "nodad", check=True)


def test_the_probe_lists_every_host_that_answers_for_a_vip(lab):
    a, b = lab.hosts["a"].mac, lab.hosts["b"].mac
    assert ask(lab, VIP4) == [] and ask(lab, VIP6) == []
    bind(lab, "a")
    assert ask(lab, VIP4) == [a] and ask(lab, VIP6) == [a]
    bind(lab, "b")
    assert ask(lab, VIP4) == sorted([a, b]) and ask(lab, VIP6) == sorted([a, b])
    # The probes taught the prober nothing: no neighbour entry for the VIP.
    assert lab.neigh_mac("peer", VIP4) is None


def test_a_probe_from_a_holder_does_not_count_itself(lab):
    bind(lab, "a")
    code = ("import ipaddress; from vipfloat.doctor.probe import who_answers; "
            f"print(','.join(who_answers('eth1', ipaddress.ip_address('{VIP4}'))))")
    r = lab.run("a", sys.executable, "-c", code, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stderr
    bind(lab, "b")
    r = lab.run("a", sys.executable, "-c", code, timeout=30)
    assert r.stdout.strip() == lab.hosts["b"].mac
