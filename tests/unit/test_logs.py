"""Log lines cannot be forged or broken: control characters in any logged text
(Sentinel's arguments, event payloads, exception texts) are escaped, in key=value
fields, in the logging package's lines and in the hook's fast-path line."""
from __future__ import annotations

import io
import logging
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from vipfloat import logs

REPO = Path(__file__).resolve().parents[2]
FORGED = "leader\nvipfloat: INFO master=mymaster action=release reason=FORGED"


def no_control(text: str) -> bool:
    return not any(unicodedata.category(c) == "Cc" or c in "\u2028\u2029" for c in text)


@pytest.mark.parametrize("value, logged", [
    ('my"master\\x', '"my\\"master\\\\x"'),
    ("a\nb", "a\\x0ab"),            # its only whitespace was escaped: bare
    ("a b", '"a b"'),
    ("", "-"),
    (None, "-"),
    (3, "3"),
    ("back\\slash", "back\\\\slash"),      # escaped even bare: a value reads back one way
    ("\x1b[31mred", "\\x1b[31mred"),
    ("del\x7f c1\x85\x9b", '"del\\x7f c1\\x85\\x9b"'),
    ("tab\there", "tab\\x09here"),
    ("para\u2028graph\u2029", "para\\u2028graph\\u2029"),
    ("café \U0001f600", '"café \U0001f600"'),
    ("no\u00a0break", '"no\u00a0break"'),  # whitespace to str.isspace, not escaped
    (FORGED, '"leader\\x0avipfloat: INFO master=mymaster action=release reason=FORGED"'),
    ("undecodable\udcff", "undecodable\\udcff"),  # a lone surrogate could not even be encoded
])
def test_fields_escape_rule(value, logged):
    assert logs.fields(k=value) == f"k={logged}"


def test_escape_covers_every_control_character_and_nothing_printable():
    # Spelt out in logs.py (no unicodedata on the hook's fast path): check the
    # set against Unicode's own category Cc, over the whole BMP.
    for cp in range(0x10000):
        c = chr(cp)
        if 0xD800 <= cp <= 0xDFFF:
            assert logs.escape(c) == f"\\u{cp:04x}"
        elif unicodedata.category(c) == "Cc":
            assert logs.escape(c) == f"\\x{cp:02x}", hex(cp)
        elif cp in (0x2028, 0x2029):
            assert logs.escape(c) == f"\\u{cp:04x}"
        else:
            assert logs.escape(c) == c, hex(cp)


def test_fields_with_everything_is_one_printable_line():
    line = logs.fields(**{f"k{i}": chr(i) * 2 for i in range(0x00, 0xA1)})
    assert no_control(line) and len(line.splitlines()) == 1


def test_emit_writes_one_escaped_line(capsys, monkeypatch):
    monkeypatch.setattr(logs.os.path, "exists", lambda p: False)  # no syslog from a test
    logs.emit("vipfloat-hook", "INFO", logs.fields(master="mymaster", role=FORGED, via="agent"))
    logs.emit("vipfloat-hook", "WARNING", "agent on /run/a\nb\x1b.sock did not answer")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        'vipfloat-hook: INFO master=mymaster role="leader\\x0avipfloat: INFO master=mymaster '
        'action=release reason=FORGED" via=agent',
        "vipfloat-hook: WARNING agent on /run/a\\x0ab\\x1b.sock did not answer"]


@pytest.fixture
def logged(monkeypatch):
    """logs.setup on a stderr of our own (no syslog); yields a function
    returning what was written."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.setup("vipfloat", "debug", syslog=False)
    yield stderr.getvalue
    root.handlers[:], root.level = saved


def test_a_record_is_one_line_whatever_its_arguments_hold(logged):
    log = logging.getLogger("vipfloat.test")
    log.info("sentinel event %s %s", "+switch-master", "m 1.2.3.4 6379\nvipfloat: INFO forged")
    log.warning("exception text: %s", ValueError("bad\r\x1b]0;title\x07\x9b2J"))
    log.error(FORGED)  # a message without arguments, too
    err = logged()
    assert err.splitlines() == [
        "vipfloat: INFO sentinel event +switch-master m 1.2.3.4 6379\\x0avipfloat: INFO forged",
        "vipfloat: WARNING exception text: bad\\x0d\\x1b]0;title\\x07\\x9b2J",
        "vipfloat: ERROR leader\\x0avipfloat: INFO master=mymaster action=release "
        "reason=FORGED"]
    assert no_control(err.replace("\n", ""))


def test_tracebacks_stay_readable_and_cannot_forge_a_line(logged):
    log = logging.getLogger("vipfloat.test")
    try:
        raise RuntimeError("kaboom\nvipfloat: INFO forged\x1b[2J")
    except RuntimeError:
        log.exception("apply failed for %s", "m\nx")
    lines = logged().splitlines()
    # The message part: one line, escaped in full.
    assert lines[0] == "vipfloat: ERROR apply failed for m\\x0ax"
    # The traceback: still one frame per line, as Python writes it, but every
    # line indented, so none can pass for a log line of its own.
    assert lines[1] == "  | Traceback (most recent call last):"
    assert any(line.startswith('  |   File "') for line in lines)
    assert lines[-2:] == ["  | RuntimeError: kaboom", "  | vipfloat: INFO forged\\x1b[2J"]
    assert all(line.startswith("  | ") for line in lines[1:])
    assert no_control("".join(lines))


def test_stack_info_is_indented_too(logged):
    logging.getLogger("vipfloat.test").warning("where\x00", stack_info=True)
    lines = logged().splitlines()
    assert lines[0] == "vipfloat: WARNING where\\x00"
    assert lines[1] == "  | Stack (most recent call last):"
    assert all(line.startswith("  | ") for line in lines[1:])


def test_syslog_gets_the_same_formatter(monkeypatch):
    import logging.handlers

    made = []

    class FakeSysLog(logging.Handler):
        LOG_DAEMON = 3

        def __init__(self, address, facility):
            super().__init__()
            made.append(self)

        def emit(self, record):
            self.line = self.format(record)

    monkeypatch.setattr(logging.handlers, "SysLogHandler", FakeSysLog)
    monkeypatch.setattr(logs.os.path, "exists", lambda p: p == "/dev/log")
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.setup("vipfloat-hook")
        logging.getLogger("x").error("%s", "a\nb")
    finally:
        root.handlers[:], root.level = saved
    (handler,) = made
    assert handler.line.endswith("]: a\\x0ab")


def test_a_forged_role_gives_the_hook_one_stderr_line(tmp_path):
    # The hook as Sentinel runs it: the role is refused (exit 2), in one line.
    argv = ["mymaster", FORGED, "start", "198.51.100.11", "6379", "198.51.100.12", "6379"]
    r = subprocess.run([sys.executable, "-c", "from vipfloat.hook import entry; entry()", *argv],
                       cwd=REPO, capture_output=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                            "VIPFLOAT_SOCKET": str(tmp_path / "none.sock"),
                            "VIPFLOAT_CONFIG": str(tmp_path / "none.toml")})
    assert r.returncode == 2
    assert r.stderr.count(b"\n") == 1 and r.stderr.startswith(b"vipfloat-hook: ERROR role "), \
        r.stderr
    assert not [b for b in r.stderr[:-1] if b < 0x20 or b == 0x7F]


def test_a_traceback_another_formatter_cached_is_escaped_anyway(logged):
    # logging caches record.exc_text for all handlers: a plain Formatter that
    # formats the record first must not decide what our handlers write.
    class Plain(logging.Handler):
        def emit(self, record):
            logging.Formatter().format(record)

    plain = Plain()
    logging.getLogger().handlers.insert(0, plain)
    try:
        try:
            raise RuntimeError("x\x1b[2J")
        except RuntimeError:
            logging.getLogger("vipfloat.test").exception("failed")
    finally:
        logging.getLogger().removeHandler(plain)
    lines = logged().splitlines()
    assert lines[-1] == "  | RuntimeError: x\\x1b[2J"
