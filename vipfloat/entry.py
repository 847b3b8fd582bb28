"""The `vipfloat` console script. Two commands skip the command line's imports
(typer and what it pulls in: about 0.1 s and 8 MiB): `is-configured`, which
systemd runs before every start of the agent, and `watch`, the agent itself,
whose start-up is on a failover's critical path after a crash and whose memory
is held for as long as it runs. Anything else, or any other argument (--help),
goes through vipfloat.cli."""

from __future__ import annotations

import sys


def config_arg(argv: list[str]) -> tuple[bool, str | None]:
    """``[--config PATH | -c PATH | --config=PATH]`` -> (understood, PATH or None)."""
    if not argv:
        return True, None
    if len(argv) == 2 and argv[0] in ("--config", "-c"):
        return True, argv[1]
    if len(argv) == 1 and argv[0].startswith("--config="):
        return True, argv[0].split("=", 1)[1]
    return False, None


def is_configured(path: str | None) -> int:
    try:
        from .configured import run

        return run(path)
    except Exception as exc:  # noqa: BLE001 - exit 1 would skip the agent silently
        print(f"vipfloat: is-configured: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 0


def watch(path: str | None) -> int:
    """As `vipfloat watch` through the command line: one line per problem, its
    exit code, never a traceback."""
    try:
        from .agent import main as agent_main
        from .errors import VipfloatError
    except Exception as exc:  # noqa: BLE001 - a broken install: one line, exit 1
        print(f"vipfloat: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        return agent_main(path)
    except VipfloatError as exc:
        if not exc.logged:
            for line in str(exc).splitlines():
                print(f"vipfloat: {line}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"vipfloat: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def main() -> None:
    command, rest = sys.argv[1:2], sys.argv[2:]
    understood, path = config_arg(rest)
    if understood and command == ["is-configured"]:
        sys.exit(is_configured(path))
    if understood and command == ["watch"]:
        sys.exit(watch(path))
    from .cli import main as cli_main

    cli_main()
