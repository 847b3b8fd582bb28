"""Crash failover: when this host's Redis master has crashed, ask Sentinel to
fail over now instead of after down-after-milliseconds (a VIP's
``crash_failover = true``).

Pure: what the agent saw of its local Redis (:class:`Watch`, fed probe by probe)
and what its Sentinels say (:class:`CrashView`) in, a verdict with its reason
out. The watcher thread in vipfloat.agent probes and asks; nothing here does.

A crash is connections *refused* (nothing listens on the port: the process is
gone), seen at least CONFIRM_PROBES times over at least CONFIRM_WINDOW with no
success or timeout in between. A timeout is never a crash: a slow or paused
Redis, a full listen queue or a network problem is left to Sentinel's own
detection, which can tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Sequence

from .decide import Quorum
from .sentinel import MasterInfo, Replica

# The confirmation window. A Redis restarted under its supervisor listens again
# only after exec, loading its config and its data: 100 ms at the very least
# under systemd (RestartSec's default), so a window below that still turns a
# crash-and-restart into a failover, as it should (the restarted master would
# come back empty without persistence). What the window filters is a refusal of
# a few ms: a listener being re-created (CONFIG SET port or bind) or a probe
# racing a restart that was already almost done. Fifty milliseconds is five
# probes ten ms apart, and a twentieth of the fastest failover Sentinel does
# alone (down-after-milliseconds 1000, plus its election).
CONFIRM_WINDOW = 0.05
CONFIRM_PROBES = 3
# How often the watcher probes once the connection dropped.
PROBE_INTERVAL = 0.01


class Probe(StrEnum):
    """One attempt to reach the local Redis."""

    UP = "up"                  # connected
    REFUSED = "refused"        # ECONNREFUSED: nothing listens
    TIMEOUT = "timed out"      # slow, paused or unreachable: not a crash
    ERROR = "error"            # anything else: not a crash either


@dataclass(frozen=True)
class Watch:
    """What the watcher has seen of one local Redis since its last success."""

    down_since: float | None = None      # the first refusal of the current run
    refusals: int = 0
    asked_epoch: int | None = None       # config-epoch at which SENTINEL FAILOVER was asked


def observe(w: Watch, probe: Probe, now: float) -> Watch:
    """Pure: the watch after one probe. Anything but a refusal ends the run."""
    if probe is Probe.REFUSED:
        if w.down_since is None:
            return replace(w, down_since=now, refusals=1)
        return replace(w, refusals=w.refusals + 1)
    if w.down_since is None:
        return w
    return replace(w, down_since=None, refusals=0)


def confirmed(w: Watch, now: float) -> bool:
    return (w.down_since is not None and w.refusals >= CONFIRM_PROBES
            and now - w.down_since >= CONFIRM_WINDOW)


def asked(w: Watch, epoch: int) -> Watch:
    """A SENTINEL FAILOVER was sent at ``epoch``, whatever its answer: never again
    for that configuration during this crash (the watcher forgets it once the
    Redis is back up: a later crash is another one)."""
    return replace(w, asked_epoch=epoch)


# Sentinel refuses a replica whose INFO is older than 3 info periods (30 s)
# when the master is not yet down (sentinelSelectSlave).
INFO_VALID_MS = 30_000
# A replica whose link Sentinel last saw down for at most this long went down
# with the crash itself (Sentinel's INFO of it came in between): still in sync.
LINK_DOWN_OK_MS = 2_000


def healthy(r: Replica) -> bool:
    """A replica Sentinel would promote (the fields sentinelSelectSlave reads),
    streaming from the master when Sentinel last looked, or cut from it only by
    the crash."""
    streaming = r.link_ok or (r.link_down_ms is not None and r.link_down_ms <= LINK_DOWN_OK_MS)
    return (set(r.flags) == {"slave"} and streaming and r.priority > 0
            and r.info_age_ms is not None and r.info_age_ms <= INFO_VALID_MS)


@dataclass(frozen=True)
class CrashView:
    """What the Sentinels say about the master whose local Redis went down."""

    addr: str                                # the local Redis, host:port
    believed_here: bool                      # the newest config names this host's Redis
    epoch: int                               # that config's epoch
    quorum: Quorum
    in_flight: str | None = None             # a failover in progress, described
    # Asked of one Sentinel only when everything above allows asking (None: not
    # yet): its replicas, and its own SENTINEL MASTER, which must agree.
    replicas: Sequence[Replica] | None = None
    sentinel_view: MasterInfo | None = None


class Verdict(StrEnum):
    ASK = "ask"                # send SENTINEL FAILOVER now
    CHECK = "check"            # all else allows it: ask a Sentinel its view, judge again
    WAIT = "wait"              # refused, not yet for long enough: probe again
    NOTHING = "nothing"        # not a crash, or not ours to act on


def judge(w: Watch, view: CrashView, now: float) -> tuple[Verdict, str]:
    """Pure: whether to ask Sentinel to fail over now, and why (logged)."""
    if w.down_since is None:
        return Verdict.NOTHING, f"{view.addr} answers"
    down_ms = (now - w.down_since) * 1000
    seen = f"{view.addr} refused {w.refusals} connection(s) over {down_ms:.0f} ms"
    if not confirmed(w, now):
        return Verdict.WAIT, (f"{seen}: confirming (at least {CONFIRM_PROBES} over "
                              f"{CONFIRM_WINDOW * 1000:.0f} ms)")
    if not view.believed_here:
        return Verdict.NOTHING, f"{seen}, but Sentinel's newest config names another master"
    q = view.quorum
    if not q.ok or not q.fresh:
        return Verdict.NOTHING, (f"{seen}, but only {q.reachable}/{q.configured} Sentinels "
                                 "reachable and asked: leaving it to Sentinel")
    if view.in_flight is not None:
        return Verdict.NOTHING, f"{seen}; a failover is already in progress ({view.in_flight})"
    if w.asked_epoch == view.epoch:
        return Verdict.NOTHING, (f"{seen}; SENTINEL FAILOVER already asked at config-epoch "
                                 f"{view.epoch}: not again")
    if view.replicas is None or view.sentinel_view is None:
        return Verdict.CHECK, f"{seen}: asking a Sentinel for its view"
    m = view.sentinel_view
    if m.addr != view.addr or m.config_epoch < view.epoch or "failover_in_progress" in m.flags:
        # The Sentinel about to be asked must itself name this Redis, at the
        # configuration believed: it fails over whatever it thinks is master.
        return Verdict.NOTHING, (f"{seen}, but the Sentinel to ask names {m.addr} at "
                                 f"config-epoch {m.config_epoch} ({','.join(m.flags)}): "
                                 "leaving it to Sentinel")
    ready = [r.addr for r in view.replicas if healthy(r)]
    if not ready:
        return Verdict.NOTHING, (f"{seen}, but no replica is in sync ("
                                 + ("; ".join(f"{r.addr} flags {','.join(r.flags)}, link "
                                              f"{'ok' if r.link_ok else 'down'}, priority "
                                              f"{r.priority}" for r in view.replicas)
                                    or "Sentinel knows none") + "): leaving it to Sentinel")
    return Verdict.ASK, (f"{seen}: crashed; replica(s) {', '.join(ready)} in sync, asking "
                         f"Sentinel to fail over now (config-epoch {view.epoch})")
