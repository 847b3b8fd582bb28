"""vipfloat doctor: every check over hand-built facts (healthy, then one fault at
a time), the parsers, and the CLI's exit codes."""

from __future__ import annotations

import ipaddress
import json
import stat
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from vipfloat.cli import app
from vipfloat.doctor import checks
from vipfloat.doctor.checks import Level, listens_on, may, run_checks
from vipfloat.doctor.facts import (Facts, PathFacts, PendingScript, ProcessFacts, RedisFacts,
                                   SentinelFacts, SentinelMasterFacts, UnitFacts, VipFacts)
from vipfloat.doctor.gather import pairs, parse_info, parse_proc_status, script_owners
from vipfloat.doctor.render import exit_code, render_json, render_text
from vipfloat.userscripts import Refusal

HOOK = "/usr/bin/vipfloat-hook"
CAPS = (1 << 12) | (1 << 13)
DIR = (0, 0, stat.S_IFDIR | 0o755)
SCRIPTS, PRE = "/etc/vipfloat/actions.d", "/etc/vipfloat/pre-release.d"


def sentinel(i: int, **master: object) -> SentinelFacts:
    m = SentinelMasterFacts(addr="198.51.100.11:6379", config_epoch=3, quorum=2,
                            other_sentinels=2, reconfig_script=HOOK,
                            ckquorum="OK 3 usable Sentinels", ckquorum_ok=True)
    return SentinelFacts(f"198.51.100.1{i}:26379", True, version="7.0.15", tilt=False,
                         pid=100 + i, local=i == 1, masters={"mymaster": replace(m, **master)})


def redis(addr: str, role: str, **kw: object) -> RedisFacts:
    base = RedisFacts(addr, role, True, version="7.0.15", requirepass=True, masterauth=True,
                      bind=("*", "-::*"), protected_mode=True,
                      link_up=True if role == "replica" else None,
                      lag_bytes=0 if role == "replica" else None)
    return replace(base, **kw)


def healthy() -> Facts:
    return Facts(
        configured_sentinels=3,
        sentinels=(sentinel(1), sentinel(2), sentinel(3)),
        redis={"mymaster": (redis("198.51.100.11:6379", "master"),
                            redis("198.51.100.12:6379", "replica"),
                            redis("198.51.100.13:6379", "replica"))},
        vips=(VipFacts("mymaster", "198.51.100.250/24", "eth1", True, True, True,
                       "198.51.100.11:6379", True, True, "master is here and holds the VIP",
                       answered_by=()),),
        # Least-privilege, the default: Sentinel (Debian's unit, empty bounding set)
        # and its hook hold no capability; the agent alone moves the VIP.
        sentinel_process=ProcessFacts("redis-sentinel", 101, 106, (110, 996), 0, 0, 0),
        agent_process=ProcessFacts("vipfloat watch", 200, 995, (996,), CAPS, CAPS, CAPS),
        socket=PathFacts("/run/vipfloat/agent.sock", True, 0, 996, stat.S_IFSOCK | 0o660,
                         (DIR, DIR, (0, 996, stat.S_IFDIR | 0o2770))),
        hook_paths={HOOK: PathFacts(HOOK, True, 0, 0, stat.S_IFREG | 0o755, (DIR, DIR))},
        action_scripts={SCRIPTS: (), PRE: ()},
        write_hold=2.0,
    )


def direct(facts: Facts) -> Facts:
    """The opt-in direct mode: the drop-in grants Sentinel both capabilities."""
    return replace(facts, sentinel_process=replace(facts.sentinel_process, cap_eff=CAPS,
                                                   cap_amb=CAPS, cap_bnd=CAPS))


def found(facts: Facts, level: Level = Level.PROBLEM) -> list[tuple[str, str]]:
    return [(f.check, f.subject) for f in run_checks(facts) if f.level is level]


def test_a_healthy_setup_has_no_problem_and_no_warning():
    findings = run_checks(healthy())
    assert [f for f in findings if f.level is not Level.OK] == []
    # Every check had something to say about a complete setup.
    assert {f.check for f in findings} >= {
        "sentinel.count", "sentinel.reachable", "sentinel.agree", "sentinel.peers",
        "sentinel.ckquorum", "sentinel.quorum", "sentinel.script", "redis.reachable",
        "redis.masterauth", "redis.bind", "redis.protected_mode", "redis.link",
        "host.interface", "host.vip", "host.mode", "host.caps.agent", "host.socket",
        "host.hook_path", "host.scripts", "redis.write_hold"}
    assert exit_code(findings) == 0


def test_a_redis_without_client_pause_write_is_warned_of_when_writes_are_held():
    old = with_redis(healthy(), 0, version="6.0.16")
    assert found(old, Level.WARNING) == [("redis.write_hold", "redis 198.51.100.11:6379 "
                                                           "(mymaster master)")]
    assert found(with_redis(healthy(), 0, version="6.2.0"), Level.WARNING) == []
    assert found(replace(old, write_hold=0.0), Level.WARNING) == []
    assert found(with_redis(healthy(), 0, version="unknown"), Level.WARNING) == []
    assert not [f for f in run_checks(replace(healthy(), write_hold=0.0))
                if f.check == "redis.write_hold"]


def with_sentinel(facts: Facts, index: int, s: SentinelFacts) -> Facts:
    ss = list(facts.sentinels)
    ss[index] = s
    return replace(facts, sentinels=tuple(ss))


def with_redis(facts: Facts, index: int, **kw: object) -> Facts:
    rs = list(facts.redis["mymaster"])
    rs[index] = replace(rs[index], **kw)
    return replace(facts, redis={"mymaster": tuple(rs)})


FAULTS = {
    "two sentinels": (lambda f: replace(f, configured_sentinels=2,
                                        sentinels=f.sentinels[:2]),
                      Level.PROBLEM, "sentinel.count"),
    "sentinel down": (lambda f: with_sentinel(f, 2, SentinelFacts(
        "198.51.100.13:26379", False, error="Connection refused")),
                      Level.PROBLEM, "sentinel.reachable"),
    "disagreement": (lambda f: with_sentinel(f, 2, sentinel(3, addr="198.51.100.12:6379",
                                                            config_epoch=2)),
                     Level.WARNING, "sentinel.agree"),
    "unknown master": (lambda f: replace(f, sentinels=tuple(
        replace(s, masters={"mymaster": SentinelMasterFacts(error="No such master")})
        for s in f.sentinels)), Level.PROBLEM, "sentinel.agree"),
    "isolated sentinel": (lambda f: with_sentinel(f, 0, sentinel(1, other_sentinels=0)),
                          Level.PROBLEM, "sentinel.peers"),
    "one peer missing": (lambda f: with_sentinel(f, 0, sentinel(1, other_sentinels=1)),
                         Level.WARNING, "sentinel.peers"),
    "ckquorum": (lambda f: with_sentinel(f, 0, sentinel(
        1, ckquorum="NOQUORUM 1 usable Sentinels", ckquorum_ok=False)),
                 Level.PROBLEM, "sentinel.ckquorum"),
    "quorum above majority": (lambda f: with_sentinel(f, 0, sentinel(1, quorum=3)),
                              Level.PROBLEM, "sentinel.quorum"),
    "tilt": (lambda f: with_sentinel(f, 1, replace(sentinel(2), tilt=True)),
             Level.PROBLEM, "sentinel.tilt"),
    "no hook": (lambda f: with_sentinel(f, 1, sentinel(2, reconfig_script=None)),
                Level.WARNING, "sentinel.script"),
    "another script": (lambda f: with_sentinel(f, 1, sentinel(
        2, reconfig_script="/etc/redis/notify_mymaster.sh")), Level.WARNING, "sentinel.script"),
    "scripts retried": (lambda f: with_sentinel(f, 1, replace(sentinel(2), pending=(
        PendingScript(("/usr/bin/vipfloat-hook", "mymaster"), 2),))),
                        Level.WARNING, "sentinel.pending"),
    "redis 5.0": (lambda f: with_sentinel(f, 1, replace(sentinel(2), version="5.0.7")),
                  Level.WARNING, "sentinel.version"),
    "redis unreachable": (lambda f: with_redis(f, 1, reachable=False, error="NOAUTH"),
                          Level.PROBLEM, "redis.reachable"),
    "masterauth missing": (lambda f: with_redis(f, 2, masterauth=False),
                           Level.PROBLEM, "redis.masterauth"),
    "bound to one address": (lambda f: with_redis(f, 0, bind=("198.51.100.11",)),
                             Level.PROBLEM, "redis.bind"),
    "protected without password": (lambda f: with_redis(f, 0, requirepass=False,
                                                        masterauth=False),
                                   Level.PROBLEM, "redis.protected_mode"),
    "link down": (lambda f: with_redis(f, 1, link_up=False), Level.PROBLEM, "redis.link"),
    "lagging": (lambda f: with_redis(f, 1, lag_bytes=50 << 20), Level.WARNING, "redis.lag"),
    "second holder": (lambda f: replace(f, vips=(replace(f.vips[0], answered_by=(
        "02:00:00:00:00:13",)),)), Level.PROBLEM, "vip.wire"),
    "two holders elsewhere": (lambda f: replace(f, vips=(replace(
        f.vips[0], bound_here=False, consistent=True,
        answered_by=("02:00:00:00:00:12", "02:00:00:00:00:13")),)), Level.PROBLEM, "vip.wire"),
    "nobody answers": (lambda f: replace(f, vips=(replace(
        f.vips[0], bound_here=False, master_is_local=False, master_addr="198.51.100.12:6379",
        answered_by=()),)), Level.WARNING, "vip.wire"),
    "no interface": (lambda f: replace(f, vips=(replace(f.vips[0], interface_exists=False,
                                                        interface_up=False),)),
                     Level.PROBLEM, "host.interface"),
    "interface down": (lambda f: replace(f, vips=(replace(f.vips[0], interface_up=False),)),
                       Level.PROBLEM, "host.interface"),
    "vip misplaced": (lambda f: replace(f, vips=(replace(
        f.vips[0], consistent=False, note="VIP bound here but the master is elsewhere"),)),
                      Level.PROBLEM, "host.vip"),
    "direct mode": (direct, Level.WARNING, "host.mode"),
    "half direct mode": (lambda f: replace(f, sentinel_process=replace(
        f.sentinel_process, cap_eff=1 << 12, cap_amb=1 << 12)), Level.PROBLEM, "host.mode"),
    "no agent": (lambda f: replace(f, agent_process=None), Level.PROBLEM, "host.mode"),
    "agent without caps": (lambda f: replace(f, agent_process=replace(
        f.agent_process, cap_eff=1 << 12)), Level.PROBLEM, "host.caps.agent"),
    "socket not in sentinel's group": (lambda f: replace(f, sentinel_process=replace(
        f.sentinel_process, gids=(110,))), Level.WARNING, "host.socket"),
    "hook path missing": (lambda f: replace(f, hook_paths={HOOK: PathFacts(HOOK, False)}),
                          Level.PROBLEM, "host.hook_path"),
    "hook not executable": (lambda f: replace(f, hook_paths={HOOK: PathFacts(
        HOOK, True, 0, 0, stat.S_IFREG | 0o700, (DIR, DIR))}), Level.PROBLEM, "host.hook_path"),
    "hook on a noexec mount in sentinel's namespace": (
        lambda f: replace(f, hook_noexec={HOOK: "/"}), Level.PROBLEM, "host.hook_path"),
    "unsafe action script": (lambda f: replace(f, action_scripts={SCRIPTS: (Refusal(
        Path(SCRIPTS, "10-x"), "world-writable (mode 0757)", f"chmod go-w {SCRIPTS}/10-x"),),
        PRE: ()}), Level.PROBLEM, "host.scripts"),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_each_planted_fault_is_reported_at_its_level(name):
    plant, level, check = FAULTS[name]
    findings = run_checks(plant(healthy()))
    bad = [f for f in findings if f.level is not Level.OK]
    assert [(f.level, f.check) for f in bad] == [(level, check)], bad
    assert bad[0].fix, "every warning and problem says how to fix it"
    assert exit_code(findings) == (1 if level is Level.PROBLEM else 0)


SENTINEL = ProcessFacts("redis-sentinel", 101, 106, (110,), 0, 0, 0)
ADMIN, RAW = 1 << 12, 1 << 13


@pytest.mark.parametrize("proc,mode", [
    (SENTINEL, "least-privilege"),
    (replace(SENTINEL, cap_bnd=CAPS), "least-privilege"),    # bounding alone grants nothing
    (replace(SENTINEL, cap_eff=CAPS, cap_amb=CAPS, cap_bnd=CAPS), "direct"),
    (replace(SENTINEL, cap_amb=CAPS), "direct"),             # its hook would get both
    (replace(SENTINEL, cap_eff=CAPS), "direct"),             # Sentinel itself has both
    (replace(SENTINEL, cap_eff=ADMIN, cap_amb=ADMIN), "half"),
    (replace(SENTINEL, uid=0, cap_bnd=CAPS), "direct"),      # root's children: bounding set
    (replace(SENTINEL, uid=0, cap_eff=(1 << 41) - 1, cap_bnd=(1 << 41) - 1), "direct"),
    (replace(SENTINEL, uid=0, cap_bnd=RAW, cap_eff=RAW), "half"),
])
def test_privilege_mode(proc, mode):
    assert checks.privilege_mode(proc) == mode


def findings(facts: Facts, check: str) -> list[tuple[Level, str, str, str]]:
    return [(f.level, f.subject, f.message, f.fix) for f in run_checks(facts)
            if f.check == check]


SUBJECT = "redis-sentinel (pid 101, uid 106)"
DROPIN = "/lib/systemd/system/redis-sentinel.service.d/vipfloat.conf"
DIRECT_FIX = ("Unless the hook must move the VIP with no agent running, remove "
              "/etc/systemd/system/redis-sentinel.service.d/vipfloat.conf so that the default "
              f"drop-in {DROPIN} (no capabilities) applies, and restart redis-sentinel.")


@pytest.mark.parametrize("name,plant,expected", [
    ("least-privilege", lambda f: f, [
        (Level.OK, SUBJECT, "least-privilege mode: Sentinel and its hook hold no capabilities; "
         "only the agent moves the VIP", "")]),
    ("least-privilege without agent", lambda f: replace(f, agent_process=None), [
        (Level.OK, SUBJECT, "least-privilege mode: Sentinel and its hook hold no capabilities; "
         "only the agent moves the VIP", ""),
        (Level.PROBLEM, "vipfloat watch",
         "no agent answers: in least-privilege mode nothing moves the VIP",
         "systemctl enable --now vipfloat")]),
    ("direct", direct, [
        (Level.WARNING, SUBJECT, "direct mode (opt-in): Sentinel holds CAP_NET_ADMIN and "
         "CAP_NET_RAW, so a compromised Sentinel can change this host's addresses",
         DIRECT_FIX)]),
    ("direct without agent", lambda f: replace(direct(f), agent_process=None), [
        (Level.WARNING, SUBJECT, "direct mode (opt-in): Sentinel holds CAP_NET_ADMIN and "
         "CAP_NET_RAW, so a compromised Sentinel can change this host's addresses",
         DIRECT_FIX)]),
    ("half: admin only", lambda f: replace(f, sentinel_process=replace(
        f.sentinel_process, cap_eff=ADMIN, cap_amb=ADMIN)), [
        (Level.PROBLEM, SUBJECT, "half-configured: Sentinel holds CAP_NET_ADMIN but not "
         "CAP_NET_RAW, neither least-privilege (none) nor direct mode (both)",
         f"Install the default drop-in {DROPIN} (no capabilities), or the direct-mode one "
         "(both), and restart redis-sentinel.")]),
    ("half: raw only", lambda f: replace(f, sentinel_process=replace(
        f.sentinel_process, cap_amb=RAW)), [
        (Level.PROBLEM, SUBJECT, "half-configured: Sentinel holds CAP_NET_RAW but not "
         "CAP_NET_ADMIN, neither least-privilege (none) nor direct mode (both)",
         f"Install the default drop-in {DROPIN} (no capabilities), or the direct-mode one "
         "(both), and restart redis-sentinel.")]),
    ("no sentinel here", lambda f: replace(f, sentinel_process=None), [
        (Level.WARNING, "this host", "no Sentinel found on this host",
         "Run doctor on a Sentinel host to check which privilege mode it is in.")]),
])
def test_host_mode(name, plant, expected):
    assert findings(plant(healthy()), "host.mode") == expected


def test_no_agent_is_said_once_in_least_privilege_mode_and_as_before_in_direct_mode():
    least = replace(healthy(), agent_process=None)
    assert findings(least, "host.caps.agent") == []          # host.mode said it, a problem
    assert findings(direct(least), "host.caps.agent") == [
        (Level.WARNING, "vipfloat watch", "no agent answers on the socket",
         "systemctl enable --now vipfloat: without the agent nothing fixes a missed or "
         "failed hook run, and an isolated master keeps its VIP.")]


def test_socket_out_of_reach_says_what_it_costs_in_each_mode():
    far = replace(healthy(), sentinel_process=replace(healthy().sentinel_process, gids=(110,)))
    [(level, _, message, _)] = findings(far, "host.socket")
    assert (level, message) == (Level.WARNING, "Sentinel's user (uid 106) cannot connect: its "
                                "hook cannot hand over and exits 1 every time (Sentinel "
                                "retries it)")
    far = replace(direct(healthy()), sentinel_process=replace(
        direct(healthy()).sentinel_process, gids=(110,)))
    [(level, _, message, _)] = findings(far, "host.socket")
    assert (level, message) == (Level.WARNING, "Sentinel's user (uid 106) cannot connect: the "
                                "hook acts itself (about 5x slower)")


def test_host_scripts_reports_each_refusal_with_its_fix():
    refused = replace(healthy(), action_scripts={
        SCRIPTS: (Refusal(Path(SCRIPTS, "10-flush"), "owned by uid 65534 (only root or uid 995 "
                          "may own it), world-writable (mode 0757)",
                          f"chown root {SCRIPTS}/10-flush && chmod go-w {SCRIPTS}/10-flush"),
                  Refusal(Path(SCRIPTS, "20-link"), "a symbolic link (links are not followed)",
                          "replace the link with a copy of the script it points to")),
        PRE: (Refusal(Path(PRE), "the directory is group-writable (mode 0775)",
                      f"chmod go-w {PRE}"),)})
    assert findings(refused, "host.scripts") == [
        (Level.PROBLEM, f"action script {SCRIPTS}/10-flush", "not run: owned by uid 65534 (only "
         "root or uid 995 may own it), world-writable (mode 0757)",
         f"chown root {SCRIPTS}/10-flush && chmod go-w {SCRIPTS}/10-flush"),
        (Level.PROBLEM, f"action script {SCRIPTS}/20-link",
         "not run: a symbolic link (links are not followed)",
         "replace the link with a copy of the script it points to"),
        (Level.PROBLEM, f"action scripts {PRE}",
         "not run: the directory is group-writable (mode 0775)", f"chmod go-w {PRE}")]
    assert findings(healthy(), "host.scripts") == [
        (Level.OK, f"action scripts {SCRIPTS}", "no unsafe script or directory", ""),
        (Level.OK, f"action scripts {PRE}", "no unsafe script or directory", "")]


@pytest.mark.parametrize("runners,owners", [
    (set(), {0}), ({995}, {0, 995}), ({0}, {0}), ({995, 106}, {0})])
def test_script_owners_suit_every_runner(runners, owners):
    assert script_owners(runners) == owners


def test_doctor_judges_scripts_for_the_agents_user_not_its_own(tmp_path):
    from vipfloat.doctor.gather import action_scripts

    scripts_dir = tmp_path / "actions.d"
    scripts_dir.mkdir()
    scripts_dir.chmod(0o777)
    config = SimpleNamespace(actions=SimpleNamespace(scripts_dir=scripts_dir,
                                                     pre_release_dir=tmp_path / "absent"))
    agent = ProcessFacts("vipfloat watch", 200, 995, (996,), CAPS, CAPS, CAPS)
    assert action_scripts(config, agent, None, SENTINEL) == {
        str(scripts_dir): (Refusal(
            scripts_dir, "the directory is group- and world-writable (mode 0777)",
            f"chmod go-w {scripts_dir}"),),
        str(tmp_path / "absent"): ()}


@pytest.mark.parametrize("bind,ip,expected", [
    (("*", "-::*"), "198.51.100.250", True),
    (("*",), "2001:db8::250", False),
    (("-::*",), "2001:db8::250", True),
    (("0.0.0.0",), "198.51.100.250", True),
    (("127.0.0.1", "198.51.100.11"), "198.51.100.250", False),
    (("127.0.0.1", "-198.51.100.250"), "198.51.100.250", True),
    ((), "198.51.100.250", True),
])
def test_listens_on(bind, ip, expected):
    assert listens_on(bind, ipaddress.ip_address(ip)) is expected


def test_may_follows_owner_group_other_and_parent_search():
    sock = PathFacts("/run/x.sock", True, 0, 50, stat.S_IFSOCK | 0o660, (DIR,))
    assert may(sock, 106, (50,), 2)
    assert not may(sock, 106, (60,), 2)
    assert may(sock, 0, (0,), 2)
    closed = replace(sock, parents=((0, 0, stat.S_IFDIR | 0o700),))
    assert not may(closed, 106, (50,), 2)
    assert not may(PathFacts("/nope", False), 0, (0,), 1)
    noexec = PathFacts("/x", True, 0, 0, stat.S_IFREG | 0o644, (DIR,))
    assert not may(noexec, 0, (0,), 1)


def test_parsers():
    assert parse_info("# Server\r\nredis_version:7.0.15\r\nprocess_id:42\r\n") == {
        "redis_version": "7.0.15", "process_id": "42"}
    assert pairs(["a", "1", "b", "2"]) == {"a": "1", "b": "2"}
    assert pairs({"a": "1"}) == {"a": "1"}
    proc = parse_proc_status(
        "Name:\tredis-sentinel\nUid:\t106\t106\t106\t106\nGid:\t110\t110\t110\t110\n"
        "Groups:\t110 996 \nCapEff:\t0000000000000000\nCapAmb:\t0000000000003000\n"
        "CapBnd:\t0000000000003000\n", "redis-sentinel", 7)
    assert (proc.uid, proc.gids, proc.cap_amb, proc.cap_eff) == (106, (110, 996), CAPS, 0)


def test_render_text_puts_problems_first_and_json_round_trips():
    findings = run_checks(FAULTS["masterauth missing"][0](healthy()))
    text = render_text(findings).splitlines()
    assert text[0].startswith("PROBLEM  redis.masterauth")
    assert "fix: Set masterauth" in text[0]
    assert text[-1].startswith("1 problem(s), 0 warning(s)")
    data = json.loads(render_json(findings))
    assert data["ok"] is False
    assert {f["check"] for f in data["findings"] if f["level"] == "problem"} == {
        "redis.masterauth"}


def test_cli_doctor_exit_codes(monkeypatch, write_config):
    runner = CliRunner()
    bad = runner.invoke(app, ["doctor", "--config", "/nonexistent/vipfloat.toml"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    path = write_config()
    monkeypatch.setattr("vipfloat.doctor.gather.gather", lambda cfg: healthy())
    good = runner.invoke(app, ["doctor", "--config", str(path)])
    assert good.exit_code == 0, good.output
    assert "0 problem(s), 0 warning(s)" in good.output
    sick = FAULTS["link down"][0](healthy())
    monkeypatch.setattr("vipfloat.doctor.gather.gather", lambda cfg: sick)
    res = runner.invoke(app, ["doctor", "--json", "--config", str(path)])
    assert res.exit_code == 1
    assert json.loads(res.output)["ok"] is False


def test_installed_unit_is_read_when_no_agent_runs():
    from vipfloat.doctor.gather import parse_unit

    shipped = Path(__file__).resolve().parents[2] / "systemd" / "vipfloat.service"
    unit = parse_unit(str(shipped), [shipped.read_text()])
    assert unit.user == "vipfloat" and unit.ambient == {"cap_net_admin", "cap_net_raw"}
    reset = parse_unit("x", [shipped.read_text(), "[Service]\nAmbientCapabilities=\n"])
    assert reset.ambient == frozenset()

    # Least-privilege: host.mode reports the missing agent; the unit itself is fine.
    no_agent = replace(healthy(), agent_process=None, agent_unit=unit)
    bad = [f for f in run_checks(no_agent) if f.level is not Level.OK]
    assert [(f.level, f.check) for f in bad] == [(Level.PROBLEM, "host.mode")]
    assert findings(no_agent, "host.caps.agent") == [
        (Level.OK, f"unit {shipped}",
         "would run the agent as vipfloat with CAP_NET_ADMIN and CAP_NET_RAW", "")]
    # Direct mode: as before, a warning that names the unit.
    bad = [f for f in run_checks(direct(no_agent)) if f.level is not Level.OK]
    assert [(f.level, f.check) for f in bad] == [(Level.WARNING, "host.mode"),
                                                 (Level.WARNING, "host.caps.agent")]
    stripped = replace(no_agent, agent_unit=UnitFacts("x", "vipfloat", frozenset()))
    assert found(stripped) == [("host.mode", "vipfloat watch"), ("host.caps.agent", "unit x")]



def test_what_the_wire_says_about_the_vip():
    vip = healthy().vips[0]

    def says(**changes):
        facts = replace(healthy(), vips=(replace(vip, **changes),))
        return findings(facts, "vip.wire")

    subject = "vip 198.51.100.250/24 (mymaster) on eth1"
    assert says() == [(Level.OK, subject, "bound here; no other host answers for it", "")]
    assert says(bound_here=False, answered_by=("02:00:00:00:00:12",)) == [
        (Level.OK, subject, "answered by 02:00:00:00:00:12 only", "")]
    assert says(answered_by=None, probe_error="needs CAP_NET_RAW (run as root)") == [
        (Level.OK, subject, "not probed: needs CAP_NET_RAW (run as root)", "")]
    ((level, _, message, fix),) = says(answered_by=("02:00:00:00:00:13",))
    assert (level, message) == (Level.PROBLEM, "answered by 2 hosts (this host, "
                                "02:00:00:00:00:13): more than one holds it, and clients "
                                "reach whichever their cache names")
    assert "vipfloat release --master mymaster" in fix



def test_the_ipv6_probe_comes_from_the_interfaces_link_local_address():
    from vipfloat.doctor.probe import link_local_in

    table = ("00000000000000000000000000000001 01 80 10 80       lo\n"
             "20010db8000000000000000000000011 04 40 00 80     eth1\n"
             "fe8000000000000000fc00fffe000011 04 40 20 80     eth1\n"
             "fe8000000000000000fc00fffe000099 05 40 20 80     eth2\n")
    assert link_local_in(table, "eth1") == "fe80::fc:ff:fe00:11"
    assert link_local_in(table, "eth2") == "fe80::fc:ff:fe00:99"
    assert link_local_in(table, "eth3") is None and link_local_in("garbage", "eth1") is None


def test_crash_failover_is_reported_and_suggested_for_a_master_without_persistence():
    facts = healthy()
    (finding,) = [f for f in run_checks(facts) if f.check == "vip.crash_failover"]
    assert finding.level is Level.OK and "crash_failover off" in finding.message
    volatile = with_redis(facts, 0, persistent=False)
    assert found(volatile, Level.WARNING) == [("vip.crash_failover",
                                               "vip 198.51.100.250/24 (mymaster)")]
    # A replica without persistence is no such danger; nor an unknown setting.
    assert found(with_redis(facts, 1, persistent=False), Level.WARNING) == []
    assert found(with_redis(facts, 0, persistent=None), Level.WARNING) == []
    on = replace(volatile, vips=(replace(volatile.vips[0], crash_failover=True),))
    assert found(on, Level.WARNING) == []
    (finding,) = [f for f in run_checks(on) if f.check == "vip.crash_failover"]
    assert "crash_failover on" in finding.message


# Debian's redis-sentinel.service (NoExecPaths=/, ExecPaths=/usr/bin/redis-sentinel
# /usr/lib /lib) with the vipfloat drop-in, as /proc/PID/mountinfo shows it (cut
# from a Vagrant VM; the file mount is what ExecPaths= of a single file makes).
MOUNTINFO = """\
189 165 254:0 / / ro,nosuid,noexec,relatime shared:54 master:1 - ext4 /dev/vda rw
190 189 0:5 / /dev rw,nosuid,noexec shared:55 master:2 - devtmpfs udev rw
205 189 254:0 /usr/lib /usr/lib ro,nosuid,relatime shared:70 master:1 - ext4 /dev/vda rw
206 189 254:0 /lib /lib ro,nosuid,relatime shared:71 master:1 - ext4 /dev/vda rw
207 189 254:0 /usr/bin/redis-sentinel /usr/bin/redis-sentinel ro,nosuid - ext4 /dev/vda rw
208 189 254:0 /usr/bin/vipfloat-hook /usr/bin/vipfloat-hook ro,nosuid,relatime - ext4 /dev/vda rw
209 189 254:0 /opt/my\\040dir /opt/my\\040dir ro,nosuid,relatime - ext4 /dev/vda rw
210 209 254:0 /opt/my\\040dir/sub /opt/my\\040dir/sub ro,nosuid,noexec - ext4 /dev/vda rw
"""


def test_which_mount_forbids_the_hook_in_sentinels_namespace():
    from vipfloat.doctor.gather import noexec_mount

    # The directory the drop-in allows, and the file an older drop-in allowed.
    assert noexec_mount(MOUNTINFO, "/usr/lib/vipfloat/vipfloat-hook") is None
    assert noexec_mount(MOUNTINFO, "/usr/bin/vipfloat-hook") is None
    # After an upgrade renamed a new file over it the file's mount is gone: the
    # root, mounted noexec, covers it.
    dropped = "\n".join(x for x in MOUNTINFO.splitlines() if "vipfloat-hook" not in x)
    assert noexec_mount(dropped, "/usr/bin/vipfloat-hook") == "/"
    assert noexec_mount(MOUNTINFO, "/usr/local/bin/vipfloat-hook") == "/"
    assert noexec_mount(MOUNTINFO, "/usr/libexec/x") == "/"      # /usr/lib is not a prefix
    # Escaped mount points, and the deepest mount wins whatever its order.
    assert noexec_mount(MOUNTINFO, "/opt/my dir/hook") is None
    assert noexec_mount(MOUNTINFO, "/opt/my dir/sub/hook") == "/opt/my dir/sub"
    backwards = "\n".join(reversed(MOUNTINFO.splitlines()))
    assert noexec_mount(backwards, "/opt/my dir/sub/hook") == "/opt/my dir/sub"
    assert noexec_mount(backwards, "/usr/lib/vipfloat/vipfloat-hook") is None
    # Of two mounts at one point the last listed is on top.
    remounted = MOUNTINFO + "211 205 254:0 /usr/lib /usr/lib ro,noexec - ext4 /dev/vda rw\n"
    assert noexec_mount(remounted, "/usr/lib/vipfloat/vipfloat-hook") == "/usr/lib"
    assert noexec_mount("", "/usr/bin/vipfloat-hook") is None
    assert noexec_mount("short line\n", "/x") is None


def test_the_noexec_finding_says_what_happened_and_how_to_fix_it():
    bad = [f for f in run_checks(replace(healthy(), hook_noexec={HOOK: "/"}))
           if f.level is not Level.OK]
    assert [(f.check, f.subject) for f in bad] == [("host.hook_path", f"hook {HOOK}")]
    assert bad[0].message == (
        "redis-sentinel (pid 101) cannot execute it: in its mount namespace it lies on /, "
        "mounted noexec, so every run fails with -script-error (exit 2, never retried)")
    assert bad[0].fix.startswith("systemctl restart redis-sentinel. If it persists, its unit "
                                 "lacks 'ExecPaths=/usr/lib/vipfloat' (the drop-in "
                                 "/lib/systemd/system/redis-sentinel.service.d/vipfloat.conf)")
