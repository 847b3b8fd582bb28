"""How fast does a client-reconfig-script put the VIP on the new master?

Three scripts, alternating round by round in one run, on the same namespace lab
(three nodes with real Redis and Sentinel, node a the master, a peer listening):

  notify_mymaster.sh       the article's shell script (the baseline)
  vipfloat-hook direct     no agent running: the hook binds and announces itself
  vipfloat-hook via agent  `vipfloat watch` runs on a: the hook hands over its argv
  vipfloat-hook-fast via agent   the same hand-over from the C front (`make fast-hook`)

For each: exec -> VIP present in the kernel (netlink event) -> first ARP on the
peer's wire -> script exit, and the script's peak RSS (GNU time). Prints medians
and the ratios to the shell script.

    sudo .venv/bin/python bench/hook_latency.py [--rounds 15] [--slow-clients 300]

--slow-clients N keeps N clients connected to the agent's socket throughout,
each dripping a byte every 0.25 s and reconnecting whenever the agent drops it
(at its 2 s request deadline): the hand-over must not slow down under them.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BASELINE, median, ms, ratio, table, wait_exit  # noqa: E402
from vipfloat.lab.capture import Capture, is_arp_for  # noqa: E402
from vipfloat.lab.cluster import RedisLab, tool  # noqa: E402
from vipfloat.lab.netns import Lab  # noqa: E402
from vipfloat.lab.observe import AddrEvents  # noqa: E402

VIP = "198.51.100.250"
ARGS = ["mymaster", "leader", "start", "198.51.100.12", "6379", "198.51.100.11", "6379"]
# The failover back: handed to the agent between its rounds, so that it believes
# the master is b and lets go of the VIP itself. (Unbinding behind its back no
# longer works: it notices through netlink and binds the VIP again at once.)
AWAY = ["mymaster", "leader", "start", "198.51.100.11", "6379", "198.51.100.12", "6379"]


def one_round(lab: Lab, watch: AddrEvents, argv: list[str], env: dict[str, str]) -> dict:
    with Capture(lab, "peer") as cap:
        t0 = time.monotonic()
        proc = subprocess.Popen(lab.cmd("a", *argv), env={**os.environ, **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        code, t_exit = wait_exit(proc.pid)
        bound = watch.matching(VIP, added=True, after=t0, host="a")
        arps = cap.wait(lambda f: is_arp_for(f, VIP), timeout=3)
    t_vip = bound[0].t if bound else None
    t_arp = arps[0][0] if arps else None
    return {"code": code, "vip": t_vip - t0 if t_vip else None,
            "arp": t_arp - t0 if t_arp else None, "exit": t_exit - t0}


def peak_rss_kib(lab: Lab, argv: list[str], env: dict[str, str]) -> float | None:
    """Peak RSS of the script and its children, from GNU time (a fork of this big
    Python process would count our own pages as the child's)."""
    if not os.path.exists("/usr/bin/time"):
        return None
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run(lab.cmd("a", "/usr/bin/time", "-f", "%M", "-o", out.name, *argv),
                       env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        text = out.read().strip().splitlines()
    return float(text[-1]) if text and text[-1].isdigit() else None


def unbind(lab: Lab) -> None:
    lab.run("a", "ip", "addr", "del", f"{VIP}/24", "dev", "eth1")


class Agent:
    """The agent on a, frozen (SIGSTOP) while the other scripts run so that its
    reconciles never race them, thawed for its own rounds."""

    def __init__(self, cluster: RedisLab, env: dict[str, str]) -> None:
        self.cluster = cluster
        self.env = env
        cluster.start_agent("a")
        cluster.wait(lambda: lab_has_vip(cluster.lab), "the agent to bind the VIP")
        self.proc = cluster.procs["agent:a"]
        self.send_away()
        self.freeze()

    def send_away(self) -> None:
        """Tell the agent (through the hook) that b is the new master: it releases."""
        subprocess.run(self.cluster.lab.cmd("a", tool("vipfloat-hook"), *AWAY),
                       env={**os.environ, **self.env}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
        self.cluster.wait(lambda: not lab_has_vip(self.cluster.lab), "the agent to release")
        # The release goes on after the address is gone (a second connection reset,
        # the action scripts): let it finish, as the other scripts' rounds let the
        # lab settle. A real failover's new master has no release of its own running.
        time.sleep(0.2)

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        time.sleep(0.5)  # let it catch up (it may re-bind the VIP: unbound again below)

    def acquired_by_hook(self) -> bool:
        acquires = [line for line in self.cluster.agent_log("a").splitlines()
                    if "action=acquire" in line]
        return bool(acquires) and "role=leader" in acquires[-1]


class SlowClients:
    """N hostile local clients of the agent's socket (see --slow-clients)."""

    def __init__(self, path: str, n: int) -> None:
        import socket
        import threading

        self.path, self.socket = path, socket
        self.slots: list = [None] * n
        self.connected = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        socket = self.socket
        while not self._stop.wait(0.25):
            for i, conn in enumerate(self.slots):
                if conn is None:
                    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                    try:
                        conn.connect(self.path)
                        conn.send(b"{")
                    except OSError:
                        conn.close()
                        continue     # the agent is frozen, or its queue is full: later
                    self.slots[i] = conn
                    continue
                try:
                    conn.send(b" ")
                except OSError:
                    conn.close()
                    self.slots[i] = None
            self.connected = sum(1 for c in self.slots if c is not None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.slots:
            if conn is not None:
                conn.close()


def lab_has_vip(lab: Lab) -> bool:
    return lab.has_address("a", f"{VIP}/24")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--slow-clients", type=int, default=0,
                        help="hostile clients kept connected to the agent's socket")
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    args = parser.parse_args()
    if not args.baseline.exists():
        print(f"baseline script not found: {args.baseline}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vipfloat-bench-") as tmp, \
            Lab(["a", "b", "c", "peer"]) as lab, \
            RedisLab(lab, Path(tmp), nodes=("a", "b", "c"), hook=False,
                     agent_options={"reconcile_interval": 2.0, "release_wait": 0.0}) as cluster:
        agent_config = str(cluster.vipfloat_config("a"))
        agent_socket = str(cluster.dir("a") / "state" / "agent.sock")
        # The direct hook gets a config whose socket nobody listens on.
        direct_config = Path(tmp) / "direct.toml"
        direct_config.write_text(Path(agent_config).read_text().replace(
            agent_socket, str(Path(tmp) / "nobody.sock")).replace(
            str(cluster.dir("a") / "state"), str(Path(tmp) / "direct-state")))
        agent_env = {"VIPFLOAT_CONFIG": agent_config, "VIPFLOAT_SOCKET": agent_socket}
        agent = Agent(cluster, agent_env)
        methods = {
            "notify_mymaster.sh": (["bash", str(args.baseline), *ARGS],
                                   {"LOCAL_IP": "198.51.100.11", "VIP": VIP,
                                    "INTERFACE": "eth1", "NETMASK": "24"}),
            "vipfloat-hook direct": ([tool("vipfloat-hook"), *ARGS],
                                     {"VIPFLOAT_CONFIG": str(direct_config),
                                      "VIPFLOAT_SOCKET": str(Path(tmp) / "nobody.sock")}),
            "vipfloat-hook via agent": ([tool("vipfloat-hook"), *ARGS], agent_env),
        }
        if Path(tool("vipfloat-hook-fast")).is_file():
            methods["vipfloat-hook-fast via agent"] = ([tool("vipfloat-hook-fast"), *ARGS],
                                                       agent_env)
        else:
            print("vipfloat-hook-fast is not built (make fast-hook): left out", file=sys.stderr)
        slow = SlowClients(agent_socket, args.slow_clients) if args.slow_clients else None
        results: dict[str, list[dict]] = {name: [] for name in methods}
        discarded = 0
        watch = AddrEvents(lab, ["a"])
        try:
            unbind(lab)
            for i in range(args.rounds + 1):          # round 0 warms caches, not counted
                for name, (argv, env) in methods.items():
                    via_agent = name.endswith("via agent")
                    if via_agent:
                        agent.thaw()
                        if lab_has_vip(lab):
                            agent.send_away()
                    else:
                        unbind(lab)
                    r = one_round(lab, watch, argv, env)
                    if via_agent:
                        if not agent.acquired_by_hook():
                            discarded += 1            # a timer reconcile won the race
                            r = None
                        agent.send_away()
                        agent.freeze()
                    unbind(lab)
                    time.sleep(0.2)
                    if r is not None and i > 0:
                        if r["code"] != 0:
                            print(f"{name} exited {r['code']} in round {i}", file=sys.stderr)
                        results[name].append(r)
                print(f"round {i}/{args.rounds}", file=sys.stderr, end="\r")
            agent.thaw()
            rss = {}
            for name, (argv, env) in methods.items():
                if name.endswith("via agent"):
                    rss[name] = median([_rss(lab, argv, env) for _ in range(3)])
                else:
                    agent.freeze()
                    rss[name] = median([_rss(lab, argv, env) for _ in range(3)])
                    agent.thaw()
        finally:
            watch.close()
            agent.thaw()
            if slow is not None:
                print(f"slow clients connected at the end: {slow.connected} of "
                      f"{args.slow_clients}", file=sys.stderr)
                slow.close()
    rows = [("script", "exec->VIP present ms", "exec->first ARP ms", "exec->exit ms",
             "peak RSS MiB")]
    for name, rs in results.items():
        rows.append((name, ms([r["vip"] for r in rs]), ms([r["arp"] for r in rs]),
                     ms([r["exit"] for r in rs]), f"{rss[name] / 1024:.1f}" if rss[name] else "-"))
    base = results["notify_mymaster.sh"]
    for name, rs in results.items():
        if name == "notify_mymaster.sh":
            continue
        rows.append((f"ratio {name.removeprefix('vipfloat-')}/shell",
                     *(ratio(median([r[k] for r in rs]), median([r[k] for r in base]))
                       for k in ("vip", "arp", "exit")),
                     ratio(rss[name], rss["notify_mymaster.sh"])))
    print(f"\nhook latency, {args.rounds} rounds each, medians (exec through `ip netns exec`, "
          f"the same for all; {discarded} agent round(s) discarded where a timer reconcile "
          "bound the VIP first)\n")
    print(table(rows))
    return 0


def _rss(lab: Lab, argv: list[str], env: dict[str, str]) -> float | None:
    unbind(lab)
    value = peak_rss_kib(lab, argv, env)
    unbind(lab)
    return value


if __name__ == "__main__":
    sys.exit(main())
