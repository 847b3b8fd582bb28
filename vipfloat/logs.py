"""Logging to stderr and to syslog/journal, one line per event.

Sentinel daemonized sends the hook's stderr to /dev/null, so decisions also go to
syslog (/dev/log). Under systemd, stderr already lands in the journal
($JOURNAL_STREAM names it), so syslog would write every line twice: skip it then.

Every line may carry text that someone else chose: Sentinel's arguments (master
name, role, state), Sentinel's event payloads, exception texts. A newline or an
escape sequence in such text must not forge a second journal line or drive a
terminal, so control characters never reach a log line raw (:func:`escape`).
The C hook (fasthook/vipfloat-hook-fast.c) applies the same rule to its line.
"""

from __future__ import annotations

import os
import sys

# Not typing.TYPE_CHECKING: the hook's fast path imports neither typing nor
# logging. Type checkers read this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from types import TracebackType

    ExcInfo = (tuple[type[BaseException], BaseException, TracebackType | None]
               | tuple[None, None, None])

# What cannot stand raw in a log line: every control character (Unicode category
# Cc: C0, DEL, C1; a fixed set, so spelt out here rather than importing
# unicodedata on the hook's fast path), the two Unicode line separators some
# readers break lines on, and lone surrogates (undecodable argv bytes: they
# cannot even be encoded for syslog). Each becomes \xNN, or \uNNNN above 0xff.
_UNSAFE = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_ESCAPE = {c: f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}" for c in _UNSAFE}
# In a key=value field a backslash and a quote are escaped too, so that a value
# reads back unambiguously (`\x0a` in a field is always an escaped newline).
_FIELD_ESCAPE = {**_ESCAPE, ord("\\"): "\\\\", ord('"'): '\\"'}


def _surrogates(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def escape(text: str) -> str:
    """`text` with no control character left: one line, safe on a terminal.
    Backslashes stay as they are (messages may quote paths or field values)."""
    text = text.translate(_ESCAPE)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _surrogates(text)
    return text


def _stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


_formatter_cls: type[logging.Formatter] | None = None


def _formatter_class() -> type[logging.Formatter]:
    # Defined on first use: logging costs the hook's fast path ~10 ms to import.
    global _formatter_cls
    if _formatter_cls is not None:
        return _formatter_cls
    import logging

    class OneLineFormatter(logging.Formatter):
        """A record's message is one line, whatever its %s arguments hold.

        The choice for tracebacks (log.exception, stack_info): the message part
        (prefix, level, message) is escaped in full, newlines included, before
        logging appends the traceback; the traceback is formatted on its own and
        keeps its line breaks, so it stays readable, but its other control
        characters are escaped and each of its lines starts with "  | ". An
        exception text that holds a newline therefore cannot produce a line that
        passes for a log line of its own: every real line starts with the
        program's name, every traceback line with the indent.
        """

        def format(self, record: logging.LogRecord) -> str:
            # logging.Formatter.format, except that the traceback is always
            # formatted here: it caches record.exc_text for every handler, and
            # a plain Formatter that saw the record first would leave it raw.
            record.message = record.getMessage()
            if self.usesTime():
                record.asctime = self.formatTime(record, self.datefmt)
            text = self.formatMessage(record)
            if record.exc_info:
                text += "\n" + self.formatException(record.exc_info)
            elif record.exc_text:
                text += "\n" + _block(record.exc_text)
            if record.stack_info:
                text += "\n" + self.formatStack(record.stack_info)
            return text

        def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
            return escape(super().formatMessage(record))

        def formatException(self, ei: ExcInfo) -> str:  # noqa: N802
            return _block(super().formatException(ei))

        def formatStack(self, stack_info: str) -> str:  # noqa: N802
            return _block(super().formatStack(stack_info))

    _formatter_cls = OneLineFormatter
    return OneLineFormatter


def _block(text: str) -> str:
    return "\n".join("  | " + escape(line) for line in text.split("\n"))


def formatter(fmt: str) -> logging.Formatter:
    """A logging.Formatter that never lets a record span more than its own line
    (plus an indented traceback): see OneLineFormatter."""
    return _formatter_class()(fmt)


def setup(program: str, level: str = "info", syslog: bool = True) -> None:
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level.upper())
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter(f"{program}: %(levelname)s %(message)s"))
    root.addHandler(stderr)
    if syslog and not _stderr_is_journal() and os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler

        try:
            handler = SysLogHandler(address="/dev/log", facility=SysLogHandler.LOG_DAEMON)
        except OSError:
            return
        handler.setFormatter(formatter(f"{program}[{os.getpid()}]: %(message)s"))
        root.addHandler(handler)


def fields(**values: object) -> str:
    """key=value pairs: one greppable log line, whatever the values hold.

    The rule (the C hook's too): in every value `\\` becomes `\\\\`, `"` becomes
    `\\"`, and each character :func:`escape` handles its \\xNN form. Then an empty
    or None value is `-`; a value with whitespace (left after escaping) or a `"`
    is wrapped in double quotes; any other stands bare. So `a b` -> `"a b"`,
    `a\\nb` -> `a\\x0ab` (its only whitespace was escaped), `my"m\\x` ->
    `"my\\"m\\\\x"`.
    """
    out = []
    for key, value in values.items():
        raw = "" if value is None else str(value)
        if not raw:
            out.append(f"{key}=-")
            continue
        text = escape(raw.translate(_FIELD_ESCAPE))
        if '"' in raw or any(c.isspace() for c in text):
            text = f'"{text}"'
        out.append(f"{key}={text}")
    return " ".join(out)


def emit(program: str, level: str, line: str) -> None:
    """One line to stderr and syslog without the logging package (~10 ms to
    import): for the hook's fast path, which logs a single line. Escaped as the
    logging package's lines are (OneLineFormatter), so it stays one line."""
    line = escape(line)
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
