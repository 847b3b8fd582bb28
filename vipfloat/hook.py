"""vipfloat-hook: Sentinel's client-reconfig-script.

    vipfloat-hook [--config PATH]
                  <master-name> <role> <state> <from-ip> <from-port> <to-ip> <to-port>

Exit 0: done or nothing to do. 1: transient failure, Sentinel retries (30 s, 60 s ...).
2: bad arguments or config, or a master name the config does not know: no retry.

This module is on every failover's critical path. With an agent running (the
fast path) it hands the arguments over before importing anything but a few
standard modules: no config parsing, no logging package, no netlink. Only when
no agent answers does it load the config and act itself (the direct path).
"""

from __future__ import annotations

import os
import sys
import time

from .errors import EXIT_OK, EXIT_TRANSIENT, UnknownMasterError, UsageError, VipfloatError

# Not typing.TYPE_CHECKING: the fast path imports no typing either. Type checkers
# read this name as true; at run time logging is imported only where it is used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

# Where the agent listens when the config does not say otherwise. The hook tries
# it (or $VIPFLOAT_SOCKET) before reading the config, which costs more than the
# whole hand-over.
DEFAULT_SOCKET = "/run/vipfloat/agent.sock"

USAGE = ("usage: vipfloat-hook [--config PATH] <master-name> <role> <state> "
         "<from-ip> <from-port> <to-ip> <to-port>")


class HookArgs:
    """Sentinel's seven arguments, checked. A plain class: importing dataclasses
    alone costs more than the agent needs to move the VIP."""

    __slots__ = ("master", "role", "state", "from_host", "from_port", "to_host", "to_port",
                 "config", "argv", "started")

    def __init__(self, master: str, role: str, state: str, from_host: str, from_port: int,
                 to_host: str, to_port: int, config: str | None = None,
                 argv: tuple[str, ...] = (), started: float = 0.0) -> None:
        self.master, self.role, self.state = master, role, state
        self.from_host, self.from_port = from_host, from_port
        self.to_host, self.to_port = to_host, to_port
        self.config, self.argv, self.started = config, argv, started


# Sentinel's arguments reach log lines, the agent's socket and DNS; what it never
# sends (control characters, kilobytes of text) is refused as a usage error
# (exit 2: no retry can mend it), not carried further.
MAX_TEXT = 256


def _show(text: str) -> str:
    """A bad value for an error message: repr (control characters spelt out),
    cut short so that a megabyte of argv does not become a megabyte of log."""
    return repr(text) if len(text) <= 64 else repr(text[:64]) + f"... ({len(text)} characters)"


def _text(name: str, text: str, *, empty: bool = True, spaces: bool = True) -> str:
    if len(text) > MAX_TEXT:
        raise UsageError(f"{name} is longer than {MAX_TEXT} characters: {_show(text)}")
    if not empty and not text:
        raise UsageError(f"{name} is empty")
    for c in text:
        # Unicode category Cc (C0, DEL, C1), spelt out: unicodedata is not worth
        # importing on the hook's critical path for a fixed set of characters.
        if c < " " or "\x7f" <= c <= "\x9f":
            raise UsageError(f"{name} holds a control character: {_show(text)}")
        # A lone surrogate: bytes that are not UTF-8 (os.fsdecode's escape). No
        # config can name such a master, and no Sentinel sends such a role.
        if "\ud800" <= c <= "\udfff":
            raise UsageError(f"{name} is not valid UTF-8: {_show(text)}")
        if not spaces and c.isspace():
            raise UsageError(f"{name} holds whitespace: {_show(text)}")
    return text


def _port(name: str, text: str) -> int:
    # ASCII digits only: str.isdigit also takes '²' (int() then raises) and
    # int() takes '٣', '+1', ' 1'; none of them is a port Sentinel sends.
    if not (0 < len(text) <= 5 and text.isascii() and text.isdigit()
            and 0 < int(text) < 65536):
        raise UsageError(f"{name} must be a port number 1-65535, not {_show(text)}")
    return int(text)


def _is_ipv4(text: str) -> bool:
    """Strict dotted decimal, as ipaddress takes it (four parts, 0-255, no
    leading zeros), without importing ipaddress (~9 ms) on the critical path."""
    parts = text.split(".")
    return len(parts) == 4 and all(
        0 < len(p) <= 3 and p.isascii() and p.isdigit() and (p == "0" or p[0] != "0")
        and int(p) <= 255 for p in parts)


def _is_ipv6(text: str) -> bool:
    # No zone (fe80::1%eth0): Sentinel announces addresses other hosts can reach,
    # and a zone names an interface of the sender's, not ours.
    if not text.isascii() or "%" in text:
        return False
    import socket  # the hand-over imports it anyway

    try:
        socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return False
    return True


# RFC 1123 letters, digits and hyphens, plus the underscore: container names
# (proj_redis_1) resolve through DNS, and refusing one with exit 2 would leave
# the VIP unmoved for good; the config accepts the same set.
_HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _is_hostname(text: str) -> bool:
    """RFC 1123 (and underscores): labels of 1-63 ASCII letters, digits and inner hyphens, at most
    253 characters (one trailing dot allowed), and a top label that is not all
    digits, so '999.1.1.1' (no IPv4 address) never goes to DNS as a name."""
    name = text[:-1] if text.endswith(".") else text
    if not 0 < len(name) <= 253:
        return False
    labels = name.split(".")
    for label in labels:
        if not (0 < len(label) <= 63 and set(label) <= _HOSTNAME_CHARS
                and label[0] != "-" and label[-1] != "-"):
            return False
    return not labels[-1].isdigit()


def _host(name: str, text: str) -> str:
    if not (_is_ipv4(text) or (":" in text and _is_ipv6(text)) or _is_hostname(text)):
        raise UsageError(f"{name} must be an IP address or host name, not {_show(text)}")
    return text


def parse_argv(argv: list[str]) -> HookArgs:
    """Pure: Sentinel's seven arguments, checked (role and state need not be one
    of the documented words: Sentinel 7 passes state 'start' where its docs say
    'failover'; but they must be short, printable text). The agent parses the
    argv it is handed with this function too, so both paths refuse alike."""
    config = None
    if argv[:1] == ["--config"]:
        if len(argv) < 2:
            raise UsageError("--config needs a path")
        config, argv = argv[1], argv[2:]
    elif argv[:1] and argv[0].startswith("--config="):
        config, argv = argv[0].split("=", 1)[1], argv[1:]
    if len(argv) != 7:
        raise UsageError(f"expected 7 arguments, got {len(argv)}; {USAGE}")
    master, role, state, from_host, from_port, to_host, to_port = argv
    return HookArgs(master=_text("master-name", master, empty=False, spaces=False),
                    role=_text("role", role), state=_text("state", state),
                    from_host=_host("from-ip", from_host), from_port=_port("from-port", from_port),
                    to_host=_host("to-ip", to_host), to_port=_port("to-port", to_port),
                    config=config, argv=tuple(argv), started=time.monotonic())


def ask_agent(path: str, argv: tuple[str, ...], timeout: float) -> tuple[int, str] | None:
    """Hand the arguments to a running agent (`vipfloat watch`), which has netlink,
    Sentinel and the announcer warm, and return its verdict; None when no agent
    answers, so the caller acts itself. Standard library only: this is the path
    that must keep up with a shell script."""
    from .agent_client import NoAgent, request

    try:
        answer = request(path, {"op": "hook", "argv": list(argv)}, timeout)
        code = answer["exit"]
        # Only the codes of the contract: 256 would reach Sentinel as 0 (success).
        if type(code) is not int or not 0 <= code <= 2:
            raise ValueError(f"exit code {code!r} is not 0, 1 or 2")
        return code, str(answer.get("message", ""))
    except NoAgent:
        return None  # no agent: act directly
    except (OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
        from .logs import emit

        emit("vipfloat-hook", "WARNING", f"agent on {path} did not answer ({exc}): "
                                         "acting directly")
        return None


def _log() -> logging.Logger:
    import logging

    return logging.getLogger("vipfloat-hook")


CAP_NET_ADMIN = 12


def holds_net_admin(status_path: str = "/proc/self/status") -> bool | None:
    """Whether this process has CAP_NET_ADMIN in its effective set; None when
    /proc does not say (then the direct path tries, and netlink has the last word)."""
    try:
        with open(status_path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split(":", 1)[1].strip(), 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return None


def _least_privilege_reason() -> str | None:
    """Why this hook must not act itself, or None. In the default deployment
    Sentinel (and so its hook) holds no capabilities and only the agent moves
    VIPs: without the agent the direct path would load the config and netlink
    code only to fail with EPERM, and a permanent-looking failure must not stop
    Sentinel retrying."""
    if os.environ.get("VIPFLOAT_HANDOVER_ONLY") == "1":
        return "VIPFLOAT_HANDOVER_ONLY=1"
    if holds_net_admin() is False:
        return "this hook holds no CAP_NET_ADMIN"
    return None


def run(args: HookArgs) -> int:
    # Fast path: an agent on the usual socket (or $VIPFLOAT_SOCKET) decides and
    # acts; it knows the config and answers 2 for a master it does not have.
    # VIPFLOAT_DIRECT: vipfloat-hook-fast already asked the agent, which took the
    # request and gave no usable answer; asking again could run past Sentinel's kill.
    direct = os.environ.get("VIPFLOAT_DIRECT") == "1"
    env_socket = os.environ.get("VIPFLOAT_SOCKET") or DEFAULT_SOCKET
    tried = None
    if args.config is None and not direct:
        tried = env_socket
        verdict = ask_agent(tried, args.argv, timeout=30.0)
        if verdict is not None:
            return _report_agent(args, verdict)
    from . import config as config_mod
    from . import logs

    # secrets=False: the hook never talks to Sentinel or Redis, so a password
    # file it cannot read (it may run as Sentinel's user) is no reason to fail.
    cfg = config_mod.load(args.config, secrets=False)
    logs.setup("vipfloat-hook", cfg.log_level)
    vip = cfg.vip_for(args.master)
    if vip is None:
        raise UnknownMasterError(f"master {args.master!r} has no [[vip]] block in {cfg.path}")
    if str(cfg.agent.socket) != tried and not direct:
        verdict = ask_agent(str(cfg.agent.socket), args.argv, cfg.agent.hook_timeout)
        if verdict is not None:
            return _report_agent(args, verdict)
    # No agent answered. Without the right to move addresses, exit 1: Sentinel
    # retries (30 s, 60 s ...), and the agent, once it runs, reconciles anyway.
    reason = _least_privilege_reason()
    if reason is not None:
        asked = env_socket if direct else " or ".join(
            dict.fromkeys(p for p in (tried, str(cfg.agent.socket)) if p))
        _log().error("no agent answered on %s and %s (least-privilege mode): exit 1 so "
                     "Sentinel retries; the agent reconciles when it starts", asked, reason)
        return EXIT_TRANSIENT
    # Act directly. Imported here, not at the top: nothing before this point
    # needs the acting half, and the fast path must not pay for it.
    from .apply import Event, run as apply_run
    from .decide import Claim
    from .resolve import resolve_host

    claim = Claim(source=f"hook, {args.role or 'unknown role'}", new_master=args.to_host,
                  new_master_addrs=resolve_host(args.to_host))
    event = Event(role=args.role, old_master=config_mod.hostport(args.from_host, args.from_port),
                  new_master=config_mod.hostport(args.to_host, args.to_port))
    apply_run(cfg, vip, claim, event)
    return EXIT_OK


def _report_agent(args: HookArgs, verdict: tuple[int, str]) -> int:
    from .logs import emit, fields

    code, message = verdict
    emit("vipfloat-hook", "INFO" if code == 0 else "ERROR", fields(
        master=args.master, role=args.role, via="agent", exit=code, reason=message,
        duration_ms=f"{(time.monotonic() - args.started) * 1000:.1f}"))
    return code


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return EXIT_OK
    try:
        return run(parse_argv(argv))
    except VipfloatError as exc:
        if not exc.logged:
            _setup_logging()
            for line in str(exc).splitlines() or [type(exc).__name__]:
                _log().error("%s", line)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - Sentinel must get an exit code, not a traceback
        _setup_logging()
        _log().error("internal error after %.0f ms: %s: %s",
                     (time.monotonic() - started) * 1000, type(exc).__name__, exc)
        _log().debug("traceback", exc_info=True)
        return EXIT_TRANSIENT


def _setup_logging() -> None:
    from . import logs

    logs.setup("vipfloat-hook")


def entry() -> None:
    """Console-script entry: run, flush, and leave without interpreter teardown.

    Tearing down the interpreter's modules costs time at exit (60-90 ms when
    the direct path used pyroute2); everything the hook owns (netlink sockets,
    the lock) is already closed, and Sentinel's script slot is freed as soon as
    we exit."""
    code = main()
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
