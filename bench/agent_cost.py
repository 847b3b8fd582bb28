"""What the idle agent costs: resident memory and CPU of `vipfloat watch` on a
node of a healthy three-node cluster, sampled from /proc over a quiet minute.

    sudo .venv/bin/python bench/agent_cost.py [--seconds 60] [--arp-flood 1000] [--sentinels-down]

--arp-flood RATE: a peer sends RATE gratuitous ARP frames a second, each from a
random sender address (none of them a VIP), for the whole measurement: the
agent's wire watcher must drop them cheaply (it once kept every one: 96 % of a
core at 1,000/s). --sentinels-down: every Sentinel is stopped first, so every
poll is refused at once (the main loop once spun on that: 77 % of a core).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import struct
import threading
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vipfloat.lab.cluster import RedisLab  # noqa: E402
from vipfloat.lab.netns import Lab  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS   # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=2.0,
                        help="reconcile_interval (2.0 is the default)")
    parser.add_argument("--arp-flood", type=int, default=0, metavar="RATE",
                        help="ARP frames a second from random senders, from a peer")
    parser.add_argument("--sentinels-down", action="store_true",
                        help="stop every Sentinel before measuring")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vipfloat-bench-") as tmp, \
            Lab(["a", "b", "c", "peer"]) as lab, \
            RedisLab(lab, Path(tmp), hook=False,
                     agent_options={"reconcile_interval": args.interval,
                                    "metrics_listen": "127.0.0.1:9851"}) as cluster:
        cluster.start_agent("a")
        cluster.wait(lambda: lab.has_address("a", "198.51.100.250/24"), "the VIP on a")
        pid = cluster.procs["agent:a"].pid
        if args.sentinels_down:
            for node in cluster.nodes:
                cluster.stop(f"sentinel:{node}")
        stop = threading.Event()
        sent = [0]
        if args.arp_flood:
            threading.Thread(target=flood, args=(lab, args.arp_flood, stop, sent),
                             daemon=True).start()
        time.sleep(5)  # past start-up
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        sent0 = sent[0]
        peak = 0.0
        while time.monotonic() - t0 < args.seconds:
            peak = max(peak, rss_mib(pid))
            time.sleep(1)
        elapsed = time.monotonic() - t0
        cpu = (cpu_seconds(pid) - cpu0) / elapsed * 100
        rate = (sent[0] - sent0) / elapsed
        stop.set()
        threads = len(os.listdir(f"/proc/{pid}/task"))
    what = "idle agent"
    if args.arp_flood:
        what += f" under {rate:.0f} ARP frames/s from random senders"
    if args.sentinels_down:
        what += " with every Sentinel down (each poll refused at once)"
    print(f"\n{what} over {args.seconds:.0f} s (reconcile every {args.interval:g} s, "
          f"3 Sentinels configured, metrics on): RSS {rss_mib_fmt(peak)} MiB peak, "
          f"CPU {cpu:.2f} % of one core, {threads} threads")
    return 0


def flood(lab: Lab, rate: int, stop: threading.Event, sent: list[int]) -> None:
    """Gratuitous ARP requests from the peer, random sender IPs in 203.0.113.0/24
    (a documentation range; never one of the lab's VIPs), ``rate`` a second."""
    with lab.inside("peer"):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        sock.bind(("eth1", 0))
    mac = bytes.fromhex(lab.hosts["peer"].mac.replace(":", ""))
    rng = random.Random(1)
    next_at = time.monotonic()
    while not stop.is_set():
        ip = bytes([203, 0, 113, rng.randrange(1, 255)])
        src = bytes([2, 0, 0, rng.randrange(256), rng.randrange(256), rng.randrange(256)])
        frame = (b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
                 + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + src + ip + b"\0" * 6 + ip)
        sock.send(frame)
        sent[0] += 1
        next_at += 1 / rate
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sock.close()


def rss_mib_fmt(value: float) -> str:
    return f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
