"""What one lab VM sees during a drill, as timestamped lines on stdout.

``vagrant/drill`` runs this on every VM (through ``vagrant ssh``) while it breaks
something, then merges the lines into one timeline. Each line is
``<unix time> <node> <what>``: the VIP added or removed here (netlink), every
event of this node's Sentinel, and, with ``--write``, each change between
failing and succeeding writes through the VIP.

    python -m vipfloat.lab.vmwatch --node node1 --vip 198.51.100.250 --seconds 30 [--write]
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import threading
import time

from ..netwatch import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, parse_addr_messages


def say(node: str, what: str) -> None:
    sys.stdout.write(f"{time.time():.6f} {node} {what}\n")
    sys.stdout.flush()


def watch_addresses(node: str, vip: str, until: float) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
    while time.time() < until:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            for change in parse_addr_messages(sock.recv(65535)):
                if change.address == vip:
                    say(node, f"VIP {'bound' if change.added else 'removed'} here")


def watch_sentinel(node: str, port: int, until: float) -> None:
    import redis

    while time.time() < until:
        try:
            pubsub = redis.Redis(port=port, socket_timeout=0.5, decode_responses=True).pubsub(
                ignore_subscribe_messages=True)
            pubsub.psubscribe("*")
            while time.time() < until:
                msg = pubsub.get_message(timeout=0.2)
                if msg:
                    say(node, f"sentinel: {msg['channel']} {msg['data']}")
        except (redis.RedisError, OSError):
            time.sleep(0.2)


def write_through(node: str, vip: str, until: float, password: str | None) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(host=vip, socket_timeout=0.25, socket_connect_timeout=0.25,
                         password=password, retry=Retry(NoBackoff(), 0))
    ok: bool | None = None
    n = 0
    while time.time() < until:
        n += 1
        try:
            client.rpush("vipfloat:log", n)
            now_ok = True
        except (redis.RedisError, OSError):
            now_ok = False
            client.close()
        if now_ok != ok:
            say(node, "writes through the VIP succeed" if now_ok else
                "writes through the VIP fail")
            ok = now_ok
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", required=True)
    parser.add_argument("--vip", required=True, help="the VIP, without prefix")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sentinel-port", type=int, default=26379)
    parser.add_argument("--write", action="store_true", help="also write through the VIP")
    parser.add_argument("--password", default=None)
    args = parser.parse_args(argv)
    until = time.time() + args.seconds
    jobs = [threading.Thread(target=watch_addresses, args=(args.node, args.vip, until)),
            threading.Thread(target=watch_sentinel, args=(args.node, args.sentinel_port, until))]
    if args.write:
        jobs.append(threading.Thread(target=write_through,
                                     args=(args.node, args.vip, until, args.password)))
    say(args.node, "watching")
    for job in jobs:
        job.daemon = True
        job.start()
    for job in jobs:
        job.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
