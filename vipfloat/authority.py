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

from .config import hostport, majority
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
        return hostport(self.host, self.port)


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
    if agreeing < majority(configured):
        return replace(belief, lower_since=None)
    if belief.lower_since is None:
        return replace(belief, lower_since=now)
    if now - belief.lower_since >= EPOCH_RESET_AFTER:
        return polled
    return belief


class QuorumTracker:
    """How many Sentinels this host is in contact with, and since when it has had
    fewer than a majority.

    Contact is any successful exchange: a poll answer, a pub/sub message, a pong
    (the subscriptions ping every quarter second). A Sentinel silent for longer
    than ``window`` counts as unreachable, and the quorum is taken as lost from
    the moment the last Sentinel needed for a majority was last heard, not from
    when the loss was noticed: the isolated old master's grace period then runs
    from the real cut, as the other Sentinels' down-after-milliseconds does.
    """

    def __init__(self, configured: int, window: float = 1.0, now: float = 0.0) -> None:
        self.configured = configured
        self.window = window
        # Counted as reachable at start, so that a restart is not a quorum loss.
        self._last: list[float] = [now] * configured

    def restart(self, now: float) -> None:
        """Every Sentinel counted as just heard: when the agent starts listening."""
        self._last = [now] * self.configured

    @property
    def majority(self) -> int:
        return majority(self.configured)

    def contact(self, index: int, now: float) -> None:
        self._last[index] = max(self._last[index], now)

    def reachable(self, now: float) -> int:
        return sum(1 for t in self._last if now - t <= self.window)

    def next_check(self, now: float) -> float:
        """When the quorum would be lost if nothing more is heard: the moment the
        majority-th most recent contact becomes older than ``window``."""
        lost_at = sorted(self._last, reverse=True)[self.majority - 1]
        return max(now, lost_at + self.window + 0.001)

    def below_for(self, now: float) -> float:
        """Seconds since contact with a majority was lost; 0 while there is one."""
        if self.reachable(now) >= self.majority:
            return 0.0
        lost_at = sorted(self._last, reverse=True)[self.majority - 1]
        return now - lost_at
