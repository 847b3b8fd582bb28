"""`vipfloat switchover`: the operator's planned failover, checked first and
followed live.

It checks that the Sentinels agree and a replica is in sync, asks one Sentinel
for ``SENTINEL FAILOVER``, and prints the timeline as it happens: the failover's
epoch, the replica Sentinel chose, the old master holding its writes (the
agents' write hold), the promotion, the VIP answering from the new master, and
Sentinel's +switch-master. The exit code says whether it completed.

The rules (is it safe to start, what an event means, when it is over) are pure
functions over recorded replies and events; the shell around them only asks
and listens, each with a deadline.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence, Union

from .config import Config, VipConfig, hostport, majority
from .errors import PermanentError, TransientError
from .logs import escape
from .sentinel import MasterInfo, Replica, SentinelAnswer, ask_all, connection, parse_replicas
from .subscribe import (ABORT_EVENTS, ATTEMPT_EVENT, EPOCH_EVENT, HINT_EVENTS, PROMOTION_EVENTS,
                        parse_event)

log = logging.getLogger(__name__)

# A replica whose last acknowledgement to the master is older than this (INFO
# replication's lag, seconds) is not in sync enough to be promoted by choice.
MAX_LAG = 1
# How often the VIP is asked who answers behind it, and each try's timeout.
VIP_PROBE_INTERVAL = 0.005
VIP_PROBE_TIMEOUT = 0.2
# A PUBLISH to the old master that takes longer than this is held (CLIENT PAUSE
# WRITE blocks PUBLISH, which changes no data).
HELD_AFTER = 0.05
CHANNELS = (EPOCH_EVENT, ATTEMPT_EVENT, *PROMOTION_EVENTS, *HINT_EVENTS, "+failover-end",
            *ABORT_EVENTS)


# --- before: is it safe to ask? -----------------------------------------------------------

def parse_lags(info: str) -> dict[tuple[str, int], int]:
    """Pure: the master's `INFO replication` -> {(ip, port): lag} of its online
    replicas (``slaveN:ip=…,port=…,state=online,offset=…,lag=…``)."""
    lags = {}
    for line in info.splitlines():
        name, _, value = line.strip().partition(":")
        if not (name.startswith("slave") and name[5:].isdigit()):
            continue
        try:
            fields = dict(kv.split("=", 1) for kv in value.split(",") if "=" in kv)
            if fields.get("state") == "online":
                lags[(fields["ip"], int(fields["port"]))] = int(fields["lag"])
        except (KeyError, ValueError):
            continue
    return lags


@dataclass(frozen=True)
class Plan:
    sentinel: int               # the Sentinel to ask, by index
    master: MasterInfo
    ready: tuple[Replica, ...]  # the replicas in sync


def preflight(answers: Sequence[SentinelAnswer], replicas: Sequence[Replica],
              lags: Mapping[tuple[str, int], int] | None) -> tuple[Plan | None, list[str]]:
    """Pure: whether a switchover may start, and every reason it may not.
    ``lags`` None: the master could not be asked."""
    problems = []
    got = [(i, a) for i, a in enumerate(answers) if a.master is not None]
    if len(got) < majority(len(answers)):
        problems.append(f"only {len(got)} of {len(answers)} Sentinels answered (majority "
                        f"{majority(len(answers))})")
    views = {(a.master.addr, a.master.config_epoch) for _, a in got if a.master}
    if len(views) > 1:
        problems.append("the Sentinels disagree: " + "; ".join(
            f"{a.endpoint} names {a.master.addr} at epoch {a.master.config_epoch}"
            for _, a in got if a.master))
    for _, a in got:
        assert a.master is not None
        busy = sorted(set(a.master.flags) & {"failover_in_progress", "s_down", "o_down",
                                             "disconnected"})
        if busy:
            problems.append(f"Sentinel {a.endpoint} flags the master {','.join(busy)}")
    ready = []
    for r in replicas:
        lag = None if lags is None else lags.get((r.host, r.port))
        if set(r.flags) == {"slave"} and r.link_ok and r.priority > 0 and lag is not None \
                and lag <= MAX_LAG:
            ready.append(replace(r, lag=lag))
    if lags is None:
        problems.append("cannot ask the master for its replicas' lag (INFO replication)")
    elif not ready:
        problems.append("no replica is in sync: " + ("; ".join(
            f"{r.addr} flags {','.join(r.flags)}, link {'ok' if r.link_ok else 'down'}, "
            f"priority {r.priority}, lag {lags.get((r.host, r.port), 'unknown')}"
            for r in replicas) or "Sentinel knows none"))
    if problems or not got:
        return None, problems
    index, first = got[0]
    assert first.master is not None
    return Plan(index, first.master, tuple(ready)), []


# --- during: what each event means -------------------------------------------------------------

@dataclass(frozen=True)
class Published:
    source: str                 # the Sentinel, host:port
    channel: str
    data: str


@dataclass(frozen=True)
class VipAnswered:
    run_id: str                 # INFO server's run_id behind the VIP; "" when none answered
    role: str                   # ROLE's first word; "unreachable" when none answered


@dataclass(frozen=True)
class WritesHeld:
    addr: str


Observed = Union[Published, VipAnswered, WritesHeld]


@dataclass(frozen=True)
class Progress:
    master: str
    old: str                                # the old master, host:port
    replicas: Mapping[str, str]             # run_id -> host:port (the old master's too)
    ready: frozenset[str] = frozenset()     # the replicas the preflight found in sync
    epochs: Mapping[str, int] = field(default_factory=dict)   # each Sentinel's +new-epoch
    chosen: str | None = None               # the replica Sentinel promotes
    held: bool = False
    promoted: bool = False
    switched: str | None = None             # +switch-master's new master
    vip: str | None = None                  # who answers as master behind the VIP
    failed: str | None = None

    @property
    def done(self) -> bool:
        return self.failed is not None or (self.switched is not None
                                           and self.vip == self.switched)


def follow(p: Progress, seen: Observed) -> tuple[Progress, list[str]]:
    """Pure: the progress after one observation, and the timeline lines it adds."""
    if isinstance(seen, WritesHeld):
        if p.held:
            return p, []
        return replace(p, held=True), [f"old master {seen.addr} holds its writes "
                                       "(CLIENT PAUSE WRITE by its agent)"]
    if isinstance(seen, VipAnswered):
        if seen.role != "master":
            # Nobody, or a replica: whoever answered as master before no longer does.
            return replace(p, vip=None), []
        who = p.replicas.get(seen.run_id, f"run_id {seen.run_id[:12]}")
        if who == p.vip:
            return p, []
        return replace(p, vip=who), [f"VIP answers from {who} (ROLE master)"]
    event = parse_event(seen.channel, seen.data)
    if seen.channel == EPOCH_EVENT and event is not None and event.epoch is not None:
        return replace(p, epochs={**p.epochs, seen.source: event.epoch}), []
    if event is None or event.master != p.master:
        return p, []
    if seen.channel == ATTEMPT_EVENT:
        epoch = p.epochs.get(seen.source)
        return p, [f"Sentinel {seen.source} starts the failover"
                   + (f" at epoch {epoch}" if epoch is not None else "")]
    if seen.channel == "+selected-slave" and event.replica and p.chosen is None:
        chosen = hostport(*event.replica)
        note = "" if chosen in p.ready else " (not one the preflight found in sync)"
        return replace(p, chosen=chosen), [f"Sentinel selected replica {chosen}{note}"]
    if seen.channel == "+failover-state-wait-promotion" and event.replica:
        return p, [f"Sentinel sent SLAVEOF NO ONE to {hostport(*event.replica)}"]
    # +promoted-slave and +switch-master always name one (parse_event).
    new = (hostport(event.new_host, event.new_port)
           if event.new_host is not None and event.new_port is not None else "")
    if seen.channel == "+promoted-slave" and not p.promoted:
        return replace(p, promoted=True), [f"Sentinel saw {new} promoted (+promoted-slave)"]
    if seen.channel == "+switch-master" and p.switched is None:
        if new != p.chosen:
            return p, []        # not this switchover's (a lagging Sentinel's older one)
        return replace(p, switched=new), [f"Sentinel {seen.source} switched {p.master} to "
                                          f"{new} (+switch-master)"]
    if seen.channel in ABORT_EVENTS and p.failed is None and not p.promoted:
        return replace(p, failed=f"Sentinel {seen.source} aborted: {seen.channel}"), [
            f"Sentinel {seen.source} aborted the failover ({seen.channel})"]
    return p, []


# --- the shell: ask, listen, print --------------------------------------------------------------

def run(cfg: Config, master: str, timeout: float, echo: Any) -> int:
    """The switchover: 0 completed, 1 refused or not completed in ``timeout``."""
    import redis

    vip = cfg.vip_for(master)
    if vip is None:
        raise PermanentError(f"master {master!r} has no [[vip]] block in {cfg.path}")
    answers = ask_all(cfg.sentinel, [master])[master]
    asked = next((i for i, a in enumerate(answers) if a.master is not None), None)
    if asked is None:
        raise TransientError(f"no Sentinel answers for {master}: " + "; ".join(
            f"{a.endpoint}: {a.error}" for a in answers))
    first = answers[asked].master
    assert first is not None
    ep = cfg.sentinel.addresses[asked]
    s = connection(ep.host, ep.port, cfg.sentinel.username, cfg.sentinel.password,
                   cfg.sentinel.timeout)
    try:
        replicas = _ask(s, "SENTINEL", "REPLICAS", master)
        lags: dict[tuple[str, int], int] | None
        old_run_id = ""
        try:
            r = connection(first.host, first.port, cfg.redis.username, cfg.redis.password,
                           cfg.redis.timeout)
            lags = parse_lags(str(_ask(r, "INFO", "replication")))
            old_run_id = _run_id(str(_ask(r, "INFO", "server")))
            r.disconnect()
        except (redis.RedisError, OSError) as exc:
            log.debug("cannot ask the master: %s", exc)
            lags = None
        plan, problems = preflight(answers, parse_replicas(replicas), lags)
        if plan is None:
            for line in problems:
                echo(f"not switching over: {line}")
            return 1
        echo(f"{master}: master {plan.master.addr} at epoch {plan.master.config_epoch}; in "
             f"sync: " + ", ".join(f"{r.addr} (lag {r.lag} s)" for r in plan.ready))
        progress = Progress(master, plan.master.addr,
                            {**{r.run_id: r.addr for r in parse_replicas(replicas)},
                             old_run_id: plan.master.addr},
                            ready=frozenset(r.addr for r in plan.ready))
        return _watch(cfg, vip, plan, s, progress, timeout, echo)
    finally:
        s.disconnect()


def _watch(cfg: Config, vip: VipConfig, plan: Plan, s: Any, progress: Progress, timeout: float,
           echo: Any) -> int:
    import redis

    seen: queue.Queue[Observed] = queue.Queue(maxsize=10_000)
    stop = threading.Event()
    listening: list[threading.Event] = []
    threads = []
    for endpoint in cfg.sentinel.addresses:
        ready = threading.Event()
        listening.append(ready)
        threads.append(threading.Thread(target=_listen, args=(cfg, endpoint, seen, stop, ready),
                                        daemon=True))
    threads.append(threading.Thread(target=_probe_vip, args=(cfg, vip, plan.master.port, seen,
                                                             stop), daemon=True))
    for t in threads:
        t.start()
    for ready in listening:
        ready.wait(timeout=cfg.sentinel.timeout + 1)    # subscribed before asking
    t0 = time.monotonic()

    def say(line: str) -> None:
        echo(f"[{time.monotonic() - t0:7.3f}s] {line}")

    try:
        try:
            reply = _ask(s, "SENTINEL", "FAILOVER", plan.master.name)
        except redis.ResponseError as exc:
            # -INPROG (one is running), -NOGOODSLAVE (no replica it would promote)
            say(f"Sentinel {cfg.sentinel.addresses[plan.sentinel]} refused: "
                f"{escape(str(exc)[:200])}")
            return 1
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            say(f"no answer from Sentinel {cfg.sentinel.addresses[plan.sentinel]} "
                f"({escape(str(exc)[:200])}): the failover may be running; see vipfloat "
                "status")
            return 1
        say(f"asked Sentinel {cfg.sentinel.addresses[plan.sentinel]} for SENTINEL FAILOVER "
            f"{plan.master.name}: {escape(str(reply)[:40])}")
        deadline = t0 + timeout
        held_probe = False
        while not progress.done:
            left = deadline - time.monotonic()
            if left <= 0:
                say(f"not completed within {timeout:g} s")
                return 1
            try:
                item = seen.get(timeout=left)
            except queue.Empty:
                continue
            progress, lines = follow(progress, item)
            for line in lines:
                say(line)
            if progress.chosen is not None and not held_probe:
                held_probe = True
                threading.Thread(target=_probe_held, args=(cfg, plan.master, seen, stop),
                                 daemon=True).start()
        if progress.failed is not None:
            return 1
        say(f"switchover of {plan.master.name} complete: {progress.vip} is master and holds "
            f"the VIP {vip.ip}")
        return 0
    finally:
        stop.set()


def _ask(conn: Any, *command: str) -> Any:
    conn.send_command(*command)
    return conn.read_response()


def _run_id(info: str) -> str:
    for line in info.splitlines():
        if line.startswith("run_id:"):
            return line.split(":", 1)[1].strip()
    return ""


def _listen(cfg: Config, endpoint: Any, out: queue.Queue[Observed], stop: threading.Event,
            ready: threading.Event) -> None:
    import redis

    client = redis.Redis(host=endpoint.host, port=endpoint.port, username=cfg.sentinel.username,
                         password=cfg.sentinel.password.value if cfg.sentinel.password else None,
                         socket_connect_timeout=cfg.sentinel.timeout, socket_timeout=1.0,
                         decode_responses=True)
    try:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(*CHANNELS)
        ready.set()
        while not stop.is_set():
            msg = pubsub.get_message(timeout=0.1)
            if msg and msg.get("type") == "message":
                data = str(msg["data"])[:1024]
                try:
                    out.put_nowait(Published(str(endpoint), str(msg["channel"]), data))
                except queue.Full:
                    return
    except (redis.RedisError, OSError) as exc:
        log.debug("subscription to %s: %s", endpoint, exc)
    finally:
        ready.set()
        client.close()


def _probe_vip(cfg: Config, vip: VipConfig, port: int, out: queue.Queue[Observed],
               stop: threading.Event) -> None:
    """Who answers behind the VIP: a fresh connection each time (the old
    holder's are reset when it lets go), ROLE and INFO server's run_id."""
    import redis

    last = None
    while not stop.is_set():
        try:
            conn = connection(str(vip.ip), port, cfg.redis.username, cfg.redis.password,
                              VIP_PROBE_TIMEOUT)
            try:
                role = _ask(conn, "ROLE")
                run_id = _run_id(str(_ask(conn, "INFO", "server")))
            finally:
                conn.disconnect()
            first = str(role[0]) if isinstance(role, list) and role else "?"
            answer = VipAnswered(run_id, first)
        except (redis.RedisError, OSError):
            answer = VipAnswered("", "unreachable")
        if answer != last:
            last = answer
            try:
                out.put_nowait(answer)
            except queue.Full:
                return
        stop.wait(VIP_PROBE_INTERVAL)


def _probe_held(cfg: Config, master: MasterInfo, out: queue.Queue[Observed],
                stop: threading.Event) -> None:
    """Does the old master hold its writes? A PUBLISH (no data changes) that
    blocks says so; tried every 10 ms for a second."""
    import redis

    from redis.backoff import NoBackoff
    from redis.retry import Retry

    end = time.monotonic() + 1.0
    while not stop.is_set() and time.monotonic() < end:
        # Connecting may take its time; only the PUBLISH's answer is timed.
        conn = redis.Connection(host=master.host, port=master.port,
                                username=cfg.redis.username,
                                password=cfg.redis.password.value if cfg.redis.password
                                else None, socket_connect_timeout=cfg.redis.timeout,
                                socket_timeout=HELD_AFTER, retry=Retry(NoBackoff(), 0))
        try:
            conn.connect()      # a slow connect is no hold
        except (redis.RedisError, OSError):
            conn.disconnect()
            return
        try:
            _ask(conn, "PUBLISH", "__vipfloat__:switchover", "probe")
        except redis.TimeoutError:
            out.put_nowait(WritesHeld(master.addr))
            return
        except (redis.RedisError, OSError):
            return
        finally:
            conn.disconnect()
        stop.wait(0.01)
