"""What `vipfloat doctor` knows about the setup: frozen values, gathered once.

Everything a check needs is here, so every check is a pure function that can be
tested with hand-built facts. ``None`` means "could not be read", which checks
report as such rather than guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..userscripts import Refusal


@dataclass(frozen=True)
class SentinelMasterFacts:
    """One Sentinel's view of one master name (SENTINEL MASTER, CKQUORUM)."""

    addr: str | None = None               # ip:port of the master it names
    config_epoch: int | None = None
    quorum: int | None = None
    other_sentinels: int | None = None    # num-other-sentinels
    reconfig_script: str | None = None    # client-reconfig-script, if set
    ckquorum: str | None = None           # CKQUORUM's reply or error, first line
    ckquorum_ok: bool | None = None
    error: str | None = None              # why SENTINEL MASTER failed


@dataclass(frozen=True)
class PendingScript:
    argv: tuple[str, ...]
    retries: int


@dataclass(frozen=True)
class SentinelFacts:
    endpoint: str
    reachable: bool
    error: str | None = None
    version: str | None = None            # valkey_version, else redis_version
    server: str = "Redis"                 # or "Valkey" (server_info)
    tilt: bool | None = None
    pid: int | None = None                # process_id, meaningful when local
    local: bool = False                   # its address is one of this host's
    pending: tuple[PendingScript, ...] = ()
    masters: dict[str, SentinelMasterFacts] = field(default_factory=dict)


@dataclass(frozen=True)
class RedisFacts:
    """One Redis instance of a master name (the master or a replica)."""

    addr: str
    role: str                             # what Sentinel lists it as: master | replica
    reachable: bool
    error: str | None = None
    version: str | None = None
    server: str = "Redis"
    requirepass: bool | None = None       # set or not; the value is never kept
    masterauth: bool | None = None
    bind: tuple[str, ...] | None = None
    protected_mode: bool | None = None
    link_up: bool | None = None           # replicas: master_link_status:up
    lag_bytes: int | None = None          # replicas: master's offset - theirs
    persistent: bool | None = None        # RDB snapshots (save) or the AOF (appendonly) on


@dataclass(frozen=True)
class ProcessFacts:
    """A local process's identity and capabilities (/proc/PID/status)."""

    name: str                             # its unit: "redis-sentinel", "valkey-sentinel";
                                          # or "vipfloat watch"
    pid: int
    uid: int
    gids: tuple[int, ...]                 # primary group first
    cap_eff: int
    cap_amb: int
    cap_bnd: int


@dataclass(frozen=True)
class PathFacts:
    path: str
    exists: bool
    uid: int = 0
    gid: int = 0
    mode: int = 0                         # st_mode
    # Every directory above it, (uid, gid, mode), for the search (x) permission.
    parents: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class UnitFacts:
    """The agent's systemd unit as installed (read when no agent is running)."""

    path: str
    user: str                             # "root" when the unit sets none
    ambient: frozenset[str]               # AmbientCapabilities, lower case


@dataclass(frozen=True)
class VipFacts:
    master: str
    address: str
    interface: str
    interface_exists: bool
    interface_up: bool
    bound_here: bool
    master_addr: str | None
    master_is_local: bool | None
    consistent: bool
    note: str
    # Who answered one probe for the VIP on its interface (vipfloat.doctor.probe):
    # other hosts' MACs, lower case; None when it could not probe (and why).
    answered_by: tuple[str, ...] | None = None
    probe_error: str | None = None
    crash_failover: bool = False          # the [[vip]] block's option


@dataclass(frozen=True)
class Facts:
    configured_sentinels: int
    sentinels: tuple[SentinelFacts, ...]
    redis: dict[str, tuple[RedisFacts, ...]]      # per master name
    vips: tuple[VipFacts, ...]
    sentinel_process: ProcessFacts | None         # this host's Sentinel, if any
    agent_process: ProcessFacts | None            # the running agent, if any
    socket: PathFacts | None                      # the agent's socket
    hook_paths: dict[str, PathFacts] = field(default_factory=dict)  # local Sentinel's scripts
    # Each script whose file lies on a noexec mount in the Sentinel's own mount
    # namespace (systemd's NoExecPaths/ExecPaths): that mount point. A script
    # missing here is executable there, or could not be judged.
    hook_noexec: dict[str, str] = field(default_factory=dict)
    agent_unit: UnitFacts | None = None           # vipfloat.service, if installed
    # scripts_dir and pre_release_dir -> the scripts (or the directory) refused in it.
    action_scripts: dict[str, tuple[Refusal, ...]] = field(default_factory=dict)
    write_hold: float = 0.0                       # [agent] failover_write_hold
