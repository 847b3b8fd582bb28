"""Real redis-server and redis-sentinel processes on the lab's hosts.

One Redis and one Sentinel per node (the Debian binaries), vipfloat-hook as each
Sentinel's client-reconfig-script when asked, all started inside the nodes'
namespaces and all stopped on exit, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .configs import Cluster, Master, redis_conf, sentinel_conf, vipfloat_conf
from .netns import Lab, LabError

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A vipfloat command: in $VIPFLOAT_BIN when it is set (``/usr/bin`` to test
    the installed Debian package, whose vipfloat-hook is the C fast hook), else
    next to this Python, else on PATH."""
    installed = os.environ.get("VIPFLOAT_BIN")
    local = Path(installed) / name if installed else BIN / name
    if installed or local.exists():
        return str(local)
    return shutil.which(name) or name


def require_redis() -> None:
    missing = [b for b in ("redis-server", "redis-sentinel", "redis-cli") if not shutil.which(b)]
    if missing:
        raise LabError(f"missing {', '.join(missing)}: apt-get install redis-server redis-sentinel")


@dataclass
class RedisLab:
    """``RedisLab(lab, workdir, nodes=["a","b","c"])`` on a started :class:`Lab`."""

    lab: Lab
    workdir: Path
    nodes: Sequence[str] = ("a", "b", "c")
    # Sentinel's client-reconfig-script: True for vipfloat-hook, False for none, or
    # the path of another script (the shell baseline, which reads LOCAL_IP, VIP,
    # INTERFACE and NETMASK from Sentinel's environment).
    hook: bool | str = True
    down_after_ms: int = 1000
    announce_interval: float | None = 0.3
    agent_options: dict[str, object] = field(default_factory=dict)
    vip_options: dict[str, object] = field(default_factory=dict)   # every [[vip]] block
    password: str | None = None          # requirepass + masterauth on every Redis
    # The default, least-privilege mode of a real host: Sentinel runs as this
    # unprivileged user (nobody) with no capabilities and VIPFLOAT_HANDOVER_ONLY=1,
    # its hook (a private copy of the C fast hook) can only hand over to the agent,
    # which serves it as a member of socket_group (nogroup). None: root, as before.
    sentinel_user: str | None = None
    # Many masters (issue 16): each node runs one Redis per master (ports 6379 + i),
    # one Sentinel monitors them all; see configs.Cluster.masters.
    masters: int = 1
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    cluster: Cluster = field(init=False)

    def __post_init__(self) -> None:
        ips = [self.lab.hosts[n].ip for n in self.nodes]
        self.cluster = Cluster(nodes=ips, initial_master=ips[0], down_after_ms=self.down_after_ms,
                               failover_timeout_ms=max(3000, 3 * self.down_after_ms),
                               password=self.password, masters=self.masters)

    # --- files -----------------------------------------------------------------------
    def dir(self, node: str) -> Path:
        return self.workdir / node

    def redis_conf_path(self, node: str, master: Master) -> Path:
        """One Redis's config; with one master, where it always was."""
        if self.masters == 1:
            return self.dir(node) / "redis.conf"
        return self.dir(node) / f"redis-{master.port}" / "redis.conf"

    def redis_key(self, node: str, master: Master) -> str:
        return f"redis:{node}" if self.masters == 1 else f"redis:{node}:{master.port}"

    def master(self, name: str | None = None) -> Master:
        masters = self.cluster.all_masters()
        return masters[0] if name is None else next(m for m in masters if m.name == name)

    def vipfloat_config(self, node: str) -> Path:
        return self.dir(node) / "vipfloat.toml"

    def _sentinel_user(self) -> Any:
        """Sentinel's user's passwd entry (sentinel_user is set)."""
        import pwd

        assert self.sentinel_user
        return pwd.getpwnam(self.sentinel_user)

    def sentinel_dir(self, node: str) -> Path:
        """Where Sentinel keeps (and rewrites) its config: its own directory when it
        runs as another user, who must be able to write there."""
        return self.dir(node) / "sentinel" if self.sentinel_user else self.dir(node)

    def write_configs(self) -> None:
        options = dict(self.agent_options)
        if self.sentinel_user:
            import grp

            user = self._sentinel_user()
            options.setdefault("socket_group", grp.getgrgid(user.pw_gid).gr_name)
            self.workdir.chmod(0o711)           # traversable, not listable
            shutil.copy(self._hook_binary(), self.workdir / "vipfloat-hook")
            (self.workdir / "vipfloat-hook").chmod(0o755)
        for node in self.nodes:
            d = self.dir(node)
            (d / "state").mkdir(parents=True, exist_ok=True)
            (d / "actions.d").mkdir(exist_ok=True)
            (d / "pre-release.d").mkdir(exist_ok=True)
            me = self.lab.hosts[node].ip
            for m in self.cluster.all_masters():
                conf = self.redis_conf_path(node, m)
                conf.parent.mkdir(exist_ok=True)
                conf.write_text(redis_conf(self.cluster, me, str(conf.parent), master=m))
            sd = self.sentinel_dir(node)
            sd.mkdir(exist_ok=True)
            (sd / "sentinel.conf").write_text(
                sentinel_conf(self.cluster, me, str(sd), self.hook_path))
            if self.sentinel_user:
                # Sentinel's user may reach the socket (state: group-traversable)
                # and rewrite its own config, nothing more.
                d.chmod(0o711)
                os.chown(d / "state", 0, user.pw_gid)
                (d / "state").chmod(0o750)
                os.chown(sd, user.pw_uid, user.pw_gid)
                os.chown(sd / "sentinel.conf", user.pw_uid, user.pw_gid)
            self.vipfloat_config(node).write_text(vipfloat_conf(
                self.cluster, state_dir=str(d / "state"), socket=str(d / "state" / "agent.sock"),
                scripts_dir=str(d / "actions.d"), pre_release_dir=str(d / "pre-release.d"),
                announce_interval=self.announce_interval, agent_options=options,
                vip_options=self.vip_options))

    # --- processes -------------------------------------------------------------------
    @property
    def hook_path(self) -> str | None:
        """Sentinel's client-reconfig-script: the C fast hook when it is built
        (`make fast-hook`), as recommended, else the Python vipfloat-hook."""
        if isinstance(self.hook, str):
            return self.hook
        if not self.hook:
            return None
        if self.sentinel_user:
            return str(self.workdir / "vipfloat-hook")
        return self._hook_binary()

    @staticmethod
    def _hook_binary() -> str:
        fast = tool("vipfloat-hook-fast")
        return fast if Path(fast).is_file() else tool("vipfloat-hook")

    def env(self, node: str) -> dict[str, str]:
        # Sentinel passes its environment to the hook: this is how each node's hook
        # finds its own config in the lab (on a real host it is /etc/vipfloat), and
        # how the shell baseline learns its LOCAL_IP.
        vip = self.cluster.vip.split("/")
        # The C fast hook cannot read the config: it finds the agent's socket here
        # (on a real host, at the default /run/vipfloat/agent.sock).
        return {"VIPFLOAT_CONFIG": str(self.vipfloat_config(node)),
                "VIPFLOAT_SOCKET": str(self.dir(node) / "state" / "agent.sock"),
                "LOCAL_IP": self.lab.hosts[node].ip, "VIP": vip[0], "NETMASK": vip[1],
                "INTERFACE": self.cluster.interface,
                **({"VIPFLOAT_HANDOVER_ONLY": "1"} if self.sentinel_user else {})}

    def _start(self, key: str, node: str, *argv: str) -> None:
        log = open(self.dir(node) / f"{key.split(':')[0]}.log", "a")
        self.procs[key] = self.lab.popen(node, *argv, env=self.env(node), stdout=log,
                                         stderr=subprocess.STDOUT)
        log.close()

    def start_redis(self, node: str) -> None:
        """Every Redis of ``node`` (one per master)."""
        for m in self.cluster.all_masters():
            self._start(self.redis_key(node, m), node, "redis-server",
                        str(self.redis_conf_path(node, m)))

    def stop_redis(self, node: str, sig: int = 15) -> None:
        """Every Redis of ``node``: a host that loses all its masters at once."""
        for m in self.cluster.all_masters():
            self.stop(self.redis_key(node, m), sig=sig)

    def start_sentinel(self, node: str) -> None:
        conf = str(self.sentinel_dir(node) / "sentinel.conf")
        if not self.sentinel_user:
            self._start(f"sentinel:{node}", node, "redis-sentinel", conf)
            return
        # As a real host's least-privilege Sentinel: another user, no capability
        # in any set, so neither it nor its hook can touch an address.
        self._start(f"sentinel:{node}", node, "setpriv", f"--reuid={self.sentinel_user}",
                    f"--regid={self._sentinel_user().pw_gid}", "--clear-groups", "--inh-caps=-all",
                    "--bounding-set=-all", "--", "redis-sentinel", conf)

    def start_agent(self, node: str) -> None:
        self._start(f"agent:{node}", node, tool("vipfloat"), "watch", "--config",
                    str(self.vipfloat_config(node)))

    def holders(self, among: Sequence[str] | None = None, vip: str | None = None) -> list[str]:
        """The nodes (of ``among``, default all) that have the VIP (default: the
        first master's) bound now."""
        return [n for n in among or self.nodes
                if self.lab.has_address(n, vip or self.cluster.vip)]

    def holds_only(self, master: str, timeout: float = 10) -> None:
        """Wait until ``master`` alone holds the VIP (LabError otherwise)."""
        self.wait(lambda: self.holders() == [master], f"the VIP on {master} only",
                  timeout=timeout)

    def logged_writes(self, node: str) -> set[int]:
        """The values observe.Writer's writes left in ``node``'s Redis."""
        return {int(v) for v in self.redis(node, "LRANGE", "vipfloat:log", "0", "-1").split()}

    def after_failover(self, writer: Any, since: float, old: str = "a"
                       ) -> tuple[str, set[int], list[Any]]:
        """Once Sentinel names a master other than ``old``, the VIP is on the one
        it settled on only, and ``writer``'s writes through the VIP land there:
        (that master, the values its Redis holds, the writes done before they
        were read). Acknowledged writes missing from those values are lost."""
        old_ip = self.lab.hosts[old].ip
        asked = next(n for n in self.nodes if n != old)
        self.wait(lambda: self.master_addr(asked) not in (None, old_ip),
                  "Sentinel to name a new master", timeout=20)
        final = self.until_settled(self.holds_only, timeout=45)
        self.wait(lambda: any(w.ok and w.t > since and w.value in self.logged_writes(final)
                              for w in writer.snapshot()[-20:]),
                  f"writes through the VIP landing on {final}", timeout=15)
        time.sleep(0.5)
        read_at = time.monotonic()
        landed = self.logged_writes(final)
        return final, landed, [w for w in writer.snapshot() if w.done < read_at]

    def agent_log(self, node: str) -> str:
        return (self.dir(node) / "agent.log").read_text()

    def diagnose(self, tail: int = 25) -> str:
        """What each node looks like now, for a drill that failed: its Redis role,
        what its Sentinel names as master (and at which epoch), whether it holds
        the VIP, and the end of its agent's and Sentinel's logs. Best effort: a
        dead process is reported, not raised."""
        out = []
        vip = self.cluster.vip
        for node in self.nodes:
            def ask(fn: Any, *args: str, node: str = node) -> str:
                try:
                    return " ".join((fn(node, *args) or "").split()) or "(no answer)"
                except Exception as exc:  # noqa: BLE001 - diagnostics never raise
                    return f"({type(exc).__name__}: {exc})"
            out.append(f"--- {node} ({self.lab.hosts[node].ip}): "
                       f"VIP {'HELD' if self.lab.has_address(node, vip) else 'not held'}")
            out.append(f"  redis ROLE: {ask(self.redis, 'ROLE')[:160]}")
            out.append(f"  sentinel master: ip={ask(self.master_field, 'ip')} "
                       f"epoch={ask(self.master_field, 'config-epoch')} "
                       f"flags={ask(self.master_field, 'flags')} "
                       f"replicas={ask(self.master_field, 'num-slaves')}")
            for name in ("agent", "sentinel"):
                path = self.dir(node) / f"{name}.log"
                lines = path.read_text(errors="replace").splitlines()[-tail:] \
                    if path.exists() else ["(no log)"]
                out.append(f"  {name}.log, last {len(lines)} lines:")
                out.extend(f"    {line[:300]}" for line in lines)
        return "\n".join(out)

    def stop(self, key: str, sig: int = 15) -> None:
        proc = self.procs.pop(key, None)
        if proc and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> RedisLab:
        require_redis()
        try:
            self.write_configs()
            for node in self.nodes:
                self.start_redis(node)
            for m in self.cluster.all_masters():
                for node in self.nodes:
                    self.wait(lambda n=node, p=m.port: self.redis(n, "PING", port=p) == "PONG",
                              f"redis on {node}:{m.port}")
                for node in self.nodes:
                    if self.lab.hosts[node].ip == m.initial:
                        continue
                    self.wait(lambda n=node, p=m.port: "master_link_status:up" in self.redis(
                        n, "INFO", "replication", port=p), f"replication on {node}:{m.port}")
            for node in self.nodes:
                self.start_sentinel(node)
            others = str(len(self.nodes) - 1)
            for m in self.cluster.all_masters():
                for node in self.nodes:
                    self.wait(lambda n=node, name=m.name:
                              self.master_field(n, "num-other-sentinels", name) == others
                              and self.master_field(n, "num-slaves", name) == others,
                              f"sentinel on {node} to see {m.name}'s peers", timeout=20)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        for key in reversed(list(self.procs)):  # agents first, Redis last
            # The lab keeps no data: Redis need not wait for its replicas
            # (shutdown-timeout) before going.
            self.stop(key, sig=15 if key.startswith("agent") else 9)

    # --- asking ----------------------------------------------------------------------
    def cli(self, node: str, port: int, *args: str, host: str | None = None) -> str:
        auth = (["--no-auth-warning", "-a", self.password]
                if self.password and port != self.cluster.sentinel_port else [])
        r = self.lab.run(node, "redis-cli", "-h", host or self.lab.hosts[node].ip, "-p",
                         str(port), *auth, *args, timeout=10)
        return r.stdout.strip()

    def redis(self, node: str, *args: str, host: str | None = None,
              port: int | None = None) -> str:
        return self.cli(node, port or self.cluster.redis_port, *args, host=host)

    def sentinel(self, node: str, *args: str) -> str:
        return self.cli(node, self.cluster.sentinel_port, *args)

    def master_field(self, node: str, key: str, master: str | None = None) -> str | None:
        lines = self.sentinel(node, "SENTINEL", "MASTER",
                              master or self.cluster.master_name).splitlines()
        pairs = dict(zip(lines[::2], lines[1::2]))
        return pairs.get(key)

    def master_addr(self, node: str, master: str | None = None) -> str | None:
        """What ``node``'s Sentinel names as master (GET-MASTER-ADDR-BY-NAME)."""
        out = self.sentinel(node, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                            master or self.cluster.master_name).splitlines()
        return out[0] if out else None

    def node_of(self, ip: str) -> str:
        return next(n for n in self.nodes if self.lab.hosts[n].ip == ip)

    def agreement(self, among: Sequence[str] | None = None,
                  master: str | None = None) -> tuple[str, int] | None:
        """(node, config-epoch) when every Sentinel of ``among`` (default: all;
        pass the live ones) names one master at one epoch and that node's Redis
        says ROLE master; None while they disagree, one is unreachable, or the
        named node is still a replica (Sentinel converting a promotion back)."""
        views = set()
        m = self.master(master)
        for node in among or self.nodes:
            lines = self.sentinel(node, "SENTINEL", "MASTER", m.name).splitlines()
            pairs = dict(zip(lines[::2], lines[1::2]))
            if "ip" not in pairs or not pairs.get("config-epoch", "").isdigit():
                return None
            views.add((pairs["ip"], int(pairs["config-epoch"])))
        if len(views) != 1:
            return None
        ip, epoch = views.pop()
        named = next((n for n in self.nodes if self.lab.hosts[n].ip == ip), None)
        if named is None or not self.redis(named, "ROLE", port=m.port).startswith("master"):
            return None
        return named, epoch

    def wait_agreement(self, among: Sequence[str] | None = None,
                       timeout: float = 30.0, master: str | None = None) -> tuple[str, int]:
        found: list[tuple[str, int]] = []

        def agreed() -> bool:
            view = self.agreement(among, master)
            if view is not None:
                found.append(view)
            return view is not None

        self.wait(agreed, f"the Sentinels to agree on a master for {master or 'the first master'}",
                  timeout=timeout)
        return found[-1]

    def until_settled(self, holds: Callable[[str], object], among: Sequence[str] | None = None,
                      timeout: float = 45.0, master: str | None = None) -> str:
        """Drills assert what follows Sentinel's decision, not one outcome of it.
        On a loaded 2-core machine Sentinel may fail over again while a drill
        waits (b, then c at the next epoch): ``holds(node)`` is run on the node
        the Sentinels agree on as ``master``'s (default: the first master) and,
        when it fails (LabError) because they have moved on meanwhile, again on
        the new one. Returns the node it held for, still agreed on afterwards."""
        deadline = time.monotonic() + timeout
        while True:
            agreed = self.wait_agreement(among, max(1.0, deadline - time.monotonic()), master)
            node, epoch = agreed
            try:
                holds(node)
            except LabError:
                # Still agreed on that node: the failure is vipfloat's.
                if self.agreement(among, master) == agreed or time.monotonic() > deadline:
                    raise
                print(f"\n  Sentinel moved on from {node} (epoch {epoch}) while the "
                      "drill waited: following it")
                continue
            if self.agreement(among, master) == (node, epoch):
                return node

    def wait(self, predicate: Any, what: str, timeout: float = 10.0) -> None:
        if not self.lab.wait_for(predicate, timeout=timeout, interval=0.05):
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")

    def settle(self, master: str, timeout: float = 30.0, fresh_views: bool = False) -> None:
        """Wait until every Sentinel names ``master``, every other node replicates
        from it and its Sentinel sees them all: the state a next drill starts from.
        ``fresh_views``: also until every Sentinel has seen every replica report
        itself as one (up to an INFO period, 10 s, more), before asking Sentinel
        for another failover."""
        ip = self.lab.hosts[master].ip
        for node in self.nodes:
            self.wait(lambda n=node: self.master_addr(n) == ip,
                      f"Sentinel on {node} to name {master}", timeout=timeout)
        for node in self.nodes:
            if node != master:
                self.wait(lambda n=node: "master_link_status:up" in self.redis(
                    n, "INFO", "replication"), f"{node} to replicate from {master}",
                    timeout=timeout)
        self.wait(lambda: self.master_field(master, "num-slaves") == str(len(self.nodes) - 1)
                  and "s_down" not in (self.master_field(master, "flags") or ""),
                  "Sentinel to see every replica", timeout=timeout)
        # ... and every Sentinel has seen each replica report itself as one. A
        # Sentinel still holding a demoted master's last INFO ("role-reported
        # master") converts that node straight back to a replica if the next
        # failover promotes it (+convert-to-slave): Sentinel's own race, which
        # leaves it naming a master that is a replica until it fails over again.
        for node in self.nodes if fresh_views else ():
            self.wait(lambda n=node: self.replicas_settled(n, ip),
                      f"Sentinel on {node} to see every replica follow {master}",
                      timeout=timeout)

    def replicas_settled(self, node: str, master_ip: str) -> bool:
        """``node``'s Sentinel sees every other node as a replica of ``master_ip``,
        from a fresh INFO (role reported as slave, link up)."""
        lines = self.sentinel(node, "SENTINEL", "REPLICAS", self.cluster.master_name).splitlines()
        # redis-cli prints each replica's fields as alternating key and value
        # lines; a new replica starts at its "name" key.
        replicas: list[dict[str, str]] = []
        for key, value in zip(lines[::2], lines[1::2]):
            if key == "name":
                replicas.append({})
            if replicas:
                replicas[-1][key] = value
        return len(replicas) == len(self.nodes) - 1 and all(
            r.get("role-reported") == "slave" and r.get("master-link-status") == "ok"
            and r.get("master-host") == master_ip and "s_down" not in r.get("flags", "")
            for r in replicas)

    def failover(self, node: str | None = None) -> None:
        """Ask a Sentinel for a failover now (no odown needed)."""
        out = self.sentinel(node or self.nodes[0], "SENTINEL", "FAILOVER", self.cluster.master_name)
        if out != "OK":
            raise LabError(f"SENTINEL FAILOVER refused: {out}")

    def vipfloat(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.lab.run(node, tool("vipfloat"), *args, "--config",
                            str(self.vipfloat_config(node)), timeout=30)
