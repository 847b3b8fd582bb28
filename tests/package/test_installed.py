"""What `apt install ./vipfloat_*.deb` leaves on the host, and what its
maintainer scripts do on an upgrade."""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

from vipfloat.lab.cluster import RedisLab, tool

VENV = Path("/opt/venvs/vipfloat")
CONFIG = Path("/etc/vipfloat/vipfloat.toml")
UNITS = Path("/lib/systemd/system")
DOC = Path("/usr/share/doc/vipfloat")
INFO = Path("/var/lib/dpkg/info")


def run(*argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


def test_the_commands_are_the_packaged_ones():
    assert tool("vipfloat") == "/usr/bin/vipfloat"        # the lab runs these (VIPFLOAT_BIN)
    assert os.readlink("/usr/bin/vipfloat") == str(VENV / "bin" / "vipfloat")
    # /usr/bin's hook leads into the directory Sentinel's drop-in lets it execute.
    assert os.readlink("/usr/bin/vipfloat-hook") == "../lib/vipfloat/vipfloat-hook"
    hook = Path("/usr/lib/vipfloat/vipfloat-hook").read_bytes()
    assert hook[:4] == b"\x7fELF"                          # the C fast hook...
    assert str(VENV / "bin" / "vipfloat-hook").encode() in hook   # ...and its fallback
    # The venv runs on Debian's python3.11, named by version (Depends: python3.11).
    assert os.path.realpath(VENV / "bin" / "python3") == "/usr/bin/python3.11"
    helped = run("/usr/bin/vipfloat", "--help")
    assert helped.returncode == 0 and "switchover" in helped.stdout, helped.stderr
    # Bytecode compiled by postinst: the agent's user cannot write it.
    assert list((VENV / "lib" / "python3.11" / "site-packages" / "vipfloat").glob(
        "__pycache__/agent.cpython-311.pyc"))


def test_user_group_config_and_runtime_directory():
    user = pwd.getpwnam("vipfloat")
    assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin"
    assert user.pw_gid == grp.getgrnam("vipfloat").gr_gid
    st = CONFIG.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, user.pw_gid)
    assert str(CONFIG) in run("dpkg-query", "-W", "-f=${Conffiles}", "vipfloat").stdout
    assert run("dpkg-statoverride", "--list", str(CONFIG)).stdout.split() == [
        "root", "vipfloat", "640", str(CONFIG)]
    st = Path("/run/vipfloat").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, user.pw_uid,
                                                                 user.pw_gid)


def test_the_config_ships_readable_by_root_only_until_postinst_gives_it_to_the_group(deb):
    listing = run("dpkg-deb", "-c", str(deb)).stdout.splitlines()
    entry, = [line for line in listing if line.endswith("./etc/vipfloat/vipfloat.toml")]
    assert entry.startswith("-rw-r----- root/root"), entry


def test_the_shipped_config_keeps_the_agent_from_starting():
    text = CONFIG.read_text()
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines())
    # As the unit runs it: as the agent's user, who must be able to read the file
    # (an unreadable one would start the agent, and it would say why).
    r = run("setpriv", "--reuid=vipfloat", "--regid=vipfloat", "--init-groups",
            "/usr/bin/vipfloat", "is-configured")
    assert r.returncode == 1 and "names no [[vip]] yet" in r.stderr, r
    unit = (UNITS / "vipfloat.service").read_text()
    assert ("ExecCondition=/usr/bin/vipfloat is-configured --config /etc/vipfloat/vipfloat.toml"
            in unit.splitlines())


def test_the_units_and_drop_ins_verify_as_installed():
    assert run("systemd-analyze", "verify", str(UNITS / "vipfloat.service")).returncode == 0
    for sentinel in ("redis-sentinel", "redis-sentinel@", "valkey-sentinel", "valkey-sentinel@"):
        dropin = UNITS / f"{sentinel}.service.d" / "vipfloat.conf"
        assert "SupplementaryGroups=vipfloat" in dropin.read_text().splitlines()
    if (UNITS / "redis-sentinel.service").exists():
        r = run("systemd-analyze", "verify", "redis-sentinel.service")
        assert r.returncode == 0 and "vipfloat.conf" not in r.stderr, r.stderr


def test_examples_and_alert_rules_are_shipped():
    for name in ("vipfloat.toml", "actions.d/10-conntrack-flush",
                 "pre-release.d/20-redis-kill-vip-clients",
                 "direct/redis-sentinel.service.d/vipfloat.conf",
                 "prometheus/vipfloat-alerts.yml"):
        assert (DOC / "examples" / name).is_file(), name
    if shutil.which("promtool"):
        r = run("promtool", "check", "rules", str(DOC / "examples/prometheus/vipfloat-alerts.yml"))
        assert r.returncode == 0, r.stdout + r.stderr


def maintainer_script(tmp_path: Path, script: str, *args: str,
                      netns: str | None = None) -> list[str]:
    """Run an installed maintainer script as on a host booted with systemd (a
    private /run with /run/systemd/system in it), with deb-systemd-invoke,
    deb-systemd-helper and systemctl replaced by recorders, in a lab host's
    network namespace if given: what it asked of systemd, one line per call."""
    fake, log = tmp_path / "bin", tmp_path / "calls"
    fake.mkdir(exist_ok=True)
    log.write_text("")
    for name in ("deb-systemd-invoke", "deb-systemd-helper", "systemctl"):
        (fake / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexit 0\n')
        (fake / name).chmod(0o755)
    wrapper = ("mount --make-rprivate / && mount -t tmpfs tmpfs /run && "
               "mkdir -p /run/systemd/system && exec \"$@\"")
    netns_argv = ["ip", "netns", "exec", netns] if netns else []
    r = run(*netns_argv, "unshare", "-m", "sh", "-c", wrapper, "sh",
            str(INFO / f"vipfloat.{script}"), *args,
            env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stdout + r.stderr
    return log.read_text().splitlines()


def test_an_upgrade_restarts_the_agent_and_never_stops_it_first(tmp_path):
    version = run("dpkg-query", "-W", "-f=${Version}", "vipfloat").stdout
    prerm_upgrade = maintainer_script(tmp_path, "prerm", "upgrade", version)
    assert not [c for c in prerm_upgrade if " stop " in f"{c} "], prerm_upgrade
    postinst = maintainer_script(tmp_path, "postinst", "configure", version)
    assert "deb-systemd-invoke restart vipfloat.service" in postinst, postinst
    # Removal does stop it (and the bytecode prerm removed is compiled again).
    assert "deb-systemd-invoke stop vipfloat.service" in maintainer_script(
        tmp_path, "prerm", "remove")
    maintainer_script(tmp_path, "postinst", "configure", version)
    assert list(VENV.glob("lib/python3.11/site-packages/vipfloat/__pycache__/*.pyc"))


def test_removal_releases_the_vips_this_host_holds(lab, tmp_path):
    """prerm remove, run in a lab host's namespace with that host's config as
    /etc/vipfloat/vipfloat.toml: the VIPs bound there are gone after it."""
    config = tmp_path / "vipfloat.toml"
    config.write_text(f"""
[sentinel]
addresses = ["198.51.100.11:26379"]
[agent]
state_dir = "{tmp_path / 'state'}"
[[vip]]
master = "four"
address = "198.51.100.250/24"
interface = "eth1"
[[vip]]
master = "six"
address = "2001:db8:100::250/64"
interface = "eth1"
""")
    saved = CONFIG.read_bytes()
    try:
        shutil.copyfile(config, CONFIG)       # keeps the file's mode and owner
        for master in ("four", "six"):
            r = lab.run("a", "/usr/bin/vipfloat", "acquire", "--master", master)
            assert r.returncode == 0, r.stdout + r.stderr
        assert lab.has_address("a", "198.51.100.250/24")
        assert lab.has_address("a", "2001:db8:100::250/64")
        calls = maintainer_script(tmp_path, "prerm", "remove", netns=lab.hosts["a"].netns)
        assert "deb-systemd-invoke stop vipfloat.service" in calls
        assert not lab.has_address("a", "198.51.100.250/24")
        assert not lab.has_address("a", "2001:db8:100::250/64")
    finally:
        CONFIG.write_bytes(saved)
        maintainer_script(tmp_path, "postinst", "configure",
                          run("dpkg-query", "-W", "-f=${Version}", "vipfloat").stdout)


def repacked(deb: Path, tmp_path: Path, suffix: str) -> Path:
    """The same package under a newer version: what an upgrade installs."""
    tree = tmp_path / "tree"
    assert run("dpkg-deb", "-R", str(deb), str(tree)).returncode == 0
    control = tree / "DEBIAN" / "control"
    lines = control.read_text().splitlines()
    control.write_text("\n".join(f"{line}{suffix}" if line.startswith("Version: ") else line
                                 for line in lines) + "\n")
    out = tmp_path / f"vipfloat{suffix}.deb"
    r = run("dpkg-deb", "-Zgzip", "-z1", "-b", str(tree), str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_an_upgrade_under_a_running_agent_releases_nothing(lab, tmp_path, deb):
    newer = repacked(deb, tmp_path, "+upgrade1")
    with RedisLab(lab, tmp_path / "lab") as cluster:
        for node in cluster.nodes:
            cluster.start_agent(node)
        cluster.holds_only("a", timeout=15)
        agent = cluster.procs["agent:a"]
        samples: list[list[str]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(cluster.holders())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            r = run("dpkg", "-i", str(newer))
            assert r.returncode == 0, r.stdout + r.stderr
            assert agent.poll() is None     # the upgrade itself stopped nothing
            # What systemd does for postinst's restart: SIGTERM, then the new version.
            cluster.stop("agent:a")
            cluster.start_agent("a")
            time.sleep(3)                   # the new agent's start-up and first reconcile
            assert cluster.procs["agent:a"].poll() is None
        finally:
            done.set()
            sampler.join()
        assert len(samples) > 50
        assert all(held == ["a"] for held in samples), sorted({tuple(s) for s in samples})
    assert run("dpkg-query", "-W", "-f=${Version}", "vipfloat").stdout.endswith("+upgrade1")
