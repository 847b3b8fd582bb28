"""vipfloat-hook: Sentinel's client-reconfig-script.

    vipfloat-hook [--config PATH] <master-name> <role> <state> <from-ip> <from-port> <to-ip> <to-port>

Exit 0: done or nothing to do. 1: transient failure, Sentinel retries (30 s, 60 s ...).
2: bad arguments or config, or a master name the config does not know: no retry.

This module is on every failover's critical path. With an agent running (the
fast path) it hands the arguments over before importing anything but a few
standard modules: no config parsing, no logging package, no pyroute2. Only when
no agent answers does it load the config and act itself (the direct path).
"""

from __future__ import annotations

import os
import sys
import time

from .errors import EXIT_OK, EXIT_TRANSIENT, UnknownMasterError, UsageError, VipfloatError

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


def _port(name: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"{name} must be a port number 1-65535, not {text!r}")
    return int(text)


def _host(name: str, text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise UsageError(f"{name} must be an IP address or host name, not {text!r}")
    return text


def parse_argv(argv: list[str]) -> HookArgs:
    """Pure: Sentinel's seven arguments (role and state accepted as given: Sentinel 7
    passes state 'start' where its docs say 'failover')."""
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
    if not master:
        raise UsageError("master-name is empty")
    return HookArgs(master=master, role=role, state=state,
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
        return int(answer["exit"]), str(answer.get("message", ""))
    except NoAgent:
        return None  # no agent: act directly
    except (OSError, ValueError, KeyError, TypeError) as exc:
        from .logs import emit

        emit("vipfloat-hook", "WARNING", f"agent on {path} did not answer ({exc}): "
                                         "acting directly")
        return None


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _log() -> "logging.Logger":  # noqa: F821 - imported lazily
    import logging

    return logging.getLogger("vipfloat-hook")


def run(args: HookArgs) -> int:
    # Fast path: an agent on the usual socket (or $VIPFLOAT_SOCKET) decides and
    # acts; it knows the config and answers 2 for a master it does not have.
    # VIPFLOAT_DIRECT: vipfloat-hook-fast already asked the agent, which took the
    # request and gave no usable answer; asking again could run past Sentinel's kill.
    direct = os.environ.get("VIPFLOAT_DIRECT") == "1"
    tried = None
    if args.config is None and not direct:
        tried = os.environ.get("VIPFLOAT_SOCKET") or DEFAULT_SOCKET
        verdict = ask_agent(tried, args.argv, timeout=30.0)
        if verdict is not None:
            return _report_agent(args, verdict)
    from . import config as config_mod
    from . import logs

    cfg = config_mod.load(args.config)
    logs.setup("vipfloat-hook", cfg.log_level)
    vip = cfg.vip_for(args.master)
    if vip is None:
        raise UnknownMasterError(f"master {args.master!r} has no [[vip]] block in {cfg.path}")
    if str(cfg.agent.socket) != tried and not direct:
        verdict = ask_agent(str(cfg.agent.socket), args.argv, cfg.agent.hook_timeout)
        if verdict is not None:
            return _report_agent(args, verdict)
    # No agent: act directly. Imported here, not at the top: pyroute2 is most of
    # the hook's start-up cost, and nothing before this point needs it.
    from .apply import Event, resolve_host, run as apply_run
    from .decide import Claim

    claim = Claim(source=f"hook, {args.role or 'unknown role'}", new_master=args.to_host,
                  new_master_addrs=resolve_host(args.to_host))
    event = Event(role=args.role, old_master=_hostport(args.from_host, args.from_port),
                  new_master=_hostport(args.to_host, args.to_port))
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

    Tearing down pyroute2's modules costs ~60-90 ms at exit; everything the hook
    owns (netlink sockets, the lock) is already closed, and Sentinel's script slot
    is freed as soon as we exit."""
    code = main()
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
