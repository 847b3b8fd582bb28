"""`vipfloat doctor` against a Valkey Sentinel and a Valkey master, from recorded
replies (Valkey is not installable on Debian 12).

The INFO server texts are Valkey 8.0.1's own (as published with its release;
only tcp_port, the mode and the paths differ between the two), as is HELLO's
server and version. Every other reply was recorded, in RESP3 (what redis-py
asks for), from Debian 12's redis-sentinel and redis-server 7.0.15, whose code
and protocol Valkey's Sentinel shares: maps for SENTINEL MASTER and CONFIG GET,
a bulk string for a Sentinel's INFO, a verbatim string for a server's."""
from __future__ import annotations

from dataclasses import replace

import pytest

from vipfloat.config import Endpoint, load
from vipfloat.doctor.checks import Level, run_checks
from vipfloat.doctor.gather import redis_facts, sentinel_facts, sentinel_unit, server_info

from .resp_replay import Replay, bulk, resp_map, verbatim
from .test_doctor import findings, healthy

VALKEY_INFO = """# Server
redis_version:7.2.4
server_name:valkey
valkey_version:8.0.1
redis_git_sha1:00000000
redis_git_dirty:0
redis_build_id:4ed6032a97b67e84
server_mode:{mode}
os:Linux 6.1.0-27-amd64 x86_64
arch_bits:64
monotonic_clock:POSIX clock_gettime
multiplexing_api:epoll
gcc_version:12.2.0
process_id:1682048
process_supervised:systemd
run_id:7769484dff765d89925a5dd005713fbda9f62d53
tcp_port:{port}
executable:/usr/bin/{binary}
config_file:/etc/valkey/{conf}
"""

def hello(mode: str, role: list[tuple[str, str | int]]) -> bytes:
    """HELLO 3's map, ending with an empty modules array."""
    pairs = [("server", "valkey"), ("version", "8.0.1"), ("proto", 3), ("id", 7),
             ("mode", mode), *role]
    body = resp_map(pairs).split(b"\r\n", 1)[1]
    return b"%%%d\r\n" % (len(pairs) + 1) + body + b"$7\r\nmodules\r\n*0\r\n"


MASTER_FIELDS: list[tuple[str, str | int]] = [
    ("name", "mymaster"), ("ip", "127.0.0.1"), ("port", "16379"),
    ("runid", "8995d8897c92f382cfcb306a043092fedd2cfef6"), ("flags", "master"),
    ("link-pending-commands", "0"), ("link-refcount", "1"), ("last-ping-sent", "0"),
    ("last-ok-ping-reply", "203"), ("last-ping-reply", "203"),
    ("down-after-milliseconds", "1000"), ("info-refresh", "9941"),
    ("role-reported", "master"), ("role-reported-time", "60055"), ("config-epoch", "0"),
    ("num-slaves", "0"), ("num-other-sentinels", "0"), ("quorum", "1"),
    ("failover-timeout", "180000"), ("parallel-syncs", "1")]

SENTINEL = {
    ("HELLO", "3"): hello("sentinel", []),
    ("INFO", "server"): bulk(VALKEY_INFO.format(mode="sentinel", port=26379,
                                                binary="valkey-sentinel", conf="sentinel.conf")),
    ("INFO", "sentinel"): bulk(
        "# Sentinel\nsentinel_masters:1\nsentinel_tilt:0\nsentinel_tilt_since_seconds:-1\n"
        "sentinel_running_scripts:0\nsentinel_scripts_queue_length:0\n"
        "sentinel_simulate_failure_flags:0\n"
        "master0:name=mymaster,status=ok,address=127.0.0.1:16379,slaves=0,sentinels=1\n"),
    ("SENTINEL", "PENDING-SCRIPTS"): b"*0\r\n",
    ("SENTINEL", "MASTER", "mymaster"): resp_map(MASTER_FIELDS),
    ("SENTINEL", "CKQUORUM", "mymaster"):
        b"+OK 1 usable Sentinels. Quorum and failover authorization can be reached\r\n",
}

MASTER = {
    ("HELLO", "3"): hello("standalone", [("role", "master")]),
    ("INFO", "server"): verbatim(VALKEY_INFO.format(mode="standalone", port=6379,
                                                    binary="valkey-server", conf="valkey.conf")),
    ("INFO", "replication"): verbatim(
        "# Replication\nrole:master\nconnected_slaves:0\nmaster_failover_state:no-failover\n"
        "master_replid:529baf9cd2d7d4848977b77d4f6f2ad2170a16d9\n"
        "master_replid2:0000000000000000000000000000000000000000\nmaster_repl_offset:0\n"
        "second_repl_offset:-1\nrepl_backlog_active:0\nrepl_backlog_size:1048576\n"
        "repl_backlog_first_byte_offset:0\nrepl_backlog_histlen:0\n"),
    **{("CONFIG", "GET", key): resp_map([(key, value)])
       for key, value in [("requirepass", ""), ("masterauth", ""), ("bind", "*"),
                          ("protected-mode", "no"), ("save", ""), ("appendonly", "yes")]},
}


@pytest.mark.parametrize("info, expected", [
    ({"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "8.0.1"},
     ("Valkey", "8.0.1")),
    ({"valkey_version": "8.1.0"}, ("Valkey", "8.1.0")),
    ({"redis_version": "7.2.4", "server_name": "valkey"}, ("Valkey", "7.2.4")),
    ({"redis_version": "7.0.15"}, ("Redis", "7.0.15")),
    ({}, ("Redis", None)),
])
def test_server_info(info, expected):
    assert server_info(info) == expected


@pytest.mark.parametrize("cgroup, server, unit", [
    ("0::/system.slice/valkey-sentinel.service\n", "Valkey", "valkey-sentinel"),
    ("0::/system.slice/redis-sentinel.service\n", "Redis", "redis-sentinel"),
    # cgroup v1: the systemd hierarchy's line names the unit.
    ("12:pids:/\n1:name=systemd:/system.slice/redis-sentinel@main.service\n", "Redis",
     "redis-sentinel@main"),
    # Not under systemd (a container, the lab), or started by another unit: Debian's
    # unit for that server.
    ("0::/\n", "Valkey", "valkey-sentinel"),
    ("0::/system.slice/cron.service\n", "Redis", "redis-sentinel"),
    (None, "Redis", "redis-sentinel"),
])
def test_sentinel_unit(cgroup, server, unit):
    assert sentinel_unit(cgroup, server) == unit


def test_a_valkey_sentinel_and_master_are_recognised(write_config):
    with Replay(SENTINEL) as sport, Replay(MASTER) as rport:
        cfg = load(write_config(f"""
            [sentinel]
            addresses = ["127.0.0.1:{sport}"]
            [agent]
            state_dir = "{{state}}"
            [[vip]]
            master = "mymaster"
            address = "198.51.100.250/24"
            interface = "eth1"
            """))
        s = sentinel_facts(Endpoint("127.0.0.1", sport), cfg, frozenset())
        r, offset = redis_facts(f"127.0.0.1:{rport}", "master", cfg.redis)
    assert (s.reachable, s.server, s.version, s.pid, s.tilt) == (True, "Valkey", "8.0.1",
                                                                 1682048, False)
    assert s.masters["mymaster"].addr == "127.0.0.1:16379" and s.masters["mymaster"].ckquorum_ok
    assert (r.reachable, r.server, r.version, r.persistent, r.bind) == (True, "Valkey", "8.0.1",
                                                                        True, ("*",))
    assert offset == 0
    facts = healthy()
    facts = replace(facts, sentinels=tuple(replace(x, server=s.server, version=s.version)
                                           for x in facts.sentinels),
                    redis={m: tuple(replace(x, server=r.server, version=r.version) for x in rs)
                           for m, rs in facts.redis.items()},
                    sentinel_process=replace(facts.sentinel_process, name="valkey-sentinel"))
    said = {(f.check, f.message) for f in run_checks(facts)}
    assert ("sentinel.reachable", "reachable (Valkey 8.0.1)") in said
    assert ("redis.reachable", "reachable (Valkey 8.0.1)") in said
    assert [f for f in run_checks(facts) if f.level is Level.PROBLEM] == []


def test_a_valkey_sentinels_fixes_name_its_unit():
    facts = healthy()
    proc = replace(facts.sentinel_process, name="valkey-sentinel", cap_eff=0x3000, cap_amb=0x1000)
    (level, subject, _, fix), = findings(replace(facts, sentinel_process=proc), "host.mode")
    assert subject.startswith("valkey-sentinel (pid ")
    assert fix.endswith("and restart valkey-sentinel.")
    assert "/lib/systemd/system/valkey-sentinel.service.d/vipfloat.conf" in fix


def test_an_instance_of_the_template_is_pointed_at_the_templates_drop_in():
    facts = healthy()
    proc = replace(facts.sentinel_process, name="redis-sentinel@main", cap_eff=0x1000,
                   cap_amb=0x1000)
    (_, subject, _, fix), = findings(replace(facts, sentinel_process=proc), "host.mode")
    assert subject.startswith("redis-sentinel@main (pid ")
    assert "/lib/systemd/system/redis-sentinel@.service.d/vipfloat.conf" in fix
    assert fix.endswith("and restart redis-sentinel@main.")
