"""The exception hierarchy and the exit codes it maps to.

Exit codes are a contract with Redis Sentinel: it retries a client-reconfig-script
that exits 1 (30 s, 60 s, 2 min ... apart) and gives up on one that exits 2 or more.
So a failure that may pass by itself (interface not up yet, lock busy, DNS hiccup,
netlink error) is Transient, and one that no retry can mend (bad argv, bad config,
unknown master name) is Permanent.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_TRANSIENT = 1
EXIT_PERMANENT = 2


class VipfloatError(Exception):
    """Base of every error vipfloat reports as one line and an exit code."""

    exit_code: int = EXIT_TRANSIENT
    # Set once the error is in the log (inside a decision line), so the entry
    # point does not print it a second time.
    logged: bool = False


class TransientError(VipfloatError):
    """Worth retrying: Sentinel runs the hook again later."""

    exit_code = EXIT_TRANSIENT


class InterfaceError(TransientError):
    """The VIP's interface is missing or down (it may be coming back)."""


class NetlinkOperationError(TransientError):
    """The kernel refused an address change for a reason other than idempotency."""


class LockTimeout(TransientError):
    """Another vipfloat run held the VIP's lock past our deadline."""


class ResolveError(TransientError):
    """The new master's hostname did not resolve (DNS may come back)."""


class PermanentError(VipfloatError):
    """No retry can help: the caller or the config must change."""

    exit_code = EXIT_PERMANENT


class UsageError(PermanentError):
    """Bad command-line arguments."""


class ConfigError(PermanentError):
    """The config file is missing or invalid. Holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UnknownMasterError(PermanentError):
    """Sentinel named a master that the config has no [[vip]] block for."""
