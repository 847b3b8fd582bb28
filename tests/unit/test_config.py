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
     "address='198.51.100.250/24'\ninterface='e'", "sentinel.timeout", "must be a float"),
    ("[sentinel]\naddresses=['198.51.100.1:1']\n[agent]\nlock_timeout=600\n[[vip]]\nmaster='m'\n"
     "address='198.51.100.250/24'\ninterface='e'", "agent.lock_timeout", "between"),
    ("[sentinel]\naddresses=['198.51.100.1:1']\n[log]\nlevel='loud'\n[[vip]]\nmaster='m'\n"
     "address='198.51.100.250/24'\ninterface='e'", "log.level", "must be one of"),
])
def test_single_problem(write_config, text, key, words):
    lines = problems(write_config, text)
    assert len(lines) == 1, lines
    assert f": {key}: " in lines[0] and words in lines[0], lines[0]


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
