from __future__ import annotations

import ipaddress
import json

from typer.testing import CliRunner

from vipfloat import cli, status
from vipfloat.config import Endpoint
from vipfloat.decide import Binding
from vipfloat.errors import ResolveError
from vipfloat.sentinel import MasterInfo, SentinelAnswer, parse_master_reply

ip = ipaddress.ip_address
HERE = frozenset({ip("198.51.100.11")})


def answer(n: int, host: str | None, epoch: int = 1) -> SentinelAnswer:
    ep = Endpoint(f"198.51.100.{n}", 26379)
    if host is None:
        return SentinelAnswer(ep, error="unreachable: Timeout connecting", reachable=False)
    return SentinelAnswer(ep, MasterInfo("mymaster", host, 6379, epoch, ("master",)))


def literal(host: str) -> frozenset:
    return frozenset({ip(host)})


def test_parse_master_reply():
    reply = ["name", "mymaster", "ip", "198.51.100.12", "port", "6379", "flags", "master,s_down",
             "config-epoch", "7", "down-after-milliseconds", "1500", "quorum", "2", "odd"]
    m = parse_master_reply(reply)
    assert (m.name, m.host, m.port, m.config_epoch, m.flags, m.down_after_ms, m.quorum) == (
        "mymaster", "198.51.100.12", 6379, 7, ("master", "s_down"), 1500, 2)
    assert m.addr == "198.51.100.12:6379"
    assert MasterInfo("x", "2001:db8::1", 6379, 0, ()).addr == "[2001:db8::1]:6379"


def test_master_here_and_bound_is_consistent(cfg):
    s = status.summarise(cfg.vips[0], Binding.PRESENT, HERE,
                         [answer(11, "198.51.100.11"), answer(12, None)], literal)
    assert (s.bound_here, s.master_addr, s.master_is_local, s.consistent) == (
        True, "198.51.100.11:6379", True, True)
    d = s.as_dict()
    assert d["sentinels"][1] == {"address": "198.51.100.12:26379", "reachable": False,
                                 "master_addr": None, "config_epoch": None, "flags": None,
                                 "error": "unreachable: Timeout connecting"}


def test_vip_bound_but_master_elsewhere_is_inconsistent(cfg):
    s = status.summarise(cfg.vips[0], Binding.PRESENT, HERE, [answer(11, "198.51.100.12")],
                         literal)
    assert (s.master_is_local, s.consistent) == (False, False)
    assert s.note == "VIP bound here but the master is elsewhere"


def test_highest_epoch_wins_and_lagging_sentinel_is_named(cfg):
    s = status.summarise(cfg.vips[0], Binding.ABSENT, HERE,
                         [answer(11, "198.51.100.11", 3), answer(12, "198.51.100.12", 4)], literal)
    assert s.master_addr == "198.51.100.12:6379" and s.master_epoch == 4
    assert s.consistent and "lagging Sentinels still name 198.51.100.11:6379" in s.note


def test_no_sentinel_answer_is_not_consistent(cfg):
    s = status.summarise(cfg.vips[0], Binding.ABSENT, HERE, [answer(11, None)], literal)
    assert (s.master_addr, s.consistent) == (None, False)
    assert "0/1 reachable" in s.note


def test_unresolvable_master_is_reported(cfg):
    def fail(host):
        raise ResolveError(f"cannot resolve new master {host!r}")
    s = status.summarise(cfg.vips[0], Binding.ABSENT, HERE, [answer(11, "ghost.invalid")], fail)
    assert not s.consistent and "ghost.invalid" in s.note


def _fake_gather(statuses):
    calls = []

    def gather(config):
        calls.append(config)
        return statuses
    return gather, calls


def test_cli_status_json_and_exit_codes(cfg, write_config, monkeypatch):
    ok = status.summarise(cfg.vips[0], Binding.PRESENT, HERE, [answer(11, "198.51.100.11")],
                          literal)
    bad = status.summarise(cfg.vips[1], Binding.ABSENT, HERE, [answer(11, None)], literal)
    gather, calls = _fake_gather([ok, bad])
    monkeypatch.setattr(status, "gather", gather)
    runner = CliRunner()
    result = runner.invoke(cli.app, ["status", "--json", "--config", str(write_config())])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert [v["master"] for v in data["vips"]] == ["mymaster", "six"]
    assert set(data["vips"][0]) >= {"master", "address", "interface", "bound_here", "master_addr",
                                    "master_is_local", "consistent", "sentinels"}
    assert data["vips"][0]["consistent"] is True and data["vips"][1]["consistent"] is False
    assert len(calls) == 1

    gather, _ = _fake_gather([ok])
    monkeypatch.setattr(status, "gather", gather)
    result = runner.invoke(cli.app, ["status", "--config", str(write_config())])
    assert result.exit_code == 0
    assert "mymaster" in result.stdout and "198.51.100.11:6379" in result.stdout
    assert "sentinel 198.51.100.11:26379: 198.51.100.11:6379 epoch 1" in result.stdout


def test_cli_status_config_error_exits_2(write_config):
    result = CliRunner().invoke(cli.app, ["status", "--config", str(write_config("[x]\n"))])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_cli_check_config(write_config):
    runner = CliRunner()
    good = runner.invoke(cli.app, ["check-config", "-c", str(write_config())])
    assert good.exit_code == 0 and "2 VIP(s)" in good.stdout
    bad = runner.invoke(cli.app, ["check-config", "-c", str(write_config("[sentinel]\nx=1\n"))])
    assert bad.exit_code == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("vipfloat: ") for line in lines)


def test_cli_acquire_unknown_master_exits_2(write_config):
    result = CliRunner().invoke(cli.app, ["acquire", "--master", "nope", "-c",
                                          str(write_config())])
    assert result.exit_code == 2 and "master 'nope' has no [[vip]] block" in result.stderr
