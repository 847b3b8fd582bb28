"""The `vipfloat` console script: `is-configured` without the command line's
imports (systemd runs it before every start of the agent), everything else
through vipfloat.cli."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["is-configured"]:
        try:
            from .configured import main as is_configured

            code = is_configured(sys.argv[2:])
        except Exception as exc:  # noqa: BLE001 - exit 1 would skip the agent silently
            print(f"vipfloat: is-configured: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 0
        sys.exit(code)
    from .cli import main as cli_main

    cli_main()
