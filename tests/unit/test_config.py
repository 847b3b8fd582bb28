from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from vipfloat import config as config_mod
from vipfloat.errors import EXIT_PERMANENT, ConfigError

REPO = Path(__file__).resolve().parents[2]


def problems(write_config, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_mod.load(write_config(text))
    assert info.value.exit_code == EXIT_PERMANENT
    return info.value.problems


def test_example_config_in_repo_is_valid():
    cfg = config_mod.load(REPO / "examples" / "vipfloat.toml")
    assert [v.master for v in cfg.vips] == ["mymaster"]
    assert cfg.vips[0].address == ipaddress.ip_interface("198.51.100.250/24")
    assert str(cfg.sentinel.addresses[0]) == "198.51.100.11:26379"


def test_example_config_documents_every_key():
    """The annotated example is the reference for operators: every key the loader
    accepts appears in it, set or commented out, so none goes undocumented."""
    import dataclasses
    import re
    text = (REPO / "examples" / "vipfloat.toml").read_text()
    sections = {"sentinel": config_mod.SentinelConfig, "agent": config_mod.AgentConfig,
                "actions": config_mod.ActionsConfig, "vip": config_mod.VipConfig,
                "redis": config_mod.RedisConfig}
    missing = [f"{section}.{field.name}" for section, cls in sections.items()
               for field in dataclasses.fields(cls)
               if not re.search(rf"^#? ?{field.name} =", text, re.M)
               and field.name not in ("addresses", "password")]
    assert missing == []


def test_loads_frozen_values(cfg):
    assert cfg.vip_for("six").ip == ipaddress.ip_address("2001:db8:100::250")
    assert cfg.vip_for("nope") is None
    assert cfg.vips[0].announce_count == 5 and cfg.vips[0].announce_interval == 1.1
    with pytest.raises(AttributeError):
        cfg.vips[0].interface = "eth2"  # type: ignore[misc]


def test_every_problem_reported_at_once_naming_file_and_key(write_config):
    lines = problems(write_config, """
        [sentinel]
        addresses = ["nohost", "198.51.100.11:99999"]
        colour = "blue"
        [[vip]]
        master = "m"
        address = "198.51.100.300/24"
        interface = "eth1"
        [[vip]]
        master = "m"
        address = "198.51.100.250"
        interface = "this-name-is-far-too-long"
        adress = "typo"
        """)
    text = "\n".join(lines)
    assert len(lines) == 8, text
    assert all(line.split(": ", 1)[0].endswith("vipfloat.toml") for line in lines)
    for key in ("sentinel.addresses[0]", "sentinel.addresses[1]", "sentinel.colour",
                "vip[0].address", "vip[1].master", "vip[1].address", "vip[1].interface",
                "vip[1].adress"):
        assert f": {key}: " in text, key


def test_unknown_key_in_vip_block(write_config):
    lines = problems(write_config, """
        [sentinel]
        addresses = ["198.51.100.11:26379"]
        [[vip]]
        master = "m"
        address = "198.51.100.250/24"
        interface = "eth1"
        adress = "typo"
        """)
    assert len(lines) == 1 and lines[0].endswith("vip[0].adress: unknown key")


def test_a_renamed_key_names_its_new_name(tmp_path):
    """[actions] hooks_dir became scripts_dir ("hook" is Sentinel's script only): an
    old config is refused with one line naming the file, the old key and the new."""
    path = raw_config(tmp_path, actions='hooks_dir = "/etc/vipfloat/hooks.d"')
    assert raw_problems(path) == [f"{path}: actions.hooks_dir: renamed to scripts_dir"]
    both = raw_config(tmp_path, actions='hooks_dir = "/a"\nscripts_dir = "/b"')
    assert raw_problems(both) == [f"{both}: actions.hooks_dir: renamed to scripts_dir"]
    # Only under [actions]: elsewhere the old name is an unknown key like any other.
    one_problem(raw_config(tmp_path, agent='hooks_dir = "/a"'), "agent.hooks_dir",
                "unknown key")


@pytest.mark.parametrize("text, key, words", [
    ("[sentinel]\naddresses = []\n[[vip]]\nmaster='m'\naddress='198.51.100.250/24'\ninterface='e'",
     "sentinel.addresses", "no Sentinel configured"),
    ("[[vip]]\nmaster='m'\naddress='198.51.100.250/24'\ninterface='e'", "sentinel",
     "missing section"),
    ("[sentinel]\naddresses=['198.51.100.1:1']", "vip", "no [[vip]] block"),
    ("[sentinel]\naddresses=['198.51.100.1:1']\n[[vip]]\nmaster='m'\naddress='224.0.0.1/4'\n"
     "interface='e'", "vip[0].address", "cannot be a VIP"),
    ("[sentinel]\naddresses=['198.51.100.1:1']\n[[vip]]\nmaster='m'\naddress='198.51.100.250/24'\n"
     "interface='e'\n[[vip]]\nmaster='n'\naddress='198.51.100.250/25'\ninterface='e'",
     "vip[1].address", "already the VIP of vip[0]"),
    ("[sentinel]\naddresses=['198.51.100.1:1']\ntimeout=true\n[[vip]]\nmaster='m'\n"
     "address='198.51.100.250/24'\ninterface='e'", "sentinel.timeout", "must be a number"),
    ("[sentinel]\naddresses=['198.51.100.1:1']\n[agent]\nlock_timeout=600\n[[vip]]\nmaster='m'\n"
     "address='198.51.100.250/24'\ninterface='e'", "agent.lock_timeout", "between"),
    ("[sentinel]\naddresses=['198.51.100.1:1']\n[log]\nlevel='loud'\n[[vip]]\nmaster='m'\n"
     "address='198.51.100.250/24'\ninterface='e'", "log.level", "must be one of"),
])
def test_single_problem(write_config, text, key, words):
    lines = problems(write_config, text)
    assert len(lines) == 1, lines
    assert f": {key}: " in lines[0] and words in lines[0], lines[0]


def test_a_config_this_user_may_not_read_says_who_may(tmp_path, write_config, monkeypatch):
    # The package's config is 0640 root:vipfloat: `vipfloat status` as another user
    # said only "Permission denied" (issue 18).
    import errno

    path = write_config()

    def denied(*_: object) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(config_mod, "_read_regular", denied)
    for group, hint in [
            ("vipfloat", "(readable by root and group vipfloat: run this with sudo, or as a "
                         "member of vipfloat)"),
            ("root", "(run this as root, e.g. with sudo)"),
            (None, "(run this as root, e.g. with sudo)")]:
        monkeypatch.setattr(config_mod, "_group_of", lambda _path, group=group: group)
        with pytest.raises(ConfigError) as info:
            config_mod.load(path)
        assert info.value.problems == [f"{path}: cannot read config: Permission denied {hint}"]
    assert config_mod._group_of(tmp_path / "absent") is None


def test_missing_file_and_syntax_error(tmp_path, write_config):
    with pytest.raises(ConfigError) as info:
        config_mod.load(tmp_path / "absent.toml")
    assert info.value.problems == [f"{tmp_path / 'absent.toml'}: cannot read config: "
                                   "No such file or directory"]
    lines = problems(write_config, "[sentinel\naddresses = 1")
    assert len(lines) == 1 and "TOML syntax error" in lines[0] and "line 1" in lines[0]


def test_path_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(config_mod.ENV_VAR, raising=False)
    assert config_mod.config_path(None) == Path("/etc/vipfloat/vipfloat.toml")
    monkeypatch.setenv(config_mod.ENV_VAR, str(tmp_path / "env.toml"))
    assert config_mod.config_path(None) == tmp_path / "env.toml"
    assert config_mod.config_path("/x.toml") == Path("/x.toml")


def test_ipv6_sentinel_endpoint():
    ep = config_mod.parse_endpoint("[2001:db8::11]:26379")
    assert (ep.host, ep.port, str(ep)) == ("2001:db8::11", 26379, "[2001:db8::11]:26379")
    with pytest.raises(ValueError):
        config_mod.parse_endpoint("2001:db8::11:26379")


def test_secret_never_printed(write_config, tmp_path):
    pw = tmp_path / "pass"
    pw.write_text("s3cret-value\n")
    cfg = config_mod.load(write_config(f"""
        [sentinel]
        addresses = ["198.51.100.11:26379"]
        password_file = "{pw}"
        [[vip]]
        master = "m"
        address = "198.51.100.250/24"
        interface = "eth1"
        """))
    assert cfg.sentinel.password.value == "s3cret-value"
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg.sentinel.password)


def test_password_file_error_names_file_not_content(write_config, tmp_path):
    lines = problems(write_config, f"""
        [sentinel]
        addresses = ["198.51.100.11:26379"]
        password_file = "{tmp_path}/missing"
        [[vip]]
        master = "m"
        address = "198.51.100.250/24"
        interface = "eth1"
        """)
    assert len(lines) == 1 and "sentinel.password_file: cannot read" in lines[0]


# --- hostile values (security review): every one a config error line, never a crash ---

MINIMAL = """\
[sentinel]
addresses = ["198.51.100.11:26379"]
{sentinel}
[agent]
{agent}
[actions]
{actions}
[redis]
{redis}
[[vip]]
master = "m"
address = "198.51.100.250/24"
interface = "eth1"
{vip}
"""


def raw_config(tmp_path: Path, body: str | bytes = "", **sections: str) -> Path:
    """Write a config as is (no str.format of the whole text: inline tables have braces)."""
    path = tmp_path / "vipfloat.toml"
    if not isinstance(body, bytes):
        text = body or MINIMAL.format(**{s: sections.get(s, "") for s in
                                         ("sentinel", "agent", "actions", "redis", "vip")})
        body = text.encode()
    path.write_bytes(body)
    return path


def raw_problems(path: Path, **kw) -> list[str]:
    """The problem lines, checked for what every one must be: one line, naming the file,
    with no control character."""
    with pytest.raises(ConfigError) as info:
        config_mod.load(path, **kw)
    lines = info.value.problems
    assert lines and str(info.value) == "\n".join(lines)
    for line in lines:
        assert line.startswith(f"{path}: ") and line.isprintable(), repr(line)
    return lines


def one_problem(path: Path, key: str, words: str = "") -> str:
    lines = raw_problems(path)
    assert len(lines) == 1, lines
    assert f": {key}: " in lines[0] and words in lines[0], lines[0]
    return lines[0]


HUGE = "9" * 400


@pytest.mark.parametrize("section, key", [
    ("sentinel", "timeout"), ("redis", "timeout"), ("agent", "reconcile_interval"),
    ("agent", "lock_timeout"), ("agent", "retry_timeout"), ("agent", "quorum_loss_grace"),
    ("agent", "release_wait"), ("agent", "conflict_probe_interval"),
    ("agent", "announce_refresh"), ("agent", "hook_timeout"), ("agent", "failover_write_hold"),
    ("actions", "timeout"), ("vip", "announce_interval"), ("vip", "announce_count"),
])
@pytest.mark.parametrize("value", [HUGE, f"-{HUGE}", "inf", "-inf", "nan", "1e400", "-0.5"])
def test_every_number_is_range_checked(tmp_path, section, key, value):
    """A 400-digit integer raised OverflowError (float()) and killed the agent on a
    reload; inf and nan parse in TOML and must be refused like any out-of-range value."""
    if key == "announce_count" and value in ("inf", "-inf", "nan", "1e400", "-0.5"):
        words = "must be an integer, not a float"
    else:
        words = "must be "
    line = one_problem(raw_config(tmp_path, **{section: f"{key} = {value}"}),
                       f"{'vip[0]' if section == 'vip' else section}.{key}", words)
    assert HUGE not in line  # a short description, not 400 digits


def test_numbers_in_range_still_load(tmp_path):
    cfg = config_mod.load(raw_config(
        tmp_path, agent="reconcile_interval = 2\nquorum_loss_grace = 0\nconflict_probe_interval = 0"
                        "\nannounce_refresh = 30\nrelease_wait = 0.0",
        vip="announce_count = 100\nannounce_interval = 60"))
    assert cfg.agent.reconcile_interval == 2.0 and isinstance(cfg.agent.reconcile_interval, float)
    assert cfg.agent.quorum_loss_grace == 0.0 and cfg.agent.conflict_probe_interval == 0.0
    assert cfg.vips[0].announce_count == 100 and cfg.vips[0].announce_interval == 60.0


@pytest.mark.parametrize("key, value", [
    ("conflict_probe_interval", "1e-300"),  # a busy loop: the actor wakes every half interval
    ("announce_refresh", "0.001"),          # Linux ignores ARP updates within 1 s anyway
])
def test_a_period_that_is_not_off_has_a_floor(tmp_path, key, value):
    one_problem(raw_config(tmp_path, agent=f"{key} = {value}"), f"agent.{key}", "0 (off) or")


@pytest.mark.parametrize("body, words", [
    ("x = " + "[" * 3000 + "]" * 3000, "nested too deeply"),        # RecursionError in tomllib
    ("x = " + "{a = " * 3000 + "1" + "}" * 3000, "nested too deeply"),
    ("x = " + "9" * 5000, "thousands of digits"),                   # int()'s 4300-digit limit
])
def test_toml_that_crashed_tomllib_is_a_syntax_error(tmp_path, body, words):
    lines = raw_problems(raw_config(tmp_path, body))
    assert len(lines) == 1 and "TOML syntax error" in lines[0] and words in lines[0], lines


def test_hex_integer_beyond_str_limit(tmp_path):
    """0x + 5000 digits parses (the digit limit is for decimal), and is 6020 decimal
    digits: str() of it would raise ValueError, float() OverflowError."""
    one_problem(raw_config(tmp_path, vip="announce_count = 0x" + "f" * 5000),
                "vip[0].announce_count", "not an integer of about 6020 digits")


def test_invalid_utf8_and_raw_nul_are_syntax_errors(tmp_path):
    lines = raw_problems(raw_config(tmp_path, b'[sentinel]\naddresses = ["\xff"]\n'))
    path = tmp_path / "vipfloat.toml"
    assert lines == [f"{path}: TOML syntax error: invalid UTF-8 at line 2 (byte 25)"]
    lines = raw_problems(raw_config(tmp_path, b'[sentinel]\nx = "a\x00b"\n'))
    assert len(lines) == 1 and "\\x00" in lines[0]


def test_an_oversized_config_is_refused_unparsed(tmp_path):
    lines = raw_problems(raw_config(tmp_path, b"#" * (config_mod.MAX_CONFIG_BYTES + 1)))
    assert len(lines) == 1 and "larger than 1024 KiB" in lines[0]


@pytest.mark.parametrize("section, key", [
    ("sentinel", "username"), ("sentinel", "password"), ("redis", "username"),
    ("redis", "password"), ("agent", "socket_group"), ("agent", "metrics_listen"),
    ("agent", "on_quorum_loss"), ("agent", "socket"), ("agent", "state_dir"),
    ("actions", "scripts_dir"), ("actions", "pre_release_dir"), ("sentinel", "password_file"),
    ("vip", "interface2"),
])
def test_nul_in_any_string_is_refused(tmp_path, section, key):
    """TOML's \\u0000 puts a NUL in a string; every string here ends in a C string."""
    if key == "interface2":  # the [[vip]] block's own keys: replace the valid ones
        body = MINIMAL.format(sentinel="", agent="", actions="", redis="", vip="").replace(
            'master = "m"', 'master = "m\\u0000"')
        one_problem(raw_config(tmp_path, body), "vip[0].master", "NUL")
        body = body.replace('master = "m\\u0000"', 'master = "m"').replace(
            'interface = "eth1"', 'interface = "eth\\u00001"')
        one_problem(raw_config(tmp_path, body), "vip[0].interface", "NUL")
        return
    one_problem(raw_config(tmp_path, **{section: f'{key} = "/a\\u0000b"'}), f"{section}.{key}",
                "NUL")


def test_nul_in_array_items_is_refused(tmp_path):
    lines = raw_problems(raw_config(tmp_path, vip='local_addresses = ["198.51.100.1\\u0000"]'))
    assert len(lines) == 1 and ": vip[0].local_addresses[0]: contains a NUL" in lines[0]
    body = MINIMAL.format(sentinel="", agent="", actions="", redis="", vip="").replace(
        '"198.51.100.11:26379"', '"198.51.100.11:26379\\u0000"')
    one_problem(raw_config(tmp_path, body), "sentinel.addresses[0]", "NUL")


@pytest.mark.parametrize("name, words", [
    (".", "reserved"), ("..", "reserved"),
    ("é" * 8, "16 bytes long"),            # 8 characters, but IFNAMSIZ counts bytes
    ("abcdefghijklmnop", "16 bytes long"),
    ("eth0\\n", "control character"),      # the old ^...$ matched before a final newline
    ("eth 0", "space"), ("eth:0", "':'"), ("eth/0", "'/'"), ("", "empty"),
    ("eth\\u001b", "control character"),
])
def test_interface_names_linux_refuses(tmp_path, name, words):
    body = MINIMAL.format(sentinel="", agent="", actions="", redis="", vip="").replace(
        'interface = "eth1"', f'interface = "{name}"')
    one_problem(raw_config(tmp_path, body), "vip[0].interface", words)


def test_longest_interface_name_loads(tmp_path):
    body = MINIMAL.format(sentinel="", agent="", actions="", redis="", vip="").replace(
        'interface = "eth1"', 'interface = "abcdefghijklmno"')
    assert config_mod.load(raw_config(tmp_path, body)).vips[0].interface == "abcdefghijklmno"


@pytest.mark.parametrize("section, key", [
    ("agent", "socket"), ("agent", "state_dir"), ("actions", "scripts_dir"),
    ("actions", "pre_release_dir"), ("sentinel", "password_file"), ("redis", "password_file"),
])
@pytest.mark.parametrize("value", ["run/vipfloat", "./x", "", "~/x"])
def test_paths_must_be_absolute(tmp_path, section, key, value):
    one_problem(raw_config(tmp_path, **{section: f'{key} = "{value}"'}), f"{section}.{key}",
                "not an absolute path")


def test_socket_path_fits_sockaddr_un(tmp_path):
    longest = "/" + "s" * 106
    cfg = config_mod.load(raw_config(tmp_path, agent=f'socket = "{longest}"'))
    assert str(cfg.agent.socket) == longest
    one_problem(raw_config(tmp_path, agent=f'socket = "{longest}s"'), "agent.socket",
                "108 bytes long; a Unix socket path holds at most 107")
    # Bytes, not characters: 54 two-byte characters after the slash are 109 bytes.
    one_problem(raw_config(tmp_path, agent=f'socket = "/{"é" * 54}"'), "agent.socket",
                "109 bytes")
    one_problem(raw_config(tmp_path, agent=f'state_dir = "/{"d" * 4095}"'), "agent.state_dir",
                "4096 bytes long; a path holds at most 4095")


@pytest.mark.parametrize("item", ["1", "true", "1.5", "{}", "[]", '["198.51.100.1"]'])
def test_local_addresses_must_be_strings(tmp_path, item):
    """ipaddress.ip_address(1) is 0.0.0.1: an integer was silently a local address."""
    one_problem(raw_config(tmp_path, vip=f"local_addresses = [{item}]"),
                "vip[0].local_addresses[0]", "must be a string, not")


# Every key with a value of the wrong type: one line naming the key, in TOML's words.
WRONG_TYPES = ["1", "1.5", "true", '"text"', "[1]", "{a = 1}", "1979-05-27T07:32:00Z"]
KEYS = {
    "sentinel": ["addresses", "username", "password", "password_file", "timeout"],
    "agent": ["socket", "state_dir", "lock_timeout", "retry_timeout", "socket_group",
              "reconcile_interval", "on_quorum_loss", "quorum_loss_grace", "release_wait",
              "reset_connections", "release_on_stop", "conflict_probe_interval",
              "announce_refresh", "metrics_listen", "hook_timeout", "early_bind",
              "failover_write_hold"],
    "actions": ["scripts_dir", "timeout", "pre_release_dir"],
    "redis": ["username", "password", "password_file", "timeout"],
    "vip": ["local_addresses", "announce_count", "announce_interval", "crash_failover"],
}
KINDS = {"addresses": "array", "local_addresses": "array", "reset_connections": "boolean",
         "release_on_stop": "boolean", "announce_count": "integer", "early_bind": "boolean",
         "crash_failover": "boolean"}
NUMBERS = {"timeout", "lock_timeout", "retry_timeout", "reconcile_interval", "quorum_loss_grace",
           "release_wait", "conflict_probe_interval", "announce_refresh", "hook_timeout",
           "announce_interval", "failover_write_hold"}


def _wrong_type_cases():
    for section, keys in KEYS.items():
        for key in keys:
            want = KINDS.get(key, "number" if key in NUMBERS else "string")
            for value in WRONG_TYPES:
                kind = {"1": "integer", "1.5": "float", "true": "boolean", '"text"': "string",
                        "[1]": "array", "{a = 1}": "table"}.get(value, "date-time")
                if kind == want or (want == "number" and kind in ("integer", "float")):
                    continue
                yield section, key, value, want


@pytest.mark.parametrize("section, key, value, want", list(_wrong_type_cases()))
def test_wrong_type_at_every_key(tmp_path, section, key, value, want):
    if key == "addresses":  # replace the valid list rather than set the key twice
        body = MINIMAL.format(sentinel="", agent="", actions="", redis="", vip="").replace(
            'addresses = ["198.51.100.11:26379"]', f"addresses = {value}")
        path = raw_config(tmp_path, body)
    else:
        path = raw_config(tmp_path, **{section: f"{key} = {value}"})
    lines = raw_problems(path)
    name = f"{'vip[0]' if section == 'vip' else section}.{key}"
    assert len(lines) == 1, lines
    assert f": {name}: must be a{'n' if want[0] in 'aeiou' else ''} {want}, not " in lines[0], \
        lines[0]


@pytest.mark.parametrize("key, value", [
    ("master", "1"), ("master", "[]"), ("address", "{}"), ("interface", "2"), ("address", "[1]"),
])
def test_wrong_type_for_required_vip_keys(tmp_path, key, value):
    body = MINIMAL.format(sentinel="", agent="", actions="", redis="", vip="")
    line = {"master": 'master = "m"', "address": 'address = "198.51.100.250/24"',
            "interface": 'interface = "eth1"'}[key]
    one_problem(raw_config(tmp_path, body.replace(line, f"{key} = {value}")), f"vip[0].{key}",
                "must be a string, not")


@pytest.mark.parametrize("body, key, words", [
    ('sentinel = 1\n[[vip]]\nmaster="m"\naddress="198.51.100.250/24"\ninterface="e"', "sentinel",
     "must be a table, not an integer"),
    ('vip = "x"\n[sentinel]\naddresses=["198.51.100.1:1"]', "vip",
     "must be an array of tables ([[vip]]), not a string"),
    ('vip = [1]\n[sentinel]\naddresses=["198.51.100.1:1"]', "vip[0]",
     "must be a table ([[vip]]), not an integer"),
    ('vip = []\n[sentinel]\naddresses=["198.51.100.1:1"]', "vip", "no [[vip]] block"),
    (('log = []\n[sentinel]\naddresses=["198.51.100.1:1"]\n[[vip]]\nmaster="m"\n'
      'address="198.51.100.250/24"\ninterface="e"'), "log", "must be a table, not an array"),
    (('[log]\nlevel = {}\n[sentinel]\naddresses=["198.51.100.1:1"]\n[[vip]]\nmaster="m"\n'
      'address="198.51.100.250/24"\ninterface="e"'), "log.level", "must be a string, not a table"),
])
def test_wrong_type_for_sections(tmp_path, body, key, words):
    one_problem(raw_config(tmp_path, body), key, words)


@pytest.mark.parametrize("address, words", [
    ("a b:26379", "not a host name"), ("a..b:26379", "not a host name"),
    (f"{'x' * 64}.example:26379", "not a host name"),   # idna raises UnicodeError on connect
    ("[zz::1]:26379", "not an IPv6 address"), ("host:" + "9" * 5000, "not 1-65535"),
    ("host:٢٦٣٧٩", "not host:port"),                    # \d would take Arabic-Indic digits
    ("host\\u001b:1", "not a host name"),
])
def test_sentinel_addresses_are_hosts_and_ports(tmp_path, address, words):
    body = MINIMAL.format(sentinel="", agent="", actions="", redis="", vip="").replace(
        "198.51.100.11:26379", address)
    line = one_problem(raw_config(tmp_path, body), "sentinel.addresses[0]", words)
    assert len(line) < 300


def test_sentinel_host_names_still_load(tmp_path):
    body = MINIMAL.format(sentinel="", agent="", actions="", redis="", vip="").replace(
        '"198.51.100.11:26379"', '"sentinel-1.example.:26379", "redis_a:1", "[2001:db8::1]:2"')
    cfg = config_mod.load(raw_config(tmp_path, body))
    assert [str(e) for e in cfg.sentinel.addresses] == [
        "sentinel-1.example.:26379", "redis_a:1", "[2001:db8::1]:2"]


def test_problem_lines_escape_control_characters(tmp_path):
    """A value or key from the file is quoted with its control characters escaped:
    an ESC must not colour the terminal, a \\u2028 must not split a problem line."""
    path = raw_config(tmp_path, MINIMAL.format(
        sentinel='"\\u001b[2J" = 1', agent='on_quorum_loss = "\\u001b[31mred"',
        actions="", redis="", vip='"k\\u2028\\u0085" = 2').replace(
            'master = "m"', 'master = "m\\u001b"'))
    lines = raw_problems(path)
    assert len(lines) == 4, lines
    text = "\n".join(lines)
    assert "\x1b" not in text and "\u2028" not in text and "\\x1b[2J" in text
    assert "\\u2028" in text and "\\x85" in text
    assert len(str(ConfigError(lines)).splitlines()) == 4


def test_long_values_are_quoted_short(tmp_path):
    lines = raw_problems(raw_config(tmp_path, agent=f'on_quorum_loss = "{"x" * 10000}"\n'
                                                    f'"{"k" * 10000}" = 1'))
    assert len(lines) == 2 and all(len(line) < 300 for line in lines), lines


def test_cli_check_config_huge_number_exits_2_one_line(tmp_path):
    from typer.testing import CliRunner

    from vipfloat import cli
    path = raw_config(tmp_path, agent=f"reconcile_interval = {HUGE}")
    result = CliRunner().invoke(cli.app, ["check-config", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        (f"vipfloat: {path}: agent.reconcile_interval: must be between 0.05 and 2, not an "
         "integer of about 400 digits")]


# --- password files -------------------------------------------------------------------

def test_password_file_that_is_not_a_password(tmp_path):
    cases = {"binary": b"\xff\xfehunter2\n", "nul": b"hun\x00ter2\n",
             "huge": b"x" * (config_mod.MAX_SECRET_BYTES + 1)}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "dir").mkdir()
    for name, words in [("binary", "not UTF-8 text"), ("nul", "contains a NUL"),
                        ("huge", "larger than 64 KiB"), ("dir", "Is a directory")]:
        line = one_problem(raw_config(tmp_path, redis=f'password_file = "{tmp_path / name}"'),
                           "redis.password_file", words)
        assert f"cannot read {tmp_path / name}: " in line and "hunter" not in line


def test_password_file_fifo_does_not_hang(tmp_path):
    import os
    import signal

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def hung(*_):
        raise TimeoutError("load() blocked opening a FIFO")
    old = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        one_problem(raw_config(tmp_path, sentinel=f'password_file = "{fifo}"'),
                    "sentinel.password_file", "not a regular file")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_inline_password_with_nul_never_echoed(tmp_path):
    line = one_problem(raw_config(tmp_path, sentinel='password = "s3cret\\u0000"'),
                       "sentinel.password", "NUL")
    assert "s3cret" not in line


def test_secrets_false_records_password_file_unread(tmp_path):
    """The hook's direct path never talks to Redis: an unreadable password file must
    not make it exit 2 (Sentinel never retries that)."""
    pw = tmp_path / "sentinel.pass"
    path = raw_config(tmp_path, sentinel=f'password_file = "{pw}"',
                      redis='password = "inline-pass"')
    # At load, for check-config and the agent: a config error.
    one_problem(path, "sentinel.password_file", f"cannot read {pw}: No such file or directory")
    cfg = config_mod.load(path, secrets=False)
    secret = cfg.sentinel.password
    assert secret.file == pw and cfg.redis.password.value == "inline-pass"
    assert cfg.redis.password.file is None
    # Read on first use: still missing, a ConfigError naming the config, the key and the file.
    with pytest.raises(ConfigError) as info:
        _ = secret.value
    assert info.value.problems == [
        f"{path}: sentinel.password_file: cannot read {pw}: No such file or directory"]
    pw.write_text("s3cret-value\r\n")
    assert secret.value == "s3cret-value"
    pw.write_text("changed")
    assert secret.value == "s3cret-value"  # read once, like the rest of the config
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(secret)


def test_secret_is_immutable_and_compares_by_value_or_file(tmp_path):
    a = config_mod.Secret("x")
    assert a == config_mod.Secret("x") and a != config_mod.Secret("y")
    assert hash(a) == hash(config_mod.Secret("x"))
    lazy = config_mod.Secret(file=tmp_path / "p")
    assert lazy == config_mod.Secret(file=tmp_path / "p") and lazy != a
    with pytest.raises(AttributeError):
        a.value = "y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a._value = "y"
    with pytest.raises(TypeError):
        config_mod.Secret()
    assert repr(a) == str(lazy) == "Secret('***')"
    import copy
    import pickle
    for secret in (a, lazy):
        assert copy.deepcopy(secret) is secret
        assert pickle.loads(pickle.dumps(secret)) == secret
    assert pickle.loads(pickle.dumps(lazy)).file == tmp_path / "p"  # still unread


# --- defaults, stated once ------------------------------------------------------------

REQUIRED = object()
# Every field of every section with its default, written out: changing a default (or
# adding a field) must be a visible decision in this table, never a side effect.
DEFAULTS = {
    config_mod.SentinelConfig: {"addresses": REQUIRED, "username": None, "password": None,
                                "timeout": 0.5},
    config_mod.RedisConfig: {"username": None, "password": None, "timeout": 0.5},
    config_mod.AgentConfig: {
        "socket": Path("/run/vipfloat/agent.sock"), "state_dir": Path("/run/vipfloat"),
        "lock_timeout": 10.0, "retry_timeout": 5.0, "socket_group": None,
        "reconcile_interval": 2.0, "on_quorum_loss": config_mod.QuorumPolicy.RELEASE,
        "quorum_loss_grace": None,
        "release_wait": 1.0, "reset_connections": True, "release_on_stop": False,
        "conflict_probe_interval": 10.0, "announce_refresh": 0.0, "metrics_listen": None,
        "hook_timeout": 10.0, "early_bind": True, "failover_write_hold": 2.0},
    config_mod.ActionsConfig: {"scripts_dir": Path("/etc/vipfloat/actions.d"), "timeout": 10.0,
                               "pre_release_dir": Path("/etc/vipfloat/pre-release.d")},
    config_mod.VipConfig: {"master": REQUIRED, "address": REQUIRED, "interface": REQUIRED,
                           "local_addresses": (), "announce_count": 5, "announce_interval": 1.1,
                           "crash_failover": False},
}


@pytest.mark.parametrize("cls", list(DEFAULTS), ids=lambda cls: cls.__name__)
def test_defaults_are_stated_once_and_unchanged(cls):
    import dataclasses
    actual = {f.name: REQUIRED if f.default is dataclasses.MISSING else f.default
              for f in dataclasses.fields(cls)}
    assert actual == DEFAULTS[cls]
    for name, value in actual.items():  # == would let 1 pass for True, or 5.0 for 5
        assert type(value) is type(DEFAULTS[cls][name]), name


def test_loader_applies_the_dataclass_defaults(tmp_path):
    """The loader takes each default from the dataclass, never a copy of its own."""
    cfg = config_mod.load(raw_config(tmp_path))
    assert cfg.agent == config_mod.AgentConfig()
    assert cfg.actions == config_mod.ActionsConfig()
    assert cfg.redis == config_mod.RedisConfig()
    assert cfg.sentinel.timeout == DEFAULTS[config_mod.SentinelConfig]["timeout"]
    assert (cfg.sentinel.username, cfg.sentinel.password) == (None, None)
    vip = cfg.vips[0]
    assert (vip.local_addresses, vip.announce_count, vip.announce_interval) == ((), 5, 1.1)
    assert cfg.log_level == "info"


def test_a_fifo_at_the_configs_path_is_refused_not_waited_on(tmp_path):
    # check-config, the agent's start and its reload opened it and blocked for ever.
    import os
    import threading

    fifo = tmp_path / "vipfloat.toml"
    os.mkfifo(fifo)
    outcome: list[object] = []
    t = threading.Thread(target=lambda: outcome.append(_load_error(fifo)), daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "loading a FIFO blocked"
    assert outcome == [[f"{fifo}: cannot read config: not a regular file"]]


def _load_error(path):
    from vipfloat import config as config_mod
    from vipfloat.errors import ConfigError

    try:
        config_mod.load(path)
    except ConfigError as exc:
        return exc.problems
    return None


@pytest.mark.parametrize("n, want", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_a_majority_of_n_sentinels(n, want):
    # One definition for decide, authority and doctor: an even count needs more
    # than half (2 of 2, 3 of 4), which the tests with 3 Sentinels never showed.
    from vipfloat.config import majority
    from vipfloat.decide import Quorum

    assert majority(n) == want == Quorum(reachable=0, configured=n).majority


def test_hostport_brackets_ipv6_only():
    from vipfloat.config import hostport

    assert hostport("198.51.100.12", 6379) == "198.51.100.12:6379"
    assert hostport("2001:db8::12", 6379) == "[2001:db8::12]:6379"
    assert hostport("redis-b.example", "6379") == "redis-b.example:6379"


def documented_defaults() -> dict[tuple[str, str], object]:
    """Every `key = value` of examples/vipfloat.toml, commented out or not, per
    section: the defaults an operator reads (the first [[vip]] block only)."""
    import re
    import tomllib
    text = (Path(__file__).resolve().parents[2] / "examples" / "vipfloat.toml").read_text()
    section, seen, out = "", set(), {}
    for line in text.splitlines():
        header = re.match(r"#?\s*\[\[?(\w+)\]\]?", line)
        if header:
            section = header.group(1)
            if section in seen:          # a second [[vip]] example
                section = "-"
            seen.add(section)
            continue
        pair = re.match(r"#?\s*(\w+) = (.+?)\s*(#.*)?$", line)
        if pair and section != "-":
            out[(section, pair.group(1))] = tomllib.loads(f"x = {pair.group(2)}")["x"]
    return out


@pytest.mark.parametrize("cls, section", [
    (config_mod.SentinelConfig, "sentinel"), (config_mod.RedisConfig, "redis"),
    (config_mod.AgentConfig, "agent"), (config_mod.ActionsConfig, "actions"),
    (config_mod.VipConfig, "vip")], ids=lambda x: getattr(x, "__name__", x))
def test_the_example_config_documents_every_default(cls, section):
    """A default changed in the code but not in examples/vipfloat.toml (the file
    the README sends operators to) fails here. Fields without a default (None:
    the example shows a sample value instead) are checked only for presence."""
    documented = documented_defaults()
    for name, default in DEFAULTS[cls].items():
        if name in ("password", "address", "addresses", "master", "interface"):
            continue                                  # secrets and required: no default
        assert (section, name) in documented, f"{section}.{name} is not in the example"
        if default is not None and default is not REQUIRED and default != ():
            value = documented[(section, name)]
            assert value == (str(default) if isinstance(default, Path) else default), \
                f"{section}.{name}: example says {value!r}, the code {default!r}"


def test_early_bind_write_hold_and_crash_failover(write_config):
    from tests.unit.conftest import BASE

    cfg = config_mod.load(write_config())
    assert (cfg.agent.early_bind, cfg.agent.failover_write_hold) == (True, 2.0)
    assert [v.crash_failover for v in cfg.vips] == [False, False]
    text = BASE.replace("[agent]\n", "[agent]\nearly_bind = false\nfailover_write_hold = 0\n")
    text = text.replace('interface = "eth1"\n', 'interface = "eth1"\ncrash_failover = true\n', 1)
    cfg = config_mod.load(write_config(text))
    assert (cfg.agent.early_bind, cfg.agent.failover_write_hold) == (False, 0.0)
    assert [v.crash_failover for v in cfg.vips] == [True, False]
    for ok in ("0.1", "30"):
        assert config_mod.load(write_config(BASE.replace(
            "[agent]\n", f"[agent]\nfailover_write_hold = {ok}\n"))).agent.failover_write_hold \
            == float(ok)
    for bad in ("0.09", "30.5"):
        with pytest.raises(config_mod.ConfigError) as err:
            config_mod.load(write_config(BASE.replace(
                "[agent]\n", f"[agent]\nfailover_write_hold = {bad}\n")))
        assert "agent.failover_write_hold: must be 0 (off) or between 0.1 and 30" in str(err.value)
