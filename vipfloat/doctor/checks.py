"""The doctor's checks: pure functions from :class:`Facts` to findings.

Each check looks at one thing and says ok, warning or problem, with the fix in
one sentence. Most come from the traps in the Redis HA article this project
started from (failover-abort-not-elected from protected-mode or bind, replicas
that cannot sync because masterauth was set only where requirepass was, Redis
not listening on the VIP, two Sentinels where three are needed); the rest from
what vipfloat itself needs on this host.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Iterator

from ..config import majority
from .facts import Facts, PathFacts, ProcessFacts, SentinelFacts

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
NEEDED_CAPS = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
LAG_WARN_BYTES = 1 << 20     # a replica this far behind loses that much on failover
PENDING_WARN = 16            # Sentinel runs at most 16 scripts at once


class Level(str, Enum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str          # stable id, e.g. "redis.masterauth"
    subject: str        # what it is about: a Sentinel, an instance, a VIP, this host
    message: str
    fix: str = ""       # one sentence; empty when ok

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level.value, "check": self.check, "subject": self.subject,
                "message": self.message, "fix": self.fix}


def ok(check: str, subject: str, message: str) -> Finding:
    return Finding(Level.OK, check, subject, message)


def warn(check: str, subject: str, message: str, fix: str) -> Finding:
    return Finding(Level.WARNING, check, subject, message, fix)


def problem(check: str, subject: str, message: str, fix: str) -> Finding:
    return Finding(Level.PROBLEM, check, subject, message, fix)


def _reachable(facts: Facts) -> list[SentinelFacts]:
    return [s for s in facts.sentinels if s.reachable]


def _masters(facts: Facts) -> list[str]:
    return [v.master for v in facts.vips]


# --- 1. Sentinels ---------------------------------------------------------------------

def sentinel_count(facts: Facts) -> Iterator[Finding]:
    n = facts.configured_sentinels
    if n < 3:
        yield problem("sentinel.count", "sentinels", f"{n} Sentinel(s) configured",
                      "Run at least 3 Sentinels on separate hosts: with 2, losing one host "
                      "leaves no majority to authorise a failover.")
    else:
        yield ok("sentinel.count", "sentinels", f"{n} Sentinels configured")


def sentinel_reachable(facts: Facts) -> Iterator[Finding]:
    for s in facts.sentinels:
        if s.reachable:
            yield ok("sentinel.reachable", f"sentinel {s.endpoint}",
                     f"reachable ({s.server} {s.version or '?'})")
        else:
            yield problem("sentinel.reachable", f"sentinel {s.endpoint}",
                          f"unreachable: {s.error}",
                          "Start this Sentinel, or fix the address/credentials in "
                          "[sentinel] of vipfloat's config.")


def sentinel_agreement(facts: Facts) -> Iterator[Finding]:
    for master in _masters(facts):
        views = {}
        for s in _reachable(facts):
            m = s.masters.get(master)
            if m and m.addr:
                views[s.endpoint] = (m.addr, m.config_epoch)
        if not views:
            yield problem("sentinel.agree", master, "no reachable Sentinel knows this master",
                          f"Add 'sentinel monitor {master} ...' to every Sentinel, or fix "
                          "the master name in vipfloat's config.")
        elif len(set(views.values())) == 1:
            addr, epoch = next(iter(views.values()))
            yield ok("sentinel.agree", master,
                     f"{len(views)} Sentinel(s) agree: master {addr}, config-epoch {epoch}")
        else:
            seen = ", ".join(f"{ep} says {a} (epoch {e})" for ep, (a, e) in sorted(views.items()))
            yield warn("sentinel.agree", master, f"Sentinels disagree: {seen}",
                       "Run doctor again in a few seconds; if it persists, the lagging "
                       "Sentinels cannot reach the others (check bind, protected-mode, "
                       "announce-ip).")


def sentinel_peers(facts: Facts) -> Iterator[Finding]:
    """Sentinels that do not see each other cannot elect a leader: the article's
    failover-abort-not-elected (protected-mode, bind, announce-ip)."""
    n = facts.configured_sentinels
    for s in _reachable(facts):
        for master in _masters(facts):
            m = s.masters.get(master)
            if not m or m.other_sentinels is None:
                continue
            known = m.other_sentinels + 1
            subject = f"sentinel {s.endpoint} ({master})"
            if known < majority(n):
                yield problem("sentinel.peers", subject,
                              f"knows {known} of {n} Sentinels (itself included)",
                              "Let the Sentinels reach each other on their port: bind them to "
                              "a routable address, protected-mode no, correct announce-ip.")
            elif known < n:
                yield warn("sentinel.peers", subject,
                           f"knows {known} of {n} Sentinels (itself included)",
                           "Check that every Sentinel can reach the others (bind, "
                           "protected-mode, announce-ip, firewall).")
            else:
                yield ok("sentinel.peers", subject, f"knows all {n} Sentinels")


def sentinel_ckquorum(facts: Facts) -> Iterator[Finding]:
    for s in _reachable(facts):
        for master in _masters(facts):
            m = s.masters.get(master)
            if not m or m.ckquorum_ok is None:
                continue
            subject = f"sentinel {s.endpoint} ({master})"
            if m.ckquorum_ok:
                yield ok("sentinel.ckquorum", subject, m.ckquorum or "CKQUORUM OK")
            else:
                yield problem("sentinel.ckquorum", subject, f"CKQUORUM: {m.ckquorum}",
                              "Bring enough Sentinels up and in contact for the quorum and "
                              "a majority, or no failover can be authorised.")


def sentinel_quorum(facts: Facts) -> Iterator[Finding]:
    n = facts.configured_sentinels
    for master in _masters(facts):
        quorums = {quorum for s in _reachable(facts)
                   if master in s.masters and (quorum := s.masters[master].quorum) is not None}
        for q in sorted(quorums):
            if q > majority(n):
                yield problem("sentinel.quorum", master,
                              f"quorum {q} is above the majority ({majority(n)} of {n})",
                              f"Set 'sentinel monitor {master} <ip> <port> {majority(n)}': a "
                              "larger quorum stops failovers while a majority is still up.")
            else:
                yield ok("sentinel.quorum", master,
                         f"quorum {q}, majority {majority(n)} of {n}")


def sentinel_tilt(facts: Facts) -> Iterator[Finding]:
    for s in _reachable(facts):
        if s.tilt:
            yield problem("sentinel.tilt", f"sentinel {s.endpoint}", "in TILT mode",
                          "Find what stalls this host (clock jumps, CPU starvation, a "
                          "paused VM): a Sentinel in TILT does not act for 30 s.")


def sentinel_scripts(facts: Facts) -> Iterator[Finding]:
    for s in _reachable(facts):
        for master in _masters(facts):
            m = s.masters.get(master)
            if not m or m.error:
                continue
            subject = f"sentinel {s.endpoint} ({master})"
            script = m.reconfig_script
            if not script:
                yield warn("sentinel.script", subject, "no client-reconfig-script",
                           f"Add 'sentinel client-reconfig-script {master} "
                           "/usr/bin/vipfloat-hook'; until then the agent alone moves the "
                           "VIP (slower: it waits for its own poll or event).")
            elif os.path.basename(script).startswith("vipfloat-hook"):
                yield ok("sentinel.script", subject, f"client-reconfig-script {script}")
            else:
                yield warn("sentinel.script", subject,
                           f"client-reconfig-script is {script}, not vipfloat-hook",
                           "Replace it with /usr/bin/vipfloat-hook, or two tools will move "
                           "the VIP.")


def sentinel_pending(facts: Facts) -> Iterator[Finding]:
    for s in _reachable(facts):
        retried = [p for p in s.pending if p.retries > 0]
        subject = f"sentinel {s.endpoint}"
        if len(s.pending) >= PENDING_WARN or retried:
            yield warn("sentinel.pending", subject,
                       f"{len(s.pending)} script(s) pending, {len(retried)} being retried",
                       "Check the hook's log: a failing or slow client-reconfig-script "
                       "is retried and queues up behind Sentinel's 16 running slots.")


def sentinel_version(facts: Facts) -> Iterator[Finding]:
    for s in _reachable(facts):
        if s.server == "Redis" and s.version and s.version.startswith("5.0."):
            yield warn("sentinel.version", f"sentinel {s.endpoint}",
                       f"Redis {s.version}: Sentinel leaks a running-script slot on "
                       "every script that times out",
                       "Upgrade Sentinel to 6.0 or later, or it eventually runs no "
                       "client-reconfig-script at all.")


# --- 3. Redis instances ---------------------------------------------------------------

def _vip_ip(facts: Facts, master: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    for v in facts.vips:
        if v.master == master:
            return ipaddress.ip_interface(v.address).ip
    return None


def listens_on(bind: tuple[str, ...], ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Pure: does Redis with this ``bind`` accept connections to ``ip``? An empty
    bind means every address (Redis before 7 with no bind line)."""
    if not bind:
        return True
    for entry in bind:
        addr = entry.lstrip("-")             # "-" marks an optional address
        if addr == "*":
            if ip.version == 4:
                return True
        elif addr == "::*":
            if ip.version == 6:
                return True
        else:
            try:
                parsed = ipaddress.ip_address(addr)
            except ValueError:
                continue
            if parsed == ip or parsed.is_unspecified and parsed.version == ip.version:
                return True
    return False


def redis_reachable(facts: Facts) -> Iterator[Finding]:
    for master, instances in facts.redis.items():
        for r in instances:
            subject = f"redis {r.addr} ({master} {r.role})"
            if r.reachable:
                yield ok("redis.reachable", subject, f"reachable ({r.server} {r.version or '?'})")
            else:
                yield problem("redis.reachable", subject, f"cannot check: {r.error}",
                              "Start it, or give vipfloat its credentials in [redis].")


def redis_masterauth(facts: Facts) -> Iterator[Finding]:
    for master, instances in facts.redis.items():
        for r in instances:
            if not r.reachable or r.requirepass is None:
                continue
            subject = f"redis {r.addr} ({master} {r.role})"
            if r.requirepass and not r.masterauth:
                yield problem("redis.masterauth", subject,
                              "requirepass is set but masterauth is not",
                              "Set masterauth to the same password on every instance: after a "
                              "failover any of them may be a replica that must log in.")
            elif r.requirepass:
                yield ok("redis.masterauth", subject, "requirepass and masterauth set")


def redis_bind(facts: Facts) -> Iterator[Finding]:
    for master, instances in facts.redis.items():
        ip = _vip_ip(facts, master)
        for r in instances:
            if not r.reachable or r.bind is None or ip is None:
                continue
            subject = f"redis {r.addr} ({master} {r.role})"
            if listens_on(r.bind, ip):
                bind = " ".join(r.bind) or "(all)"
                yield ok("redis.bind", subject, f"listens on the VIP {ip} (bind {bind})")
            else:
                yield problem("redis.bind", subject,
                              f"bind {' '.join(r.bind)} does not include the VIP {ip}",
                              "Set 'bind * -::*' (or add the VIP): the VIP comes and goes, and "
                              "a Redis bound to one address refuses clients through it.")


def redis_protected_mode(facts: Facts) -> Iterator[Finding]:
    """Protected mode refuses non-loopback clients when the default user has no
    password: from Redis 7 whatever bind says; before 7 only without a bind line."""
    for master, instances in facts.redis.items():
        for r in instances:
            if not r.reachable or r.protected_mode is None or r.requirepass is None:
                continue
            subject = f"redis {r.addr} ({master} {r.role})"
            major = int(r.version.split(".")[0]) if r.version and r.version[0].isdigit() else 7
            refuses = r.protected_mode and not r.requirepass and (major >= 7 or not r.bind)
            if refuses:
                yield problem("redis.protected_mode", subject,
                              "protected-mode yes with no password: clients through the VIP "
                              "are refused",
                              "Set requirepass (and masterauth), or protected-mode no behind "
                              "a firewall.")
            else:
                yield ok("redis.protected_mode", subject, "protected-mode will not refuse "
                         "clients through the VIP")


def _version(text: str | None) -> tuple[int, int] | None:
    parts = (text or "").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def redis_write_hold(facts: Facts) -> Iterator[Finding]:
    """The agents hold a master's writes during a planned failover with CLIENT
    PAUSE WRITE, which Redis has only from 6.2 on."""
    if facts.write_hold <= 0:
        return
    for master, instances in facts.redis.items():
        for r in instances:
            version = _version(r.version)
            if not r.reachable or version is None:
                continue
            subject = f"redis {r.addr} ({master} {r.role})"
            if version < (6, 2):
                yield warn("redis.write_hold", subject,
                           f"{r.server} {r.version} has no CLIENT PAUSE WRITE: a planned failover "
                           "will lose the writes it acknowledges while the VIP moves",
                           "Upgrade to Redis 6.2 or later, or set failover_write_hold = 0 to "
                           "silence this.")
            else:
                yield ok("redis.write_hold", subject,
                         f"CLIENT PAUSE WRITE available ({r.server} {r.version}): writes are held "
                         "during a planned failover")


def crash_failover(facts: Facts) -> Iterator[Finding]:
    """The crash_failover option, and the danger it closes: a master without
    persistence that restarts empty before Sentinel notices makes its replicas
    copy the empty dataset."""
    for v in facts.vips:
        masters = [r for r in facts.redis.get(v.master, ()) if r.role == "master"]
        volatile = [r for r in masters if r.reachable and r.persistent is False]
        subject = f"vip {v.address} ({v.master})"
        if v.crash_failover:
            yield ok("vip.crash_failover", subject,
                     "crash_failover on: the agent on the master's host asks Sentinel to fail "
                     "over 50 ms after its Redis stops accepting connections (a restart of "
                     "that Redis longer than that becomes a failover)")
        elif volatile:
            yield warn("vip.crash_failover", subject,
                       f"master {volatile[0].addr} has no persistence (save \"\", appendonly "
                       "no): if it crashes and restarts empty before Sentinel notices, its "
                       "replicas copy the empty dataset",
                       "Set crash_failover = true in this [[vip]] block (the agent fails over "
                       "50 ms after the crash, before most restarts complete), or turn "
                       "persistence on.")
        else:
            yield ok("vip.crash_failover", subject,
                     "crash_failover off: a crashed master waits for Sentinel's "
                     "down-after-milliseconds")


def redis_replication(facts: Facts) -> Iterator[Finding]:
    for master, instances in facts.redis.items():
        for r in instances:
            if r.role != "replica" or not r.reachable:
                continue
            subject = f"redis {r.addr} ({master} replica)"
            if r.link_up is False:
                yield problem("redis.link", subject, "master_link_status is down",
                              "Check masterauth, the network to the master and the replica's "
                              "log: a replica that cannot sync makes a bad failover target.")
                continue
            if r.link_up:
                yield ok("redis.link", subject, "replication link up")
            if r.lag_bytes is not None and r.lag_bytes > LAG_WARN_BYTES:
                yield warn("redis.lag", subject,
                           f"{r.lag_bytes} bytes behind the master",
                           "Find why it lags (network, disk, a slow replica): writes it "
                           "has not received are lost if it is promoted.")


# --- 4. This host ---------------------------------------------------------------------

def host_interface(facts: Facts) -> Iterator[Finding]:
    for v in facts.vips:
        subject = f"interface {v.interface} ({v.master})"
        if not v.interface_exists:
            yield problem("host.interface", subject, "does not exist on this host",
                          "Fix 'interface' in the [[vip]] block, or create the interface.")
        elif not v.interface_up:
            yield problem("host.interface", subject, "is down",
                          f"Bring it up: ip link set {v.interface} up.")
        else:
            yield ok("host.interface", subject, "exists and is up")


def host_vip(facts: Facts) -> Iterator[Finding]:
    for v in facts.vips:
        subject = f"vip {v.address} ({v.master})"
        if v.consistent:
            yield ok("host.vip", subject, v.note)
        else:
            yield problem("host.vip", subject, v.note,
                          f"Run 'vipfloat acquire --master {v.master}' or 'release' here, or "
                          "start the agent (vipfloat watch) so it reconciles.")


def vip_wire(facts: Facts) -> Iterator[Finding]:
    """What the segment says: the MACs that answered a probe for the VIP."""
    for v in facts.vips:
        subject = f"vip {v.address} ({v.master}) on {v.interface}"
        others = v.answered_by
        if others is None:
            yield ok("vip.wire", subject, f"not probed: {v.probe_error}")
        elif len(others) > 1 or (v.bound_here and others):
            holders = (["this host"] if v.bound_here else []) + list(others)
            yield problem("vip.wire", subject,
                          f"answered by {len(holders)} hosts ({', '.join(holders)}): more than "
                          "one holds it, and clients reach whichever their cache names",
                          "Release it on every host but the master's (vipfloat release "
                          f"--master {v.master}, or ip addr del {v.address} dev "
                          f"{v.interface}); a static address elsewhere must go.")
        elif others:
            yield ok("vip.wire", subject, f"answered by {others[0]} only")
        elif v.bound_here:
            yield ok("vip.wire", subject, "bound here; no other host answers for it")
        else:
            yield warn("vip.wire", subject, "no host answers for it: clients cannot reach "
                       "the master through it",
                       "Check the master's host: is its agent running (vipfloat status "
                       "there)? Until then, vipfloat acquire there binds it.")


def has_caps(mask: int) -> bool:
    return mask & NEEDED_CAPS == NEEDED_CAPS


def hook_caps(proc: ProcessFacts) -> int:
    """Pure: which capabilities a program this process execs gets. Root's children
    get the bounding set; anyone else's only the ambient set (what a drop-in
    grants)."""
    return proc.cap_bnd if proc.uid == 0 else proc.cap_amb


def held_caps(proc: ProcessFacts) -> int:
    """Pure: CAP_NET_ADMIN and CAP_NET_RAW as far as Sentinel holds them: in its
    own effective set (what a compromised Sentinel could use) or handed to its
    hook. Either way they are Sentinel's to use, so the mode counts both."""
    return (proc.cap_eff | hook_caps(proc)) & NEEDED_CAPS


LEAST, DIRECT, HALF = "least-privilege", "direct", "half"


def privilege_mode(proc: ProcessFacts) -> str:
    """Pure: least-privilege (the default: Sentinel and its hook hold neither
    capability, the hook only hands over to the agent), direct (opt-in: both, so
    the hook can move the VIP alone) or half (one of them: a broken drop-in)."""
    held = held_caps(proc)
    return LEAST if held == 0 else DIRECT if held == NEEDED_CAPS else HALF


def _mode(facts: Facts) -> str | None:
    return None if facts.sentinel_process is None else privilege_mode(facts.sentinel_process)


def default_dropin(unit: str) -> str:
    """Where the vipfloat package installs the least-privilege drop-in for the
    Sentinel's unit (source: systemd/redis-sentinel.service.d/vipfloat.conf); an
    instance (redis-sentinel@main) takes its template's."""
    name = unit.split("@", 1)[0] + "@" if "@" in unit else unit
    return f"/lib/systemd/system/{name}.service.d/vipfloat.conf"


def host_mode(facts: Facts) -> Iterator[Finding]:
    s = facts.sentinel_process
    if s is None:
        yield warn("host.mode", "this host", "no Sentinel found on this host",
                   "Run doctor on a Sentinel host to check which privilege mode it is in.")
        return
    subject = f"{s.name} (pid {s.pid}, uid {s.uid})"
    dropin = default_dropin(s.name)
    mode = privilege_mode(s)
    if mode == LEAST:
        yield ok("host.mode", subject, "least-privilege mode: Sentinel and its hook hold no "
                 "capabilities; only the agent moves the VIP")
        if facts.agent_process is None:
            yield problem("host.mode", "vipfloat watch",
                          "no agent answers: in least-privilege mode nothing moves the VIP",
                          "systemctl enable --now vipfloat")
    elif mode == DIRECT:
        yield warn("host.mode", subject,
                   "direct mode (opt-in): Sentinel holds CAP_NET_ADMIN and CAP_NET_RAW, so a "
                   "compromised Sentinel can change this host's addresses",
                   f"Unless the hook must move the VIP with no agent running, remove "
                   f"/etc/systemd/system/{s.name}.service.d/vipfloat.conf so that the default "
                   f"drop-in {dropin} (no capabilities) applies, and restart {s.name}.")
    else:
        has, lacks = (("CAP_NET_ADMIN", "CAP_NET_RAW")
                      if held_caps(s) & (1 << CAP_NET_ADMIN) else ("CAP_NET_RAW", "CAP_NET_ADMIN"))
        yield problem("host.mode", subject,
                      f"half-configured: Sentinel holds {has} but not {lacks}, neither "
                      "least-privilege (none) nor direct mode (both)",
                      f"Install the default drop-in {dropin} (no capabilities), or "
                      f"the direct-mode one (both), and restart {s.name}.")


def host_agent_caps(facts: Facts) -> Iterator[Finding]:
    # With no agent in least-privilege mode, host.mode has already reported that
    # nothing moves the VIP (a problem); here only the capabilities are judged.
    least = _mode(facts) == LEAST
    a, unit = facts.agent_process, facts.agent_unit
    if a is None and unit is not None:
        granted = {"cap_net_admin", "cap_net_raw"} <= unit.ambient
        if (unit.user == "root" or granted) and least:
            yield ok("host.caps.agent", f"unit {unit.path}",
                     f"would run the agent as {unit.user} with CAP_NET_ADMIN and CAP_NET_RAW")
        elif unit.user == "root" or granted:
            yield warn("host.caps.agent", f"unit {unit.path}",
                       f"no agent answers on the socket; the unit would run it as "
                       f"{unit.user} with CAP_NET_ADMIN and CAP_NET_RAW",
                       "systemctl enable --now vipfloat.")
        else:
            yield problem("host.caps.agent", f"unit {unit.path}",
                          f"runs the agent as {unit.user} without CAP_NET_ADMIN and "
                          "CAP_NET_RAW: it could not move the VIP",
                          "Add 'AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW' (as in "
                          "systemd/vipfloat.service).")
    elif a is None:
        if not least:
            yield warn("host.caps.agent", "vipfloat watch", "no agent answers on the socket",
                       "systemctl enable --now vipfloat: without the agent nothing fixes a "
                       "missed or failed hook run, and an isolated master keeps its VIP.")
    elif has_caps(a.cap_eff):
        yield ok("host.caps.agent", f"vipfloat watch (pid {a.pid}, uid {a.uid})",
                 "has CAP_NET_ADMIN and CAP_NET_RAW")
    else:
        yield problem("host.caps.agent", f"vipfloat watch (pid {a.pid}, uid {a.uid})",
                      "lacks CAP_NET_ADMIN/CAP_NET_RAW: it cannot move the VIP",
                      "Run it from systemd/vipfloat.service (AmbientCapabilities).")


def may(path: PathFacts, uid: int, gids: Iterable[int], bit: int) -> bool:
    """Pure: may a user (uid, gids) do ``bit`` (4 r, 2 w, 1 x) to ``path``, and
    search every directory above it? Root may do anything but execute a file with
    no x bit at all."""
    gids = set(gids)

    def allowed(owner: int, group: int, mode: int, want: int) -> bool:
        if uid == 0:
            return want != 1 or bool(mode & 0o111) or stat.S_ISDIR(mode)
        if uid == owner:
            return bool(mode & (want << 6))
        if group in gids:
            return bool(mode & (want << 3))
        return bool(mode & want)

    if not path.exists:
        return False
    return (all(allowed(o, g, m, 1) for o, g, m in path.parents)
            and allowed(path.uid, path.gid, path.mode, bit))


def host_socket(facts: Facts) -> Iterator[Finding]:
    s, sock = facts.sentinel_process, facts.socket
    if s is None or sock is None or facts.agent_process is None:
        return
    subject = f"socket {sock.path}"
    if may(sock, s.uid, s.gids, 2):
        yield ok("host.socket", subject, f"Sentinel's user (uid {s.uid}) can reach the agent")
    else:
        # Without the socket a least-privilege hook has no one to hand over to: it
        # fails every run and only the agent's own view of Sentinel moves the VIP.
        effect = ("its hook cannot hand over and exits 1 every time (Sentinel retries it)"
                  if privilege_mode(s) == LEAST else "the hook acts itself (about 5x slower)")
        yield warn("host.socket", subject,
                   f"Sentinel's user (uid {s.uid}) cannot connect: {effect}",
                   "Set socket_group in [agent] to a group Sentinel's user is in "
                   "(the drop-in adds it to vipfloat).")


def host_hook_path(facts: Facts) -> Iterator[Finding]:
    s = facts.sentinel_process
    for script, path in sorted(facts.hook_paths.items()):
        subject = f"hook {script}"
        if not path.exists:
            yield problem("host.hook_path", subject, "does not exist on this host",
                          "Install the vipfloat package (apt install ./vipfloat_*.deb), which "
                          "puts the hook there: every Sentinel run fails with -script-error.")
        elif s is not None and not may(path, s.uid, s.gids, 1):
            yield problem("host.hook_path", subject,
                          f"not executable by Sentinel's user (uid {s.uid})",
                          "chmod 0755 it and make its directories searchable.")
        elif s is not None and script in facts.hook_noexec:
            yield problem("host.hook_path", subject,
                          f"{s.name} (pid {s.pid}) cannot execute it: in its mount namespace "
                          f"it lies on {facts.hook_noexec[script]}, mounted noexec, so every "
                          f"run fails with -script-error (exit 2, never retried)",
                          f"systemctl restart {s.name}. If it persists, its unit lacks "
                          f"'ExecPaths=/usr/lib/vipfloat' (the drop-in {default_dropin(s.name)}). "
                          "An upgrade from a package that allowed the file itself drops that "
                          "allowance from a running Sentinel.")
        else:
            yield ok("host.hook_path", subject, "exists and is executable")


def host_scripts(facts: Facts) -> Iterator[Finding]:
    """The action scripts the agent would refuse to run (userscripts.audit): the
    same verdicts, found before the failover that needed them."""
    for directory, refused in sorted(facts.action_scripts.items()):
        if not refused:
            yield ok("host.scripts", f"action scripts {directory}",
                     "no unsafe script or directory")
        for r in refused:
            whole = str(r.path) == directory
            yield problem("host.scripts",
                          f"action scripts {directory}" if whole else f"action script {r.path}",
                          f"not run: {r.reason}", r.fix)


CHECKS: tuple[Callable[[Facts], Iterator[Finding]], ...] = (
    sentinel_count, sentinel_reachable, sentinel_agreement, sentinel_peers, sentinel_ckquorum,
    sentinel_quorum, sentinel_tilt, sentinel_scripts, sentinel_pending, sentinel_version,
    redis_reachable, redis_masterauth, redis_bind, redis_protected_mode, redis_replication,
    redis_write_hold, crash_failover,
    host_interface, host_vip, vip_wire, host_mode, host_agent_caps, host_socket,
    host_hook_path, host_scripts,
)


def run_checks(facts: Facts) -> list[Finding]:
    return [finding for check in CHECKS for finding in check(facts)]
