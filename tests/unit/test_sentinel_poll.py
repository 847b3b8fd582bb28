"""The agent's Sentinel poll on a loopback server replaying Sentinel's replies:
one round trip per Sentinel per poll, whatever the number of masters, and each
master's answer or error kept apart."""
from __future__ import annotations

from vipfloat.config import Endpoint, SentinelConfig
from vipfloat.sentinel import SentinelClient

from .resp_replay import Replay, resp_map


def master_reply(name: str, port: int) -> bytes:
    return resp_map([("name", name), ("ip", "198.51.100.11"), ("port", str(port)),
                     ("flags", "master"), ("config-epoch", "3"), ("num-slaves", "2"),
                     ("num-other-sentinels", "2"), ("quorum", "2"),
                     ("down-after-milliseconds", "1000"), ("failover-timeout", "5000")])


def test_a_poll_of_many_masters_is_one_write_and_keeps_each_answer():
    names = [f"mymaster{i}" for i in range(64)]
    replies = {("SENTINEL", "MASTER", n): master_reply(n, 6379 + i)
               for i, n in enumerate(names) if n != "mymaster7"}
    replies[("HELLO", "3")] = resp_map([("server", "redis"), ("version", "7.0.15"),
                                        ("proto", 3), ("mode", "sentinel")])
    server = Replay(replies)
    with server as port:
        ep = Endpoint("127.0.0.1", port)
        client = SentinelClient(ep, SentinelConfig(addresses=(ep,), timeout=2.0))
        try:
            answers = client.ask(names)
            again = client.ask(names[:2])
        finally:
            client.close()
    polled = [n for n in server.chunks if n > 2]          # not the connection's HELLO/CLIENT
    assert polled[0] == 64                                # the 64 questions in one write
    assert answers["mymaster0"].master is not None
    assert answers["mymaster0"].master.port == 6379
    assert answers["mymaster63"].master is not None and answers["mymaster63"].master.port == 6442
    # Sentinel's error for one name ("unknown command" here) stays that name's.
    assert answers["mymaster7"].master is None and answers["mymaster7"].reachable
    assert "unknown command" in (answers["mymaster7"].error or "")
    assert answers["mymaster8"].master is not None        # and the replies after it line up
    assert answers["mymaster8"].master.port == 6387
    assert set(again) == {"mymaster0", "mymaster1"} and again["mymaster1"].master is not None


def test_an_empty_poll_asks_nothing():
    client = SentinelClient(Endpoint("127.0.0.1", 9), SentinelConfig(
        addresses=(Endpoint("127.0.0.1", 9),), timeout=0.2))
    assert client.ask([]) == {}
