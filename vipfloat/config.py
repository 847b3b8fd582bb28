"""Load vipfloat's TOML config once into frozen, validated objects.

Every problem is collected and reported together, one line each, as
``<file>: <key>: <what is wrong>``, so an operator fixes the file in one pass.
Secrets are wrapped in :class:`Secret`, whose repr never shows the value.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

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
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")
_LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Secret:
    """A password that never shows up in a repr, a log line or a traceback."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
    on_quorum_loss: str = "release"       # or "keep"
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


@dataclass(frozen=True)
class ActionsConfig:
    hooks_dir: Path = Path("/etc/vipfloat/hooks.d")
    timeout: float = 10.0
    # Scripts run while this host still holds the VIP, just before releasing it
    # (VIPFLOAT_EVENT=pre-release): the only moment a FIN or RST sent from the VIP
    # still reaches clients. A separate directory, so that hooks.d scripts written
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


def load(explicit: str | os.PathLike[str] | None = None) -> Config:
    path = config_path(explicit)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None
    return parse(data, path)


def parse(data: dict[str, Any], path: Path) -> Config:
    """Validate a decoded TOML document; raise ConfigError listing every problem."""
    p = _Problems(path)
    p.unknown(data, "", {"sentinel", "agent", "actions", "log", "vip", "redis"})
    sentinel = _sentinel(p, _table(p, data, "sentinel", required=True))
    agent = _agent(p, _table(p, data, "agent"))
    actions = _actions(p, _table(p, data, "actions"))
    redis_table = _table(p, data, "redis")
    p.unknown(redis_table, "redis", {"username", "password", "password_file", "timeout"})
    redis = RedisConfig(username=_get(p, redis_table, "redis", "username", str, None),
                        password=_secret(p, redis_table, "redis"),
                        timeout=_number(p, redis_table, "redis", "timeout", 0.5, 0.05, 10.0))
    log = _table(p, data, "log")
    p.unknown(log, "log", {"level"})
    level = _get(p, log, "log", "level", str, "info")
    if level not in _LOG_LEVELS:
        p.add("log.level", f"must be one of {', '.join(_LOG_LEVELS)}, not {level!r}")
    vips = _vips(p, data.get("vip"))
    p.raise_if_any()
    return Config(path=path, sentinel=sentinel, vips=vips, agent=agent, actions=actions,
                  redis=redis, log_level=level)


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.missing: set[str] = set()

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")

    def unknown(self, table: dict[str, Any], prefix: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                self.add(f"{prefix}.{key}" if prefix else key, "unknown key")

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(self.lines)


_MISSING = object()


def _table(p: _Problems, data: dict[str, Any], key: str, required: bool = False) -> dict[str, Any]:
    value = data.get(key, _MISSING)
    if value is _MISSING:
        if required:
            p.add(key, "missing section")
            p.missing.add(key)
        return {}
    if not isinstance(value, dict):
        p.add(key, "must be a table")
        return {}
    return value


def _get(p: _Problems, table: dict[str, Any], prefix: str, key: str, kind: type | tuple[type, ...],
         default: Any = _MISSING) -> Any:
    value = table.get(key, _MISSING)
    name = f"{prefix}.{key}"
    if value is _MISSING:
        if default is _MISSING:
            p.add(name, "missing")
        return None if default is _MISSING else default
    # TOML integers are fine where a float is expected; booleans are never numbers.
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        p.add(name, f"must be a {want}, not {type(value).__name__}")
        return None if default is _MISSING else default
    return value


def _number(p: _Problems, table: dict[str, Any], prefix: str, key: str, default: float,
            low: float, high: float) -> float:
    value = _get(p, table, prefix, key, float, default)
    if value is not None and not low <= value <= high:
        p.add(f"{prefix}.{key}", f"must be between {low:g} and {high:g}, not {value:g}")
        return default
    return value


def parse_endpoint(text: str) -> Endpoint:
    """'host:port' or '[v6]:port' -> Endpoint; ValueError with a readable message."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not host:port (IPv6 as [addr]:port)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"{text!r} has port {port}, not 1-65535")
    if match.group(1):
        ipaddress.IPv6Address(host)  # brackets are for IPv6 literals only
    return Endpoint(host, port)


def _secret(p: _Problems, table: dict[str, Any], prefix: str) -> Secret | None:
    password = _get(p, table, prefix, "password", str, None)
    password_file = _get(p, table, prefix, "password_file", str, None)
    if password is not None and password_file is not None:
        p.add(f"{prefix}.password_file", "set password or password_file, not both")
        return None
    if password_file is not None:
        try:
            return Secret(Path(password_file).read_text(encoding="utf-8").rstrip("\r\n"))
        except OSError as exc:
            # Name the file, never its content.
            p.add(f"{prefix}.password_file", f"cannot read {password_file}: {exc.strerror or exc}")
            return None
    return Secret(password) if password is not None else None


def _sentinel(p: _Problems, table: dict[str, Any]) -> SentinelConfig:
    p.unknown(table, "sentinel", {"addresses", "username", "password", "password_file", "timeout"})
    # A missing [sentinel] section was reported already; say nothing more about it.
    present = "sentinel" not in p.missing
    raw = _get(p, table, "sentinel", "addresses", list, []) if present else []
    endpoints: list[Endpoint] = []
    for i, item in enumerate(raw):
        try:
            if not isinstance(item, str):
                raise ValueError(f"must be a string, not {type(item).__name__}")
            endpoint = parse_endpoint(item)
        except ValueError as exc:
            p.add(f"sentinel.addresses[{i}]", str(exc))
            continue
        if endpoint in endpoints:
            p.add(f"sentinel.addresses[{i}]", f"{item!r} is listed twice")
        endpoints.append(endpoint)
    if present and not raw:
        p.add("sentinel.addresses", "no Sentinel configured: list at least one host:port")
    return SentinelConfig(
        addresses=tuple(endpoints),
        username=_get(p, table, "sentinel", "username", str, None),
        password=_secret(p, table, "sentinel"),
        timeout=_number(p, table, "sentinel", "timeout", 0.5, 0.05, 10.0),
    )


def _agent(p: _Problems, table: dict[str, Any]) -> AgentConfig:
    p.unknown(table, "agent", {"socket", "state_dir", "lock_timeout", "retry_timeout",
                               "socket_group", "reconcile_interval", "on_quorum_loss",
                               "quorum_loss_grace", "release_wait", "reset_connections",
                               "release_on_stop", "conflict_probe_interval",
                               "announce_refresh", "metrics_listen", "hook_timeout"})
    defaults = AgentConfig()
    policy = _get(p, table, "agent", "on_quorum_loss", str, defaults.on_quorum_loss)
    if policy not in ("release", "keep"):
        p.add("agent.on_quorum_loss", f"must be 'release' or 'keep', not {policy!r}")
    grace = table.get("quorum_loss_grace")
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
        on_quorum_loss=policy,
        quorum_loss_grace=None if grace is None else _number(
            p, table, "agent", "quorum_loss_grace", 0.0, 0.0, 600.0),
        release_wait=_number(p, table, "agent", "release_wait", defaults.release_wait, 0.0, 10.0),
        reset_connections=_get(p, table, "agent", "reset_connections", bool,
                               defaults.reset_connections),
        release_on_stop=_get(p, table, "agent", "release_on_stop", bool, defaults.release_on_stop),
        conflict_probe_interval=_number(p, table, "agent", "conflict_probe_interval",
                                        defaults.conflict_probe_interval, 0.0, 3600.0),
        announce_refresh=_number(p, table, "agent", "announce_refresh",
                                 defaults.announce_refresh, 0.0, 3600.0),
        metrics_listen=metrics,
        hook_timeout=_number(p, table, "agent", "hook_timeout", defaults.hook_timeout, 0.1, 30.0),
        socket=Path(_get(p, table, "agent", "socket", str, str(defaults.socket))),
        state_dir=Path(_get(p, table, "agent", "state_dir", str, str(defaults.state_dir))),
        lock_timeout=_number(p, table, "agent", "lock_timeout", defaults.lock_timeout, 0.1,
                             MAX_LOCK_TIMEOUT),
        retry_timeout=_number(p, table, "agent", "retry_timeout", defaults.retry_timeout, 0.0,
                              MAX_RETRY_TIMEOUT),
    )


def _actions(p: _Problems, table: dict[str, Any]) -> ActionsConfig:
    p.unknown(table, "actions", {"hooks_dir", "timeout", "pre_release_dir"})
    defaults = ActionsConfig()
    return ActionsConfig(
        hooks_dir=Path(_get(p, table, "actions", "hooks_dir", str, str(defaults.hooks_dir))),
        timeout=_number(p, table, "actions", "timeout", defaults.timeout, 0.1, MAX_SCRIPT_TIMEOUT),
        pre_release_dir=Path(_get(p, table, "actions", "pre_release_dir", str,
                                  str(defaults.pre_release_dir))),
    )


def _vips(p: _Problems, raw: Any) -> tuple[VipConfig, ...]:
    if raw is None:
        p.add("vip", "no [[vip]] block: configure at least one master and its VIP")
        return ()
    if not isinstance(raw, list):
        p.add("vip", "must be an array of tables ([[vip]])")
        return ()
    vips: list[VipConfig] = []
    masters: dict[str, int] = {}
    addresses: dict[IPAddress, int] = {}
    for i, table in enumerate(raw):
        prefix = f"vip[{i}]"
        if not isinstance(table, dict):
            p.add(prefix, "must be a table ([[vip]])")
            continue
        p.unknown(table, prefix, {"master", "address", "interface", "local_addresses",
                                  "announce_count", "announce_interval"})
        master = _get(p, table, prefix, "master", str)
        if master is not None:
            if not master or any(c.isspace() for c in master):
                p.add(f"{prefix}.master", f"{master!r} is not a Sentinel master name")
            elif master in masters:
                p.add(f"{prefix}.master", f"{master!r} is already used by vip[{masters[master]}]")
            masters.setdefault(master, i)
        address = _vip_address(p, table, prefix, addresses, i)
        interface = _get(p, table, prefix, "interface", str)
        if interface is not None and not _IFNAME.match(interface):
            p.add(f"{prefix}.interface", f"{interface!r} is not a Linux interface name")
        locals_: list[IPAddress] = []
        for j, item in enumerate(_get(p, table, prefix, "local_addresses", list, [])):
            try:
                locals_.append(ipaddress.ip_address(item))
            except ValueError:
                p.add(f"{prefix}.local_addresses[{j}]", f"{item!r} is not an IP address")
        count = _get(p, table, prefix, "announce_count", int, DEFAULT_ANNOUNCE_COUNT)
        if count is not None and not 1 <= count <= 100:
            p.add(f"{prefix}.announce_count", f"must be between 1 and 100, not {count}")
        interval = _number(p, table, prefix, "announce_interval", DEFAULT_ANNOUNCE_INTERVAL,
                           0.01, 60.0)
        if master and address is not None and interface:
            vips.append(VipConfig(master=master, address=address, interface=interface,
                                  local_addresses=tuple(locals_),
                                  announce_count=count or DEFAULT_ANNOUNCE_COUNT,
                                  announce_interval=interval))
    return tuple(vips)


def _vip_address(p: _Problems, table: dict[str, Any], prefix: str,
                 seen: dict[IPAddress, int], index: int) -> IPInterface | None:
    text = _get(p, table, prefix, "address", str)
    if text is None:
        return None
    if "/" not in text:
        p.add(f"{prefix}.address", f"{text!r} needs a prefix length, e.g. {text}/24")
        return None
    try:
        address = ipaddress.ip_interface(text)
    except ValueError:
        p.add(f"{prefix}.address", f"{text!r} is not an IP address with prefix")
        return None
    ip = address.ip
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        p.add(f"{prefix}.address", f"{text!r} cannot be a VIP (multicast, unspecified or loopback)")
        return None
    if ip in seen:
        p.add(f"{prefix}.address", f"{ip} is already the VIP of vip[{seen[ip]}]")
    seen.setdefault(ip, index)
    return address
