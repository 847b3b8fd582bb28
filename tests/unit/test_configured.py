"""`vipfloat is-configured` (vipfloat.service's ExecCondition) and the Debian
package's commented config it judges."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vipfloat.cli import app
from vipfloat.configured import CONFIGURED, NOT_CONFIGURED, run, verdict
from vipfloat.entry import config_arg

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "vipfloat.toml"


def commented() -> str:
    return subprocess.run([sys.executable, str(REPO / "tools" / "commented-config"),
                           str(EXAMPLE)], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def template(tmp_path: Path) -> Path:
    path = tmp_path / "vipfloat.toml"
    path.write_text(commented())
    return path


def test_the_packaged_template_is_every_line_of_the_example_commented():
    text = commented()
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines())
    example = EXAMPLE.read_text().splitlines()
    active = [line for line in example if line.strip() and not line.lstrip().startswith("#")]
    assert active and all(f"#{line}" in text.splitlines() for line in active)
    # Uncommenting exactly those lines gives the example back, after the header.
    body = text.splitlines()[-len(example):]
    assert [line[1:] if line[1:] in active else line for line in body] == example


def test_the_template_is_not_configured_and_the_example_is(template):
    assert verdict(template)[0] == NOT_CONFIGURED
    assert "names no [[vip]] yet" in verdict(template)[1]
    assert verdict(EXAMPLE)[0] == CONFIGURED


@pytest.mark.parametrize("text, code", [
    ("", NOT_CONFIGURED),
    ("[sentinel]\naddresses = ['198.51.100.11:26379']\n", NOT_CONFIGURED),
    ("vip = []\n", NOT_CONFIGURED),
    # Anything the agent can judge better starts it, so that it says what is wrong.
    ("vip = 'eth1'\n", CONFIGURED),
    ("[[vip]]\nmaster = 'm'\n", CONFIGURED),
    ("[[vip\n", CONFIGURED),
    ("\xff", CONFIGURED),
], ids=["empty", "no-vip", "empty-list", "malformed-vip", "vip", "bad-toml", "not-utf8"])
def test_only_a_file_without_vips_is_unconfigured(tmp_path, text, code):
    path = tmp_path / "c.toml"
    path.write_bytes(text.encode("latin-1"))
    assert verdict(path)[0] == code


def test_a_file_that_cannot_be_read_starts_the_agent(tmp_path):
    assert verdict(tmp_path / "missing.toml")[0] == CONFIGURED
    assert verdict(tmp_path)[0] == CONFIGURED               # a directory
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)                                          # refused, never waited on
    assert verdict(fifo)[0] == CONFIGURED


def test_what_the_agent_would_refuse_starts_it_so_that_it_says_so(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("#" * (1024 * 1024) + "\n")               # over the cap, nothing else
    assert verdict(big)[0] == CONFIGURED
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")   # RecursionError
    assert verdict(deep)[0] == CONFIGURED


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_a_file_the_agents_user_cannot_read_starts_the_agent(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("")
    path.chmod(0o600)
    tmp_path.chmod(0o755)
    code = ("import sys\nfrom pathlib import Path\nfrom vipfloat.configured import verdict\n"
            f"print(verdict(Path({str(path)!r}))[0])")
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO)
    assert out.stdout.strip() == str(CONFIGURED), out.stderr


@pytest.mark.parametrize("argv, expected", [
    ([], (True, None)),
    (["--config", "/x.toml"], (True, "/x.toml")),
    (["-c", "/x.toml"], (True, "/x.toml")),
    (["--config=/x.toml"], (True, "/x.toml")),
    (["--help"], (False, None)),                      # typer answers these
    (["--config"], (False, None)),
    (["--config", "/x", "extra"], (False, None)),
])
def test_the_console_scripts_own_parsing_of_its_one_option(argv, expected):
    assert config_arg(argv) == expected


def test_run_prints_its_verdict_and_honours_the_environment(template, monkeypatch, capsys):
    assert run(str(template)) == NOT_CONFIGURED
    assert "names no [[vip]] yet" in capsys.readouterr().err
    assert run(str(EXAMPLE)) == CONFIGURED
    assert "[[vip]] present" in capsys.readouterr().out
    monkeypatch.setenv("VIPFLOAT_CONFIG", str(template))
    assert run(None) == NOT_CONFIGURED


def test_the_command_line_says_the_same(template):
    result = CliRunner().invoke(app, ["is-configured", "--config", str(template)])
    assert result.exit_code == NOT_CONFIGURED
    assert CliRunner().invoke(app, ["is-configured", "-c", str(EXAMPLE)]).exit_code == 0


def entry(*argv: str) -> list[str]:
    """vipfloat.entry.main with ``argv``: its exit code, and whether the command
    line (typer) was imported."""
    code = ("import sys\nfrom vipfloat.entry import main\n"
            f"sys.argv = ['vipfloat', *{list(argv)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n"
            "    print(exc.code, 'typer' in sys.modules, 'vipfloat.cli' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    return out.stdout.split()[-3:]


def test_is_configured_and_watch_run_without_the_command_line(template, tmp_path):
    assert entry("is-configured", "--config", str(template)) == ["1", "False", "False"]
    # watch with a bad config: the agent's own exit 2, still without typer.
    bad = tmp_path / "bad.toml"
    bad.write_text("[sentinel]\naddresses = 3\n")
    assert entry("watch", "-c", str(bad)) == ["2", "False", "False"]
    # Anything else goes through the command line.
    assert entry("watch", "--help")[1:] == ["True", "True"]
    assert entry("check-config", "--config", str(EXAMPLE)) == ["0", "True", "True"]


@pytest.mark.parametrize("argv", [["release"], ["release", "--master", "m", "--all"]])
def test_release_takes_one_master_or_all(argv, template):
    result = CliRunner().invoke(app, [*argv, "--config", str(template)])
    assert result.exit_code == 2
    assert "release needs --master NAME or --all" in result.output
