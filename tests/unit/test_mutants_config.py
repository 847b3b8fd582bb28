"""Every problem line the config can produce, word for word, and every key landing
in its own field: what `make mutate` showed the other config tests let through (a
reworded or emptied message, a bound moved by one, a key read under another name,
a clipped quote one character early, a password stripped of more than its line
break). Documents are parsed from TOML text, as load() does, without touching disk
where the file itself is not the point."""
from __future__ import annotations

import os
import pickle
import re
import resource
import textwrap
import tomllib
from contextlib import contextmanager
from pathlib import Path

import pytest

from vipfloat import config as config_mod
from vipfloat.config import (ActionsConfig, AgentConfig, Endpoint, QuorumPolicy, RedisConfig,
                             Secret, SentinelConfig)
from vipfloat.errors import ConfigError

PATH = Path("/etc/vipfloat/vipfloat.toml")
SENTINEL = '[sentinel]\naddresses = ["198.51.100.11:26379"]\n'
VIP = '[[vip]]\nmaster = "mymaster"\naddress = "198.51.100.250/24"\ninterface = "eth1"\n'


def doc(text: str = "", *, sentinel: str = SENTINEL, vip: str = VIP) -> dict:
    """The document `text` says, with a valid [sentinel] and [[vip]] unless it (or
    the argument) has its own."""
    data = tomllib.loads(textwrap.dedent(text))
    for part in (sentinel, vip):
        for key, value in tomllib.loads(textwrap.dedent(part)).items():
            data.setdefault(key, value)
    return data


def problems(data: dict, path: Path = PATH) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_mod.parse(data, path)
    lines = info.value.problems
    assert str(info.value) == "\n".join(lines)
    for line in lines:
        assert line.startswith(f"{path}: "), line
    return [line[len(f"{path}: "):] for line in lines]


def ids(cases) -> list[str]:
    """Test ids that pytest (and mutmut, which passes them back) can take as node ids:
    no '::', brackets, quotes or line breaks."""
    return [re.sub(r"[^A-Za-z0-9_.]+", "-", str(case[0]))[:40].strip("-") or "none"
            for case in cases]


def long_name(n: int) -> str:
    return ".".join(["a" * 63] * 4)[:n]          # labels of 63, the longest allowed


# (TOML between the [sentinel] table and the [[vip]] block, every problem line)
PROBLEMS = [
    # -- the document's own tables ---------------------------------------------------
    ("colour = 1", ["colour: unknown key"]),
    ("log = 3", ["log: must be a table, not an integer"]),
    ("[log]\nlevel = 'loud'\nformat = 'json'",
     ["log.format: unknown key", "log.level: must be one of debug, info, warning, error, "
                                 "not 'loud'"]),
    ("[log]\nlevel = 'warning'", []),
    ("agent = 'x'", ["agent: must be a table, not a string"]),
    ("actions = []", ["actions: must be a table, not an array"]),
    ("redis = true", ["redis: must be a table, not a boolean"]),
    # -- every type a value can have, named as TOML names it --------------------------
    ("[agent]\nsocket_group = 1979-05-27T07:32:00Z", ["agent.socket_group: must be a string, "
                                                      "not a date-time"]),
    ("[agent]\nsocket_group = 1979-05-27T07:32:00", ["agent.socket_group: must be a string, "
                                                     "not a date-time"]),
    ("[agent]\nsocket_group = 1979-05-27", ["agent.socket_group: must be a string, not a date"]),
    ("[agent]\nsocket_group = 07:32:00", ["agent.socket_group: must be a string, not a time"]),
    ("[agent]\nsocket_group = 1.5", ["agent.socket_group: must be a string, not a float"]),
    ("[agent]\nsocket_group = {a = 1}", ["agent.socket_group: must be a string, not a table"]),
    ("[agent]\nsocket_group = [1]", ["agent.socket_group: must be a string, not an array"]),
    ('[agent]\nsocket_group = "a\\u0000b"', ["agent.socket_group: contains a NUL character"]),
    ("[agent]\nrelease_wait = true", ["agent.release_wait: must be a number, not a boolean"]),
    ("[agent]\nrelease_wait = '1'", ["agent.release_wait: must be a number, not a string"]),
    ("[agent]\nreset_connections = 1", ["agent.reset_connections: must be a boolean, "
                                        "not an integer"]),
    ("[agent]\nrelease_on_stop = 'yes'", ["agent.release_on_stop: must be a boolean, "
                                          "not a string"]),
    # -- [agent] ---------------------------------------------------------------------
    ("[agent]\nsocket_groups = 'x'\non_quorum_loss = 'drop'",
     ["agent.socket_groups: unknown key",
      "agent.on_quorum_loss: must be 'release' or 'keep', not 'drop'"]),
    ("[agent]\nmetrics_listen = '127.0.0.1'",
     ["agent.metrics_listen: '127.0.0.1' is not host:port (IPv6 as [addr]:port)"]),
    ("[agent]\nmetrics_listen = '127.0.0.1:0'",
     ["agent.metrics_listen: '127.0.0.1:0' has port 0, not 1-65535"]),
    ("[agent]\nreconcile_interval = 0.04",
     ["agent.reconcile_interval: must be between 0.05 and 2, not 0.04"]),
    ("[agent]\nreconcile_interval = 2.5",
     ["agent.reconcile_interval: must be between 0.05 and 2, not 2.5"]),
    ("[agent]\nquorum_loss_grace = 601",
     ["agent.quorum_loss_grace: must be between 0 and 600, not 601"]),
    ("[agent]\nquorum_loss_grace = -0.5",
     ["agent.quorum_loss_grace: must be between 0 and 600, not -0.5"]),
    ("[agent]\nrelease_wait = 10.5", ["agent.release_wait: must be between 0 and 10, not 10.5"]),
    ("[agent]\nconflict_probe_interval = 0.05",
     ["agent.conflict_probe_interval: must be 0 (off) or between 0.1 and 3600, not 0.05"]),
    ("[agent]\nconflict_probe_interval = 3601",
     ["agent.conflict_probe_interval: must be 0 (off) or between 0.1 and 3600, not 3601"]),
    ("[agent]\nannounce_refresh = 0.5",
     ["agent.announce_refresh: must be 0 (off) or between 1 and 3600, not 0.5"]),
    ("[agent]\nannounce_refresh = 12345678.5",
     ["agent.announce_refresh: must be 0 (off) or between 1 and 3600, not 1.23457e+07"]),
    ("[agent]\nannounce_refresh = 123456789",
     ["agent.announce_refresh: must be 0 (off) or between 1 and 3600, not 123456789"]),
    ("[agent]\nhook_timeout = 0.09", ["agent.hook_timeout: must be between 0.1 and 30, not 0.09"]),
    ("[agent]\nhook_timeout = 31", ["agent.hook_timeout: must be between 0.1 and 30, not 31"]),
    ("[agent]\nlock_timeout = 15.5", ["agent.lock_timeout: must be between 0.1 and 15, not 15.5"]),
    ("[agent]\nlock_timeout = 0", ["agent.lock_timeout: must be between 0.1 and 15, not 0"]),
    ("[agent]\nretry_timeout = 11", ["agent.retry_timeout: must be between 0 and 10, not 11"]),
    ("[agent]\nretry_timeout = -1", ["agent.retry_timeout: must be between 0 and 10, not -1"]),
    # How a number too large to print is shown.
    ("[agent]\nhook_timeout = 999999999999999",
     ["agent.hook_timeout: must be between 0.1 and 30, not 999999999999999"]),
    ("[agent]\nhook_timeout = 1000000000000000",
     ["agent.hook_timeout: must be between 0.1 and 30, not an integer of about 15 digits"]),
    ("[agent]\nhook_timeout = -" + "9" * 40,
     ["agent.hook_timeout: must be between 0.1 and 30, not an integer of about 40 digits"]),
    ("[agent]\nhook_timeout = inf", ["agent.hook_timeout: must be between 0.1 and 30, not inf"]),
    ("[agent]\nhook_timeout = nan", ["agent.hook_timeout: must be between 0.1 and 30, not nan"]),
    # -- paths -----------------------------------------------------------------------
    ("[agent]\nsocket = 'run/vipfloat.sock'",
     ["agent.socket: 'run/vipfloat.sock' is not an absolute path"]),
    ("[agent]\nsocket = '/" + "s" * 107 + "'",
     ["agent.socket: is 108 bytes long; a Unix socket path holds at most 107"]),
    ("[agent]\nsocket = '/" + "é" * 54 + "'",
     ["agent.socket: is 109 bytes long; a Unix socket path holds at most 107"]),
    ("[agent]\nstate_dir = '/" + "d" * 4095 + "'",
     ["agent.state_dir: is 4096 bytes long; a path holds at most 4095"]),
    ("[actions]\nscripts_dir = 'actions.d'\npre_release_dir = '~/pre'\ntimeout = 15.5\nkey = 1",
     ["actions.key: unknown key", "actions.scripts_dir: 'actions.d' is not an absolute path",
      "actions.timeout: must be between 0.1 and 15, not 15.5",
      "actions.pre_release_dir: '~/pre' is not an absolute path"]),
    ("[actions]\ntimeout = 0.05", ["actions.timeout: must be between 0.1 and 15, not 0.05"]),
    # -- [redis] ---------------------------------------------------------------------
    ("[redis]\nuser = 'x'\ntimeout = 10.5\nusername = 5",
     ["redis.user: unknown key", "redis.username: must be a string, not an integer",
      "redis.timeout: must be between 0.05 and 10, not 10.5"]),
    ("[redis]\ntimeout = 0.04", ["redis.timeout: must be between 0.05 and 10, not 0.04"]),
    ("[redis]\npassword = 'a'\npassword_file = '/etc/vipfloat/redis.pass'",
     ["redis.password_file: set password or password_file, not both"]),
    ("[redis]\npassword_file = 'redis.pass'",
     ["redis.password_file: 'redis.pass' is not an absolute path"]),
    ("[redis]\npassword_file = '/nonexistent/redis.pass'",
     ["redis.password_file: cannot read /nonexistent/redis.pass: No such file or directory"]),
    ("[redis]\npassword = 5", ["redis.password: must be a string, not an integer"]),
]


@pytest.mark.parametrize("text, lines", PROBLEMS, ids=ids(PROBLEMS))
def test_every_problem_line_word_for_word(text, lines):
    if lines:
        assert problems(doc(text)) == lines
    else:
        config_mod.parse(doc(text), PATH)


# (the [sentinel] table, every problem line)
SENTINEL_PROBLEMS = [
    ("", ["sentinel: missing section"]),
    ("sentinel = 'x'\n", ["sentinel: must be a table, not a string"]),
    ("[sentinel]\n", ["sentinel.addresses: no Sentinel configured: list at least one host:port"]),
    ("[sentinel]\naddresses = []\n",
     ["sentinel.addresses: no Sentinel configured: list at least one host:port"]),
    ("[sentinel]\naddresses = '198.51.100.11:26379'\n",
     ["sentinel.addresses: must be an array, not a string"]),
    ('[sentinel]\naddresses = ["198.51.100.11:26379", 26379, "a\\u0000:1"]\n',
     ["sentinel.addresses[1]: must be a string, not an integer",
      "sentinel.addresses[2]: contains a NUL character"]),
    ("[sentinel]\naddresses = ['198.51.100.11:26379', '198.51.100.12:26379', "
     "' 198.51.100.11:26379', '198.51.100.11:26379']\n",
     ["sentinel.addresses[2]: ' 198.51.100.11:26379' is listed twice",
      "sentinel.addresses[3]: '198.51.100.11:26379' is listed twice"]),
    ("[sentinel]\naddresses = ['nohost', 'h:0', 'h:65536', 'h:000001', '[::1]', 'h:-1']\n",
     ["sentinel.addresses[0]: 'nohost' is not host:port (IPv6 as [addr]:port)",
      "sentinel.addresses[1]: 'h:0' has port 0, not 1-65535",
      "sentinel.addresses[2]: 'h:65536' has port 65536, not 1-65535",
      "sentinel.addresses[3]: 'h:000001' has port 000001, not 1-65535",
      "sentinel.addresses[4]: '[::1]' is not host:port (IPv6 as [addr]:port)",
      "sentinel.addresses[5]: 'h:-1' is not host:port (IPv6 as [addr]:port)"]),
    ("[sentinel]\naddresses = ['[198.51.100.11]:26379', '[redis-a]:1', 'bad_host!:1', "
     "'a..b:1', '.:1', 'é:1']\n",
     ["sentinel.addresses[0]: '198.51.100.11' is not an IPv6 address",
      "sentinel.addresses[1]: 'redis-a' is not an IPv6 address",
      "sentinel.addresses[2]: 'bad_host!' is not a host name or IPv4 address",
      "sentinel.addresses[3]: 'a..b' is not a host name or IPv4 address",
      "sentinel.addresses[4]: '.' is not a host name or IPv4 address",
      "sentinel.addresses[5]: 'é' is not a host name or IPv4 address"]),
    (f"[sentinel]\naddresses = ['{long_name(254)}:1', '{long_name(253)}.:2', "
     f"'{'b' * 64}:1']\n",
     [f"sentinel.addresses[0]: '{long_name(60)}'... is not a host name or IPv4 address",
      f"sentinel.addresses[2]: '{'b' * 60}'... is not a host name or IPv4 address"]),
    ("[sentinel]\naddresses = ['h:" + "9" * 70 + "']\n",
     ["sentinel.addresses[0]: '" + "h:" + "9" * 58 + "'... has port " + "9" * 60
      + "..., not 1-65535"]),
    ("[sentinel]\naddresses = ['h:1']\ntimeout = 0.04\nusername = ['u']\ncolour = 1\n",
     ["sentinel.colour: unknown key", "sentinel.username: must be a string, not an array",
      "sentinel.timeout: must be between 0.05 and 10, not 0.04"]),
    ("[sentinel]\naddresses = ['h:1']\ntimeout = 10.5\n",
     ["sentinel.timeout: must be between 0.05 and 10, not 10.5"]),
    ("[sentinel]\naddresses = ['h:1']\npassword = 'a'\npassword_file = '/x'\n",
     ["sentinel.password_file: set password or password_file, not both"]),
]


@pytest.mark.parametrize("sentinel, lines", SENTINEL_PROBLEMS, ids=ids(SENTINEL_PROBLEMS))
def test_every_sentinel_problem_word_for_word(sentinel, lines):
    assert problems(doc(sentinel=sentinel)) == lines


# ([[vip]] blocks, every problem line)
VIP_PROBLEMS = [
    ("", ["vip: no [[vip]] block: configure at least one master and its VIP"]),
    ("vip = []", ["vip: no [[vip]] block: configure at least one master and its VIP"]),
    ("[vip]\nmaster = 'm'", ["vip: must be an array of tables ([[vip]]), not a table"]),
    ("vip = ['m']", ["vip[0]: must be a table ([[vip]]), not a string"]),
    ("vip = [3, {master = 'm', address = '198.51.100.250/24', interface = 'eth 1'}]",
     ["vip[0]: must be a table ([[vip]]), not an integer",
      "vip[1].interface: 'eth 1' is not a Linux interface name: no '/', ':', space or control "
      "character allowed"]),
    ("vip = [{}, 3]", ["vip[0].master: missing", "vip[0].address: missing",
                       "vip[0].interface: missing", "vip[1]: must be a table ([[vip]]), "
                                                    "not an integer"]),
    ("[[vip]]\nmaster = ''\naddress = '198.51.100.250'\ninterface = ''\nadress = 1",
     ["vip[0].adress: unknown key", "vip[0].master: '' is not a Sentinel master name",
      "vip[0].address: '198.51.100.250' needs a prefix length, e.g. 198.51.100.250/24",
      "vip[0].interface: '' is not a Linux interface name: empty"]),
    ("[[vip]]\nmaster = 'my master'\naddress = '198.51.100.300/24'\ninterface = '.'",
     ["vip[0].master: 'my master' is not a Sentinel master name",
      "vip[0].address: '198.51.100.300/24' is not an IP address with prefix",
      "vip[0].interface: '.' is not a Linux interface name: '.' and '..' are reserved"]),
    ('[[vip]]\nmaster = "m\\u0007"\naddress = "224.0.0.1/24"\ninterface = ".."',
     ["vip[0].master: 'm\\x07' is not a Sentinel master name",
      "vip[0].address: '224.0.0.1/24' cannot be a VIP (multicast, unspecified or loopback)",
      "vip[0].interface: '..' is not a Linux interface name: '.' and '..' are reserved"]),
    ("[[vip]]\nmaster = 'm'\naddress = '127.0.0.2/8'\ninterface = 'eth/1'",
     ["vip[0].address: '127.0.0.2/8' cannot be a VIP (multicast, unspecified or loopback)",
      "vip[0].interface: 'eth/1' is not a Linux interface name: no '/', ':', space or control "
      "character allowed"]),
    ("[[vip]]\nmaster = 'm'\naddress = '::/64'\ninterface = 'eth:1'",
     ["vip[0].address: '::/64' cannot be a VIP (multicast, unspecified or loopback)",
      "vip[0].interface: 'eth:1' is not a Linux interface name: no '/', ':', space or control "
      "character allowed"]),
    ("[[vip]]\nmaster = 'm'\naddress = '::1/128'\ninterface = 'eth 1'",
     ["vip[0].address: '::1/128' cannot be a VIP (multicast, unspecified or loopback)",
      "vip[0].interface: 'eth 1' is not a Linux interface name: no '/', ':', space or control "
      "character allowed"]),
    ('[[vip]]\nmaster = "m"\naddress = "0.0.0.0/0"\ninterface = "eth\\u0001"',
     ["vip[0].address: '0.0.0.0/0' cannot be a VIP (multicast, unspecified or loopback)",
      "vip[0].interface: 'eth\\x01' is not a Linux interface name: no '/', ':', space or "
      "control character allowed"]),
    ("[[vip]]\nmaster = 'm'\naddress = 'ff02::1/64'\ninterface = 'abcdefghijklmnop'",
     ["vip[0].address: 'ff02::1/64' cannot be a VIP (multicast, unspecified or loopback)",
      "vip[0].interface: 'abcdefghijklmnop' is not a Linux interface name: 16 bytes long, "
      "at most 15"]),
    ("[[vip]]\nmaster = 'm'\naddress = '198.51.100.250/24'\ninterface = 'éééééééé'",
     ["vip[0].interface: 'éééééééé' is not a Linux interface name: 16 bytes long, at most 15"]),
    ("[[vip]]\nmaster = 'm'\naddress = '198.51.100.250/24'\ninterface = 'eth1'\n"
     "local_addresses = ['198.51.100.11', 'nope', 5]\nannounce_count = 0\n"
     "announce_interval = 0.009",
     ["vip[0].local_addresses[2]: must be a string, not an integer",
      "vip[0].local_addresses[1]: 'nope' is not an IP address",
      "vip[0].announce_count: must be between 1 and 100, not 0",
      "vip[0].announce_interval: must be between 0.01 and 60, not 0.009"]),
    ("[[vip]]\nmaster = 'm'\naddress = '198.51.100.250/24'\ninterface = 'eth1'\n"
     "announce_count = 101\nannounce_interval = 60.5",
     ["vip[0].announce_count: must be between 1 and 100, not 101",
      "vip[0].announce_interval: must be between 0.01 and 60, not 60.5"]),
    ("[[vip]]\nmaster = 'm'\naddress = '198.51.100.250/24'\ninterface = 'eth1'\n"
     "announce_count = true", ["vip[0].announce_count: must be an integer, not a boolean"]),
    # The same master or VIP twice: each later block names the first one.
    ("[[vip]]\nmaster = 'm'\naddress = '198.51.100.250/24'\ninterface = 'eth1'\n"
     "[[vip]]\nmaster = 'm'\naddress = '198.51.100.250/32'\ninterface = 'eth2'\n"
     "[[vip]]\nmaster = 'm'\naddress = '198.51.100.250/25'\ninterface = 'eth3'\n",
     ["vip[1].master: 'm' is already used by vip[0]",
      "vip[1].address: 198.51.100.250 is already the VIP of vip[0]",
      "vip[2].master: 'm' is already used by vip[0]",
      "vip[2].address: 198.51.100.250 is already the VIP of vip[0]"]),
]


@pytest.mark.parametrize("vip, lines", VIP_PROBLEMS, ids=ids(VIP_PROBLEMS))
def test_every_vip_problem_word_for_word(vip, lines):
    assert problems(doc(vip=vip)) == lines


def test_every_key_lands_in_its_own_field(tmp_path):
    secret = tmp_path / "sentinel.pass"
    secret.write_text("s3cret\n")
    cfg = config_mod.parse(doc("""
        [agent]
        socket = "/run/vf/a.sock"
        state_dir = "/run/vf"
        lock_timeout = 15
        retry_timeout = 0
        socket_group = "redis"
        reconcile_interval = 0.05
        on_quorum_loss = "keep"
        quorum_loss_grace = 600
        release_wait = 10
        reset_connections = false
        release_on_stop = true
        conflict_probe_interval = 0.1
        announce_refresh = 3600
        metrics_listen = "[::1]:9851"
        hook_timeout = 30
        [actions]
        scripts_dir = "/s"
        timeout = 15
        pre_release_dir = "/p"
        [redis]
        username = "ru"
        password = "rp"
        timeout = 10
        [log]
        level = "debug"
        """, sentinel=f"""
        [sentinel]
        addresses = ["198.51.100.11:26379", "[2001:db8::11]:26380", "redis-a.example.:1",
                     "a:65535"]
        username = "su"
        password_file = "{secret}"
        timeout = 0.05
        """, vip="""
        [[vip]]
        master = "m1"
        address = "198.51.100.250/24"
        interface = "eth_X-1"
        local_addresses = ["198.51.100.11", "2001:db8::11"]
        announce_count = 100
        announce_interval = 60
        [[vip]]
        master = "m2"
        address = "2001:db8::250/64"
        interface = "abcdefghijklmno"
        announce_count = 1
        announce_interval = 0.01
        """), PATH)
    assert cfg.agent == AgentConfig(
        socket=Path("/run/vf/a.sock"), state_dir=Path("/run/vf"), lock_timeout=15.0,
        retry_timeout=0.0, socket_group="redis", reconcile_interval=0.05,
        on_quorum_loss=QuorumPolicy.KEEP,
        quorum_loss_grace=600.0, release_wait=10.0, reset_connections=False,
        release_on_stop=True, conflict_probe_interval=0.1, announce_refresh=3600.0,
        metrics_listen="[::1]:9851", hook_timeout=30.0)
    assert cfg.actions == ActionsConfig(scripts_dir=Path("/s"), timeout=15.0,
                                        pre_release_dir=Path("/p"))
    assert cfg.redis == RedisConfig(username="ru", password=Secret("rp"), timeout=10.0)
    assert cfg.sentinel == SentinelConfig(
        addresses=(Endpoint("198.51.100.11", 26379), Endpoint("2001:db8::11", 26380),
                   Endpoint("redis-a.example.", 1), Endpoint("a", 65535)),
        username="su", password=Secret("s3cret"), timeout=0.05)
    assert cfg.log_level == "debug" and cfg.path == PATH
    m1, m2 = cfg.vips
    assert (m1.master, str(m1.address), m1.interface, [str(a) for a in m1.local_addresses],
            m1.announce_count, m1.announce_interval) == (
        "m1", "198.51.100.250/24", "eth_X-1", ["198.51.100.11", "2001:db8::11"], 100, 60.0)
    assert (m2.master, str(m2.address), m2.interface, m2.local_addresses, m2.announce_count,
            m2.announce_interval) == ("m2", "2001:db8::250/64", "abcdefghijklmno", (), 1, 0.01)
    assert cfg.vip_for("m2") is m2 and cfg.vip_for("m3") is None


@pytest.mark.parametrize("key", ["conflict_probe_interval", "announce_refresh",
                                 "quorum_loss_grace", "release_wait", "retry_timeout"])
def test_zero_is_accepted_where_it_is_allowed(key):
    assert getattr(config_mod.parse(doc(f"[agent]\n{key} = 0"), PATH).agent, key) == 0.0


def test_an_unset_quorum_loss_grace_means_the_masters_own_down_after():
    assert config_mod.parse(doc("[agent]"), PATH).agent.quorum_loss_grace is None


def test_longest_paths_that_fit_load():
    socket = "/" + "é" * 53                      # 107 bytes
    state_dir = "/" + "d" * 4094                  # 4095 bytes
    cfg = config_mod.parse(doc(f"[agent]\nsocket = '{socket}'\nstate_dir = '{state_dir}'"), PATH)
    assert (str(cfg.agent.socket), str(cfg.agent.state_dir)) == (socket, state_dir)


def test_a_253_byte_host_name_is_the_longest_and_one_letter_is_a_name():
    name = long_name(253)
    cfg = config_mod.parse(doc(sentinel=f"[sentinel]\naddresses = ['{name}:1', 'a:2', "
                                        f"'{name}.:3']\n"), PATH)
    assert [e.host for e in cfg.sentinel.addresses] == [name, "a", name + "."]


# --- how a problem line shows what the file said --------------------------------------

@pytest.mark.parametrize("length, shown", [
    (60, "'{v}'"),                               # up to 60 characters: all of it
    (61, "'{v60}'..."),
])
def test_values_are_quoted_up_to_sixty_characters(length, shown):
    value = "q" * length
    assert problems(doc(f"[agent]\nsocket = '{value}'")) == [
        "agent.socket: " + shown.format(v=value, v60=value[:60]) + " is not an absolute path"]


@pytest.mark.parametrize("length", [60, 61])
def test_unknown_keys_are_clipped_after_sixty_characters(length):
    key = "k" * length
    shown = key if length <= 60 else key[:60] + "..."
    assert problems(doc(f"[agent]\n{key} = 1")) == [f"agent.{shown}: unknown key"]


def test_a_renamed_key_is_reported_with_its_new_name_word_for_word():
    assert problems(doc("[actions]\nhooks_dir = '/etc/vipfloat/hooks.d'")) == [
        "actions.hooks_dir: renamed to scripts_dir"]
    # The rename is [actions]'s own: at the top level the old name is just unknown.
    assert problems(doc("hooks_dir = 1")) == ["hooks_dir: unknown key"]


def test_a_control_character_in_a_key_is_escaped_and_a_backslash_kept():
    assert problems(doc('[agent]\n"a\\\\b\\u001bc\\u2028" = 1')) == [
        "agent.a\\b\\x1bc\\u2028: unknown key"]


def test_a_control_character_in_the_configs_own_path_is_escaped():
    path = Path("/tmp/x\ny.toml")
    with pytest.raises(ConfigError) as info:
        config_mod.parse(doc("colour = 1"), path)
    assert info.value.problems == ["/tmp/x\\ny.toml: colour: unknown key"]


# --- load(): the file itself ------------------------------------------------------------

def load_problems(path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    return info.value.problems


def test_an_unreadable_config_says_why(tmp_path):
    assert load_problems(tmp_path / "none.toml") == [
        f"{tmp_path}/none.toml: cannot read config: No such file or directory"]
    assert load_problems(tmp_path) == [f"{tmp_path}: cannot read config: not a regular file"]
    assert load_problems(f"{tmp_path}/a\0b") == [
        f"{tmp_path}/a\\x00b: cannot read config: embedded null byte"]


def test_a_config_of_exactly_the_limit_loads_and_one_byte_more_does_not(tmp_path):
    body = (SENTINEL + VIP).encode()
    path = tmp_path / "vipfloat.toml"
    path.write_bytes(body + b"#" * (config_mod.MAX_CONFIG_BYTES - len(body)))
    assert config_mod.load(path).vips[0].master == "mymaster"
    path.write_bytes(body + b"#" * (config_mod.MAX_CONFIG_BYTES - len(body) + 1))
    assert load_problems(path) == [f"{path}: cannot read config: larger than 1024 KiB"]


def test_syntax_errors_name_the_line(tmp_path):
    path = tmp_path / "vipfloat.toml"
    path.write_bytes(b"# one\n# two\nx = '\xff'\n")
    assert load_problems(path) == [f"{path}: TOML syntax error: invalid UTF-8 at line 3 "
                                   f"(byte 17)"]
    path.write_text("x = = 1\n")
    with pytest.raises(tomllib.TOMLDecodeError) as toml_error:
        tomllib.loads("x = = 1\n")
    assert load_problems(path) == [f"{path}: TOML syntax error: {toml_error.value}"]
    path.write_text("x = " + "[" * 3000 + "]" * 3000)
    assert load_problems(path) == [f"{path}: TOML syntax error: arrays or tables nested too "
                                   "deeply"]
    path.write_text("x = " + "9" * 5000)
    assert load_problems(path) == [f"{path}: TOML syntax error: an integer with thousands of "
                                   "digits"]


def test_a_blank_first_line_counts(tmp_path):
    path = tmp_path / "vipfloat.toml"
    path.write_bytes(b"\n\nx = '\xff'\n")
    assert load_problems(path) == [f"{path}: TOML syntax error: invalid UTF-8 at line 3 (byte 7)"]


class ShortReads:
    """os.read as the kernel may do it: fewer bytes than asked (procfs, FUSE, a
    signal). Counts what it hands over."""

    def __init__(self, chunk: int) -> None:
        self.chunk, self.given, self.real = chunk, 0, os.read

    def __call__(self, fd: int, n: int) -> bytes:
        data = self.real(fd, min(n, self.chunk))
        self.given += len(data)
        return data


def test_a_config_handed_over_in_pieces_loads_whole(tmp_path, monkeypatch):
    path = tmp_path / "vipfloat.toml"
    path.write_text(SENTINEL + "# " + "x" * 5000 + "\n" + VIP)
    monkeypatch.setattr(os, "read", ShortReads(1000))
    assert config_mod.load(path).vips[0].interface == "eth1"


def test_a_huge_config_in_pieces_is_refused_after_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "vipfloat.toml"
    with open(path, "wb") as f:
        f.truncate(8 << 20)
    reads = ShortReads(300_000)
    monkeypatch.setattr(os, "read", reads)
    assert load_problems(path) == [f"{path}: cannot read config: larger than 1024 KiB"]
    assert reads.given == config_mod.MAX_CONFIG_BYTES + 1


def test_config_path_precedence(monkeypatch):
    monkeypatch.delenv(config_mod.ENV_VAR, raising=False)
    assert config_mod.config_path(None) == Path("/etc/vipfloat/vipfloat.toml")
    monkeypatch.setenv("VIPFLOAT_CONFIG", "")
    assert config_mod.config_path("") == Path("/etc/vipfloat/vipfloat.toml")
    monkeypatch.setenv("VIPFLOAT_CONFIG", "/env.toml")
    assert config_mod.config_path(None) == Path("/env.toml")
    assert config_mod.config_path(Path("/cli.toml")) == Path("/cli.toml")


@contextmanager
def address_space_limit(extra: int):
    """Let this process map only `extra` more bytes: a read of a huge file whole
    fails at once (MemoryError) instead of filling the machine's memory."""
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_a_huge_config_file_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "vipfloat.toml"
    with open(path, "wb") as f:
        f.truncate(8 << 30)                      # 8 GiB, sparse
    with address_space_limit(512 << 20):
        lines = load_problems(path)
    assert lines == [f"{path}: cannot read config: larger than 1024 KiB"]


# --- password files --------------------------------------------------------------------

def secret_problems(tmp_path, content: bytes | None = None, path: str | None = None):
    file = Path(path) if path else tmp_path / "pass"
    if content is not None:
        file.write_bytes(content)
    data = doc(f"[redis]\npassword_file = '{file}'")
    return problems(data), file


@pytest.mark.parametrize("content, value", [
    (b"s3cret\n", "s3cret"),
    (b"  s3 cret \r\n\n", "  s3 cret "),          # only the line breaks go
    (b"PASSX\n", "PASSX"),
    (b"\tp\t", "\tp\t"),
    ("pässwörd\n".encode(), "pässwörd"),
], ids=["newline", "crlf-and-spaces", "ends-in-X", "tabs", "utf-8"])
def test_a_password_file_loses_only_its_final_line_breaks(tmp_path, content, value):
    (tmp_path / "pass").write_bytes(content)
    cfg = config_mod.parse(doc(f"[redis]\npassword_file = '{tmp_path / 'pass'}'"), PATH)
    assert cfg.redis.password == Secret(value) and cfg.redis.password.value == value


def test_password_file_problems_word_for_word(tmp_path):
    limit = config_mod.MAX_SECRET_BYTES
    (tmp_path / "pass").write_bytes(b"p" * limit)
    assert config_mod.parse(doc(f"[redis]\npassword_file = '{tmp_path / 'pass'}'"),
                            PATH).redis.password.value == "p" * limit
    lines, file = secret_problems(tmp_path, b"p" * (limit + 1))
    assert lines == [f"redis.password_file: cannot read {file}: larger than 64 KiB, "
                     "not a password"]
    lines, file = secret_problems(tmp_path, b"\xffpass")
    assert lines == [f"redis.password_file: cannot read {file}: not UTF-8 text"]
    lines, file = secret_problems(tmp_path, b"pa\0ss")
    assert lines == [f"redis.password_file: cannot read {file}: contains a NUL character"]
    lines, file = secret_problems(tmp_path, path=str(tmp_path))
    assert lines == [f"redis.password_file: cannot read {file}: Is a directory"]
    lines, file = secret_problems(tmp_path, path=os.devnull)
    assert lines == ["redis.password_file: cannot read /dev/null: not a regular file"]
    # A regular file whose read fails (the kernel refuses offset 0 of a process's memory).
    lines, file = secret_problems(tmp_path, path="/proc/self/mem")
    assert lines == ["redis.password_file: cannot read /proc/self/mem: Input/output error"]


def test_a_huge_password_file_is_refused_without_reading_it_whole(tmp_path):
    file = tmp_path / "pass"
    with open(file, "wb") as f:
        f.truncate(8 << 30)
    with address_space_limit(512 << 20):
        lines, _ = secret_problems(tmp_path)
    assert lines == [f"redis.password_file: cannot read {file}: larger than 64 KiB, "
                     "not a password"]


def test_an_unread_secret_names_its_config_and_key_even_after_pickling(tmp_path):
    missing = tmp_path / "gone.pass"
    cfg = config_mod.parse(doc(f"[redis]\npassword_file = '{missing}'"), PATH, secrets=False)
    for secret in (cfg.redis.password, pickle.loads(pickle.dumps(cfg.redis.password))):
        assert secret.file == missing
        with pytest.raises(ConfigError) as info:
            _ = secret.value
        assert info.value.problems == [f"{PATH}: redis.password_file: cannot read {missing}: "
                                       "No such file or directory"]


def test_secrets_of_different_files_differ():
    a, b = Secret(file=Path("/a")), Secret(file=Path("/b"))
    assert a != b and a == Secret(file=Path("/a")) and a != Secret("/a")
    assert len({a, b, Secret(file=Path("/a"))}) == 2


def test_a_secret_needs_exactly_one_of_value_and_file():
    for kwargs in ({}, {"value": "x", "file": Path("/x")}):
        with pytest.raises(TypeError) as info:
            Secret(**kwargs)
        assert str(info.value) == "a Secret holds either a value or a password file"


def test_a_secrets_attributes_cannot_be_deleted():
    s = Secret("x")
    for name in ("_value", "value", "other"):
        with pytest.raises(AttributeError) as info:
            delattr(s, name)
        assert str(info.value) == "Secret is immutable"
    assert s.value == "x"


def test_problem_lines_do_not_depend_on_the_environment(monkeypatch):
    # parse() reads nothing but its arguments.
    monkeypatch.setenv("VIPFLOAT_CONFIG", os.devnull)
    assert problems(doc("colour = 1")) == ["colour: unknown key"]
