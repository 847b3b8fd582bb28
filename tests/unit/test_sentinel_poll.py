"""The agent's Sentinel poll on a loopback server replaying Sentinel's replies:
one round trip per Sentinel per poll, whatever the number of masters, and each
master's answer or error kept apart."""
from __future__ import annotations

import threading
import time

import pytest

from vipfloat.config import Endpoint, Secret, SentinelConfig
from vipfloat.sentinel import MAX_REPLY_BYTES, Poller, SentinelClient

from . import resp_replay
from .resp_replay import Blackhole, Names, Replay, resp_map


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


# --- one thread, one budget: Sentinels that fail ----------------------------------------


class Scripted(resp_replay.Scripted):
    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)


def sentinel(cmd: tuple[str, ...]) -> bytes | None:
    if cmd[0] == "AUTH":
        return b"+OK\r\n" if cmd[-1] == "s3cret" else b"-WRONGPASS invalid password\r\n"
    if cmd[:2] == ("SENTINEL", "MASTER"):
        name = cmd[2].encode()
        return (b"*6\r\n$4\r\nname\r\n$%d\r\n%s\r\n$2\r\nip\r\n$13\r\n198.51.100.11\r\n"
                b"$4\r\nport\r\n$4\r\n6379\r\n" % (len(name), name))
    return b"-ERR unknown command\r\n"


# Where a deadline's expiry is not the point, a timeout no stall of the test
# process (a VM's stolen time) comes near.
GENEROUS = 5.0


def poll_of(servers: list[Scripted], masters: list[str], timeout: float = GENEROUS,
            password: str | None = None) -> dict:
    cfg = SentinelConfig(tuple(s.endpoint for s in servers), timeout=timeout,
                         password=Secret(password) if password else None)
    poller = Poller(cfg)
    try:
        return poller.poll(masters)
    finally:
        poller.close()
        for s in servers:
            s.close()


def test_a_silent_or_trickling_sentinel_is_unreachable_once_the_budget_is_spent():
    """One overall budget (twice the timeout), not one per read: a Sentinel
    sending a byte every 50 ms would have kept a per-read timeout waiting for
    ever. The others' answers are kept."""
    good = Scripted(sentinel)
    silent = Scripted(lambda cmd: None)
    trickling = Scripted(sentinel, trickle=1)
    answers = poll_of([good, silent, trickling], ["m1", "m2"], timeout=1.0)
    for name in ("m1", "m2"):
        a, s, t = answers[name]
        assert a.master is not None and a.master.name == name and a.reachable
        assert s.error == t.error == "unreachable: no answer within 2.0 s"
        assert not s.reachable and not t.reachable
    assert trickling.asked[:2] == [("SENTINEL", "MASTER", "m1"), ("SENTINEL", "MASTER", "m2")]


def test_a_refused_connection_is_unreachable_and_the_others_answer():
    good, gone = Scripted(sentinel), Scripted(sentinel)
    gone.close()
    answers = poll_of([good, gone], ["m1"])
    assert answers["m1"][0].master is not None
    assert answers["m1"][1].error == "unreachable: connect: Connection refused"
    assert not answers["m1"][1].reachable


def test_a_password_is_sent_once_per_connection_and_a_refusal_is_an_answer():
    good, wrong = Scripted(sentinel), Scripted(lambda cmd: b"-WRONGPASS nope\r\n"
                                               if cmd[0] == "AUTH" else sentinel(cmd))
    cfg = SentinelConfig((good.endpoint, wrong.endpoint), timeout=GENEROUS,
                         password=Secret("s3cret"))
    poller = Poller(cfg)
    try:
        first = poller.poll(["m1"])
        second = poller.poll(["m1"])
    finally:
        poller.close()
        good.close()
        wrong.close()
    assert good.asked == [("AUTH", "s3cret"), ("SENTINEL", "MASTER", "m1"),
                          ("SENTINEL", "MASTER", "m1")] and good.accepted == 1
    for answers in (first, second):
        assert answers["m1"][0].master is not None
        # It answered (reachable), but no: and the connection is opened again.
        assert answers["m1"][1].error == "auth failed: WRONGPASS nope"
        assert answers["m1"][1].reachable
    assert wrong.accepted == 2


@pytest.mark.parametrize("answer, why", [
    (lambda cmd: sentinel(cmd) * 2, "more replies than questions"),
    (lambda cmd: b"$%d\r\n" % (3 * MAX_REPLY_BYTES) + b"x" * (3 * MAX_REPLY_BYTES) + b"\r\n",
     "bytes a reply: not a Sentinel's answer"),
    (lambda cmd: b"%% nonsense\r\n", "not RESP"),
])
def test_a_sentinel_answering_what_it_was_not_asked_is_unreachable(answer, why):
    bad = Scripted(answer)
    got = poll_of([bad], ["m1"], timeout=1.0)["m1"][0]
    assert not got.reachable and why in (got.error or "")


def test_a_reply_that_is_not_a_masters_fields_is_that_masters_error():
    odd = Scripted(lambda cmd: b":7\r\n" if cmd[2] == "m1" else sentinel(cmd))
    answers = poll_of([odd], ["m1", "m2"])
    assert answers["m1"][0].error == "not a SENTINEL MASTER reply" and answers["m1"][0].reachable
    assert answers["m2"][0].master is not None


def test_anything_waiting_on_a_kept_connection_is_never_read_as_the_next_answer():
    """A reply nobody asked for, arriving between two polls, would be taken for
    the next poll's first answer (under the wrong master): the connection is
    made again instead."""
    server = Scripted(sentinel)
    cfg = SentinelConfig((server.endpoint,), timeout=0.5)
    poller = Poller(cfg)
    try:
        assert poller.poll(["m1"])["m1"][0].master is not None
        sock = poller.clients[0].sock
        assert sock is not None
        # The server pushes an unasked reply about m1 onto the kept connection.
        server_side = server.conns[-1]
        server_side.sendall(sentinel(("SENTINEL", "MASTER", "m1")))
        time.sleep(0.1)
        got = poller.poll(["m2"])["m2"][0]
        assert got.master is not None and got.master.name == "m2"
        assert server.accepted == 2
    finally:
        poller.close()
        server.close()


def test_an_answer_about_another_master_is_that_masters_error():
    liar = Scripted(lambda cmd: sentinel(("SENTINEL", "MASTER", "other")))
    got = poll_of([liar], ["m1"])["m1"][0]
    assert got.master is None and got.error == "an answer about 'other'" and got.reachable


# --- a Sentinel by name: each of its addresses in turn -------------------------------------


def test_each_address_of_a_named_sentinel_is_tried_in_turn(monkeypatch):
    """A name's first address may be dead (a blackhole: its connect never
    completes) or refuse: the next ones are tried within the poll's budget,
    each connect for the timeout, as redis-py did."""
    good, gone, hole = Scripted(sentinel), Scripted(sentinel), Blackhole()
    gone.close()
    names = Names({"sentinel.test": [("127.0.0.1", hole.port), ("127.0.0.1", gone.port),
                                     ("127.0.0.1", good.port)]})
    monkeypatch.setattr("socket.getaddrinfo", names)
    # The blackhole takes one timeout of the two the budget holds; the good
    # address has the other, far more than it needs.
    cfg = SentinelConfig((Endpoint("sentinel.test", 26379),), timeout=2.5)
    poller = Poller(cfg)
    try:
        got = poller.poll(["m1"])["m1"][0]
        assert got.master is not None and got.master.name == "m1", got.error
        assert poller.poll(["m1"])["m1"][0].master is not None   # on the kept connection
    finally:
        poller.close()
        good.close()
        hole.close()
    assert good.accepted == 1 and names.looked_up == ["sentinel.test"]


def test_a_named_sentinel_none_of_whose_addresses_answers_is_unreachable(monkeypatch):
    first, second = Scripted(sentinel), Scripted(sentinel)
    first.close()
    second.close()
    monkeypatch.setattr("socket.getaddrinfo", Names({"sentinel.test": [
        ("127.0.0.1", first.port), ("127.0.0.1", second.port)]}))
    cfg = SentinelConfig((Endpoint("sentinel.test", 26379),), timeout=0.5)
    got = Poller(cfg).poll(["m1"])["m1"][0]
    assert got.error == "unreachable: connect: Connection refused" and not got.reachable


def test_a_hanging_lookup_holds_up_neither_the_poll_nor_the_other_sentinels(monkeypatch):
    """An isolated host's resolver may hang for 30 s, and the poll runs on the
    agent's main loop, which fences: the lookup runs off it, the poll ends on
    its budget, and the next polls wait for that lookup rather than start more."""
    good, named = Scripted(sentinel), Scripted(sentinel)
    names = Names({"sentinel.test": [("127.0.0.1", named.port)]}, gate=threading.Event())
    monkeypatch.setattr("socket.getaddrinfo", names)
    cfg = SentinelConfig((good.endpoint, Endpoint("sentinel.test", 26379)), timeout=1.0)
    poller = Poller(cfg)
    try:
        first = poller.poll(["m1"])["m1"]
        second = poller.poll(["m1"])["m1"]
        assert names.gate is not None
        lookup = poller.clients[1]._lookup
        assert lookup is not None
        # One callback for the lookup's life, not one more per poll waiting on it.
        assert len(lookup._done_callbacks) == 1   # type: ignore[attr-defined]
        names.gate.set()
        lookup.result(timeout=5)
        third = poller.poll(["m1"])["m1"]
    finally:
        assert names.gate is not None
        names.gate.set()
        poller.close()
        good.close()
        named.close()
    assert first[0].master is not None and second[0].master is not None
    for answers in (first, second):
        assert answers[1].error == "unreachable: cannot resolve sentinel.test within 2.0 s"
        assert not answers[1].reachable
    assert third[1].master is not None and third[1].master.name == "m1"
    assert names.looked_up == ["sentinel.test"] and named.accepted == 1


def test_a_name_that_does_not_resolve_is_unreachable(monkeypatch):
    monkeypatch.setattr("socket.getaddrinfo", Names({"sentinel.test": []}))
    cfg = SentinelConfig((Endpoint("sentinel.test", 26379),), timeout=0.5)
    got = Poller(cfg).poll(["m1"])["m1"][0]
    assert not got.reachable and got.error is not None
    assert got.error.startswith("unreachable: cannot resolve sentinel.test: ")


def authenticating(cmd: tuple[str, ...], state: dict) -> bytes | None:
    """A Sentinel that refuses questions on a connection not authenticated
    (``state`` is the connection's)."""
    if cmd[0] == "AUTH":
        state["auth"] = True
        return b"+OK\r\n"
    if not state.get("auth"):
        return b"-NOAUTH Authentication required.\r\n"
    return sentinel(cmd)


class PerConnection(Scripted):
    """Scripted, with ``answer(cmd, state)`` given each connection's own state."""

    def __init__(self, answer) -> None:
        self.per = answer
        super().__init__(lambda cmd: None)

    def _serve(self, conn, got) -> None:
        state: dict = {}
        self.answer = lambda cmd: self.per(cmd, state)
        super()._serve(conn, got)


def test_a_poll_that_fails_half_way_leaves_no_connection_half_begun(monkeypatch):
    """One Sentinel's set-up raising (here a name's lookup that cannot be
    started) must not leave another's connection made but its AUTH unsent: kept,
    it would ask every later poll's questions unauthenticated."""
    good = PerConnection(authenticating)
    calls: list[str] = []

    def no_thread(host, port):
        calls.append(host)
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr("vipfloat.sentinel.lookup_in_background", no_thread)
    cfg = SentinelConfig((good.endpoint, Endpoint("sentinel.test", 26379)), timeout=GENEROUS,
                         password=Secret("s3cret"))
    poller = Poller(cfg)
    try:
        first = poller.poll(["m1"])["m1"]
        second = poller.poll(["m1"])["m1"]
    finally:
        poller.close()
        good.close()
    assert first[0].master is not None and second[0].master is not None
    assert first[1].error == "unreachable: cannot resolve sentinel.test: can't start new thread"
    assert calls == ["sentinel.test", "sentinel.test"]


def test_an_exception_in_a_poll_closes_every_connection_it_began(monkeypatch):
    good = PerConnection(authenticating)
    names = Names({})

    def boom(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        if host == "boom.test" and names.looked_up == []:
            names.looked_up.append(host)
            raise ValueError("a resolver bug")
        return names(host, port, family, type, proto, flags)

    monkeypatch.setattr("socket.getaddrinfo", boom)
    cfg = SentinelConfig((good.endpoint, Endpoint("boom.test", 26379)), timeout=GENEROUS,
                         password=Secret("s3cret"))
    poller = Poller(cfg)
    try:
        with pytest.raises(ValueError):
            poller.poll(["m1"])
        again = poller.poll(["m1"])["m1"][0]
    finally:
        poller.close()
        good.close()
    # Its connection was closed with the failed poll, and made again with AUTH.
    assert again.master is not None, again.error
    assert ("AUTH", "s3cret") in good.commands[-1]


def test_a_lookup_failing_with_anything_is_that_sentinels_error_only(monkeypatch):
    """getaddrinfo raises UnicodeError for a label over 63 bytes, not gaierror:
    the other Sentinels' answers are kept, the poll goes on."""
    good = Scripted(sentinel)
    monkeypatch.setattr("socket.getaddrinfo",
                        Names({}, errors={"odd.test": UnicodeError("label too long")}))
    cfg = SentinelConfig((good.endpoint, Endpoint("odd.test", 26379)), timeout=GENEROUS)
    poller = Poller(cfg)
    try:
        for _ in range(2):
            answers = poller.poll(["m1"])["m1"]
            assert answers[0].master is not None
            assert answers[1].error == "unreachable: cannot resolve odd.test: label too long"
    finally:
        poller.close()
        good.close()


def test_an_answer_already_there_when_the_budget_ran_out_is_still_read():
    """The one stalled may be the agent (a VM's stolen time), not the Sentinel:
    a whole answer waiting in the socket when the poll's thread gets back past
    its deadline is read, not counted as the Sentinel unreachable."""
    import select as select_mod

    from vipfloat.sentinel import _exchange

    server = Scripted(sentinel)
    cfg = SentinelConfig((server.endpoint,), timeout=0.5)
    poller = Poller(cfg)
    client = poller.clients[0]
    try:
        assert poller.poll(["m1"])["m1"][0].master is not None   # a kept connection
        client._begin(["m2"])
        assert client.sock is not None and not client.connecting
        client._ready(select_mod.POLLOUT)                        # the question sent
        assert select_mod.select([client.sock], [], [], 5)[0]    # its answer is there
        _exchange([client], time.monotonic() - 1.0, None)        # ... but the budget is spent
        got = client._answers(["m2"], 1.0)["m2"]
    finally:
        poller.close()
        server.close()
    assert got.master is not None and got.master.name == "m2", got.error


def test_a_field_no_sentinel_sends_is_never_the_whole_polls_error():
    """hiredis reads RESP3's ,inf as a float, and int(inf) raises OverflowError,
    not ValueError: one such reply must not take every Sentinel's answer with it."""
    odd = Scripted(lambda cmd: b"%3\r\n$4\r\nname\r\n$2\r\nm1\r\n$2\r\nip\r\n"
                   b"$13\r\n198.51.100.11\r\n$4\r\nport\r\n,inf\r\n")
    good = Scripted(sentinel)
    answers = poll_of([odd, good], ["m1"])["m1"]
    assert answers[0].master is not None and answers[0].master.port == 0
    assert answers[1].master is not None and answers[1].master.name == "m1"


def test_a_kept_connection_whose_exchange_never_ended_is_made_again():
    server = Scripted(sentinel)
    poller = Poller(SentinelConfig((server.endpoint,), timeout=GENEROUS))
    client = poller.clients[0]
    try:
        assert poller.poll(["m1"])["m1"][0].master is not None     # kept, clean
        client._begin(["m1"])           # begun on the kept connection, never finished
        assert poller.poll(["m2"])["m2"][0].master is not None
    finally:
        poller.close()
        server.close()
    assert server.accepted == 2
