"""vipfloat-hook's argv contract and exit codes (no root: nothing reaches netlink)."""
from __future__ import annotations

import pytest

from vipfloat import hook
from vipfloat.errors import UsageError

ARGS = ["mymaster", "leader", "start", "198.51.100.11", "6379", "198.51.100.12", "6379"]


def test_parse_sentinel_argv():
    a = hook.parse_argv(ARGS)
    assert (a.master, a.role, a.state, a.from_host, a.from_port, a.to_host, a.to_port) == (
        "mymaster", "leader", "start", "198.51.100.11", 6379, "198.51.100.12", 6379)
    assert a.config is None


@pytest.mark.parametrize("role, state", [("observer", "failover"), ("x", ""), ("leader", "start")])
def test_any_role_and_state_accepted(role, state):
    a = hook.parse_argv(["m", role, state, "h1", "1", "h2", "2"])
    assert (a.role, a.state) == (role, state)


def test_config_option_before_the_seven_arguments():
    assert hook.parse_argv(["--config", "/x.toml", *ARGS]).config == "/x.toml"
    assert hook.parse_argv(["--config=/y.toml", *ARGS]).config == "/y.toml"


@pytest.mark.parametrize("argv, words", [
    (ARGS[:6], "expected 7 arguments, got 6"),
    (ARGS + ["extra"], "expected 7 arguments, got 8"),
    (ARGS[:4] + ["63x9"] + ARGS[5:], "from-port must be a port number"),
    (ARGS[:6] + ["70000"], "to-port must be a port number"),
    (ARGS[:5] + [""] + ARGS[6:], "to-ip must be an IP address or host name"),
    ([""] + ARGS[1:], "master-name is empty"),
    (["--config"], "--config needs a path"),
])
def test_bad_argv(argv, words):
    with pytest.raises(UsageError) as info:
        hook.parse_argv(argv)
    assert words in str(info.value) and info.value.exit_code == 2


def run_main(argv, capsys) -> tuple[int, list[str]]:
    code = hook.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_bad_argument_count_exits_2_with_one_line(capsys):
    code, err = run_main(ARGS[:3], capsys)
    assert code == 2 and len(err) == 1 and "expected 7 arguments, got 3" in err[0]
    assert "Traceback" not in "\n".join(err)


def test_unknown_master_exits_2(capsys, write_config, monkeypatch):
    monkeypatch.setenv("VIPFLOAT_CONFIG", str(write_config()))
    code, err = run_main(["nosuch", *ARGS[1:]], capsys)
    assert code == 2 and len(err) == 1
    assert "master 'nosuch' has no [[vip]] block" in err[0]


def test_config_error_exits_2_one_line_per_problem(capsys, write_config):
    path = write_config("[sentinel]\naddresses = []\nbogus = 1\n")
    code, err = run_main(["--config", str(path), *ARGS], capsys)
    assert code == 2 and len(err) == 3, err
    assert all(str(path) in line for line in err)


def test_unexpected_error_is_one_line_and_transient(capsys, write_config, monkeypatch):
    def boom(args):
        raise RuntimeError("kaboom")
    monkeypatch.setattr(hook, "run", boom)
    code, err = run_main(ARGS, capsys)
    assert code == 1 and len(err) == 1 and "internal error" in err[0] and "kaboom" in err[0]


def test_help_exits_0(capsys):
    assert hook.main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: vipfloat-hook")


def test_hook_module_does_not_import_heavy_libraries():
    # The hook's critical path must not pay for typer, redis or scapy imports.
    import subprocess
    import sys
    # ... nor, before it knows whether an agent will take the job, for parsing the
    # config or setting up logging.
    # The hand-over (agent_client) does without typing and dataclasses too.
    code = ("import sys, vipfloat.hook, vipfloat.agent_client; "
            "print(sorted(m for m in ('typer', 'redis', 'scapy', 'pyroute2', 'vipfloat.rtnl', "
            "'tenacity', "
            "'tomllib', 'logging', 'typing', 'dataclasses') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("direct", ["1", ""])
def test_vipfloat_direct_skips_the_agent(capsys, write_config, monkeypatch, direct):
    # vipfloat-hook-fast sets VIPFLOAT_DIRECT=1 when the agent took its request
    # and gave no answer: the Python hook must not wait for that agent again.
    monkeypatch.setenv("VIPFLOAT_CONFIG", str(write_config()))
    monkeypatch.setenv("VIPFLOAT_SOCKET", "/nonexistent/agent.sock")
    monkeypatch.setenv("VIPFLOAT_DIRECT", direct or "0")
    calls = []
    monkeypatch.setattr(hook, "ask_agent", lambda path, argv, timeout: calls.append(path))
    code, err = run_main(["nosuch", *ARGS[1:]], capsys)
    assert code == 2 and "master 'nosuch' has no [[vip]] block" in err[0]
    # Without it, the agent on $VIPFLOAT_SOCKET is asked first.
    assert calls == ([] if direct else ["/nonexistent/agent.sock"])


# --- the argv contract: what Sentinel never sends is a usage error (exit 2) --------------

def _with(i: int, value: str) -> list[str]:
    argv = list(ARGS)
    argv[i] = value
    return argv


@pytest.mark.parametrize("port", [
    "²", "٣", "１", "+1", " 1", "1 ", "-1", "0", "65536", "123456", "000001", "", "0x10", "1_0",
])
def test_a_port_is_one_to_five_ascii_digits_in_range(port):
    # '²' passes str.isdigit and made int() raise (exit 1); int() takes '٣' and '+1'.
    for i in (4, 6):
        with pytest.raises(UsageError, match="must be a port number 1-65535"):
            hook.parse_argv(_with(i, port))


@pytest.mark.parametrize("port, value", [("1", 1), ("65535", 65535), ("06379", 6379)])
def test_good_ports(port, value):
    assert hook.parse_argv(_with(6, port)).to_port == value


@pytest.mark.parametrize("host", [
    "999.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "256.0.0.1", "1.2.3.4 ", " 1.2.3.4",
    "fe80::1%eth0", "[2001:db8::1]", "1::2::3", "::g", "٣.1.1.1", "12345",
    "host name", "-redis.example", "redis-.example", "a..b", ".", "..",
    "a" * 64 + ".example", ".".join(["a" * 63] * 4) + "x",  # a 64-char label; 256 in all
    "redis.example..", "ré.example", "redis\x00", "redis\n", "a/b", "*.example",
])
def test_a_host_is_an_ip_literal_or_an_rfc1123_name(host):
    for i in (3, 5):
        with pytest.raises(UsageError, match="must be an IP address or host name"):
            hook.parse_argv(_with(i, host))


@pytest.mark.parametrize("host", [
    "198.51.100.12", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::1", "::ffff:192.0.2.1",
    "redis-1", "redis-1.example.com", "redis-1.example.com.", "1e100.net", "10.0.0.example",
    "a" * 63 + ".example", ".".join(["a" * 63] * 3 + ["b" * 61]),  # 253 characters
])
def test_good_hosts(host):
    assert hook.parse_argv(_with(5, host)).to_host == host


@pytest.mark.parametrize("i, value, words", [
    (0, "my master", "master-name holds whitespace"),
    (0, "my\u00a0master", "master-name holds whitespace"),
    (0, "m\x1b[2J", "master-name holds a control character"),
    (0, "m" * 257, "master-name is longer than 256 characters"),
    (0, "m\udcff", "master-name is not valid UTF-8"),
    (1, "leader\nvipfloat: INFO forged", "role holds a control character"),
    (1, "x\x85", "role holds a control character"),  # C1 too
    (1, "x\x7f", "role holds a control character"),
    (1, "r" * 257, "role is longer than 256 characters"),
    (2, "start\r", "state holds a control character"),
    (2, "s" * 10_000, "state is longer than 256 characters"),
])
def test_names_are_short_printable_text(i, value, words):
    with pytest.raises(UsageError, match=words) as info:
        hook.parse_argv(_with(i, value))
    # The message shows the value cut short, its control characters spelt out.
    assert len(str(info.value)) < 200


def test_longest_names_pass():
    a = hook.parse_argv(["m" * 256, "r" * 256, "s" * 256, *ARGS[3:]])
    assert (len(a.master), len(a.role), len(a.state)) == (256, 256, 256)
    assert hook.parse_argv(_with(1, "role with spaces é")).role == "role with spaces é"


def test_a_non_ascii_digit_port_exits_2_not_1(capsys):
    # It used to escape parse_argv as a ValueError: "internal error", exit 1 (retried).
    code, err = run_main(_with(6, "²"), capsys)
    assert code == 2 and len(err) == 1 and "to-port must be a port number" in err[0]


# --- the hand-over: one deadline, a bounded answer -----------------------------------------

class Server:
    """A fake agent: reads the request line, then runs `answer(conn)`."""

    def __init__(self, path, answer) -> None:
        import socket
        import threading

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.path, self.answer, self.sent = str(path), answer, 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.makefile("rb").readline()
            try:
                self.answer(self, conn)
            except OSError:
                pass  # the client hung up: what we want to see

    def close(self) -> None:
        # shutdown() first: it wakes a thread blocked in accept(). A bare close()
        # does not, and lets the descriptor's number be reused while that thread
        # is about to call accept() on it: it then answered a later test's hooks
        # (seen: the hook fuzz got this agent's "acquired" for malformed argvs).
        try:
            self.sock.shutdown(2)  # SHUT_RDWR
        except OSError:
            pass
        self.thread.join(timeout=10)
        self.sock.close()


def test_a_dripping_agent_cannot_hold_the_request_past_its_deadline(tmp_path):
    import time

    from vipfloat.agent_client import request

    def drip(server, conn):
        # One byte every 0.3 s, never a newline: each recv would see data in time.
        # (Bounded at 30 s: the old per-recv timeout never ended. Far past the
        # bound below, so a request held until the drip ends cannot pass.)
        for _ in range(100):
            conn.sendall(b" ")
            server.sent += 1
            time.sleep(0.3)

    server = Server(tmp_path / "drip.sock", drip)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            request(server.path, {"op": "hook"}, timeout=1.0)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    # Not before the 1 s deadline; the upper bound only has to tell "at the
    # deadline" from "held by the drip" (30 s), so a stalled test process
    # (seconds of stolen time) cannot fail it.
    assert 0.9 <= elapsed < 10, elapsed


def test_an_agent_flooding_its_answer_is_cut_off_at_the_cap(tmp_path):
    from vipfloat.agent_client import REPLY_MAX, request

    body = b'{"exit": 0, "message": "' + b"x" * 10_000_000 + b'"}\n'  # valid JSON, 10 MB

    def flood(server, conn):
        view = memoryview(body)
        while view:
            n = conn.send(view[:65536])
            server.sent += n
            view = view[n:]

    server = Server(tmp_path / "flood.sock", flood)
    try:
        with pytest.raises(ValueError, match="reply too long"):
            request(server.path, {"op": "hook"}, timeout=10.0)
    finally:
        server.close()
    assert REPLY_MAX == 64 * 1024
    # Refused without reading it: the server got no further than the cap and the
    # socket buffers.
    assert server.sent < 5_000_000, server.sent


def test_a_reply_just_under_the_cap_is_read(tmp_path):
    from vipfloat.agent_client import REPLY_MAX, request

    head = b'{"exit": 0, "message": "'
    line = head + b"x" * (REPLY_MAX - len(head) - 2) + b'"}'
    assert len(line) == REPLY_MAX
    server = Server(tmp_path / "ok.sock", lambda s, conn: conn.sendall(line + b"\n"))
    try:
        assert request(server.path, {"op": "hook"}, timeout=5.0)["exit"] == 0
    finally:
        server.close()


def test_agent_client_imports_only_what_the_fast_path_affords():
    # The hand-over must keep up with a shell script: standard modules that the
    # hook loads anyway, nothing more (no typing, dataclasses or re of its own;
    # typing only under a constant that is false at run time).
    import ast
    from pathlib import Path

    import vipfloat.agent_client as client

    tree = ast.parse(Path(client.__file__).read_text())
    names = set()
    for node in tree.body:  # top level only: the TYPE_CHECKING block is an `if`
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module)
    assert names == {"__future__", "json", "socket", "time"}
    nested = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
              and n not in tree.body]
    assert [n.module for n in nested if isinstance(n, ast.ImportFrom)] == ["typing"]
    assert client.TYPE_CHECKING is False


# --- least privilege: no agent and no CAP_NET_ADMIN means exit 1, not an attempt ------------

def _status_file(tmp_path, capeff: str):
    path = tmp_path / "status"
    path.write_text(f"Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t{capeff}\n")
    return str(path)


@pytest.mark.parametrize("capeff, held", [
    ("000001ffffffffff", True), ("0000000000001000", True), ("0000000000000000", False),
    ("000001ffffffefff", False), ("zz", None),
])
def test_cap_net_admin_from_proc_status(tmp_path, capeff, held):
    assert hook.holds_net_admin(_status_file(tmp_path, capeff)) is held


def test_cap_net_admin_unknown_when_proc_is_unreadable(tmp_path):
    assert hook.holds_net_admin(str(tmp_path / "absent")) is None


def _hook_subprocess(argv, env, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    # The working tree's hook (the .venv's console script is an older install);
    # print what it loaded, so the test sees the acting half stayed out.
    code = ("import sys; from vipfloat.hook import main; c = main(sys.argv[1:]); "
            "print(sorted(m for m in ('pyroute2', 'vipfloat.apply', 'vipfloat.rtnl') "
            "if m in sys.modules)); "
            "sys.exit(c)")
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=repo, capture_output=True,
                          text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo), **env})


LEAST = ("no agent answered on {socket} and {reason} (least-privilege mode): exit 1 so "
         "Sentinel retries; the agent reconciles when it starts")


def _own_socket_config(tmp_path, write_config, extra: str = "") -> str:
    """The test config with the agent's socket in tmp_path: a subprocess hook must
    never find a real agent on /run/vipfloat/agent.sock (a lab may run here)."""
    from tests.unit.conftest import BASE

    text = BASE.replace("[agent]\n", f'[agent]\nsocket = "{tmp_path}/agent.sock"\n')
    return str(write_config(text.replace('26379"]\n', f'26379"]\n{extra}', 1)))


def test_handover_only_without_an_agent_exits_1_without_acting(tmp_path, write_config):
    sock = str(tmp_path / "no-agent.sock")
    r = _hook_subprocess(ARGS, {"VIPFLOAT_HANDOVER_ONLY": "1", "VIPFLOAT_SOCKET": sock,
                                "VIPFLOAT_CONFIG": _own_socket_config(tmp_path, write_config)},
                         tmp_path)
    assert r.returncode == 1, r.stderr
    # Both sockets it knocked on: $VIPFLOAT_SOCKET, then the config's own.
    socket = f"{sock} or {tmp_path}/agent.sock"
    assert r.stderr.splitlines() == [
        "vipfloat-hook: ERROR " + LEAST.format(socket=socket, reason="VIPFLOAT_HANDOVER_ONLY=1")]
    assert r.stdout.strip() == "[]"  # neither netlink nor the apply module was loaded


def test_an_unreadable_password_file_does_not_stop_the_hook(tmp_path, write_config):
    # The hook never talks to Sentinel or Redis: their passwords are not its
    # business, and a password file it cannot read must not make it exit 2.
    config = _own_socket_config(tmp_path, write_config,
                                f'password_file = "{tmp_path}/no-such-secret"\n')
    r = _hook_subprocess(ARGS, {"VIPFLOAT_HANDOVER_ONLY": "1", "VIPFLOAT_SOCKET": str(
        tmp_path / "no-agent.sock"), "VIPFLOAT_CONFIG": config}, tmp_path)
    assert r.returncode == 1, r.stderr
    assert "least-privilege mode" in r.stderr and "no-such-secret" not in r.stderr


def test_without_cap_net_admin_it_exits_1_and_says_why(capsys, write_config, monkeypatch):
    monkeypatch.setenv("VIPFLOAT_CONFIG", str(write_config()))
    monkeypatch.setenv("VIPFLOAT_SOCKET", "/nonexistent/agent.sock")
    monkeypatch.delenv("VIPFLOAT_HANDOVER_ONLY", raising=False)
    monkeypatch.delenv("VIPFLOAT_DIRECT", raising=False)
    monkeypatch.setattr(hook, "holds_net_admin", lambda: False)
    monkeypatch.setattr(hook, "ask_agent", lambda path, argv, timeout: None)
    code, err = run_main(ARGS, capsys)
    assert code == 1
    assert err == ["vipfloat-hook: ERROR " + LEAST.format(
        socket=f"/nonexistent/agent.sock or {hook.DEFAULT_SOCKET}",
        reason="this hook holds no CAP_NET_ADMIN")]


def test_a_container_style_host_name_with_underscores_is_a_host():
    # Sentinel with announce-hostnames in Docker names hosts proj_redis_1: a
    # refusal (exit 2, never retried) would leave the VIP where it was for good.
    args = hook.parse_argv(["mymaster", "leader", "start", "proj_redis_1", "6379",
                            "proj_redis_2", "6379"])
    assert (args.from_host, args.to_host) == ("proj_redis_1", "proj_redis_2")


def test_an_exit_code_outside_the_contract_is_no_verdict(tmp_path):
    # A fake agent answering 256 made the Python hook exit 0 (os._exit(256)).
    import json
    import socket
    import threading

    path = tmp_path / "a.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def serve() -> None:
        for _ in range(3):
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(json.dumps({"exit": replies.pop(0)}).encode() + b"\n")

    replies = [256, "0", 2]
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    argv = ("mymaster", "leader", "start", "198.51.100.12", "6379", "198.51.100.11", "6379")
    try:
        assert hook.ask_agent(str(path), argv, timeout=5) is None
        assert hook.ask_agent(str(path), argv, timeout=5) is None
        assert hook.ask_agent(str(path), argv, timeout=5) == (2, "")
    finally:
        t.join(5)
        server.close()


def test_a_full_listen_queue_is_waited_for_not_taken_for_no_agent(tmp_path):
    import socket
    import threading
    import time

    from vipfloat.agent_client import request

    path = tmp_path / "a.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(0)
    queued = []
    for _ in range(3):   # fill the queue: the next connect says EAGAIN
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(str(path))
        except BlockingIOError:
            c.close()
            break
        queued.append(c)

    def drain() -> None:
        time.sleep(0.2)   # busy for a moment, then serves everyone
        while True:
            conn, _ = server.accept()
            if conn.recv(65536):
                conn.sendall(b'{"exit": 0, "message": "ok"}\n')
                conn.close()
                return
            conn.close()

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        for c in queued:
            c.close()
        assert request(str(path), {"op": "status"}, timeout=5, connect_timeout=2) == {
            "exit": 0, "message": "ok"}
    finally:
        t.join(5)
        server.close()
