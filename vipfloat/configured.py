"""Has the operator filled in the config yet? (`vipfloat is-configured`)

The Debian package ships /etc/vipfloat/vipfloat.toml with every line commented
and enables vipfloat.service, whose ExecCondition= runs this: exit 1 (systemd
skips the start, it does not fail it) only when the file is read and names no
[[vip]], which is the shipped template. Anything else, including a file that
cannot be read or parsed, exits 0 so that the agent starts and reports the real
problem (exit 2, one line per problem) instead of being silently skipped.

It runs on every start of the agent, a crash's restart included, so it imports
only the config module's reader, not the command line (typer: about 0.2 s);
vipfloat.entry parses its one option.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from .config import MAX_CONFIG_BYTES, _read_regular, config_path

CONFIGURED, NOT_CONFIGURED = 0, 1


def verdict(path: Path) -> tuple[int, str]:
    """(exit code, the line to print) for the config at ``path``."""
    try:
        raw = _read_regular(path, MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:     # the agent refuses it, and says so
            return CONFIGURED, f"{path}: larger than the agent accepts: the agent reports it"
        data = tomllib.loads(raw.decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - unreadable, not UTF-8, not TOML, too deep...
        return CONFIGURED, f"{path}: cannot judge ({type(exc).__name__}): the agent reports it"
    vips = data.get("vip")
    if vips is not None and vips != []:   # a malformed one too: the agent says what is wrong
        return CONFIGURED, f"{path}: [[vip]] present"
    return NOT_CONFIGURED, (f"{path} names no [[vip]] yet: the agent does not start until it "
                            "does (fill it in, then: vipfloat check-config && "
                            "systemctl restart vipfloat)")


def run(explicit: str | None) -> int:
    code, line = verdict(config_path(explicit))
    print(f"vipfloat: {line}", file=sys.stderr if code else sys.stdout)
    return code
