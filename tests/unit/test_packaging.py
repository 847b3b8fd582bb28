"""Shipped files: the Sentinel drop-in verifies, the action scripts are sound."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEBIAN_UNIT = Path("/lib/systemd/system/redis-sentinel.service")


DEFAULT_DROPIN = REPO / "systemd" / "redis-sentinel.service.d" / "vipfloat.conf"
DIRECT_DROPIN = REPO / "systemd" / "direct" / "redis-sentinel.service.d" / "vipfloat.conf"


def keys_of(path: Path) -> dict[str, str]:
    return {line.split("=", 1)[0]: line.split("=", 1)[1] for line in path.read_text().splitlines()
            if "=" in line and not line.startswith("#")}


@pytest.mark.skipif(not shutil.which("systemd-analyze") or not DEBIAN_UNIT.exists(),
                    reason="needs systemd-analyze and Debian's redis-sentinel unit")
@pytest.mark.parametrize("dropin", [DEFAULT_DROPIN, DIRECT_DROPIN], ids=["default", "direct"])
def test_sentinel_dropin_verifies_against_debians_unit(tmp_path, dropin):
    shutil.copy(DEBIAN_UNIT, tmp_path)
    dropins = tmp_path / "redis-sentinel.service.d"
    dropins.mkdir()
    shutil.copy(dropin, dropins)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / DEBIAN_UNIT.name)],
                            capture_output=True, text=True,
                            env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    # systemd only warns (exit 0) about unknown keys or bad values: none may name our file.
    assert "vipfloat.conf" not in result.stderr, result.stderr


def test_the_default_dropin_gives_sentinel_no_capability():
    # Least privilege: the network-facing Sentinel keeps Debian's empty bounding
    # set and its exec allow-list; its hook only hands over to the agent.
    lines = keys_of(DEFAULT_DROPIN)
    for key in ("AmbientCapabilities", "CapabilityBoundingSet", "PrivateUsers",
                "RestrictAddressFamilies", "NoExecPaths", "ReadWritePaths"):
        assert key not in lines, key
    # A directory: an upgrade replacing a bind-mounted file would drop its mount.
    assert lines["ExecPaths"] == "/usr/lib/vipfloat"
    assert "usr/lib/vipfloat/vipfloat-hook usr/bin/vipfloat-hook" in (
        REPO / "debian" / "vipfloat.links").read_text().splitlines()
    assert lines["SupplementaryGroups"] == "vipfloat"
    assert lines["Environment"] == "VIPFLOAT_HANDOVER_ONLY=1"


def test_the_direct_dropin_grants_what_the_hook_needs():
    lines = keys_of(DIRECT_DROPIN)
    assert set(lines["AmbientCapabilities"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert set(lines["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert lines["PrivateUsers"] == "false"
    assert {"AF_NETLINK", "AF_PACKET"} <= set(lines["RestrictAddressFamilies"].split())


SCRIPTS = sorted(str(p.relative_to(REPO / "actions")) for p in (REPO / "actions").glob("*/*"))


def test_scripts_are_shipped():
    assert "actions.d/10-conntrack-flush" in SCRIPTS
    assert "pre-release.d/20-redis-kill-vip-clients" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_action_scripts_are_executable_posix_sh(script):
    path = REPO / "actions" / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    assert path.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(path)]).returncode == 0


@pytest.mark.parametrize("script", ["actions.d/10-conntrack-flush",
                                    "pre-release.d/20-redis-kill-vip-clients"])
def test_release_only_scripts_do_nothing_on_acquire(script):
    result = subprocess.run([str(REPO / "actions" / script)], capture_output=True, text=True,
                            env={"VIPFLOAT_EVENT": "acquire", "VIPFLOAT_VIP": "198.51.100.250",
                                 "PATH": "/nonexistent"})
    assert (result.returncode, result.stdout) == (0, "")


@pytest.mark.parametrize("says, code, status, out", [
    ("Could not connect to Redis at 127.0.0.1:6379: Connection refused", 1, 0,
     "no Redis on port 6379: no clients to disconnect"),
    ("NOAUTH Authentication required.", 1, 1, "redis-cli failed: NOAUTH Authentication required."),
    ("2", 0, 0, "disconnected 2 client(s) connected through 198.51.100.250:6379"),
])
def test_client_kill_script_before_release(tmp_path, says, code, status, out):
    """A dead local Redis (the master killed: the usual failover) has no clients
    left to disconnect; any other redis-cli failure is reported."""
    fake = tmp_path / "redis-cli"
    fake.write_text(f"#!/bin/sh\necho \"$*\" > {tmp_path}/args\necho '{says}'\nexit {code}\n")
    fake.chmod(0o755)
    result = subprocess.run([str(REPO / "actions" / "pre-release.d" / "20-redis-kill-vip-clients")],
                            capture_output=True, text=True,
                            env={"VIPFLOAT_EVENT": "pre-release", "VIPFLOAT_VIP": "198.51.100.250",
                                 "PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert (result.returncode, result.stdout.strip()) == (status, out)
    assert (tmp_path / "args").read_text().split() == [
        "-p", "6379", "CLIENT", "KILL", "LADDR", "198.51.100.250:6379", "SKIPME", "yes"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_agent_unit_verifies(tmp_path):
    import sys
    unit = (REPO / "systemd" / "vipfloat.service").read_text()
    # verify checks that ExecStart exists: point it at this checkout's console script.
    vipfloat = Path(sys.executable).parent / "vipfloat"
    (tmp_path / "vipfloat.service").write_text(unit.replace("/usr/bin/vipfloat", str(vipfloat)))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "vipfloat.service")],
                            capture_output=True, text=True,
                            env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "vipfloat.service" not in result.stderr, result.stderr


def test_agent_unit_runs_unprivileged_with_two_capabilities():
    text = (REPO / "systemd" / "vipfloat.service").read_text()
    keys = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in text.splitlines()
            if "=" in line and not line.startswith("#")}
    assert keys["User"] == "vipfloat" and keys["Type"] == "notify"
    assert set(keys["AmbientCapabilities"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert set(keys["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert keys["ProtectSystem"] == "strict" and keys["RuntimeDirectory"] == "vipfloat"
    assert keys["Restart"] == "always"
    assert keys["RuntimeDirectoryMode"] == "0750"     # only the agent writes in state_dir
    assert keys["WatchdogSec"] and int(keys["TasksMax"]) <= 256


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_agent_unit_exposure_is_at_most_2(tmp_path):
    import re

    shutil.copy(REPO / "systemd" / "vipfloat.service", tmp_path)
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                             str(tmp_path / "vipfloat.service")], capture_output=True, text=True)
    level = re.search(r"Overall exposure level for vipfloat.service: ([0-9.]+)", result.stdout)
    assert level, result.stdout + result.stderr
    assert float(level.group(1)) <= 2.0, result.stdout


def test_the_product_never_imports_the_lab():
    """vipfloat/lab/ is the test and drill toolkit (namespaces, real Redis and
    Sentinel, the nemesis). It ships in the wheel only because the Vagrant VMs
    and bench/ run it from an install; the product's modules never import it,
    so a package for hosts (issue 15's .deb) can leave it out."""
    import ast

    offenders = []
    for path in sorted((REPO / "vipfloat").rglob("*.py")):
        package = list(path.relative_to(REPO).with_suffix("").parts[:-1])  # vipfloat[, doctor]
        if package[1:2] == ["lab"]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                # A relative import, made absolute: "from ..lab import x" in vipfloat/doctor.
                base = package[:len(package) - node.level + 1] if node.level else []
                names = [".".join(base + ([node.module] if node.module else []))]
                names += [f"{names[0]}.{a.name}" for a in node.names]
            else:
                continue
            if any(n == "vipfloat.lab" or n.startswith("vipfloat.lab.") for n in names):
                offenders.append(f"{path.relative_to(REPO)}: {names}")
    assert offenders == []


def test_a_hung_agent_is_killed_within_a_stated_bound():
    """README: a hung or stopped agent is aborted by the watchdog (40 s without
    a ping) and killed 5 s later if it cannot act on SIGABRT (stopped), then
    restarted after 1 s: about 46 s at most, not TimeoutStopSec's extra 90 s."""
    keys = keys_of(REPO / "systemd" / "vipfloat.service")
    assert keys["WatchdogSec"] == "40s" and keys["TimeoutAbortSec"] == "5s"
    assert keys["Restart"] == "always" and keys["RestartSec"] == "1"
    assert "WatchdogSignal" not in keys        # SIGABRT: the stacks reach the journal



def test_scapy_is_a_dependency_exactly_while_the_product_imports_it():
    """pyproject.toml says what is true: scapy is a run-time dependency because a
    product module imports it at run time (the doctor's probe), never on the
    hook's or the agent's path."""
    import ast
    import tomllib

    users = set()
    for path in sorted((REPO / "vipfloat").rglob("*.py")):
        if "lab" in path.relative_to(REPO / "vipfloat").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m == "scapy" or m.startswith("scapy.") for m in mods):
                users.add(str(path.relative_to(REPO)))
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("scapy") for d in deps) == bool(users)
    assert users == {"vipfloat/doctor/probe.py"}


DEBIAN = REPO / "debian"


def test_the_debian_version_is_the_projects():
    import vipfloat

    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"vipfloat ({vipfloat.__version__}) ")
    assert f'version = "{vipfloat.__version__}"' in (REPO / "pyproject.toml").read_text()


def test_every_lintian_override_says_why_in_the_line_before():
    lines = (DEBIAN / "vipfloat.lintian-overrides").read_text().splitlines()
    tags = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
    assert tags
    for i in tags:
        # A run of tags shares the comment above its first line.
        j = i
        while j > 0 and lines[j - 1] and not lines[j - 1].startswith("#"):
            j -= 1
        assert j > 0 and lines[j - 1].startswith("# ") and len(lines[j - 1]) > 20, lines[i]


def test_the_venv_interpreter_is_the_one_the_package_depends_on():
    rules = (DEBIAN / "rules").read_text()
    control = (DEBIAN / "control").read_text()
    assert "--python /usr/bin/python3.11" in rules
    depends = control.split("Package: vipfloat", 1)[1]
    assert "python3.11," in depends and "Recommends: redis-sentinel | valkey-sentinel" in depends


def test_the_packaged_unit_skips_an_unconfigured_host_and_never_gives_up_otherwise():
    unit = keys_of(REPO / "systemd" / "vipfloat.service")
    assert unit["ExecCondition"] == ("/usr/bin/vipfloat is-configured --config "
                                     "/etc/vipfloat/vipfloat.toml")
    assert "RestartPreventExitStatus" not in unit
    assert (unit["Restart"], unit["StartLimitIntervalSec"]) == ("always", "0")
