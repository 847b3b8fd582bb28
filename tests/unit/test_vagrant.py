"""The Vagrant lab's files: the Vagrantfile validates (libvirt and VirtualBox
settings included), the scripts pass shellcheck, every network is a
documentation range, and provisioning's configs are the lab's, valid."""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vipfloat import config as config_mod
from vipfloat.lab.configs import main as configs_main

VAGRANT = Path(__file__).resolve().parents[2] / "vagrant"
ALLOWED = [ipaddress.ip_network(n) for n in
           ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


@pytest.mark.skipif(not shutil.which("vagrant"), reason="needs vagrant (make deps installs it)")
@pytest.mark.parametrize("env", [{}, {"VIPFLOAT_PARTITION_NET": "1",
                                      "VIPFLOAT_LIBVIRT_DRIVER": "qemu"}])
def test_vagrantfile_validates(tmp_path, env):
    # A copy, so that vagrant's state directory is not written into the repository.
    for name in ("Vagrantfile", "provision.sh"):
        shutil.copy(VAGRANT / name, tmp_path / name)
    result = subprocess.run(["vagrant", "validate"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="needs shellcheck")
def test_scripts_pass_shellcheck():
    result = subprocess.run(["shellcheck", *(str(VAGRANT / n) for n in ("provision.sh", "drill",
                                                                     "build-box"))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_every_network_is_a_documentation_range():
    text = (VAGRANT / "Vagrantfile").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    # Every dotted-quad prefix, "203.0.113.#{11 + i}" included: its /24 must be one
    # of the documentation networks.
    found = [p for p in re.findall(r"\b(\d{1,3}\.\d{1,3}\.\d{1,3})\b", code)
             if not p.startswith("255.")]                            # netmasks
    assert len(set(found)) >= 3, "expected the Redis, partition and management networks"
    # (the defaults: Redis 198.51.100, management 203.0.113, partition 192.0.2)
    for prefix in found:
        net = ipaddress.ip_network(f"{prefix}.0/24")
        assert any(net.subnet_of(a) for a in ALLOWED if a.version == 4), prefix
    assert "lv.management_network_address = MGMT_NET" in text


def test_provisioned_config_is_valid(tmp_path, capsys):
    assert configs_main(["vipfloat", "--me", "198.51.100.12", "--nodes",
                         "198.51.100.11,198.51.100.12,198.51.100.13"]) == 0
    path = tmp_path / "vipfloat.toml"
    path.write_text(capsys.readouterr().out)
    cfg = config_mod.load(path)
    assert [str(e) for e in cfg.sentinel.addresses] == [
        "198.51.100.11:26379", "198.51.100.12:26379", "198.51.100.13:26379"]
    assert cfg.agent.socket_group == "vipfloat" and cfg.vips[0].interface == "eth1"
    assert configs_main(["sentinel", "--me", "198.51.100.12", "--nodes",
                         "198.51.100.11,198.51.100.12,198.51.100.13"]) == 0
    sentinel = capsys.readouterr().out
    assert "sentinel monitor mymaster 198.51.100.11 6379 2" in sentinel
    assert "sentinel client-reconfig-script mymaster /usr/bin/vipfloat-hook" in sentinel
