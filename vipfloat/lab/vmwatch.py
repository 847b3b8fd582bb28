"""What one lab VM sees during a drill, and the drill's merged timeline.

``vagrant/drill`` runs ``watch`` on every VM (through ``vagrant ssh``) while it
breaks something, then ``merge`` on the host to print one timeline. Each line a
watcher prints is ``<unix time> <node> <what>``: the VIP added or removed here
(netlink), every event of this node's Sentinel, the agent's decisions,
conflicts and quorum changes (its journal), and, with ``--write``, each change
between failing and succeeding writes through the VIP.

A watcher says whether the VIP is bound there when it starts, prints ``ready``
only once it is subscribed to its Sentinel and following the journal, and
watches for ``--seconds`` from then, with a ``tick`` every second; it exits 1
if it cannot get ready.

The VMs' clocks disagree with the host's by seconds, and a `vagrant ssh` round
trip under TCG takes as long, so a clock read through it cannot line up two
VMs' lines. Instead the host stamps every line with the time it arrived
(``stamp``): a line reaches the host after it was printed, so the largest
(VM time - arrival) over a VM's lines, the ticks included, is its clock's
offset, short by the fastest line's transit (milliseconds). ``merge`` puts
every line on the host's clock with it, adds who holds the VIP whenever that
changes (two holders said loudly, and for how long), and exits 1 when the drill
saw nothing: no Sentinel event and no move of the VIP after it started.

    python -m vipfloat.lab.vmwatch watch --node node1 --vip 198.51.100.250 --seconds 60 [--write]
    vagrant ssh node1 -c '...watch...' | python -m vipfloat.lab.vmwatch stamp > node1.log
    python -m vipfloat.lab.vmwatch merge --start <unix time> --start-node node1 node1.log ...
"""

from __future__ import annotations

import argparse
import json
import re
import select
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Callable, Iterable, NamedTuple

from ..netwatch import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, parse_addr_messages

READY, TICK = "ready", "tick"
BOUND, REMOVED = "VIP bound here", "VIP removed here"
HELD = "VIP bound here when watching began"
# The agent's journal lines worth a place in the timeline.
AGENT_LINE = re.compile(r"action=(acquire|release|announce)\b|CONFLICT|conflict over|QUORUM"
                        r"|: the new holder, as the move")
REASON = re.compile(r'reason="((?:[^"\\]|\\.)*)"')


def say(node: str, what: str, at: float | None = None) -> None:
    sys.stdout.write(f"{time.time() if at is None else at:.6f} {node} {what}\n")
    sys.stdout.flush()


# --- pure -----------------------------------------------------------------------------
def agent_event(message: str) -> str | None:
    """Pure: the timeline's text for one line of the agent's journal, or None.
    A decision line becomes its action and reason; conflicts and quorum changes
    are kept whole."""
    if not AGENT_LINE.search(message):
        return None
    action = re.search(r"\baction=(\w+)", message)
    if action is not None:
        reason = REASON.search(message)
        text = reason.group(1) if reason else ""
        return f"agent: {action.group(1)}: {text[:160]}"
    return f"agent: {message.strip()[:200]}"


def journal_event(line: str) -> tuple[float, str] | None:
    """Pure: one line of ``journalctl -o json`` -> (unix time, timeline text)."""
    try:
        entry = json.loads(line)
        at = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
        message = entry.get("MESSAGE")
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(message, list):          # journald's non-UTF-8 form: bytes as numbers
        message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(
            "utf-8", "replace")
    if not isinstance(message, str):
        return None
    text = agent_event(message)
    return None if text is None else (at, text)


class Line(NamedTuple):
    t: float                    # on the clock of the VM that printed it
    node: str
    what: str
    arrived: float | None = None  # when the host read it, on the host's clock


def parse_lines(lines: Iterable[str]) -> list[Line]:
    """Pure: ``<time> <node> <what>``, optionally after ``stamp``'s ``@<arrival> ``."""
    out = []
    for raw in lines:
        text, arrived = raw.rstrip("\n"), None
        if text.startswith("@"):
            stamp_text, _, text = text[1:].partition(" ")
            try:
                arrived = float(stamp_text)
            except ValueError:
                continue
        parts = text.split(" ", 2)
        if len(parts) != 3:
            continue
        try:
            out.append(Line(float(parts[0]), parts[1], parts[2], arrived))
        except ValueError:
            continue
    return out


def offsets(lines: Iterable[Line]) -> dict[str, float]:
    """Pure: each node's clock minus the host's, from the lines stamped on
    arrival: the largest (printed - arrived), since no line arrives before it
    was printed."""
    out: dict[str, float] = {}
    for line in lines:
        if line.arrived is not None:
            gap = line.t - line.arrived
            out[line.node] = max(out.get(line.node, gap), gap)
    return out


def on_host_clock(lines: list[Line], offset: dict[str, float]) -> list[Line]:
    """Pure: every line's time on the host's clock (a node without stamped
    lines keeps its own)."""
    return [line._replace(t=line.t - offset.get(line.node, 0.0)) for line in lines]


def merge(lines: list[Line], start: float) -> tuple[list[str], bool]:
    """Pure: the timeline (ms after ``start``) with who holds the VIP after each
    move, and whether the drill saw anything happen after it started."""
    out: list[str] = []
    holders: set[str] = set()
    two_since: float | None = None
    saw = False
    for line in sorted(lines, key=lambda x: x.t):
        if line.what in (READY, TICK):
            continue
        ms = (line.t - start) * 1000
        out.append(f"  {ms:+9.1f} ms  {line.node}: {line.what}")
        after = line.t >= start
        if line.what.startswith("sentinel: "):
            saw = saw or after
        if line.what in (BOUND, REMOVED, HELD):
            # HELD: bound before anyone watched, which is no move.
            saw = saw or (after and line.what != HELD)
            before = len(holders)
            (holders.discard if line.what == REMOVED else holders.add)(line.node)
            if len(holders) > 1:
                if two_since is None:
                    two_since = line.t
                out.append(f"  {ms:+9.1f} ms  TWO HOLDERS: {', '.join(sorted(holders))}")
            elif before > 1 and two_since is not None:
                out.append(f"  {ms:+9.1f} ms  one holder again ({', '.join(sorted(holders))}) "
                           f"after {(line.t - two_since) * 1000:.0f} ms of two")
                two_since = None
    return out, saw


# --- the watcher ----------------------------------------------------------------------
def watch_addresses(node: str, vip: str, until: list[float], ready: threading.Event) -> None:
    from ipaddress import ip_address

    from ..netlink import NetlinkHost

    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
    # Subscribed first, then read: a change in between shows as a move too.
    with NetlinkHost() as host:
        if any(row.ip == ip_address(vip) for row in host.addresses()):
            say(node, HELD)
    ready.set()
    while time.time() < until[0]:
        ready_fds, _, _ = select.select([sock], [], [], 0.2)
        if ready_fds:
            for change in parse_addr_messages(sock.recv(65535)):
                if change.address == vip:
                    say(node, BOUND if change.added else REMOVED)


def watch_sentinel(node: str, port: int, until: list[float], ready: threading.Event) -> None:
    import redis

    while time.time() < until[0]:
        try:
            pubsub = redis.Redis(port=port, socket_timeout=0.5, decode_responses=True).pubsub()
            pubsub.psubscribe("*")
            while time.time() < until[0]:
                msg = pubsub.get_message(timeout=0.2)
                if not msg:
                    continue
                if msg["type"] == "psubscribe":
                    ready.set()
                elif msg["type"] == "pmessage":
                    say(node, f"sentinel: {msg['channel']} {msg['data']}")
        except (redis.RedisError, OSError):
            time.sleep(0.2)


def watch_journal(node: str, until: list[float], ready: threading.Event) -> None:
    try:
        proc = subprocess.Popen(["journalctl", "-u", "vipfloat", "-f", "-n", "0", "-o", "json",
                                 "--no-pager"], stdout=subprocess.PIPE, text=True)
    except OSError as exc:
        say(node, f"cannot follow the agent's journal: {exc}")
        return
    ready.set()
    assert proc.stdout is not None
    try:
        while time.time() < until[0]:
            fds, _, _ = select.select([proc.stdout], [], [], 0.2)
            if fds:
                line = proc.stdout.readline()
                if not line:
                    return
                found = journal_event(line)
                if found is not None:
                    say(node, found[1], at=found[0])
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def write_through(node: str, vip: str, password: str | None, until: list[float],
                  ready: threading.Event) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(host=vip, socket_timeout=0.25, socket_connect_timeout=0.25,
                         password=password, retry=Retry(NoBackoff(), 0))
    ok: bool | None = None
    n = 0
    while time.time() < until[0]:
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
        ready.set()
        time.sleep(0.01)


def watch(args: argparse.Namespace) -> int:
    until = [time.time() + 3600.0]          # until ready, then --seconds from then
    specs: list[tuple[str, Callable[..., None], tuple[object, ...]]] = [
        ("addresses", watch_addresses, (args.node, args.vip)),
        ("Sentinel subscription", watch_sentinel, (args.node, args.sentinel_port))]
    if args.journal:
        specs.append(("agent journal", watch_journal, (args.node,)))
    if args.write:
        specs.append(("writer", write_through, (args.node, args.vip, args.password)))
    jobs: list[tuple[str, threading.Event, threading.Thread]] = []
    for name, target, extra in specs:
        ready = threading.Event()
        jobs.append((name, ready, threading.Thread(target=target, args=(*extra, until, ready),
                                                   daemon=True)))
    for _, _, thread in jobs:
        thread.start()
    deadline = time.monotonic() + args.ready_timeout
    missing = [name for name, ready, _ in jobs
               if not ready.wait(max(0.0, deadline - time.monotonic()))]
    if missing:
        say(args.node, f"not ready after {args.ready_timeout:g} s: {', '.join(missing)}")
        return 1
    until[0] = time.time() + args.seconds
    say(args.node, READY)
    # Ticks: lines to line this VM's clock up with the host's (see stamp).
    while time.time() < until[0]:
        time.sleep(min(1.0, max(0.0, until[0] - time.time())))
        say(args.node, TICK)
    for _, _, thread in jobs:
        thread.join(timeout=5)
    return 0


def stamp(source: IO[str], sink: IO[str], clock: Callable[[], float] = time.time) -> None:
    """Each line read, prefixed with when it was read (run on the host)."""
    for raw in source:
        sink.write(f"@{clock():.6f} {raw}")
        sink.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("watch", help="on a VM: print what it sees")
    w.add_argument("--node", required=True)
    w.add_argument("--vip", required=True, help="the VIP, without prefix")
    w.add_argument("--seconds", type=float, default=60.0, help="how long, once ready")
    w.add_argument("--ready-timeout", type=float, default=120.0,
                   help="seconds to get subscribed and following (slow under TCG)")
    w.add_argument("--sentinel-port", type=int, default=26379)
    w.add_argument("--write", action="store_true", help="also write through the VIP")
    w.add_argument("--no-journal", dest="journal", action="store_false",
                   help="do not follow the agent's journal (journalctl -u vipfloat)")
    w.add_argument("--password", default=None)
    sub.add_parser("stamp", help="on the host: prefix each line of stdin with its arrival")
    m = sub.add_parser("merge", help="on the host: one timeline from the watchers' output")
    m.add_argument("--start", type=float, required=True, help="the drill's start, unix time")
    m.add_argument("--start-node", default=None,
                   help="the node whose clock --start was read on (else: the host's)")
    m.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "watch":
        return watch(args)
    if args.command == "stamp":
        stamp(sys.stdin, sys.stdout)
        return 0
    lines: list[Line] = []
    for name in args.files:
        with open(name, encoding="utf-8", errors="replace") as f:
            lines += parse_lines(f)
    offset = offsets(lines)
    if offset:
        print("clocks (each VM's minus the host's, from when its lines reached the host; "
              "every time below is on the host's clock):")
        for node in sorted(offset):
            print(f"  {node}: {offset[node] * 1000:+.0f} ms")
        print()
    start = args.start - offset.get(args.start_node, 0.0) if args.start_node else args.start
    timeline, saw = merge(on_host_clock(lines, offset), start)
    print("timeline (ms after the drill started; VIP moves, Sentinel events, agents' "
          "decisions):")
    print("\n".join(timeline))
    if not saw:
        print("\nthe drill saw nothing happen: no Sentinel event and no move of the VIP after "
              "it started (a watcher that stopped early? see VIPFLOAT_DRILL_SECONDS)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
