"""vipfloat-hook-fast (fasthook/vipfloat-hook-fast.c), built here with a recording
stand-in for the Python hook it falls back to, against a fake agent socket: the
request it sends, the verdict it passes on, and when it falls back. No root."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "fasthook" / "vipfloat-hook-fast.c"
ARGS = ["mymaster", "leader", "start", "198.51.100.12", "6379", "198.51.100.11", "6379"]

pytestmark = pytest.mark.skipif(not shutil.which("cc"), reason="needs a C compiler (make deps)")


def build(d: Path, *flags: str) -> tuple[Path, Path]:
    """The fast hook, and the stand-in Python hook it execs: it records its argv
    and VIPFLOAT_DIRECT and exits 7, a code neither side uses."""
    fallback = d / "python-hook"
    fallback.write_text('#!/bin/sh\nprintf "%s\\n" "DIRECT=${VIPFLOAT_DIRECT:-}" "$@" '
                        '> "$FALLBACK_RECORD"\nexit 7\n')
    fallback.chmod(0o755)
    binary = d / "vipfloat-hook-fast"
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", f'-DVIPFLOAT_HOOK="{fallback}"',
                    *flags, "-o", str(binary), str(SOURCE)], check=True)
    return binary, fallback


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    return build(tmp_path_factory.mktemp("fasthook"))


@pytest.fixture(scope="module")
def built_impatient(tmp_path_factory) -> tuple[Path, Path]:
    """Built to give the agent 1.5 s for the whole exchange instead of 30 s."""
    return build(tmp_path_factory.mktemp("fasthook-impatient"), "-DANSWER_TIMEOUT_MS=1500")


class FakeAgent:
    """Answers each connection with ``reply`` (bytes; None: close without a word;
    a function: called with the connection and an Event set at close) and records
    the request lines."""

    def __init__(self, path: Path, reply) -> None:
        self.path, self.reply, self.requests = path, reply, []
        self.closing = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                try:
                    if callable(self.reply):
                        self.reply(conn, self.closing)
                    elif self.reply is not None:
                        conn.sendall(self.reply)
                except OSError:
                    pass  # the hook gave up and closed

    def close(self) -> None:
        self.closing.set()
        # shutdown() first: it wakes a thread blocked in accept(). A bare close()
        # does not, and lets the descriptor's number be reused while that thread
        # is about to call accept() on it: it then answered a later test's hooks
        # (seen: the hook fuzz got this agent's "acquired" for malformed argvs).
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(timeout=10)
        self.sock.close()


def run(built, tmp_path: Path, argv: list[str], socket_path: Path, timeout: float = 10,
        **env: str) -> tuple[int, str, list[str]]:
    binary, _ = built
    record = tmp_path / "fallback.txt"
    env.update(PATH=os.environ.get("PATH", "/usr/bin:/bin"), VIPFLOAT_SOCKET=str(socket_path),
               FALLBACK_RECORD=str(record))
    r = subprocess.run([str(binary), *argv], env=env, capture_output=True, text=True,
                       timeout=timeout)
    fell_back = record.read_text().splitlines() if record.exists() else []
    return r.returncode, r.stderr, fell_back


def test_hands_the_arguments_over_and_passes_the_verdict_on(built, tmp_path):
    agent = FakeAgent(tmp_path / "a.sock", json.dumps(
        {"exit": 2, "message": 'master "odd\\name" has no [[vip]] block'}).encode() + b"\n")
    argv = ['my"master\\x', "leader", "start", "198.51.100.12", "6379", "é", "6379"]
    try:
        code, err, fell_back = run(built, tmp_path, argv, agent.path)
    finally:
        agent.close()
    assert (code, fell_back) == (2, [])
    (request,) = agent.requests
    assert json.loads(request) == {"op": "hook", "argv": argv}
    # The Python hook's line (vipfloat.logs.fields): same fields, same escaping.
    assert err.startswith('vipfloat-hook: ERROR master="my\\"master\\\\x" role=leader via=agent '
                          'exit=2 reason="master \\"odd\\\\name\\" has no [[vip]] block" '
                          'duration_ms=')


def test_exit_zero_is_logged_as_info(built, tmp_path):
    agent = FakeAgent(tmp_path / "a.sock", b'{"exit": 0, "message": "acquired"}\n')
    try:
        code, err, fell_back = run(built, tmp_path, ARGS, agent.path)
    finally:
        agent.close()
    assert (code, fell_back) == (0, [])
    assert "INFO master=mymaster role=leader via=agent exit=0 reason=acquired duration_ms=" in err


def one_clean_line(err: str) -> str:
    """The hook's stderr, checked to be one line with no control character that
    could end it early, forge another or drive a terminal."""
    raw = err.encode()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, err
    assert not [b for b in raw[:-1] if b < 0x20 or b == 0x7f], err
    return err[:-1]


@pytest.mark.parametrize("role, logged", [
    ("a\nb", "role=a\\x0ab"),
    ("leader\nvipfloat-hook: INFO master=mymaster action=release reason=FORGED",
     'role="leader\\x0avipfloat-hook: INFO master=mymaster action=release reason=FORGED"'),
    ("\x1b[31mred\x1b[0m", "role=\\x1b[31mred\\x1b[0m"),
    ("tab\there", "role=tab\\x09here"),
    ("del\x7f", "role=del\\x7f"),
    ("a b", 'role="a b"'),
    ('say "hi"', 'role="say \\"hi\\""'),
    ("back\\slash", "role=back\\\\slash"),
    ("", "role=-"),
    ("café", "role=café"),
    ("no\u00a0break", 'role="no\u00a0break"'),  # whitespace to Python's str.isspace too
])
def test_every_logged_value_is_escaped_as_the_python_hook_does(built, tmp_path, role, logged):
    agent = FakeAgent(tmp_path / "a.sock", b'{"exit": 0, "message": "acquired"}\n')
    try:
        code, err, _ = run(built, tmp_path, ["my\x1bmaster\n\"", role, *ARGS[2:]], agent.path)
    finally:
        agent.close()
    assert code == 0
    line = one_clean_line(err)
    assert line.startswith('vipfloat-hook: INFO master="my\\x1bmaster\\x0a\\"" role=')
    assert f" {logged} via=agent " in line


def test_the_agents_message_is_decoded_then_escaped(built, tmp_path):
    message = "line one\nvipfloat-hook: INFO forged\t\x1b[0m\x00\r é \U0001f600 \\ \""
    agent = FakeAgent(tmp_path / "a.sock", json.dumps({"exit": 1, "message": message}).encode()
                      + b"\n")
    try:
        code, err, _ = run(built, tmp_path, ARGS, agent.path)
    finally:
        agent.close()
    assert code == 1
    # \uXXXX beyond ASCII is written as UTF-8, as the Python hook writes it.
    assert (' reason="line one\\x0avipfloat-hook: INFO forged\\x09\\x1b[0m\\x00\\x0d é '
            '\U0001f600 \\\\ \\"" duration_ms=') in one_clean_line(err)


def test_raw_control_bytes_in_the_agents_answer_are_escaped_too(built, tmp_path):
    agent = FakeAgent(tmp_path / "a.sock", b'{"exit": 0, "message": "raw\x1bbyte\x7f"}\n')
    try:
        _, err, _ = run(built, tmp_path, ARGS, agent.path)
    finally:
        agent.close()
    assert " reason=raw\\x1bbyte\\x7f duration_ms=" in one_clean_line(err)


def test_the_socket_path_and_the_trouble_are_escaped_in_the_warning(built, tmp_path):
    agent = FakeAgent(tmp_path / "a\nb\x1b.sock", None)
    try:
        code, err, _ = run(built, tmp_path, ARGS, agent.path)
    finally:
        agent.close()
    assert code == 7
    assert one_clean_line(err) == (f"vipfloat-hook: WARNING agent on {tmp_path}/a\\x0ab\\x1b.sock "
                                   'did not answer ("connection closed"): acting directly')


def test_no_agent_falls_back_to_the_python_hook_with_the_same_arguments(built, tmp_path):
    code, _, fell_back = run(built, tmp_path, ARGS, tmp_path / "nobody.sock")
    # Not DIRECT: the Python hook may still find an agent on the socket its config names.
    assert (code, fell_back) == (7, ["DIRECT=", *ARGS])


@pytest.fixture
def full_backlog(tmp_path):
    """A socket that listens but never accepts, its queue full: a blocking
    connect() to it waits for ever (an agent stuck, or not yet accepting)."""
    path = tmp_path / "busy.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    queued = []
    try:
        for _ in range(16):
            queued.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            queued[-1].setblocking(False)
            try:
                queued[-1].connect(str(path))
            except BlockingIOError:
                break
        else:
            pytest.skip("this kernel never reports the listen queue full")
        yield path
    finally:
        for sock in queued:
            sock.close()
        listener.close()


def test_a_full_listen_queue_means_no_agent_and_falls_back_in_time(built, tmp_path, full_backlog):
    # The hook gives up connecting after 500 ms, far inside Sentinel's 60 s kill
    # (the 5 s timeout only guards against a hang). Not DIRECT: the agent never
    # took the request.
    code, _, fell_back = run(built, tmp_path, ARGS, full_backlog, timeout=5)
    assert (code, fell_back) == (7, ["DIRECT=", *ARGS])


@pytest.mark.parametrize("reply", [None, b'{"message": "no exit code"}\n', b"garbage\n"])
def test_an_agent_that_does_not_answer_well_means_acting_directly(built, tmp_path, reply):
    agent = FakeAgent(tmp_path / "a.sock", reply)
    try:
        code, err, fell_back = run(built, tmp_path, ARGS, agent.path)
    finally:
        agent.close()
    assert len(agent.requests) == 1
    # DIRECT: the Python hook must not wait for the same agent a second time.
    assert (code, fell_back) == (7, ["DIRECT=1", *ARGS])
    assert "WARNING agent on" in err and "acting directly" in err


def drip(conn: socket.socket, closing: threading.Event) -> None:
    """An answer that never ends: one byte a second, each one in time alone."""
    while not closing.wait(1.0):
        conn.sendall(b" ")


def flood(conn: socket.socket, closing: threading.Event) -> None:
    """An answer far past the hook's cap, then silence with the connection open."""
    conn.sendall(b'{"message": "' + b"x" * 100_000)
    closing.wait(10)


@pytest.mark.parametrize("reply, trouble, build", [
    # Only the drip needs the 1.5 s build (30 s would make the test wait 30 s).
    # The flood gets the usual 30 s: "too long" must be found by the cap, and
    # with 1.5 s a stalled machine could hit the deadline first.
    pytest.param(drip, "no answer in time", "built_impatient", id="drip-no answer in time"),
    pytest.param(flood, "answer too long", "built", id="flood-answer too long"),
])
def test_an_answer_that_drips_or_floods_cannot_hold_the_hook_past_its_deadline(
        request, tmp_path, reply, trouble, build):
    # The deadline is the whole exchange's, not each read's: a byte a second
    # would otherwise hold the hook until Sentinel kills it. 15 s: a hang guard,
    # far past 1.5 s (and far short of the drip's endless answer).
    agent = FakeAgent(tmp_path / "a.sock", reply)
    try:
        code, err, fell_back = run(request.getfixturevalue(build), tmp_path, ARGS, agent.path,
                                   timeout=15)
    finally:
        agent.close()
    assert (code, fell_back) == (7, ["DIRECT=1", *ARGS])
    assert f'did not answer ("{trouble}")' in err


@pytest.mark.parametrize("argv", [["--config", "/etc/vipfloat/other.toml", *ARGS], ARGS[:6],
                                  ["--help"]])
def test_what_only_the_python_hook_understands_goes_straight_to_it(built, tmp_path, argv):
    agent = FakeAgent(tmp_path / "a.sock", b'{"exit": 0, "message": "ok"}\n')
    try:
        code, _, fell_back = run(built, tmp_path, argv, agent.path)
    finally:
        agent.close()
    assert agent.requests == []
    assert (code, fell_back) == (7, ["DIRECT=", *argv])


# Set by the default Sentinel drop-in: Sentinel and its hook hold no
# capabilities, only the agent can move a VIP, so nothing may fall back to acting.
HANDOVER_ONLY = {"VIPFLOAT_HANDOVER_ONLY": "1"}
CANNOT_ACT = ("and this hook may only hand over (VIPFLOAT_HANDOVER_ONLY=1): exit 1 so Sentinel "
              "retries; the agent reconciles when it starts")


def test_hand_over_only_without_an_agent_exits_1_and_never_acts(built, tmp_path):
    path = tmp_path / "nobody.sock"
    code, err, fell_back = run(built, tmp_path, ARGS, path, **HANDOVER_ONLY)
    assert (code, fell_back) == (1, [])
    assert one_clean_line(err) == (f"vipfloat-hook: ERROR no agent answered on {path} "
                                   f'("No such file or directory") {CANNOT_ACT}')


def test_hand_over_only_with_a_full_listen_queue_exits_1(built, tmp_path, full_backlog):
    code, err, fell_back = run(built, tmp_path, ARGS, full_backlog, timeout=5, **HANDOVER_ONLY)
    assert (code, fell_back) == (1, [])
    assert one_clean_line(err).endswith(CANNOT_ACT)


@pytest.mark.parametrize("reply, why", [(None, "connection closed"),
                                        (b"garbage\n", "answer without an exit code")])
def test_hand_over_only_with_an_agent_that_does_not_answer_well_exits_1(built, tmp_path, reply,
                                                                       why):
    agent = FakeAgent(tmp_path / "a.sock", reply)
    try:
        code, err, fell_back = run(built, tmp_path, ARGS, agent.path, **HANDOVER_ONLY)
    finally:
        agent.close()
    assert (code, fell_back) == (1, [])
    assert one_clean_line(err) == (f'vipfloat-hook: ERROR no agent answered on {agent.path} '
                                   f'("{why}") {CANNOT_ACT}')


def test_hand_over_only_passes_the_agents_verdict_on(built, tmp_path):
    agent = FakeAgent(tmp_path / "a.sock", b'{"exit": 0, "message": "acquired"}\n')
    try:
        code, err, fell_back = run(built, tmp_path, ARGS, agent.path, **HANDOVER_ONLY)
    finally:
        agent.close()
    assert (code, fell_back) == (0, [])
    assert " via=agent exit=0 reason=acquired " in err


@pytest.mark.parametrize("argv", [["--config", "/etc/vipfloat/other.toml", *ARGS], ARGS[:6],
                                  [*ARGS[:6], "x" * 9000]])
def test_hand_over_only_reports_usage_errors_itself(built, tmp_path, argv):
    # The default drop-in lets Sentinel execute this program only: the Python
    # hook cannot report a call that can never succeed, so this one does, with
    # exit 2 (no retry), rather than exit 1 (retried for ever).
    code, err, fell_back = run(built, tmp_path, argv, tmp_path / "nobody.sock", **HANDOVER_ONLY)
    assert (code, fell_back) == (2, [])
    assert err.startswith("vipfloat-hook: ERROR ") and "; usage: vipfloat-hook <master-name>" in err
    assert err.count("\n") == 1


def test_hand_over_only_help_is_usage_and_exit_0(built, tmp_path):
    code, err, fell_back = run(built, tmp_path, ["--help"], tmp_path / "nobody.sock",
                               **HANDOVER_ONLY)
    assert (code, fell_back, err) == (0, [], "")


def test_the_default_socket_is_the_agents():
    # On a real host nothing sets VIPFLOAT_SOCKET: the C hook must knock where
    # the agent listens by default.
    import re

    from vipfloat import config, hook

    (c_default,) = re.findall(r'#define DEFAULT_SOCKET "([^"]+)"', SOURCE.read_text())
    assert c_default == hook.DEFAULT_SOCKET == str(config.AgentConfig().socket)


def test_built_to_fall_back_on_itself_it_fails_transiently(tmp_path):
    # PYTHON_HOOK pointing at the fast hook's own path would exec for ever.
    binary = tmp_path / "vipfloat-hook"
    subprocess.run(["cc", "-O2", f'-DVIPFLOAT_HOOK="{binary}"', "-o", str(binary), str(SOURCE)],
                   check=True)
    r = subprocess.run([str(binary), *ARGS], env={"VIPFLOAT_SOCKET": str(tmp_path / "none")},
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "is this program, not the Python hook" in r.stderr


def test_make_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    # The usual upgrade: /usr/bin/vipfloat-hook was a symlink to the Python hook.
    python_hook = tmp_path / "python-hook"
    python_hook.write_text("#!/bin/sh\nexit 0\n")
    link = tmp_path / "vipfloat-hook"
    link.symlink_to(python_hook)
    subprocess.run(["make", "-s", "-C", str(REPO), "fast-hook", f"FAST_HOOK={link}",
                    f"PYTHON_HOOK={python_hook}"], check=True, capture_output=True)
    assert python_hook.read_text() == "#!/bin/sh\nexit 0\n"
    assert not link.is_symlink() and link.read_bytes()[:4] == b"\x7fELF"


@pytest.mark.parametrize("reply", [b'{"exit": 256, "message": "x"}\n', b'{"exit": 3}\n'])
def test_an_exit_code_outside_the_contract_is_no_verdict(built, tmp_path, reply):
    # 256 would reach Sentinel as 0, success, from a fake agent.
    agent = FakeAgent(tmp_path / "a.sock", reply)
    try:
        code, err, fell_back = run(built, tmp_path, ARGS, agent.path)
    finally:
        agent.close()
    assert (code, fell_back) == (7, ["DIRECT=1", *ARGS])
