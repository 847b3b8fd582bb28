"""The `vipfloat` console script: `is-configured` without the command line's
imports (systemd runs it before every start of the agent), everything else
through vipfloat.cli."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["is-configured"]:
        from .configured import main as is_configured

        sys.exit(is_configured(sys.argv[2:]))
    from .cli import main as cli_main

    cli_main()
