"""Load vipfloat's TOML config once into frozen, validated objects.

Every problem is collected and reported together, one line each, as
``<file>: <key>: <what is wrong>``, so an operator fixes the file in one pass.
Secrets are wrapped in :class:`Secret`, whose repr never shows the value.

Whatever the file holds, load() returns a Config or raises ConfigError, never
anything else: the agent reloads on SIGHUP and keeps its running config on a
ConfigError, while any other exception (an OverflowError from a 400-digit
number, once) stopped it. So every number is range-checked, every string is
checked here for what the kernel will refuse later, and a problem line never
echoes a control character or more than a short piece of the input.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Union, overload

from .errors import ConfigError

DEFAULT_PATH = Path("/etc/vipfloat/vipfloat.toml")
ENV_VAR = "VIPFLOAT_CONFIG"

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]

# Sentinel kills a client-reconfig-script after 60 s. Every wait the hook can make
# (lock 15 s, retries 10 s, action scripts 25 s in all) is capped so that the
# sum stays inside it.
MAX_LOCK_TIMEOUT = 15.0
MAX_SCRIPT_TIMEOUT = 15.0
MAX_RETRY_TIMEOUT = 10.0
PRE_RELEASE_BUDGET = 2.0
# Linux ignores a second ARP update for one address within `locktime` (1 s), so
# announcement rounds closer than that are wasted; 1.1 s is what MetalLB settled on.
DEFAULT_ANNOUNCE_INTERVAL = 1.1
DEFAULT_ANNOUNCE_COUNT = 5
_LOG_LEVELS = ("debug", "info", "warning", "error")
# Kernel limits, counted in bytes of the UTF-8 encoding, without the final NUL:
# an interface name fills IFNAMSIZ (16), a socket path sockaddr_un.sun_path
# (108), any path PATH_MAX (4096). Longer ones fail only when used.
MAX_IFNAME_BYTES = 15
MAX_SOCKET_PATH_BYTES = 107
MAX_PATH_BYTES = 4095
# A vipfloat config is a few KiB and a password a few bytes: anything far larger
# is the wrong file (/dev/zero would otherwise be read until memory runs out).
MAX_CONFIG_BYTES = 1024 * 1024
MAX_SECRET_BYTES = 64 * 1024
# A DNS label (letters, digits, '-', and '_' that internal names use) or an IPv4
# literal; anything else is refused before a resolver sees it (Python's idna
# codec raises UnicodeError, not OSError, on an empty or 64-byte label).
_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
# How much of a bad value a problem line quotes.
_QUOTE_CHARS = 60


class Secret:
    """A password that never shows up in a repr, a log line or a traceback.

    Usually it holds the value, read when the config loads, so that an unreadable
    password_file is a config error at once (check-config, agent start, reload).
    A config loaded with secrets=False (the hook acting by itself, which talks to
    no Redis) keeps only the file's name: a file the hook cannot read must not
    fail a run that never needs it, since Sentinel gives up on an exit 2. Such a
    Secret reads the file on the first use of .value and keeps what it read; a
    failure then is a ConfigError naming the file and the key, as at load.

    Immutable like the rest of the config; two Secrets are equal when they hold
    the same value or, when read lazily, name the same file.
    """

    __slots__ = ("_file", "_origin", "_value")
    # Declared for the type checker; set only through object.__setattr__.
    _value: str | None
    _file: Path | None
    _origin: tuple[Path, str] | None

    def __init__(self, value: str | None = None, *, file: Path | None = None,
                 origin: tuple[Path, str] | None = None) -> None:
        if (value is None) == (file is None):
            raise TypeError("a Secret holds either a value or a password file")
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_file", file)
        # (config file, key) for the problem line if a lazy read fails.
        object.__setattr__(self, "_origin", origin)

    @property
    def value(self) -> str:
        if self._value is None:
            assert self._file is not None
            try:
                text = _read_secret(self._file)
            except ValueError as exc:
                config, key = self._origin or (Path("?"), "password_file")
                raise ConfigError([_line(config, key, str(exc))]) from None
            # Kept: the password does not change under a running command.
            object.__setattr__(self, "_value", text)
            return text
        return self._value

    @property
    def file(self) -> Path | None:
        """The password file while it is unread (secrets=False), else None."""
        return self._file

    def _key(self) -> tuple[str, object]:
        # Never the lazily read value: the hash must not change when it is read.
        return ("file", self._file) if self._file is not None else ("value", self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Secret is immutable")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles as the frozen dataclass it replaces did; an unread file stays unread.
        if self._file is None:
            return (Secret, (self._value,))
        return (_unread_secret, (self._file, self._origin))

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def _unread_secret(file: Path, origin: tuple[Path, str] | None) -> Secret:
    return Secret(file=file, origin=origin)


def hostport(host: str, port: object) -> str:
    """``host:port``, with brackets around an IPv6 literal: the one spelling every
    log line, record, action script and Sentinel answer uses."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def majority(n: int) -> int:
    """Of ``n`` Sentinels, how many make a majority (2 of 3, 3 of 4)."""
    return n // 2 + 1


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return hostport(self.host, self.port)


@dataclass(frozen=True)
class SentinelConfig:
    addresses: tuple[Endpoint, ...]
    username: str | None = None
    password: Secret | None = None
    # Per-Sentinel connect and read timeout: status must not hang on a dead one.
    timeout: float = 0.5


@dataclass(frozen=True)
class RedisConfig:
    """Credentials for this host's Redis, for the agent's ROLE check."""

    username: str | None = None
    password: Secret | None = None
    timeout: float = 0.5


class QuorumPolicy(StrEnum):
    """on_quorum_loss: what a host cut off from a Sentinel majority for longer
    than the grace does with a VIP it holds."""

    RELEASE = "release"     # fence: the isolated old master must stop taking writes
    KEEP = "keep"           # keep it (a site that prefers availability)


@dataclass(frozen=True)
class AgentConfig:
    socket: Path = Path("/run/vipfloat/agent.sock")
    state_dir: Path = Path("/run/vipfloat")
    lock_timeout: float = 10.0
    # How long one run retries a transient failure (interface down, netlink busy)
    # before giving up with exit 1, leaving the next try to Sentinel or the agent.
    retry_timeout: float = 5.0
    # --- vipfloat watch only -------------------------------------------------------
    socket_group: str | None = None       # group allowed on the socket (Sentinel's user)
    reconcile_interval: float = 2.0       # poll every Sentinel and reconcile, seconds
    on_quorum_loss: QuorumPolicy = QuorumPolicy.RELEASE
    # Seconds below a Sentinel majority before VIPs held here are released; None:
    # the master's down-after-milliseconds, so the isolated old master lets go
    # about when the others start to fail over.
    quorum_loss_grace: float | None = None
    # When the new holder is expected to announce itself, how long the old holder
    # keeps the VIP waiting for that announcement before releasing anyway.
    release_wait: float = 1.0
    reset_connections: bool = True        # destroy TCP sockets on the VIP when releasing
    release_on_stop: bool = False         # SIGTERM keeps VIPs (a restart is no outage)
    conflict_probe_interval: float = 10.0 # ARP probe / NS while holding; 0 disables
    announce_refresh: float = 0.0         # re-announce while holding, seconds; 0 disables
    metrics_listen: str | None = None     # "127.0.0.1:9851" serves Prometheus metrics
    hook_timeout: float = 10.0            # the hook waits this long for the agent's verdict
    # Follow the failover leader's promotion: bind the VIP on the chosen replica's
    # host as soon as its Redis says ROLE master, before Sentinel notices.
    early_bind: bool = True
    # While a failover replaces this host's Redis, pause its writes (CLIENT PAUSE
    # WRITE) until the new holder announces the VIP, at most this many seconds;
    # 0 disables.
    failover_write_hold: float = 2.0


@dataclass(frozen=True)
class ActionsConfig:
    scripts_dir: Path = Path("/etc/vipfloat/actions.d")
    timeout: float = 10.0
    # Scripts run while this host still holds the VIP, just before releasing it
    # (VIPFLOAT_EVENT=pre-release): the only moment a FIN or RST sent from the VIP
    # still reaches clients. A separate directory, so that actions.d scripts written
    # for acquire|release never see a third event. Kept short: all of them
    # together get PRE_RELEASE_BUDGET seconds.
    pre_release_dir: Path = Path("/etc/vipfloat/pre-release.d")


@dataclass(frozen=True)
class VipConfig:
    master: str
    address: IPInterface
    interface: str
    # When non-empty, only these local addresses count as "this host" for the
    # new-master test (a host may carry addresses that Sentinel never announces).
    local_addresses: tuple[IPAddress, ...] = ()
    announce_count: int = DEFAULT_ANNOUNCE_COUNT
    announce_interval: float = DEFAULT_ANNOUNCE_INTERVAL
    # The agent on the master's host asks Sentinel to fail over as soon as its
    # local Redis refuses connections (vipfloat.crash), instead of waiting for
    # down-after-milliseconds.
    crash_failover: bool = False

    @property
    def ip(self) -> IPAddress:
        return self.address.ip


@dataclass(frozen=True)
class Config:
    path: Path
    sentinel: SentinelConfig
    vips: tuple[VipConfig, ...]
    agent: AgentConfig = AgentConfig()
    actions: ActionsConfig = ActionsConfig()
    redis: RedisConfig = RedisConfig()
    log_level: str = "info"

    def vip_for(self, master: str) -> VipConfig | None:
        for vip in self.vips:
            if vip.master == master:
                return vip
        return None


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """--config, else $VIPFLOAT_CONFIG, else /etc/vipfloat/vipfloat.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def _read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``, which must be a regular file: opened
    with O_NONBLOCK, so a FIFO at the config's path (check-config, the agent at
    start or on SIGHUP) is refused instead of blocking for ever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        out = b""
        while len(out) < limit:
            chunk = os.read(fd, limit - len(out))
            if not chunk:
                break
            out += chunk
        return out
    finally:
        os.close(fd)


def _group_of(path: Path) -> str | None:
    try:
        import grp

        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (OSError, KeyError):
        return None


def _permission_hint(path: Path) -> str:
    """What to do about a config this user may not read (the package's is 0640
    root:vipfloat): who may."""
    group = _group_of(path)
    if group is None or group == "root":
        return " (run this as root, e.g. with sudo)"
    return f" (readable by root and group {group}: run this with sudo, or as a member of {group})"


def load(explicit: str | os.PathLike[str] | None = None, *, secrets: bool = True) -> Config:
    """Read and validate the config; ConfigError (exit 2) for anything wrong with it.

    secrets=False records each password_file without reading it (see Secret), for
    a caller that may never need a password and must not fail for want of one."""
    path = config_path(explicit)
    try:
        raw = _read_regular(path, MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        hint = _permission_hint(path) if getattr(exc, "errno", None) == errno.EACCES else ""
        raise ConfigError([_line(path, "", f"cannot read config: "
                                           f"{getattr(exc, 'strerror', None) or exc}{hint}")]
                          ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([_line(path, "", f"cannot read config: larger than "
                                           f"{MAX_CONFIG_BYTES // 1024} KiB")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([_line(path, "", f"TOML syntax error: invalid UTF-8 at line {line} "
                                           f"(byte {exc.start})")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_line(path, "", f"TOML syntax error: {exc}")]) from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table and sets no limit
        # of its own: a few hundred '[' exhaust Python's stack.
        raise ConfigError([_line(path, "", "TOML syntax error: arrays or tables nested "
                                           "too deeply")]) from None
    except ValueError:
        # int() refuses a literal of more than 4300 digits and tomllib passes that
        # ValueError through, with advice for programmers, not operators.
        raise ConfigError([_line(path, "", "TOML syntax error: an integer with thousands "
                                           "of digits")]) from None
    return parse(data, path, secrets=secrets)


def parse(data: dict[str, Any], path: Path, *, secrets: bool = True) -> Config:
    """Validate a decoded TOML document; raise ConfigError listing every problem."""
    p = _Problems(path)
    p.unknown(data, "", {"sentinel", "agent", "actions", "log", "vip", "redis"})
    sentinel = _sentinel(p, _table(p, data, "sentinel", required=True), secrets)
    agent = _agent(p, _table(p, data, "agent"))
    actions = _actions(p, _table(p, data, "actions"))
    redis = _redis(p, _table(p, data, "redis"), secrets)
    log = _table(p, data, "log")
    p.unknown(log, "log", {"level"})
    level = _get(p, log, "log", "level", str, Config.log_level)
    if level not in _LOG_LEVELS:
        p.add("log.level", f"must be one of {', '.join(_LOG_LEVELS)}, not {_quote(level)}")
    vips = _vips(p, data.get("vip"))
    p.raise_if_any()
    return Config(path=path, sentinel=sentinel, vips=vips, agent=agent, actions=actions,
                  redis=redis, log_level=level)


def _line(path: Path, key: str, message: str) -> str:
    """One problem line. Control characters are escaped (\\x1b, \\n, \\u2028...): a
    value from the file must not colour or rewrite the operator's terminal, nor
    split one problem into lines that do not start with the file's name."""
    line = f"{path}: {key}: {message}" if key else f"{path}: {message}"
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


def _clip(text: str) -> str:
    return text if len(text) <= _QUOTE_CHARS else text[:_QUOTE_CHARS] + "..."


def _quote(text: str) -> str:
    """A value from the file as a problem line shows it: quoted, escaped, short."""
    return repr(text) if len(text) <= _QUOTE_CHARS else repr(text[:_QUOTE_CHARS]) + "..."


def _show_number(value: float) -> str:
    # A huge int is neither formatted as a float (OverflowError) nor in full (str()
    # refuses past 4300 digits, and the line would be as long).
    if isinstance(value, int) and abs(value) >= 10 ** 15:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    return str(value) if isinstance(value, int) else f"{value:g}"


# Keys that were renamed, by (section, old name): an old config is told the new
# name instead of "unknown key".
_RENAMED = {("actions", "hooks_dir"): "scripts_dir"}


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.missing: set[str] = set()

    def add(self, key: str, message: str) -> None:
        self.lines.append(_line(self.path, key, message))

    def unknown(self, table: dict[str, Any], prefix: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                new = _RENAMED.get((prefix, key))
                self.add(f"{prefix}.{_clip(key)}" if prefix else _clip(key),
                         f"renamed to {new}" if new else "unknown key")

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(self.lines)


_MISSING = object()
# TOML's names for what tomllib returns (bool before int: a bool is an int).
# Keyed by what _get is given as its kind (a tuple of types comes with its own `want`).
_TOML_TYPES: dict[type | tuple[type, ...], str] = {
    bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}


def _toml_type(value: Any) -> str:
    for kind, name in _TOML_TYPES.items():
        if isinstance(value, kind):
            return name
    return "date-time" if type(value).__name__ == "datetime" else type(value).__name__


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _table(p: _Problems, data: dict[str, Any], key: str, required: bool = False) -> dict[str, Any]:
    value = data.get(key, _MISSING)
    if value is _MISSING:
        if required:
            p.add(key, "missing section")
            p.missing.add(key)
        return {}
    if not isinstance(value, dict):
        p.add(key, f"must be a table, not {_a(_toml_type(value))}")
        if required:
            p.missing.add(key)  # one line for it, as for a missing section
        return {}
    return value


def _get(p: _Problems, table: dict[str, Any], prefix: str, key: str, kind: type | tuple[type, ...],
         default: Any = _MISSING, want: str | None = None) -> Any:
    """table[key] if it is of `kind` (and, for a string, holds no NUL); else the
    problem is reported and the default (None for a required key) returned."""
    value = table.get(key, _MISSING)
    name = f"{prefix}.{key}"
    fallback = None if default is _MISSING else default
    if value is _MISSING:
        if default is _MISSING:
            p.add(name, "missing")
        return fallback
    # Booleans are ints in Python, never numbers in TOML.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        p.add(name, f"must be {_a(want or _TOML_TYPES[kind])}, not {_a(_toml_type(value))}")
        return fallback
    # TOML's "\u0000" makes one; every string here ends up in a C string (a path,
    # an interface or group name, a password sent to Redis) that it would cut.
    if isinstance(value, str) and "\0" in value:
        p.add(name, "contains a NUL character")
        return fallback
    return value


def _strings(p: _Problems, table: dict[str, Any], prefix: str, key: str) -> list[tuple[str, str]]:
    """The items of an array of strings, each with its name for a problem line;
    any other item is reported (ipaddress.ip_address(1) would be 0.0.0.1)."""
    items: list[tuple[str, str]] = []
    for i, item in enumerate(_get(p, table, prefix, key, list, [])):
        name = f"{prefix}.{key}[{i}]"
        if not isinstance(item, str):
            p.add(name, f"must be a string, not {_a(_toml_type(item))}")
        elif "\0" in item:
            p.add(name, "contains a NUL character")
        else:
            items.append((name, item))
    return items


def _number(p: _Problems, table: dict[str, Any], prefix: str, key: str, default: float,
            low: float, high: float, off: bool = False) -> float:
    """A number in [low, high]; with off=True 0 too (it disables the feature)."""
    value = _get(p, table, prefix, key, (int, float), default, want="number")
    # Compared before float(): Python compares a 400-digit int with a float exactly,
    # where float() raises OverflowError. nan fails every comparison and inf is
    # outside every range, so both are refused here.
    if (off and value == 0) or low <= value <= high:
        return float(value)
    span = f"{'0 (off) or ' if off else ''}between {low:g} and {high:g}"
    p.add(f"{prefix}.{key}", f"must be {span}, not {_show_number(value)}")
    return default


def _integer(p: _Problems, table: dict[str, Any], prefix: str, key: str, default: int,
             low: int, high: int) -> int:
    value: int = _get(p, table, prefix, key, int, default)
    if low <= value <= high:
        return value
    p.add(f"{prefix}.{key}", f"must be between {low} and {high}, not {_show_number(value)}")
    return default


@overload
def _path(p: _Problems, table: dict[str, Any], prefix: str, key: str, default: Path,
          limit: int = ..., limit_is: str = ...) -> Path: ...


@overload
def _path(p: _Problems, table: dict[str, Any], prefix: str, key: str, default: None,
          limit: int = ..., limit_is: str = ...) -> Path | None: ...


def _path(p: _Problems, table: dict[str, Any], prefix: str, key: str, default: Path | None,
          limit: int = MAX_PATH_BYTES, limit_is: str = "a path holds") -> Path | None:
    text = _get(p, table, prefix, key, str, None)
    if text is None:
        return default
    # Relative to what? The agent runs in /, the hook in Sentinel's directory and
    # check-config in the operator's: one file would name three places.
    if not text.startswith("/"):
        p.add(f"{prefix}.{key}", f"{_quote(text)} is not an absolute path")
        return default
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        p.add(f"{prefix}.{key}", f"is {size} bytes long; {limit_is} at most {limit}")
        return default
    return Path(text)


def parse_endpoint(text: str) -> Endpoint:
    """'host:port' or '[v6]:port' -> Endpoint; ValueError with a readable message."""
    match = re.fullmatch(r"\[([^\]]+)\]:([0-9]+)|([^:\[\]]+):([0-9]+)", text.strip())
    if not match:
        raise ValueError(f"{_quote(text)} is not host:port (IPv6 as [addr]:port)")
    host = match.group(1) or match.group(3)
    digits = match.group(2) or match.group(4)
    # Length first: int() refuses more than 4300 digits, with its own message.
    port = int(digits) if len(digits) <= 5 else 0
    if not 0 < port < 65536:
        raise ValueError(f"{_quote(text)} has port {_clip(digits)}, not 1-65535")
    if match.group(1):
        try:
            ipaddress.IPv6Address(host)  # brackets are for IPv6 literals only
        except ValueError:
            raise ValueError(f"{_quote(host)} is not an IPv6 address") from None
    elif not _is_hostname(host):
        raise ValueError(f"{_quote(host)} is not a host name or IPv4 address")
    return Endpoint(host, port)


def _is_hostname(host: str) -> bool:
    name = host.removesuffix(".")  # a fully qualified name may end in '.'
    return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


def _read_secret(file: Path) -> str:
    """A password file's content without its final line break; ValueError whose
    message names the file, never its content."""
    try:
        # O_NONBLOCK: a FIFO there must not hang the load (it is refused below).
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        with open(fd, "rb") as stream:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ValueError(f"cannot read {file}: not a regular file")
            raw = stream.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise ValueError(f"cannot read {file}: larger than {MAX_SECRET_BYTES // 1024} KiB, "
                         "not a password")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"cannot read {file}: not UTF-8 text") from None
    if "\0" in text:
        raise ValueError(f"cannot read {file}: contains a NUL character")
    return text.rstrip("\r\n")


def _secret(p: _Problems, table: dict[str, Any], prefix: str, secrets: bool) -> Secret | None:
    key = f"{prefix}.password_file"
    password = _get(p, table, prefix, "password", str, None)
    password_file = _path(p, table, prefix, "password_file", None)
    if password is not None and password_file is not None:
        p.add(key, "set password or password_file, not both")
        return None
    if password_file is None:
        return Secret(password) if password is not None else None
    if not secrets:
        return Secret(file=password_file, origin=(p.path, key))
    try:
        return Secret(_read_secret(password_file))
    except ValueError as exc:
        p.add(key, str(exc))
        return None


def _sentinel(p: _Problems, table: dict[str, Any], secrets: bool) -> SentinelConfig:
    p.unknown(table, "sentinel", {"addresses", "username", "password", "password_file", "timeout"})
    # A missing (or not a table) [sentinel] was reported already; say nothing more.
    present = "sentinel" not in p.missing
    endpoints: list[Endpoint] = []
    seen: set[Endpoint] = set()
    for name, item in _strings(p, table, "sentinel", "addresses") if present else []:
        try:
            endpoint = parse_endpoint(item)
        except ValueError as exc:
            p.add(name, str(exc))
            continue
        if endpoint in seen:
            p.add(name, f"{_quote(item)} is listed twice")
        seen.add(endpoint)
        endpoints.append(endpoint)
    # Missing or []: a wrong type was reported as such by _strings.
    if present and table.get("addresses", []) == []:
        p.add("sentinel.addresses", "no Sentinel configured: list at least one host:port")
    return SentinelConfig(
        addresses=tuple(endpoints),
        username=_get(p, table, "sentinel", "username", str, None),
        password=_secret(p, table, "sentinel", secrets),
        timeout=_number(p, table, "sentinel", "timeout", SentinelConfig.timeout, 0.05, 10.0),
    )


def _redis(p: _Problems, table: dict[str, Any], secrets: bool) -> RedisConfig:
    p.unknown(table, "redis", {"username", "password", "password_file", "timeout"})
    return RedisConfig(username=_get(p, table, "redis", "username", str, None),
                       password=_secret(p, table, "redis", secrets),
                       timeout=_number(p, table, "redis", "timeout", RedisConfig.timeout,
                                       0.05, 10.0))


def _agent(p: _Problems, table: dict[str, Any]) -> AgentConfig:
    p.unknown(table, "agent", {"socket", "state_dir", "lock_timeout", "retry_timeout",
                               "socket_group", "reconcile_interval", "on_quorum_loss",
                               "quorum_loss_grace", "release_wait", "reset_connections",
                               "release_on_stop", "conflict_probe_interval",
                               "announce_refresh", "metrics_listen", "hook_timeout",
                               "early_bind", "failover_write_hold"})
    defaults = AgentConfig()
    policy = _get(p, table, "agent", "on_quorum_loss", str, defaults.on_quorum_loss.value)
    if policy not in {m.value for m in QuorumPolicy}:
        p.add("agent.on_quorum_loss", f"must be 'release' or 'keep', not {_quote(policy)}")
        policy = defaults.on_quorum_loss
    metrics = _get(p, table, "agent", "metrics_listen", str, None)
    if metrics is not None:
        try:
            parse_endpoint(metrics)
        except ValueError as exc:
            p.add("agent.metrics_listen", str(exc))
    return AgentConfig(
        socket_group=_get(p, table, "agent", "socket_group", str, None),
        reconcile_interval=_number(p, table, "agent", "reconcile_interval",
                                   defaults.reconcile_interval, 0.05, 2.0),
        on_quorum_loss=QuorumPolicy(policy),
        # Unset is no number: it means the master's down-after-milliseconds.
        quorum_loss_grace=None if "quorum_loss_grace" not in table else _number(
            p, table, "agent", "quorum_loss_grace", 0.0, 0.0, 600.0),
        release_wait=_number(p, table, "agent", "release_wait", defaults.release_wait, 0.0, 10.0),
        reset_connections=_get(p, table, "agent", "reset_connections", bool,
                               defaults.reset_connections),
        release_on_stop=_get(p, table, "agent", "release_on_stop", bool, defaults.release_on_stop),
        # 0 disables either; above 0, a floor: the VIP's actor wakes every half
        # probe interval, and Linux ignores a second ARP update within 1 s.
        conflict_probe_interval=_number(p, table, "agent", "conflict_probe_interval",
                                        defaults.conflict_probe_interval, 0.1, 3600.0, off=True),
        announce_refresh=_number(p, table, "agent", "announce_refresh",
                                 defaults.announce_refresh, 1.0, 3600.0, off=True),
        metrics_listen=metrics,
        hook_timeout=_number(p, table, "agent", "hook_timeout", defaults.hook_timeout, 0.1, 30.0),
        early_bind=_get(p, table, "agent", "early_bind", bool, defaults.early_bind),
        # A floor of 0.1 s: CLIENT PAUSE is renewed in slices, and a shorter hold
        # would lapse before the promotion it waits for.
        failover_write_hold=_number(p, table, "agent", "failover_write_hold",
                                    defaults.failover_write_hold, 0.1, 30.0, off=True),
        socket=_path(p, table, "agent", "socket", defaults.socket, MAX_SOCKET_PATH_BYTES,
                     "a Unix socket path holds"),
        state_dir=_path(p, table, "agent", "state_dir", defaults.state_dir),
        lock_timeout=_number(p, table, "agent", "lock_timeout", defaults.lock_timeout, 0.1,
                             MAX_LOCK_TIMEOUT),
        retry_timeout=_number(p, table, "agent", "retry_timeout", defaults.retry_timeout, 0.0,
                              MAX_RETRY_TIMEOUT),
    )


def _actions(p: _Problems, table: dict[str, Any]) -> ActionsConfig:
    p.unknown(table, "actions", {"scripts_dir", "timeout", "pre_release_dir"})
    defaults = ActionsConfig()
    return ActionsConfig(
        scripts_dir=_path(p, table, "actions", "scripts_dir", defaults.scripts_dir),
        timeout=_number(p, table, "actions", "timeout", defaults.timeout, 0.1, MAX_SCRIPT_TIMEOUT),
        pre_release_dir=_path(p, table, "actions", "pre_release_dir", defaults.pre_release_dir),
    )


def _ifname_problem(name: str) -> str | None:
    """Why Linux refuses this interface name (its dev_valid_name()), or None.
    Control characters are refused too: check-config prints the name."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if not name:
        return "empty"
    if size > MAX_IFNAME_BYTES:
        return f"{size} bytes long, at most {MAX_IFNAME_BYTES}"
    if name in (".", ".."):
        return "'.' and '..' are reserved"
    if any(c in "/:" or c.isspace() or not c.isprintable() for c in name):
        return "no '/', ':', space or control character allowed"
    return None


def _vips(p: _Problems, raw: Any) -> tuple[VipConfig, ...]:
    if raw is None or raw == []:
        p.add("vip", "no [[vip]] block: configure at least one master and its VIP")
        return ()
    if not isinstance(raw, list):
        p.add("vip", f"must be an array of tables ([[vip]]), not {_a(_toml_type(raw))}")
        return ()
    vips: list[VipConfig] = []
    masters: dict[str, int] = {}
    addresses: dict[IPAddress, int] = {}
    for i, table in enumerate(raw):
        prefix = f"vip[{i}]"
        if not isinstance(table, dict):
            p.add(prefix, f"must be a table ([[vip]]), not {_a(_toml_type(table))}")
            continue
        p.unknown(table, prefix, {"master", "address", "interface", "local_addresses",
                                  "announce_count", "announce_interval", "crash_failover"})
        master = _get(p, table, prefix, "master", str)
        if master is not None:
            # Sentinel's own config splits on spaces; a control character can only
            # be a mistake, and check-config prints the name.
            if not master or not master.isprintable() or any(c.isspace() for c in master):
                p.add(f"{prefix}.master", f"{_quote(master)} is not a Sentinel master name")
                master = None
            elif master in masters:
                p.add(f"{prefix}.master", f"{_quote(master)} is already used by "
                                          f"vip[{masters[master]}]")
            else:
                masters[master] = i
        address = _vip_address(p, table, prefix, addresses, i)
        interface = _get(p, table, prefix, "interface", str)
        if interface is not None and (why := _ifname_problem(interface)):
            p.add(f"{prefix}.interface", f"{_quote(interface)} is not a Linux interface name: "
                                         f"{why}")
            interface = None
        locals_: list[IPAddress] = []
        for name, item in _strings(p, table, prefix, "local_addresses"):
            try:
                locals_.append(ipaddress.ip_address(item))
            except ValueError:
                p.add(name, f"{_quote(item)} is not an IP address")
        count = _integer(p, table, prefix, "announce_count", DEFAULT_ANNOUNCE_COUNT, 1, 100)
        interval = _number(p, table, prefix, "announce_interval", DEFAULT_ANNOUNCE_INTERVAL,
                           0.01, 60.0)
        crash_failover = _get(p, table, prefix, "crash_failover", bool, False)
        if master and address is not None and interface:
            vips.append(VipConfig(master=master, address=address, interface=interface,
                                  local_addresses=tuple(locals_), announce_count=count,
                                  announce_interval=interval, crash_failover=crash_failover))
    return tuple(vips)


def _vip_address(p: _Problems, table: dict[str, Any], prefix: str,
                 seen: dict[IPAddress, int], index: int) -> IPInterface | None:
    text = _get(p, table, prefix, "address", str)
    if text is None:
        return None
    if "/" not in text:
        p.add(f"{prefix}.address", f"{_quote(text)} needs a prefix length, e.g. {_clip(text)}/24")
        return None
    try:
        address = ipaddress.ip_interface(text)
    except ValueError:
        p.add(f"{prefix}.address", f"{_quote(text)} is not an IP address with prefix")
        return None
    ip = address.ip
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        p.add(f"{prefix}.address", f"{_quote(text)} cannot be a VIP (multicast, unspecified or "
                                   "loopback)")
        return None
    if ip in seen:
        p.add(f"{prefix}.address", f"{ip} is already the VIP of vip[{seen[ip]}]")
    seen.setdefault(ip, index)
    return address
