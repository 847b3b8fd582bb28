"""Hostile configs through config.load and `vipfloat check-config`.

The contract: whatever the file holds, loading it gives a Config or a ConfigError
whose every line starts with the file's name and carries no control character;
never another exception (a reload that raised OverflowError once stopped the
agent), never a secret in a problem line. The check-config command exits 0 or 2,
never with a traceback or "internal error".

Seeded and bounded, so a run is the same every time and takes a few seconds: a
failure names its seed and case, and `pytest -s` prints the counts.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import random
import textwrap
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from vipfloat import cli
from vipfloat import config as config_mod
from vipfloat.errors import ConfigError

from .conftest import BASE
from .test_config import KEYS

SEEDS = (20240501, 7, 1312)
CASES_PER_SEED = 1000
CLI_SAMPLE = 200
MARKER = "hunter2-S3CRET"   # a password: must never appear in a problem line or a repr

# The keys of every section, listed once (in test_config.py), plus [log].
SECTIONS = {**{k: v for k, v in KEYS.items() if k != "vip"}, "log": ["level"]}
VIP_KEYS = ["master", "address", "interface", "local_addresses", "announce_count",
            "announce_interval"]

# Values meant to be valid somewhere, so that mutated configs still load now and then.
PLAUSIBLE = [
    0, 1, 2, 5, 100, 0.5, 1.1, 2.0, 10.0, 600, True, False, "info", "keep", "release",
    "eth0", "abcdefghijklmno", "mymaster", "198.51.100.250/24", "2001:db8::5/64",
    "198.51.100.11:26379", "[2001:db8::1]:26379", "127.0.0.1:9851", "/run/vipfloat",
    "/run/vipfloat/agent.sock", "vipfloat", ["198.51.100.11:26379"], ["198.51.100.7"],
]
HOSTILE_SCALARS = [
    10 ** 400, -(10 ** 400), 2 ** 63, 2 ** 64, -1, 10 ** 18,
    math.inf, -math.inf, math.nan, 1e-300, -0.0, 1e308, 5e-324,
    "", "\0", "a\0b", "/run/\0x", ".", "..", "x" * 16, "é" * 8, "/" + "a" * 120,
    "/" + "b" * 5000, "relative/path", "~/x", "\x1b[31mred", "\u2028", "a b", "eth0\n",
    "host:0", "host:99999", "host:" + "9" * 5000, "[::1]:1", "[zz]:1", "a..b:1", "\x85:1",
    "1.2.3.4%eth0", "fe80::1%eth0/64", "0.0.0.0/0", "224.0.0.1/4", "::1/128", "1.2.3.4",
    "1.2.3.4/" + "9" * 50, "x" * 10000, "٢٦٣٧٩", "eth\t0", "\ud7ff", "\U0001f600" * 4,
    datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.UTC),
    datetime.date(1979, 5, 27), datetime.time(7, 32),
]


def hostile_value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(HOSTILE_SCALARS)
    if roll < 0.6:
        return rng.choice(PLAUSIBLE)
    if roll < 0.7:
        return "".join(chr(rng.choice([0, 1, 7, 10, 13, 27, 0x7f, 0x85, 0x2028, 0xfeff,
                                       rng.randrange(32, 0x3000)]))
                       for _ in range(rng.randrange(1, 20)))
    if roll < 0.8 and depth < 3:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if roll < 0.88 and depth < 3:
        return {random_key(rng): hostile_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))}
    if roll < 0.94:
        nested: object = rng.choice([1, "x", []])
        for _ in range(rng.randrange(10, 200)):   # deep, but within tomllib's reach
            nested = [nested] if rng.random() < 0.5 else {"k": nested}
        return nested
    return rng.choice([[1], [{}], [[]], {}, [], [True], ["a", 1]])


def random_key(rng: random.Random) -> str:
    return rng.choice(["adress", "x", "", "\x1b[2J", "k\u2028", "a.b", "ü" * 3, "z" * 300,
                       "master", "timeout", "password", "vip", "sentinel"])


# --- a small TOML writer: inline tables and arrays only, so any shape is expressible ---

def toml_key(key: str) -> str:
    return toml_string(key)


def toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")   # TOML's escape: how a NUL gets into a string
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else "inf" if value == math.inf else \
            "-inf" if value == -math.inf else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def dumps(data: dict[str, object]) -> str:
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in data.items())


# --- generation -------------------------------------------------------------------------

def base_config(tmp_path: Path) -> dict[str, object]:
    text = textwrap.dedent(BASE).format(state=tmp_path / "state", scripts=tmp_path / "actions.d")
    return tomllib.loads(text)


def password_files(tmp_path: Path) -> list[str]:
    """Password files good and bad (never a FIFO: a regression would hang the run)."""
    d = tmp_path / "secrets"
    d.mkdir(parents=True)
    files = {"good": MARKER.encode() + b"\n", "binary": b"\xff" + MARKER.encode(),
             "nul": MARKER.encode() + b"\0", "empty": b"",
             "huge": MARKER.encode() * (config_mod.MAX_SECRET_BYTES // len(MARKER) + 1)}
    for name, content in files.items():
        (d / name).write_bytes(content)
    (d / "dir").mkdir()
    return [str(d / name) for name in [*files, "dir", "missing"]] + ["/dev/null", "secrets/good"]


def mutate(rng: random.Random, data: dict, pw_files: list[str]) -> None:
    """One structural change to a decoded config."""
    op = rng.random()
    vips = data.get("vip")
    if op < 0.35:
        # A known key, anywhere, set to something hostile (or plausible).
        if rng.random() < 0.3 and isinstance(vips, list) and vips and isinstance(vips[0], dict):
            rng.choice([v for v in vips if isinstance(v, dict)] or [{}])[rng.choice(VIP_KEYS)] = \
                hostile_value(rng)
        else:
            section = rng.choice(list(SECTIONS))
            table = data.setdefault(section, {})
            if isinstance(table, dict):
                table[rng.choice(SECTIONS[section])] = hostile_value(rng)
    elif op < 0.45:
        # A password, inline or in a file: its value must never be echoed.
        table = data.setdefault(rng.choice(["sentinel", "redis"]), {})
        if isinstance(table, dict):
            if rng.random() < 0.5:
                table["password_file"] = rng.choice(pw_files)
            else:
                table["password"] = rng.choice([MARKER, MARKER + "\0", MARKER + "\x1b"])
    elif op < 0.55:
        # Delete a key, a section or a VIP block.
        target = rng.choice([data, data.get("sentinel"), data.get("agent"),
                             vips[0] if isinstance(vips, list) and vips else None, vips])
        if isinstance(target, dict) and target:
            del target[rng.choice(list(target))]
        elif isinstance(target, list) and target:
            del target[rng.randrange(len(target))]
    elif op < 0.65:
        # An unknown key.
        target = rng.choice([data, data.get("agent"), data.get("sentinel"),
                             vips[0] if isinstance(vips, list) and vips else None])
        if isinstance(target, dict):
            target[random_key(rng)] = hostile_value(rng)
    elif op < 0.75:
        # A whole section or the VIP list replaced.
        data[rng.choice([*SECTIONS, "vip"])] = hostile_value(rng)
    elif op < 0.85 and isinstance(vips, list):
        # More VIP blocks: duplicates and odd ones.
        vips.append(copy.deepcopy(rng.choice(vips)) if vips and rng.random() < 0.5
                    else hostile_value(rng))
    else:
        # Over-long names and paths at the keys that have kernel limits.
        n = rng.choice([15, 16, 107, 108, 4095, 4096])
        key, text = rng.choice([("interface", "i" * n), ("socket", "/" + "s" * (n - 1)),
                                ("state_dir", "/" + "d" * (n - 1)),
                                ("interface", "é" * (n // 2))])
        if key == "interface" and isinstance(vips, list) and vips and isinstance(vips[0], dict):
            vips[0][key] = text
        elif isinstance(data.get("agent"), dict):
            data["agent"][key] = text


def corrupt(rng: random.Random, raw: bytes) -> bytes:
    """A byte-level change: what no TOML writer produces."""
    op = rng.random()
    pos = rng.randrange(len(raw) + 1)
    if op < 0.4:
        junk = rng.choice([b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\x80", b"[", b"{",
                           b'"', b"\n", b"=", b"\\u0000", b"\r", b"\x1b", b"\xe2\x80\xa8"])
        return raw[:pos] + junk + raw[pos:]
    if op < 0.55:
        return raw[:pos]
    if op < 0.7:
        n = rng.choice([100, 400, 1000, 3000])
        opener, closer = rng.choice([(b"[", b"]"), (b"{a=", b"}")])
        return raw + b"deep = " + opener * n + b"1" + closer * n + b"\n"
    if op < 0.8:
        digits = b"9" * rng.choice([400, 4300, 4301, 6000])
        return raw + b"[agent]\nreconcile_interval = " + digits + b"\n"
    if op < 0.9:
        return raw + b"[agent]\nrelease_wait = " + rng.choice([b"inf", b"nan", b"-inf", b"1e999"])
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))


def generate(tmp_path: Path, seed: int, count: int) -> list[tuple[str, bytes, bool]]:
    """(case name, file content, whether to load with secrets=False)."""
    rng = random.Random(seed)
    base = base_config(tmp_path)
    pw_files = password_files(tmp_path / f"seed{seed}")
    cases = []
    for i in range(count):
        data = copy.deepcopy(base)
        for _ in range(rng.randrange(1, 4)):
            mutate(rng, data, pw_files)
        raw = dumps(data).encode("utf-8")
        if rng.random() < 0.3:
            raw = corrupt(rng, raw)
        cases.append((f"seed {seed} case {i}", raw, rng.random() < 0.2))
    return cases


def rewrite(path: Path, raw: bytes) -> None:
    """Overwrite in place: open(O_TRUNC) of a file just written costs ~1 ms on ext4
    (it flushes, for the sake of editors that rewrite files), ftruncate after does not."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, raw)
        os.ftruncate(fd, len(raw))
    finally:
        os.close(fd)


# --- checks -----------------------------------------------------------------------------

def check_config(cfg: config_mod.Config) -> None:
    """What a loaded Config promises the code that uses it."""
    for section in (cfg.agent, cfg.actions, cfg.sentinel, cfg.redis, *cfg.vips):
        for name, value in vars(section).items():
            if isinstance(value, float):
                assert math.isfinite(value), name
            if isinstance(value, str):
                assert "\0" not in value, name
            if isinstance(value, Path):
                assert value.is_absolute() and len(os.fsencode(value)) <= 4095, name
    assert len(os.fsencode(cfg.agent.socket)) <= 107
    assert cfg.vips
    for vip in cfg.vips:
        assert vip.master.isprintable() and vip.interface.isprintable()
        assert vip.interface not in (".", "..") and 0 < len(vip.interface.encode()) <= 15
        assert 1 <= vip.announce_count <= 100 and isinstance(vip.announce_count, int)
        assert all(not isinstance(a, (int, str)) for a in vip.local_addresses)
    assert MARKER not in repr(cfg)


def check_problems(path: Path, exc: ConfigError) -> None:
    assert exc.problems, "a ConfigError without a problem"
    for line in exc.problems:
        assert line.startswith(f"{path}: "), line[:200]
        assert line.isprintable(), repr(line[:200])
        assert MARKER not in line, "a secret in a problem line"
        assert len(line) < 5000 + len(str(path))


def run_one(path: Path, secrets: bool) -> str:
    """'ok' or 'error'; any other outcome raises."""
    try:
        cfg = config_mod.load(path, secrets=secrets)
    except ConfigError as exc:
        check_problems(path, exc)
        return "error"
    check_config(cfg)
    for secret in (cfg.sentinel.password, cfg.redis.password):
        if secret is not None and secret.file is not None:
            # Read lazily: a value, or a ConfigError of the same clean lines.
            try:
                assert isinstance(secret.value, str)
            except ConfigError as exc:
                check_problems(path, exc)
    return "ok"


def test_hostile_configs_load_or_fail_cleanly(tmp_path):
    path = tmp_path / "fuzz.toml"
    counts = {"ok": 0, "error": 0}
    unexpected: list[str] = []
    for seed in SEEDS:
        for name, raw, lazy in generate(tmp_path, seed, CASES_PER_SEED):
            rewrite(path, raw)
            try:
                counts[run_one(path, secrets=not lazy)] += 1
            except Exception as exc:  # noqa: BLE001 - the very thing this test looks for
                unexpected.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]!r} "
                                  f"for {raw[:300]!r}")
    total = len(SEEDS) * CASES_PER_SEED
    print(f"config fuzz: {total} configs, {counts['ok']} valid, {counts['error']} config errors, "
          f"{len(unexpected)} unexpected")
    assert unexpected == [], "\n".join(unexpected[:10])
    # The generator must keep reaching both outcomes, or it tests one path only.
    assert counts["ok"] > total // 50 and counts["error"] > total // 2


def test_hostile_configs_through_check_config(tmp_path):
    rng = random.Random(SEEDS[0])
    cases = rng.sample(generate(tmp_path, SEEDS[0], CASES_PER_SEED), CLI_SAMPLE)
    runner = CliRunner()
    path = tmp_path / "fuzz.toml"
    codes = {0: 0, 2: 0}
    unexpected = []
    for name, raw, _ in cases:
        rewrite(path, raw)
        result = runner.invoke(cli.app, ["check-config", "-c", str(path)])
        output = result.stdout + result.stderr
        lines = output.splitlines()
        if (result.exit_code not in codes or "Traceback" in output or "internal error" in output
                or MARKER in output or not all(line.isprintable() for line in lines)
                or (result.exit_code == 2 and not all(line.startswith(f"vipfloat: {path}: ")
                                                      for line in result.stderr.splitlines()))):
            unexpected.append(f"{name}: exit {result.exit_code}: {output[:300]!r}")
            continue
        codes[result.exit_code] += 1
    print(f"config fuzz, check-config: {len(cases)} runs, {codes[0]} exit 0, {codes[2]} exit 2, "
          f"{len(unexpected)} unexpected")
    assert unexpected == [], "\n".join(unexpected[:10])
