"""Reading the setup for `vipfloat doctor`: Sentinels, Redis instances, this host.

Read-only: INFO, CONFIG GET, SENTINEL MASTER/REPLICAS/CKQUORUM/PENDING-SCRIPTS,
netlink dumps, /proc and stat(). Every remote question has the config's short
timeout and runs in parallel, so a dead host costs one timeout, not one per
question. Passwords read through CONFIG GET are reduced to "set or not" at once.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..config import Config, Endpoint, RedisConfig, hostport
from ..sentinel import connection
from ..userscripts import Refusal, audit
from .checks import DIRECT, privilege_mode
from .probe import probe
from .facts import (Facts, PathFacts, PendingScript, ProcessFacts, RedisFacts,
                    SentinelFacts, SentinelMasterFacts, UnitFacts, VipFacts)

log = logging.getLogger(__name__)


# --- pure parsers ---------------------------------------------------------------------

def parse_info(text: str) -> dict[str, str]:
    """INFO's "key:value" lines -> dict (section headers and blanks skipped)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


def pairs(reply: Any) -> dict[str, Any]:
    """A flat [k, v, k, v ...] reply (RESP2) or a map (RESP3) -> dict."""
    if isinstance(reply, Mapping):
        return {str(k): v for k, v in reply.items()}
    return {str(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}


def server_info(info: dict[str, str]) -> tuple[str, str | None]:
    """INFO server -> (server, version). Valkey keeps a frozen redis_version
    (7.2.4) for old clients and reports its own as valkey_version, with
    server_name:valkey."""
    if "valkey_version" in info or info.get("server_name") == "valkey":
        return "Valkey", info.get("valkey_version") or info.get("redis_version")
    return "Redis", info.get("redis_version")


def sentinel_unit(cgroup: str | None, server: str) -> str:
    """The systemd unit a local Sentinel runs in, from /proc/PID/cgroup
    ("0::/system.slice/valkey-sentinel.service", or an instance of Debian's
    template, "redis-sentinel@main"). Not under systemd, or under a unit of
    another name (a script started it): the Debian unit of its server."""
    for line in (cgroup or "").splitlines():
        unit = line.rpartition("/")[2]
        if unit.endswith(".service") and unit.startswith(("redis-sentinel", "valkey-sentinel")):
            return unit.removesuffix(".service")
    return "valkey-sentinel" if server == "Valkey" else "redis-sentinel"


def parse_proc_status(text: str, name: str, pid: int) -> ProcessFacts:
    """/proc/PID/status -> ProcessFacts (real uid; primary group, then the others)."""
    f = {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}
    gid = int(f["Gid"].split()[0])
    groups = tuple(int(g) for g in f.get("Groups", "").split())
    return ProcessFacts(name=name, pid=pid, uid=int(f["Uid"].split()[0]),
                        gids=(gid, *[g for g in groups if g != gid]),
                        cap_eff=int(f.get("CapEff", "0"), 16),
                        cap_amb=int(f.get("CapAmb", "0"), 16),
                        cap_bnd=int(f.get("CapBnd", "0"), 16))


def parse_unit(path: str, texts: Sequence[str]) -> UnitFacts:
    """A unit file and its drop-ins, in order -> User= and AmbientCapabilities=
    (an empty assignment resets the list, as systemd does)."""
    user = "root"
    ambient: set[str] = set()
    for text in texts:
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if not sep or key.startswith(("#", ";")):
                continue
            if key == "User":
                user = value.strip() or "root"
            elif key == "AmbientCapabilities":
                if not value.strip():
                    ambient = set()
                ambient |= {c.lower() for c in value.split()}
    return UnitFacts(path, user, frozenset(ambient))


UNIT_DIRS = (Path("/etc/systemd/system"), Path("/lib/systemd/system"),
             Path("/usr/lib/systemd/system"))


def unit_facts(name: str = "vipfloat.service") -> UnitFacts | None:
    for base in UNIT_DIRS:
        unit = base / name
        if unit.is_file():
            dropins = sorted((base / f"{name}.d").glob("*.conf")) + \
                sorted((Path("/etc/systemd/system") / f"{name}.d").glob("*.conf"))
            try:
                texts = [unit.read_text()] + [d.read_text() for d in dict.fromkeys(dropins)]
            except OSError:
                return None
            return parse_unit(str(unit), texts)
    return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- Sentinels ------------------------------------------------------------------------

def _ask(conn: Any, *args: str) -> Any:
    conn.send_command(*args)
    return conn.read_response()


def sentinel_facts(endpoint: Endpoint, config: Config, local: frozenset[Any]) -> SentinelFacts:
    import redis

    cfg = config.sentinel
    conn = connection(endpoint.host, endpoint.port, cfg.username, cfg.password, cfg.timeout)
    try:
        server = parse_info(_ask(conn, "INFO", "server"))
        sentinel = parse_info(_ask(conn, "INFO", "sentinel"))
        pending = []
        for entry in _ask(conn, "SENTINEL", "PENDING-SCRIPTS") or []:
            p = pairs(entry)
            pending.append(PendingScript(tuple(str(a) for a in p.get("argv") or ()),
                                         _int(p.get("retry-num")) or 0))
        masters = {}
        for vip in config.vips:
            try:
                m = pairs(_ask(conn, "SENTINEL", "MASTER", vip.master))
            except redis.ResponseError as exc:
                masters[vip.master] = SentinelMasterFacts(error=str(exc).splitlines()[0])
                continue
            try:
                ck, ck_ok = str(_ask(conn, "SENTINEL", "CKQUORUM", vip.master)), True
            except redis.ResponseError as exc:
                ck, ck_ok = str(exc).splitlines()[0], False
            host = str(m.get("ip", ""))
            masters[vip.master] = SentinelMasterFacts(
                addr=hostport(host, m.get("port")),
                config_epoch=_int(m.get("config-epoch")), quorum=_int(m.get("quorum")),
                other_sentinels=_int(m.get("num-other-sentinels")),
                reconfig_script=m.get("client-reconfig-script") or None,
                ckquorum=ck, ckquorum_ok=ck_ok)
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError) as exc:
        return SentinelFacts(str(endpoint), reachable=False, error=str(exc).splitlines()[0])
    finally:
        conn.disconnect()
    try:
        is_local = ipaddress.ip_address(endpoint.host) in local or \
            ipaddress.ip_address(endpoint.host).is_loopback
    except ValueError:
        is_local = False
    kind, version = server_info(server)
    return SentinelFacts(str(endpoint), reachable=True, version=version, server=kind,
                         tilt=sentinel.get("sentinel_tilt") == "1",
                         pid=_int(server.get("process_id")), local=is_local,
                         pending=tuple(pending), masters=masters)


def replicas_of(endpoint: Endpoint, config: Config, master: str) -> list[str]:
    """The replicas' addresses, as one Sentinel lists them (SENTINEL REPLICAS)."""
    import redis

    cfg = config.sentinel
    conn = connection(endpoint.host, endpoint.port, cfg.username, cfg.password, cfg.timeout)
    try:
        return [f"{p.get('ip')}:{p.get('port')}"
                for p in map(pairs, _ask(conn, "SENTINEL", "REPLICAS", master) or [])]
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
        return []
    finally:
        conn.disconnect()


# --- Redis instances ------------------------------------------------------------------

def _config_get(conn: Any, name: str) -> str | None:
    import redis

    try:
        reply = pairs(_ask(conn, "CONFIG", "GET", name))
    except redis.ResponseError:   # CONFIG renamed or forbidden by ACL: unknown
        return None
    value = reply.get(name)
    return None if value is None else str(value)


def redis_facts(addr: str, role: str, cfg: RedisConfig,
                master_offset: int | None = None) -> tuple[RedisFacts, int | None]:
    """One instance's facts, and its master_repl_offset (for the replicas' lag)."""
    import redis

    host, _, port = addr.rpartition(":")
    conn = connection(host.strip("[]"), int(port), cfg.username, cfg.password, cfg.timeout)
    try:
        server = parse_info(_ask(conn, "INFO", "server"))
        repl = parse_info(_ask(conn, "INFO", "replication"))
        requirepass = _config_get(conn, "requirepass")
        masterauth = _config_get(conn, "masterauth")
        bind = _config_get(conn, "bind")
        protected = _config_get(conn, "protected-mode")
        save = _config_get(conn, "save")
        appendonly = _config_get(conn, "appendonly")
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError) as exc:
        return RedisFacts(addr, role, reachable=False, error=str(exc).splitlines()[0]), None
    finally:
        conn.disconnect()
    offset = _int(repl.get("slave_repl_offset"))
    lag = None
    if role == "replica" and offset is not None and master_offset is not None:
        lag = max(0, master_offset - offset)
    kind, version = server_info(server)
    facts = RedisFacts(
        addr, role, reachable=True, version=version, server=kind,
        requirepass=None if requirepass is None else bool(requirepass),
        masterauth=None if masterauth is None else bool(masterauth),
        bind=None if bind is None else tuple(bind.split()),
        protected_mode=None if protected is None else protected == "yes",
        link_up=(repl.get("master_link_status") == "up") if role == "replica" else None,
        lag_bytes=lag,
        persistent=None if save is None or appendonly is None else bool(save.strip())
        or appendonly == "yes")
    return facts, _int(repl.get("master_repl_offset"))


def instances(config: Config, sentinels: Sequence[SentinelFacts], master: str,
              pool: ThreadPoolExecutor) -> tuple[RedisFacts, ...]:
    """The master first (its offset is the replicas' reference), then the replicas
    in parallel, as listed by the Sentinel naming the newest configuration."""
    best = max((s for s in sentinels if s.reachable and s.masters.get(master)
                and s.masters[master].addr), default=None,
               key=lambda s: s.masters[master].config_epoch or 0)
    if best is None:
        return ()
    # The master's address is already known from that Sentinel's SENTINEL MASTER.
    endpoint = next(ep for ep, s in zip(config.sentinel.addresses, sentinels) if s is best)
    master_facts, offset = redis_facts(best.masters[master].addr or "", "master", config.redis)
    replicas = list(pool.map(lambda addr: redis_facts(addr, "replica", config.redis, offset)[0],
                             replicas_of(endpoint, config, master)))
    return (master_facts, *replicas)


# --- this host ------------------------------------------------------------------------

def process_facts(pid: int, name: str, proc: Path = Path("/proc")) -> ProcessFacts | None:
    try:
        return parse_proc_status((proc / str(pid) / "status").read_text(), name, pid)
    except (OSError, KeyError, ValueError, IndexError):
        return None


def path_facts(path: str) -> PathFacts:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return PathFacts(path, exists=False)
    parents = []
    for d in reversed(p.absolute().parents):
        try:
            ds = d.stat()
        except OSError:
            return PathFacts(path, exists=False)
        parents.append((ds.st_uid, ds.st_gid, ds.st_mode))
    return PathFacts(path, True, st.st_uid, st.st_gid, st.st_mode, tuple(parents))


def _unescape_mount(field: str) -> str:
    """Pure: mountinfo's octal escapes (\\040 for a space, ...) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def noexec_mount(mountinfo: str, path: str) -> str | None:
    """Pure: the mount point that makes ``path`` (absolute, links resolved) not
    executable per ``/proc/PID/mountinfo``, or None when its mount allows exec or
    none matched. The mount covering it is the one with the longest mount point
    that contains it; of several at one point, the last listed (on top)."""
    best: tuple[int, str, bool] | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        point = _unescape_mount(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), point, "noexec" in fields[5].split(","))
    return best[1] if best is not None and best[2] else None


def hook_noexec(scripts: Iterable[str], pid: int | None) -> dict[str, str]:
    """Each script on a noexec mount in process ``pid``'s mount namespace (its
    exec allowance is a bind mount that a package upgrade's rename drops)."""
    if pid is None:
        return {}
    try:
        mountinfo = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return {}                       # not ours to read: not judged
    out = {}
    for script in scripts:
        point = noexec_mount(mountinfo, os.path.realpath(script))
        if point is not None:
            out[script] = point
    return out


def script_owners(runners: set[int]) -> frozenset[int]:
    """Pure: who may own the action scripts, for doctor. Each runner accepts root
    and itself (userscripts.audit); with more than one runner (the agent, and the
    hook as Sentinel's user in direct mode) only root suits them all."""
    return frozenset({0} | runners) if len(runners) == 1 else frozenset({0})


def _uid_of(user: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def action_scripts(config: Config, agent: ProcessFacts | None, unit: UnitFacts | None,
                   sentinel: ProcessFacts | None) -> dict[str, tuple[Refusal, ...]]:
    """What the scripts' runners would refuse, judged for them rather than for
    doctor's own user (usually root). Runners: the agent (running, else as its
    unit would run it), and Sentinel's hook when it holds the capabilities."""
    runners = set()
    agent_uid = agent.uid if agent else _uid_of(unit.user) if unit else None
    if agent_uid is not None:
        runners.add(agent_uid)
    if sentinel is not None and privilege_mode(sentinel) == DIRECT:
        runners.add(sentinel.uid)
    owners = script_owners(runners)
    return {str(d): tuple(audit(d, owners)[1])
            for d in (config.actions.scripts_dir, config.actions.pre_release_dir)}


def gather(config: Config) -> Facts:
    from ..netlink import NetlinkHost
    from ..status import agent_view
    from ..status import gather as status_gather

    with NetlinkHost() as host:
        local = frozenset(r.ip for r in host.addresses())
        links = {v.interface: host.link(v.interface) for v in config.vips}
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="doctor") as pool:
        sentinels = tuple(pool.map(lambda ep: sentinel_facts(ep, config, local),
                                   config.sentinel.addresses))
        redis = {v.master: instances(config, sentinels, v.master, pool) for v in config.vips}
    vips = []
    for st in status_gather(config):
        link = links.get(st.vip.interface)
        answered_by, probe_error = (probe(st.vip.interface, st.vip.ip) if link and link.up
                                    else (None, f"{st.vip.interface} is missing or down"))
        vips.append(VipFacts(st.vip.master, str(st.vip.address), st.vip.interface,
                             interface_exists=link is not None,
                             interface_up=bool(link and link.up), bound_here=st.bound_here,
                             master_addr=st.master_addr, master_is_local=st.master_is_local,
                             consistent=st.consistent, note=st.note,
                             answered_by=answered_by, probe_error=probe_error,
                             crash_failover=st.vip.crash_failover))
    mine = next((s for s in sentinels if s.reachable and s.local and s.pid), None)
    sentinel_proc = None
    if mine and mine.pid:
        try:
            cgroup: str | None = Path(f"/proc/{mine.pid}/cgroup").read_text()
        except OSError:
            cgroup = None
        sentinel_proc = process_facts(mine.pid, sentinel_unit(cgroup, mine.server))
    live = agent_view(str(config.agent.socket))
    agent_proc = None
    if live and isinstance(live.get("pid"), int):
        agent_proc = process_facts(live["pid"], "vipfloat watch")
    scripts = {m.reconfig_script for m in (mine.masters.values() if mine else ())
               if m.reconfig_script}
    unit = None if agent_proc else unit_facts()
    return Facts(configured_sentinels=len(config.sentinel.addresses), sentinels=sentinels,
                 redis=redis, vips=tuple(vips), sentinel_process=sentinel_proc,
                 agent_process=agent_proc,
                 socket=path_facts(str(config.agent.socket)) if live else None,
                 hook_paths={s: path_facts(s) for s in sorted(scripts)},
                 hook_noexec=hook_noexec(scripts, sentinel_proc.pid if sentinel_proc else None),
                 agent_unit=unit,
                 action_scripts=action_scripts(config, agent_proc, unit, sentinel_proc),
                 write_hold=config.agent.failover_write_hold)
