"""What the agent believes each master is, and whether it can trust anything.

Two small state machines with the clock passed in (tests drive them with a fake
one): :class:`Belief` follows the newest Sentinel configuration, taking event
payloads as provisional hints that polls of lagging Sentinels cannot undo, and
:class:`QuorumTracker` measures how long this host has seen fewer than a
majority of its Sentinels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from .decide import newest
from .sentinel import SentinelAnswer

# A hint (+promoted-slave, +switch-master, a hook's argv) that no Sentinel has
# confirmed with a newer config-epoch within this long is dropped. Observers
# adopt the new configuration from the leader's hellos within about 2 s.
HINT_TTL = 15.0
# Sentinels whose epochs all went backwards (reset, rebuilt) are believed again
# once a majority has agreed on the lower epoch for this long.
EPOCH_RESET_AFTER = 30.0


@dataclass(frozen=True)
class Belief:
    host: str
    port: int
    epoch: int              # the config-epoch behind it; for a hint, the one it supersedes
    provisional: bool       # from an event, not yet confirmed by a newer epoch
    source: str
    since: float            # when this belief was formed (monotonic clock)
    lower_since: float | None = None  # when a majority started reporting a lower epoch

    @property
    def addr(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def on_hint(belief: Belief | None, host: str, port: int, source: str, now: float) -> Belief:
    """An event says ``host:port`` is the new master: believe it now, provisionally."""
    if belief is not None and (belief.host, belief.port) == (host, port):
        return belief
    return Belief(host, port, belief.epoch if belief else -1, True, source, now)


def on_poll(belief: Belief | None, answers: Sequence[SentinelAnswer], configured: int,
            now: float) -> Belief | None:
    """Fold one round of SENTINEL MASTER answers into the belief."""
    best = newest(answers)
    if best is None or best.master is None:
        return belief
    m = best.master
    polled = Belief(m.host, m.port, m.config_epoch, False,
                    f"Sentinel {best.endpoint}, config-epoch {m.config_epoch}", now)
    if belief is None or m.config_epoch > belief.epoch:
        return polled            # a newer configuration: it wins, whatever it names
    if belief.provisional:
        if now - belief.since > HINT_TTL:
            return polled        # never confirmed: fall back to what Sentinels say
        return belief            # an older configuration: a lagging view, ignored
    if m.config_epoch == belief.epoch:
        return replace(belief, lower_since=None)
    # Every answer is older than what we believe. Lagging Sentinels do that for a
    # moment; a majority doing it for EPOCH_RESET_AFTER means the epochs were reset.
    agreeing = sum(1 for a in answers if a.master and a.master.config_epoch == m.config_epoch
                   and (a.master.host, a.master.port) == (m.host, m.port))
    if agreeing < configured // 2 + 1:
        return replace(belief, lower_since=None)
    if belief.lower_since is None:
        return replace(belief, lower_since=now)
    if now - belief.lower_since >= EPOCH_RESET_AFTER:
        return polled
    return belief


class QuorumTracker:
    """Seconds spent below a majority of reachable Sentinels."""

    def __init__(self, configured: int) -> None:
        self.configured = configured
        self.reachable = configured
        self._below_since: float | None = None

    @property
    def majority(self) -> int:
        return self.configured // 2 + 1

    def observe(self, reachable: int, now: float) -> None:
        self.reachable = reachable
        if reachable >= self.majority:
            self._below_since = None
        elif self._below_since is None:
            self._below_since = now

    def below_for(self, now: float) -> float:
        return 0.0 if self._below_since is None else now - self._below_since
