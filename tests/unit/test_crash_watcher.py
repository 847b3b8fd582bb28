"""The crash watcher's I/O on loopback (no root): a listener that plays the
local Redis, dies and comes back; the agent and the Sentinel are fakes."""
from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from vipfloat.config import Endpoint, hostport
from vipfloat.crash import CrashView
from vipfloat.crashwatch import CrashWatcher, probe
from vipfloat.crash import Probe
from vipfloat.decide import Quorum
from vipfloat.metrics import Metrics
from vipfloat.redisconn import Conn
from vipfloat.sentinel import MasterInfo, Replica

from .resp_replay import Scripted, bulk


class FakeRedis:
    """Accepts connections and keeps them until ``die()`` closes everything."""

    def __init__(self, port: int = 0) -> None:
        # SO_REUSEPORT: a successor can listen before this one dies.
        self.listener = socket.create_server(("127.0.0.1", port), reuse_port=True)
        self.port = self.listener.getsockname()[1]
        self.clients: list[socket.socket] = []
        self.slam = False                     # close every new connection at once
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.slam:
                conn.close()
            else:
                self.clients.append(conn)

    def die(self) -> None:
        # shutdown wakes the accepting thread; close alone would leave the
        # listener alive under it.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._thread.join(timeout=2)
        for c in self.clients:
            c.close()


class Client:
    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.sent: list[tuple[str, ...]] = []
        self.closed = False

    def command(self, *args: str) -> object:
        self.sent.append(args)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def close(self) -> None:
        self.closed = True


class Agent:
    def __init__(self, cfg, port: int, client: Client) -> None:
        self.config = cfg
        self.port = port
        self.client = client
        self.metrics = Metrics(None)
        self.views = 0

        self.local_redis = self

    def process_id(self, host, port):
        return None

    def local_master(self, vip):
        return ("127.0.0.1", self.port)

    def believes(self, master, host, port):
        return (host, port) == ("127.0.0.1", self.port)

    def crash_view(self, vip, addr):
        self.views += 1
        return CrashView(addr=addr, believed_here=True, epoch=3, quorum=Quorum(3, 3))


def test_probe_tells_refused_from_up():
    redis = FakeRedis()
    assert probe("127.0.0.1", redis.port) is Probe.UP
    redis.die()
    assert probe("127.0.0.1", redis.port) is Probe.REFUSED


@pytest.fixture
def watched(cfg, monkeypatch):
    redis = FakeRedis()
    client = Client("OK")
    agent = Agent(cfg, redis.port, client)
    replica = Replica("198.51.100.12", 6379, ("slave",), True, 100, "", info_age_ms=500)

    def ask_sentinel(agent_, master, beat):
        beat()
        return client, (replica,), MasterInfo(master, "127.0.0.1", redis.port, 3, ("master",))

    monkeypatch.setattr("vipfloat.crashwatch.ask_sentinel", ask_sentinel)
    watcher = CrashWatcher(agent, cfg.vips[0])   # type: ignore[arg-type]
    watcher.start()
    deadline = time.monotonic() + 5
    while not redis.clients and time.monotonic() < deadline:
        time.sleep(0.01)
    assert redis.clients, "the watcher never connected"
    yield redis, agent, client, watcher
    watcher.stop()
    redis.die()


def test_a_crash_asks_sentinel_once(watched, caplog):
    redis, agent, client, watcher = watched
    redis.die()
    deadline = time.monotonic() + 5
    while not client.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)           # a second request would come by now
    assert client.sent == [("SENTINEL", "FAILOVER", "mymaster")] and client.closed
    assert watcher.watch.asked_epoch == 3
    assert f"{hostport('127.0.0.1', redis.port)} refused" in caplog.text
    assert "SENTINEL FAILOVER mymaster: OK" in caplog.text


def test_a_drop_while_redis_still_listens_asks_nothing(watched, caplog):
    """What Sentinel's own reconfiguration looks like (CLIENT KILL TYPE pubsub),
    or a restart that was quicker than the first probe."""
    redis, agent, client, watcher = watched
    successor = FakeRedis(redis.port)        # listening before the old one goes
    try:
        redis.die()
        deadline = time.monotonic() + 5
        while not successor.clients and time.monotonic() < deadline:
            time.sleep(0.01)
        assert successor.clients, "the watcher did not come back"
        assert client.sent == [] and agent.views == 0
    finally:
        successor.die()


def test_a_crash_between_two_connections_is_still_seen(watched, caplog):
    """Redis dies while the watcher waits between two connections (this one
    closes every connection at once): a refused reconnect to the Redis it held
    is a drop too."""
    import logging

    caplog.set_level(logging.INFO)
    redis, agent, client, watcher = watched
    redis.slam = True
    for c in redis.clients:
        c.close()
    deadline = time.monotonic() + 5
    while "closes the crash watcher's connection at once" not in caplog.text \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "closes the crash watcher's connection at once" in caplog.text
    redis.die()                                    # while the watcher waits MIN_HELD
    deadline = time.monotonic() + 5
    while not client.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.sent == [("SENTINEL", "FAILOVER", "mymaster")]


def test_a_redis_never_seen_up_is_no_crash(cfg, monkeypatch):
    """At a boot: nothing listens yet, and nothing was ever held."""
    dead = FakeRedis()
    dead.die()
    client = Client("OK")
    agent = Agent(cfg, dead.port, client)
    watcher = CrashWatcher(agent, cfg.vips[0])   # type: ignore[arg-type]
    watcher.start()
    try:
        time.sleep(1.0)
        assert agent.views == 0 and client.sent == []
    finally:
        watcher.stop()


# --- asking the Sentinels, on loopback servers that answer as Sentinel does ---------------


def sentinel_answers(failover: bytes):
    def answer(cmd: tuple[str, ...]) -> bytes | None:
        if cmd[:2] == ("SENTINEL", "REPLICAS"):
            return resp_array([resp_array([bulk(x) for x in (
                "name", "198.51.100.12:6379", "ip", "198.51.100.12", "port", "6379",
                "flags", "slave", "master-link-status", "ok", "slave-priority", "100",
                "info-refresh", "412")])])
        if cmd[:2] == ("SENTINEL", "MASTER"):
            return resp_array([bulk(x) for x in (
                "name", cmd[2], "ip", "127.0.0.1", "port", "6379", "flags", "master",
                "config-epoch", "3")])
        if cmd[:2] == ("SENTINEL", "FAILOVER"):
            return failover
        return b"-ERR unknown command\r\n"
    return answer


def resp_array(items: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


def test_the_first_sentinel_that_answers_is_asked_and_its_connection_kept(caplog, monkeypatch):
    from types import SimpleNamespace

    from vipfloat.config import SentinelConfig
    from vipfloat.crashwatch import _failover, ask_sentinel

    dead, good, busy = Scripted(lambda cmd: None), Scripted(sentinel_answers(b"+OK\r\n")), \
        Scripted(sentinel_answers(b"-INPROG Failover already in progress\r\n"))
    gone = Scripted(lambda cmd: None)
    gone.close()
    eps = tuple(Endpoint("127.0.0.1", s.port) for s in (gone, dead, good, busy))
    agent = SimpleNamespace(config=SimpleNamespace(sentinel=SentinelConfig(eps, timeout=1.0)))
    # The silent one takes its timeout; the good one must not find the overall
    # limit spent because the test process stalled meanwhile.
    monkeypatch.setattr("vipfloat.crashwatch.ASK_LIMIT", 30.0)
    caplog.set_level(logging.INFO)
    try:
        client, replicas, master = ask_sentinel(agent, "mymaster")  # type: ignore[arg-type]
        assert client is not None and replicas is not None and master is not None
        assert [(r.host, r.port, r.link_ok, r.info_age_ms) for r in replicas] == [
            ("198.51.100.12", 6379, True, 412)]
        assert (master.name, master.host, master.port, master.config_epoch) == (
            "mymaster", "127.0.0.1", 6379, 3)
        assert _failover(client, "mymaster") == ("ok", "OK")
        client.close()
        refused = Conn("127.0.0.1", busy.port, None, None, 2.0)
        assert _failover(refused, "mymaster") == (
            "refused", "INPROG Failover already in progress")
        refused.close()
    finally:
        for server in (dead, good, busy):
            server.close()
    # The refused one and the silent one were passed over, each logged.
    assert f"Sentinel 127.0.0.1:{gone.port}: connect to 127.0.0.1:{gone.port}: Connection " \
        "refused" in caplog.text
    assert f"Sentinel 127.0.0.1:{dead.port}: no answer within 1 s" in caplog.text
    assert good.commands == [[("SENTINEL", "REPLICAS", "mymaster"),
                              ("SENTINEL", "MASTER", "mymaster"),
                              ("SENTINEL", "FAILOVER", "mymaster")]]
