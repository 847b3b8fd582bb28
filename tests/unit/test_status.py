from __future__ import annotations

import ipaddress
import json
from dataclasses import replace

import pytest

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


# --- a bad record or agent reply costs a field, never the report ---------------------------

def _ok(cfg, **kw):
    return status.summarise(cfg.vips[0], Binding.PRESENT, HERE, [answer(11, "198.51.100.11")],
                            literal, **kw)


@pytest.mark.parametrize("record", [[1], "x", 3, True, {"action": 1, "reason": ["r"]},
                                    {"action": "acquire", "reason": "m\x1b[2J\nforged"}])
def test_a_malformed_last_action_record_is_no_traceback(cfg, record):
    # record.read_last returns whatever JSON is in the file.
    s = _ok(cfg, last=record)
    text = status.render_table([s])
    assert "Traceback" not in text and "\x1b" not in text
    assert text.count("\n") == status.render_table([_ok(cfg)]).count("\n") + 1  # one line
    json.loads(status.render_json([s]))


def test_last_action_fields_of_the_wrong_type_read_as_absent():
    last = status.clean({"action": "acquire", "reason": 5, "changed": "yes", "time": True,
                         "to": None, "future": {"x": 1}}, status.LAST_FIELDS)
    assert last == {"action": "acquire", "to": None, "future": {"x": 1},
                    "malformed": ["changed", "reason", "time"]}
    assert status.clean([1], status.LAST_FIELDS) is None


@pytest.mark.parametrize("reply", [
    {"pid": 7, "quorum": "x", "vips": {"mymaster": {"held": True}}},
    {"pid": "x", "quorum": {"ok": "yes", "reachable": "2"}, "vips": {"mymaster": []}},
    {"pid": 7, "quorum": [], "vips": {"mymaster": {"held": "no", "last_action": 3,
                                                   "belief": "b", "error": {"a": 1}}}},
    {"pid": 7, "quorum": None, "vips": {"mymaster": {"malformed": 5}}},
])
def test_a_malformed_agent_reply_is_no_traceback(cfg, reply):
    live = status.clean(reply, status.AGENT_FIELDS)
    s = replace(_ok(cfg), agent=status.merge_agent(live, live["vips"]["mymaster"])
                if isinstance(live.get("vips"), dict) else None)
    text = status.render_table([s])
    assert "agent (pid " in text and "Traceback" not in text
    held = reply["vips"]["mymaster"]
    assert ("holds yes" in text) == (isinstance(held, dict) and held.get("held") is True)
    json.loads(status.render_json([s]))


def test_the_table_survives_raw_malformed_agent_views_too(cfg):
    # A VipStatus built elsewhere, not through gather's checks: still no AttributeError.
    for agent in ({"quorum": "x", "pid": 7}, {"quorum": {"ok": True}, "held": "no"},
                  {"quorum": 5, "last_action": ["a"], "conflict_mac": 1, "error": 2}):
        text = status.render_table([replace(_ok(cfg), agent=agent)])
        assert "agent (pid" in text


def test_the_table_shows_what_was_malformed(cfg):
    live = status.clean({"pid": 7, "quorum": "x", "vips": {"mymaster": {"held": 1}}},
                        status.AGENT_FIELDS)
    agent = status.merge_agent(live, live["vips"]["mymaster"])
    assert agent["malformed"] == ["held", "quorum"] and agent["quorum"] is None
    text = status.render_table([replace(_ok(cfg), agent=agent)])
    assert "holds ?" in text and "quorum ?" in text
    assert 'agent reply malformed: held, quorum ignored' in text


def test_gather_with_a_bad_record_and_a_bad_agent_reply(cfg, monkeypatch):
    import vipfloat.agent_client
    import vipfloat.record
    import vipfloat.netlink
    import vipfloat.sentinel

    class Host:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

        def addresses(self):
            return ()

        def link(self, name):
            return None

    monkeypatch.setattr(vipfloat.netlink, "NetlinkHost", Host)
    monkeypatch.setattr(vipfloat.netlink, "binding_of", lambda rows, index, vip: (
        Binding.ABSENT, ""))
    monkeypatch.setattr(vipfloat.sentinel, "ask_all", lambda c, masters: {
        m: (answer(11, "198.51.100.12"),) for m in masters})
    monkeypatch.setattr(vipfloat.record, "read_last", lambda state_dir, master: [1])
    replies = iter([{"pid": 7, "quorum": "x", "vips": {"six": {"held": "x"}}}])
    monkeypatch.setattr(vipfloat.agent_client, "request", lambda *a, **k: next(replies))
    mine, six = status.gather(cfg)
    assert mine.last is None and mine.agent is None   # [1]: no record at all
    assert six.agent["malformed"] == ["held", "quorum"]
    text = status.render_table([mine, six])
    assert "Traceback" not in text and "agent (pid 7): holds ?" in text
    json.loads(status.render_json([mine, six]))


def test_cli_status_with_a_malformed_record_exits_normally(cfg, write_config, monkeypatch):
    s = _ok(cfg, last=[1])
    monkeypatch.setattr(status, "gather", lambda config: [replace(s, agent={"quorum": "x"})])
    result = CliRunner().invoke(cli.app, ["status", "--config", str(write_config())])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "agent (pid -)" in result.stdout


def test_a_sentinels_text_cannot_drive_the_terminal(cfg):
    # A compromised Sentinel (or one spoken to over plain TCP) chooses these.
    evil = "198.51.100.12\x1b[2J\x1b[1;1Hvipfloat: all VIPs consistent\n"
    ep = Endpoint("198.51.100.11", 26379)
    answers = [SentinelAnswer(ep, MasterInfo("mymaster", evil, 6379, 3,
                                             ("master", "\x1b]0;x\x07"))),
               SentinelAnswer(Endpoint("198.51.100.12", 26379), error="ERR \x1b[31mred\r",
                              reachable=False)]
    s = status.summarise(cfg.vips[0], Binding.ABSENT, HERE, answers, lambda host: frozenset())
    out = status.render_table([s])
    assert not any(ord(c) < 0x20 and c != "\n" for c in out), repr(out)
    assert "\x1b" not in out and out.count("\n") == 5
