"""The lab's config generator with many masters (issue 16): round-robin over the
nodes, one port and one VIP per master, one Sentinel monitoring them all, and a
vipfloat config the real loader accepts."""
from __future__ import annotations

import pytest

from vipfloat import config as config_mod
from vipfloat.lab.configs import Cluster, Master, redis_conf, sentinel_conf, vipfloat_conf

NODES = ("198.51.100.11", "198.51.100.12", "198.51.100.13")


def test_one_master_is_the_lab_as_before():
    cluster = Cluster(nodes=NODES, initial_master=NODES[0])
    assert cluster.all_masters() == [Master("mymaster", 6379, NODES[0], "198.51.100.250/24")]
    assert "replicaof 198.51.100.11 6379" in redis_conf(cluster, NODES[1], "/tmp/x")
    assert "replicaof" not in redis_conf(cluster, NODES[0], "/tmp/x")


def test_many_masters_go_round_robin_with_a_port_and_a_vip_each():
    cluster = Cluster(nodes=NODES, initial_master=NODES[0], masters=8)
    masters = cluster.all_masters()
    assert [m.name for m in masters] == [f"mymaster{i}" for i in range(8)]
    assert [m.port for m in masters] == list(range(6379, 6387))
    assert [m.initial for m in masters] == [NODES[i % 3] for i in range(8)]
    assert [m.vip for m in masters] == [f"198.51.100.{100 + i}/24" for i in range(8)]
    # Node a masters 0, 3 and 6: three of eight.
    assert sum(m.initial == NODES[0] for m in masters) == 3
    conf = redis_conf(cluster, NODES[0], "/tmp/x", master=masters[4])
    assert "port 6383" in conf and "replicaof 198.51.100.12 6383" in conf


def test_one_sentinel_monitors_every_master_and_runs_the_hook_for_each():
    cluster = Cluster(nodes=NODES, initial_master=NODES[0], masters=64)
    conf = sentinel_conf(cluster, NODES[2], "/tmp/x", "/usr/bin/vipfloat-hook").splitlines()
    monitors = [line for line in conf if line.startswith("sentinel monitor ")]
    assert len(monitors) == 64
    assert "sentinel monitor mymaster63 198.51.100.11 6442 2" in monitors
    assert sum(line.startswith("sentinel client-reconfig-script ") for line in conf) == 64


def test_the_vipfloat_config_loads_with_a_vip_per_master(tmp_path):
    cluster = Cluster(nodes=NODES, initial_master=NODES[0], masters=24)
    path = tmp_path / "vipfloat.toml"
    path.write_text(vipfloat_conf(cluster, state_dir=str(tmp_path / "state"),
                                  socket=str(tmp_path / "state" / "agent.sock")))
    cfg = config_mod.load(path)
    assert [v.master for v in cfg.vips] == [f"mymaster{i}" for i in range(24)]
    assert str(cfg.vip_for("mymaster23").address) == "198.51.100.123/24"


@pytest.mark.parametrize("n", [0, 101])
def test_the_number_of_masters_is_bounded(n):
    with pytest.raises(ValueError, match="masters must be 1-100"):
        Cluster(masters=n)
