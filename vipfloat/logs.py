"""Logging to stderr and to syslog/journal, one line per event.

Sentinel daemonized sends the hook's stderr to /dev/null, so decisions also go to
syslog (/dev/log). Under systemd, stderr already lands in the journal
($JOURNAL_STREAM names it), so syslog would write every line twice: skip it then.
"""

from __future__ import annotations

import os
import sys



def _stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup(program: str, level: str = "info", syslog: bool = True) -> None:
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level.upper())
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(f"{program}: %(levelname)s %(message)s"))
    root.addHandler(stderr)
    if syslog and not _stderr_is_journal() and os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler

        try:
            handler = SysLogHandler(address="/dev/log", facility=SysLogHandler.LOG_DAEMON)
        except OSError:
            return
        handler.setFormatter(logging.Formatter(f"{program}[{os.getpid()}]: %(message)s"))
        root.addHandler(handler)


def fields(**values: object) -> str:
    """key=value pairs, quoting values with spaces: one greppable log line."""
    out = []
    for key, value in values.items():
        text = "-" if value is None or value == "" else str(value)
        if any(c.isspace() for c in text) or '"' in text:
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(f"{key}={text}")
    return " ".join(out)


def emit(program: str, level: str, line: str) -> None:
    """One line to stderr and syslog without the logging package (~10 ms to
    import): for the hook's fast path, which logs a single line."""
    try:
        sys.stderr.write(f"{program}: {level} {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    if not _stderr_is_journal() and os.path.exists("/dev/log"):
        import syslog

        priority = {"ERROR": syslog.LOG_ERR, "WARNING": syslog.LOG_WARNING}.get(level,
                                                                               syslog.LOG_INFO)
        syslog.openlog(program, syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(priority, line)
