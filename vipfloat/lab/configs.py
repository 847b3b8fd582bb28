"""Config files for a Redis + Sentinel + vipfloat cluster, as text.

One implementation for every lab: the namespace lab writes these into temporary
directories, the Vagrant provisioning writes the same text into /etc. Pure
functions: names and addresses in, file contents out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class Master:
    """One monitored master: its name, its Redis port on every node, the node it
    starts on, and its VIP."""

    name: str
    port: int
    initial: str
    vip: str


# Many masters: VIP i is 198.51.100.(100 + i), beside the nodes (.11-.13) and the
# one-master lab's .250.
MANY_VIP_BASE = 100
MAX_MASTERS = 100


@dataclass(frozen=True)
class Cluster:
    """What every node agrees on."""

    master_name: str = "mymaster"
    nodes: Sequence[str] = ("198.51.100.11", "198.51.100.12", "198.51.100.13")
    initial_master: str = "198.51.100.11"
    vip: str = "198.51.100.250/24"
    interface: str = "eth1"
    redis_port: int = 6379
    sentinel_port: int = 26379
    quorum: int = 2
    down_after_ms: int = 1000
    failover_timeout_ms: int = 5000
    password: str | None = None          # requirepass and masterauth, the same everywhere
    extra_vips: Sequence[tuple[str, str]] = field(default_factory=tuple)  # (master, vip)
    # More than one: masters f"{master_name}{i}", Redis on port redis_port + i on
    # every node, starting on nodes[i % len(nodes)] (round-robin), VIP
    # 198.51.100.(100 + i) with vip's prefix length.
    masters: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.masters <= MAX_MASTERS:
            raise ValueError(f"masters must be 1-{MAX_MASTERS}, not {self.masters}")

    def all_masters(self) -> list[Master]:
        if self.masters == 1:
            return [Master(self.master_name, self.redis_port, self.initial_master, self.vip)]
        prefix = self.vip.partition("/")[2]
        return [Master(f"{self.master_name}{i}", self.redis_port + i,
                       self.nodes[i % len(self.nodes)],
                       f"198.51.100.{MANY_VIP_BASE + i}/{prefix}")
                for i in range(self.masters)]


def redis_conf(cluster: Cluster, me: str, workdir: str, daemonize: bool = False,
               master: Master | None = None) -> str:
    """One Redis: ``master``'s instance on this node (default: the first master)."""
    m = master or cluster.all_masters()[0]
    lines = [
        f"port {m.port}",
        # Listen everywhere: clients reach the master through the VIP, which comes
        # and goes; a Redis bound to one address would refuse them (the article's trap).
        "bind * -::*",
        "protected-mode no",
        f"dir {workdir}",
        f"daemonize {'yes' if daemonize else 'no'}",
        'save ""',
        "appendonly no",
        f"replica-announce-ip {me}",
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
    ]
    if cluster.password:
        # masterauth everywhere, not only where requirepass is: after a failover
        # every node may be a replica (the article's other trap).
        lines += [f"requirepass {cluster.password}", f"masterauth {cluster.password}"]
    if me != m.initial:
        lines.append(f"replicaof {m.initial} {m.port}")
    return "\n".join(lines) + "\n"


def sentinel_conf(cluster: Cluster, me: str, workdir: str, hook: str | None,
                  daemonize: bool = False) -> str:
    """One Sentinel, monitoring every master."""
    lines = [
        f"port {cluster.sentinel_port}",
        "bind * -::*",
        "protected-mode no",
        f"dir {workdir}",
        f"daemonize {'yes' if daemonize else 'no'}",
        f"sentinel announce-ip {me}",
    ]
    for master in cluster.all_masters():
        m = master.name
        lines += [
            f"sentinel monitor {m} {master.initial} {master.port} {cluster.quorum}",
            f"sentinel down-after-milliseconds {m} {cluster.down_after_ms}",
            f"sentinel failover-timeout {m} {cluster.failover_timeout_ms}",
            f"sentinel parallel-syncs {m} 1",
        ]
        if cluster.password:
            lines.append(f"sentinel auth-pass {m} {cluster.password}")
        if hook:
            lines.append(f"sentinel client-reconfig-script {m} {hook}")
    return "\n".join(lines) + "\n"


def vipfloat_conf(cluster: Cluster, state_dir: str = "/run/vipfloat",
                  socket: str = "/run/vipfloat/agent.sock",
                  scripts_dir: str = "/etc/vipfloat/actions.d",
                  pre_release_dir: str = "/etc/vipfloat/pre-release.d",
                  announce_interval: float | None = None,
                  agent_options: dict[str, object] | None = None, extra: str = "",
                  vip_options: dict[str, object] | None = None) -> str:
    sentinels = ", ".join(f'"{n}:{cluster.sentinel_port}"' for n in cluster.nodes)
    out = [
        "[sentinel]",
        f"addresses = [{sentinels}]",
        "",
        "[agent]",
        f'socket = "{socket}"',
        f'state_dir = "{state_dir}"',
        *(f"{key} = {_toml(value)}" for key, value in (agent_options or {}).items()),
        "",
        "[actions]",
        f'scripts_dir = "{scripts_dir}"',
        f'pre_release_dir = "{pre_release_dir}"',
        "",
    ]
    if cluster.password:
        # For the agent's ROLE check and doctor; a real host would rather use
        # password_file, readable by the agent's group only.
        out += ["[redis]", f"password = {_toml(cluster.password)}", ""]
    vips = [*((m.name, m.vip) for m in cluster.all_masters()), *cluster.extra_vips]
    for master, vip in vips:
        out += ["[[vip]]", f'master = "{master}"', f'address = "{vip}"',
                f'interface = "{cluster.interface}"']
        if announce_interval is not None:
            out.append(f"announce_interval = {announce_interval}")
        out += [f"{key} = {_toml(value)}" for key, value in (vip_options or {}).items()]
        out.append("")
    return "\n".join(out) + extra


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vipfloat.lab.configs redis|sentinel|vipfloat --me IP --nodes IP,IP,IP``:
    one config file on stdout, for provisioning real hosts (vagrant/provision.sh)
    with exactly what the namespace lab runs."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vipfloat.lab.configs",
                                     description=main.__doc__.split("\n\n")[0] if main.__doc__
                                     else None)
    parser.add_argument("kind", choices=("redis", "sentinel", "vipfloat"))
    parser.add_argument("--me", required=True, help="this node's address")
    parser.add_argument("--nodes", required=True, help="every node's address, comma-separated;"
                        " the first is the initial master")
    parser.add_argument("--vip", default="198.51.100.250/24")
    parser.add_argument("--interface", default="eth1")
    parser.add_argument("--dir", default="/var/lib/redis", help="Redis's working directory")
    parser.add_argument("--hook", default="/usr/bin/vipfloat-hook")
    parser.add_argument("--down-after-ms", type=int, default=5000)
    parser.add_argument("--socket-group", default="vipfloat")
    args = parser.parse_args(argv)
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    cluster = Cluster(nodes=nodes, initial_master=nodes[0], vip=args.vip,
                      interface=args.interface, down_after_ms=args.down_after_ms,
                      failover_timeout_ms=max(3000, 3 * args.down_after_ms))
    if args.kind == "redis":
        text = redis_conf(cluster, args.me, args.dir)
    elif args.kind == "sentinel":
        text = sentinel_conf(cluster, args.me, args.dir, args.hook or None)
    else:
        text = vipfloat_conf(cluster, agent_options={"socket_group": args.socket_group})
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
