#!/usr/bin/env python3
"""make mutate: mutation testing (mutmut) over vipfloat's pure core, in a throwaway
copy of the tree, so that nothing it writes (mutants/, mutated sources) shows up in
the working tree.

The core: vipfloat/decide.py, vipfloat/authority.py, vipfloat/crash.py,
vipfloat/config.py, the pure parsers of vipfloat/subscribe.py and of
vipfloat/sentinel.py (replicas), the rules of vipfloat/switchover.py, and the
frame builders of vipfloat/announce.py (not its socket and fork code). The
tests: the unit tests that exercise them, in two passes (PASSES below), each in its own
copy: the config's mutants against the config's tests only, so that each of its
~1,600 mutants does not first load a config from disk for every decide and agent
test that has one as a fixture.

Every mutant that survives must either be killed by a test or be listed, with why
it cannot change behaviour, in tests/mutation-equivalent.txt, one line each:

    <mutant name> :: <the mutated code, as printed below> :: <why it is equivalent>

An entry is matched by the function and the mutated code, not by the mutant's
number (numbers shift when a function changes); an entry whose code no longer
matches a survivor is reported as stale. The last line printed is

    MUTATION killed K of N

where K counts the mutants the tests killed (a timeout is a kill: the tests would
hang) plus the listed equivalent ones. Exit 0 when no survivor is unexplained and
K/N >= 0.90, 1 otherwise, 2 if mutmut itself failed.
"""
from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENT_FILE = Path("tests/mutation-equivalent.txt")
COPIED = ["vipfloat", "tests", "examples", "pyproject.toml"]
TARGET = 0.90

# The mutants that count, as mutmut names them, and the test files run against
# them: all of decide, authority and config; of announce only the pure frame builders.
FRAME_BUILDERS = ["_ether", "_arp", "garp_request", "garp_reply", "checksum", "unsolicited_na",
                  "arp_probe", "solicited_node", "dad_solicitation", "probe_frame",
                  "round_frames"]
# Of subscribe and switchover, the pure parsers and rules (not their threads).
EVENT_PARSERS = ["_digits", "_instance", "parse_event"]
SWITCHOVER_RULES = ["parse_lags", "preflight", "follow"]
SENTINEL_PARSERS = ["parse_replicas", "uint"]
# rtnetlink's messages, built and parsed (not the socket), and the agent's pure
# rules (not its threads).
RTNL_PURE = ["_pad", "attr", "message", "dump_addresses_request", "get_link_request",
             "address_request", "messages", "attributes", "parse_address", "parse_link",
             "error_code"]
AGENT_RULES = ["settles", "role_poll_pause"]
PASSES = [
    {"modules": ["decide", "authority", "announce", "subscribe", "switchover", "crash",
                 "sentinel"],
     "globs": ["vipfloat.decide.*", "vipfloat.authority.*", "vipfloat.crash.*"]
              + [f"vipfloat.announce.x_{name}__mutmut_*" for name in FRAME_BUILDERS]
              + [f"vipfloat.subscribe.x_{name}__mutmut_*" for name in EVENT_PARSERS]
              + [f"vipfloat.switchover.x_{name}__mutmut_*" for name in SWITCHOVER_RULES]
              + [f"vipfloat.sentinel.x_{name}__mutmut_*" for name in SENTINEL_PARSERS],
     "tests": ["test_decide.py", "test_agent_rules.py", "test_agent_hints.py", "test_frames.py",
               "test_authority_machine.py", "test_vip_actor.py", "test_early_bind.py",
               "test_actor_failover.py", "test_switchover.py", "test_events.py",
               "test_crash.py",
               "test_mutants_decide.py", "test_mutants_authority.py", "test_mutants_frames.py"]},
    {"modules": ["config"],
     "globs": ["vipfloat.config.*"],
     "tests": ["test_config.py", "test_fuzz_config.py", "test_mutants_config.py"]},
    {"modules": ["rtnl", "agent"],
     "globs": [f"vipfloat.rtnl.x_{name}__mutmut_*" for name in RTNL_PURE]
              + [f"vipfloat.agent.x_{name}__mutmut_*" for name in AGENT_RULES],
     "tests": ["test_rtnl.py", "test_netwatch.py", "test_vip_actor.py", "test_agent_hints.py"]},
]
GLOBS = [g for p in PASSES for g in p["globs"]]

KILLED = {1, 3}                       # a test failed; pytest's internal error
TIMEOUT = {36, 24, -24, 152, 255, -9}   # over its CPU budget, then SIGKILLed
NO_TESTS = {5, 33}                    # no selected test runs the function
SURVIVED = {0}


def requirements() -> list[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data["project"]["optional-dependencies"]["mutate"]


def ensure_installed() -> None:
    """The pinned tools of the `mutate` extra, in this interpreter (the project's
    venv), installed only if missing or of another version."""
    wanted = requirements()
    for req in wanted:
        name, _, version = req.partition("==")
        try:
            if importlib.metadata.version(name) == version:
                continue
        except importlib.metadata.PackageNotFoundError:
            pass
        print(f"installing {' '.join(wanted)} into {sys.prefix}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *wanted], check=True)
        return


def copy_tree(dest: Path) -> None:
    """The working tree's files (tracked, or new and not ignored), as they are now."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard", "--", *COPIED],
                             check=True, capture_output=True).stdout
        files = sorted({f for f in out.decode().split("\0") if f})
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(REPO)) for name in COPIED for p in
                 ([REPO / name] if (REPO / name).is_file() else (REPO / name).rglob("*"))
                 if p.is_file() and "__pycache__" not in p.parts]
    for name in files:
        src = REPO / name
        if src.is_file():                       # listed but deleted in the working tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def progress(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - 400))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in re.split(r"[\r\n]", tail) if re.search(r"\d+/\d+", line)]
    return lines[-1] if lines else ""


def run_mutmut(work: Path, globs: list[str], log: Path) -> int:
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", "1", *globs]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=lambda: os.nice(10))
        try:
            while True:
                try:
                    return proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    print(f"  {progress(log)}", flush=True)
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise


def describe(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in TIMEOUT:
        return "timed out"
    if code in NO_TESTS:
        return "no test runs it"
    return {0: "survived", None: "not run"}.get(code, f"mutmut exit {code}")


def function_of(mutant: str) -> str:
    return mutant.rsplit("__mutmut_", 1)[0]


def load_equivalents(path: Path) -> list[tuple[str, str, str, int]]:
    """(mutant name, mutated code, reason, line number) per entry."""
    entries = []
    if not path.exists():
        return entries
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [part.strip() for part in line.split(" :: ", 2)]
        if len(parts) != 3 or not all(parts):
            sys.exit(f"{path}:{number}: expected '<mutant> :: <mutated code> :: <reason>'")
        entries.append((parts[0], parts[1], parts[2], number))
    return entries


def configure(work: Path, modules: list[str], tests: list[str]) -> None:
    """The copy's [tool.mutmut]: this pass's files to mutate and test files to run."""
    pyproject = work / "pyproject.toml"
    text = pyproject.read_text()
    settings = {
        "only_mutate": [f"vipfloat/{m}.py" for m in modules],
        "pytest_add_cli_args_test_selection": [f"tests/unit/{t}" for t in tests],
    }
    for key, value in settings.items():
        text, count = re.subn(rf"^{key} = \[[^\]]*\]", f"{key} = {json.dumps(value)}", text,
                              flags=re.M)
        if count != 1:
            sys.exit(f"pyproject.toml: [tool.mutmut] {key} = [...] not found")
    pyproject.write_text(text)


def collect(work: Path, globs: list[str]) -> dict[str, tuple[int | None, str]]:
    """Each selected mutant of a finished pass: its mutmut exit code and mutated code."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    here = os.getcwd()
    os.chdir(work)                       # mutmut reads mutants/ from the current directory
    try:
        out = {}
        for meta in sorted(Path("mutants").rglob("*.py.meta")):
            source = meta.relative_to("mutants").with_suffix("")
            for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
                if any(fnmatch.fnmatchcase(name, g) for g in globs):
                    diff = get_diff_for_mutant(name, path=source).splitlines()
                    out[name] = (code, " / ".join(line[1:].strip() for line in diff
                                                  if line.startswith("+")
                                                  and not line.startswith("+++")))
        return out
    finally:
        os.chdir(here)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true",
                        help="keep the copies (then `cd` into one and `mutmut show NAME`)")
    parser.add_argument("--only", nargs="+", metavar="GLOB",
                        help="only these mutants (mutmut names, globs), e.g. 'vipfloat.decide.*'")
    args = parser.parse_args()

    ensure_installed()
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="vipfloat-mutate-"))
    print(f"mutmut {importlib.metadata.version('mutmut')}, 1 worker, in {root}", flush=True)
    mutants: dict[str, tuple[int | None, str]] = {}
    try:
        for number, spec in enumerate(PASSES, 1):
            globs = spec["globs"]
            if args.only:
                globs = [g for g in args.only if g.split(".")[1:2] and
                         g.split(".")[1] in spec["modules"]]
                if not globs:
                    continue
            work = root / f"pass{number}"
            work.mkdir()
            copy_tree(work)
            configure(work, spec["modules"], spec["tests"])
            log = work / "mutmut.log"
            print(f"pass {number}: {', '.join(spec['modules'])} against "
                  f"{', '.join(spec['tests'])} (log: {log})", flush=True)
            code = run_mutmut(work, globs, log)
            if code != 0:
                print(log.read_text(errors="replace")[-4000:])
                print(f"mutmut run failed (exit {code})")
                return 2
            mutants.update(collect(work, globs))
        return report(mutants, complete=not args.only, started=started)
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def report(mutants: dict[str, tuple[int | None, str]], complete: bool, started: float) -> int:
    entries = load_equivalents(REPO / EQUIVALENT_FILE)
    by_key = {(function_of(name), code): number for name, code, _, number in entries}
    used: set[int] = set()
    killed = timeouts = equivalent = 0
    unexplained: list[str] = []
    for name in sorted(mutants, key=lambda n: (function_of(n), int(n.rsplit("_", 1)[1]))):
        code, text = mutants[name]
        if code in KILLED:
            killed += 1
        elif code in TIMEOUT:
            timeouts += 1
        elif code in SURVIVED | NO_TESTS and (function_of(name), text) in by_key:
            equivalent += 1
            used.add(by_key[(function_of(name), text)])
        else:
            unexplained.append(f"  {name} ({describe(code)}):\n    {name} :: {text} :: ")

    n = len(mutants)
    k = killed + timeouts + equivalent
    print()
    print(f"{n} mutants")
    print(f"  killed by the tests:   {killed}")
    print(f"  timed out (killed):    {timeouts}")
    print(f"  equivalent, listed in {EQUIVALENT_FILE} (counted as killed): {equivalent}")
    print(f"  not killed:            {len(unexplained)}")
    stale = [(name, number) for name, _, _, number in entries if number not in used]
    if stale and complete:
        print(f"\n{len(stale)} entries of {EQUIVALENT_FILE} match no surviving mutant "
              "(killed now, or the code changed): remove or update them")
        for name, number in stale:
            state = describe(mutants[name][0]) if name in mutants else "no such mutant"
            print(f"  line {number}: {name} ({state})")
    if unexplained:
        print(f"\nNot killed: kill each with a test, or, if it cannot change behaviour, add its "
              f"line (with the reason) to {EQUIVALENT_FILE}")
        print("\n".join(unexplained))
    print(f"\n{(time.monotonic() - started) / 60:.1f} min")
    print(f"MUTATION killed {k} of {n}")
    return 0 if not unexplained and n and k / n >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
