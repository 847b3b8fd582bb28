"""Fuzz tier for Sentinel's side of the contract: a few hundred malformed argv
vectors (seeded, so every run tries the same ones) through the Python hook and
the C fast hook, as Sentinel runs them. Each must exit 2 (no retry: no retry can
mend a bad argv), with no traceback, and leave on stderr only whole log lines:
each starts with `vipfloat-hook:`, none holds a control character that could end
it early, forge another or drive a terminal.

Nothing touches the host: no agent socket of the host's (VIPFLOAT_SOCKET points
into tmp_path), a config whose state_dir and agent socket are in tmp_path, and
no syslog ($JOURNAL_STREAM names the file stderr goes to, so both hooks take
stderr for the journal). Run with -s to see the counts.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vipfloat.errors import UsageError
from vipfloat.hook import parse_argv

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "fasthook" / "vipfloat-hook-fast.c"
GOOD = ["mymaster", "leader", "start", "198.51.100.11", "6379", "198.51.100.12", "6379"]
WORKERS = 2 * (os.cpu_count() or 2)  # subprocesses: some of their time is waiting

# Control characters as Sentinel never sends them; NUL cannot be in an argv at all.
CONTROLS = [chr(c) for c in [*range(0x01, 0x20), *range(0x7F, 0xA0)]]
BAD_PORTS = ["²", "٣", "１２", "߁", "৬৩৭৯", "+1", " 1", "1 ", "-1", "0", "65536", "999999",
             "123456", "1e3", "0x50", "", "6379\n", "6_379", "٦٣٧٩", "⁶³⁷⁹"]
BAD_HOSTS = ["999.1.1.1", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4 ",
             "fe80::1%eth0", "[::1]", "1::2::3", "::g", "٣.1.1.1", "12345", "host name",
             "-redis.example", "redis-.example", "re+dis.example", "a..b", ".", "ré.example",
             "redis\t", "a/b", "*.example", "", " ", "redis.example..", "\u2028",
             "x" * 254, "a" * 64 + ".example", ".".join(["abc"] * 100)]


def _text_with_control(rng: random.Random, base: str) -> str:
    at = rng.randrange(len(base) + 1)
    bad = "".join(rng.choice(CONTROLS) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.2:  # a whole forged line
        bad = "\nvipfloat-hook: INFO master=mymaster via=agent exit=0 reason=FORGED\n"
    return base[:at] + bad + base[at:]


def _corrupt(rng: random.Random, argv: list[str | bytes]) -> list[str | bytes]:
    """One change that makes a good argv malformed, whatever else it holds."""
    kind = rng.choice(["count", "port", "host", "control", "long", "master", "bytes",
                       "config-count"])
    argv = list(argv)
    if kind == "count":
        n = rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 14])
        return (argv + [rng.choice(GOOD) for _ in range(n)])[:n] if n <= 7 else \
            argv + [rng.choice(["extra", "", "6379", "\x1b[2J"]) for _ in range(n - 7)]
    if kind == "config-count":
        return ["--config", str(rng.choice(["/nonexistent.toml", "x\ny"])), *argv[:6]]
    if kind == "port":
        argv[rng.choice([4, 6])] = rng.choice(BAD_PORTS)
    elif kind == "host":
        argv[rng.choice([3, 5])] = rng.choice(BAD_HOSTS)
    elif kind == "control":
        i = rng.choice([0, 1, 2])
        argv[i] = _text_with_control(rng, str(argv[i]))
    elif kind == "long":
        i = rng.choice([0, 1, 2])
        # < 128 KiB: one argv string's limit
        argv[i] = rng.choice("mrs\u00e9") * rng.choice([257, 300, 1000, 5000, 30_000])
    elif kind == "master":
        argv[0] = rng.choice(["", " ", "my master", "my\u00a0master", "m\u3000", "tab\tname"])
    else:  # bytes that are not UTF-8, as a broken Sentinel could pass them
        i = rng.choice([0, 1, 2])
        argv[i] = str(argv[i]).encode() + bytes([rng.choice([0x80, 0x9B, 0xC3, 0xFF])])
    return argv


def vectors() -> list[list[str | bytes]]:
    out = []
    for seed in (1, 2, 3):
        rng = random.Random(20_240_600 + seed)
        for _ in range(65):
            argv = _corrupt(rng, GOOD)
            if len(argv) == 7 and rng.random() < 0.4:
                argv = _corrupt(rng, argv)  # two faults at once
            out.append(argv)
    # The reported ones, always.
    out += [GOOD[:6] + ["²"], GOOD[:6] + ["٣"], GOOD[:5] + ["999.1.1.1", "6379"],
            ["mymaster", "leader\nvipfloat: INFO master=mymaster action=release reason=FORGED",
             *GOOD[2:]], ["mymaster", "leader", "start\x1b]0;pwned\x07", *GOOD[3:]]]
    return out


VECTORS = vectors()


def test_every_vector_is_malformed():
    # The generator's own check: each vector is one parse_argv refuses.
    for argv in VECTORS:
        with pytest.raises(UsageError):
            parse_argv([os.fsdecode(a) for a in argv])


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    from tests.unit.conftest import BASE

    # Should a vector ever slip through (a regression), the hook must still not act
    # on this host: the agent socket is ours, the VIPs' interface does not exist,
    # and VIPFLOAT_HANDOVER_ONLY=1 (env_for) keeps it from loading pyroute2 at all.
    text = BASE.replace("[agent]\n", f'[agent]\nsocket = "{d}/agent-of-config.sock"\n')
    text = text.replace('interface = "eth1"', 'interface = "vfnone0"')
    (d / "vipfloat.toml").write_text(text.format(state=d / "state", scripts=d / "actions.d"))
    return d


def run_one(command: list[str | bytes], env: dict[str, str], out: Path) -> tuple[int, bytes]:
    """Run as Sentinel would, stderr to a file that $JOURNAL_STREAM names (no
    syslog from a test)."""
    with open(out, "wb+") as err:
        st = os.fstat(err.fileno())
        r = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=err, timeout=60, cwd=REPO,
                           env={**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        err.seek(0)
        return r.returncode, err.read()


def problems(code: int, err: bytes, *, escaping: bool = True) -> list[str]:
    """What is wrong with one run: [] when it exited 2 with clean log lines."""
    found = []
    if code != 2:
        found.append(f"exit {code}")
    if b"Traceback" in err:
        found.append("traceback")
    if not err.endswith(b"\n"):
        found.append("no log line")
    if escaping:
        if any(b < 0x20 and b != 0x0A or b == 0x7F for b in err):
            found.append("control byte")
        try:
            text = err.decode("utf-8")
        except UnicodeDecodeError:
            found.append("raw bytes that are not UTF-8")
        else:
            if any("\x80" <= c <= "\x9f" or c in "\u2028\u2029" for c in text):
                found.append("C1 control or line separator")
        if not all(line.startswith(b"vipfloat-hook:") for line in err.splitlines()):
            found.append("a line that is not the hook's")
    return found


def env_for(home: Path, socket_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
            "VIPFLOAT_SOCKET": str(socket_path), "VIPFLOAT_CONFIG": str(home / "vipfloat.toml"),
            "VIPFLOAT_HANDOVER_ONLY": "1"}


def run_all(command: list[str], env: dict[str, str], home: Path, tag: str,
            which: list[int] | None = None) -> list[tuple]:
    def one(i: int) -> tuple:
        code, err = run_one([*command, *VECTORS[i]], env, home / f"{tag}-{i}.err")
        return i, code, err

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(one, range(len(VECTORS)) if which is None else which))


def test_python_hook(home):
    results = run_all([sys.executable, "-c", "from vipfloat.hook import entry; entry()"],
                      env_for(home, home / "nonexistent.sock"), home, "py")
    bad = [(VECTORS[i], problems(code, err), err[:300]) for i, code, err in results
           if problems(code, err)]
    print(f"\nhook fuzz: {len(VECTORS)} vectors, python: "
          f"{sum(code == 2 for _, code, _ in results)} exit 2, {len(bad)} with problems")
    assert not bad, bad[:5]


class FakeAgent:
    """Answers as the real agent would for these argvs: the verdict of
    vipfloat.hook.parse_argv (the agent's own check), as the agent words it."""

    def __init__(self, path: Path) -> None:
        self.requests = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                line = conn.makefile("rb").readline(65536)
                self.requests += 1
                try:
                    parse_argv([str(a) for a in json.loads(line)["argv"]])
                    reply = {"exit": 0, "message": "acquired"}
                except UsageError as exc:
                    reply = {"exit": 2, "message": str(exc)}
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"exit": 2, "message": f"bad request: {exc}"}
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def close(self) -> None:
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


@pytest.fixture(scope="module")
def c_hook(home) -> Path:
    """The C hook, built to fall back on the working tree's Python hook (wrong
    counts, --config, a request too long to send) through a wrapper."""
    if not shutil.which("cc"):
        pytest.skip("needs a C compiler")
    wrapper = home / "python-hook"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -c "
                       "'from vipfloat.hook import entry; entry()' \"$@\"\n")
    wrapper.chmod(0o755)
    binary = home / "vipfloat-hook-fast"
    subprocess.run(["cc", "-O2", f'-DVIPFLOAT_HOOK="{wrapper}"', "-o", str(binary), str(SOURCE)],
                   check=True)
    return binary


@pytest.mark.parametrize("handover_only", ["", "1"], ids=["plain", "handover-only"])
def test_c_hook(home, c_hook, handover_only):
    # "handover-only": VIPFLOAT_HANDOVER_ONLY=1, as the default Sentinel drop-in
    # runs it; then the C hook does not exec the Python hook when it gets no verdict.
    env = {**env_for(home, home / f"agent-{handover_only or 0}.sock"),
           "VIPFLOAT_HANDOVER_ONLY": handover_only}
    # Handover-only changes nothing for what the C hook passes straight to the
    # Python hook (argument counts other than 7): those run once, in "plain".
    which = [i for i, v in enumerate(VECTORS) if len(v) == 7] if handover_only else None
    agent = FakeAgent(home / f"agent-{handover_only or 0}.sock")
    try:
        results = run_all([str(c_hook)], env, home, f"c{handover_only}", which)
    finally:
        agent.close()
    contract = [(VECTORS[i], problems(code, err, escaping=False), err[:300])
                for i, code, err in results if problems(code, err, escaping=False)]
    unescaped = [(VECTORS[i], problems(code, err), err[:300]) for i, code, err in results
                 if problems(code, err)]
    print(f"hook fuzz: {len(results)} vectors, C{' (handover only)' if handover_only else ''}: "
          f"{sum(code == 2 for _, code, _ in results)} exit 2 ({agent.requests} answered by "
          f"the agent, the rest by the Python hook), {len(contract)} breaking the exit-code "
          f"contract, {len(unescaped)} with problems in all")
    # Both hooks keep the exit-code contract (an argv too long to hand over is
    # exit 2 from the C hook itself under VIPFLOAT_HANDOVER_ONLY=1) and write
    # only clean, escaped lines (bytes that are not UTF-8 as \udcNN, as Python).
    assert not contract, contract[:5]
    assert not unescaped, unescaped[:5]
