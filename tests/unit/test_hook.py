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
            "print(sorted(m for m in ('typer', 'redis', 'scapy', 'pyroute2', 'tenacity', "
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
