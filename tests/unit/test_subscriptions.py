"""Following every Sentinel's pub/sub in one thread (subscribe.Subscriptions),
against loopback servers that act as Sentinels do, and as broken or hostile
ones do; and the bounded RESP decoder under it (vipfloat.resp). No root."""
from __future__ import annotations

import os
import select
import threading
import time
from typing import Callable

import pytest

from vipfloat import resp
from vipfloat.config import Endpoint, Secret, SentinelConfig
from vipfloat.resp import Decoder, ErrorReply, ProtocolError, decode, encode
from vipfloat.subscribe import (BACKOFF_MAX, CHANNELS, SentinelEvent, Subscriptions, backoff,
                                hello)

from .resp_replay import Blackhole, Names, Scripted

# --- vipfloat.resp ----------------------------------------------------------------------


def test_a_command_is_an_array_of_bulk_strings():
    assert encode("PING") == b"*1\r\n$4\r\nPING\r\n"
    assert encode("AUTH", "é", b"\x00") == b"*3\r\n$4\r\nAUTH\r\n$2\r\n\xc3\xa9\r\n$1\r\n\x00\r\n"


STREAM = (b"+OK\r\n-WRONGPASS invalid\r\n:42\r\n:-7\r\n$-1\r\n*-1\r\n$0\r\n\r\n"
          b"*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$5\r\na\xffb c\r\n"
          b"*2\r\n:1\r\n$2\r\nhi\r\n")
REPLIES = ["OK", ErrorReply("WRONGPASS invalid"), 42, -7, None, None, "",
           ["message", "+switch-master", "a\ufffdb c"], [1, "hi"]]


def test_every_reply_type_a_subscription_meets_decodes():
    assert Decoder().feed(STREAM) == REPLIES


def test_replies_split_anywhere_decode_the_same():
    """However the stream is cut into reads, the replies are the same, each
    given out once it is complete and not before."""
    for cut in range(1, len(STREAM)):
        d = Decoder()
        assert d.feed(STREAM[:cut]) + d.feed(STREAM[cut:]) == REPLIES
    d = Decoder()
    got = []
    for i in range(len(STREAM)):
        got += d.feed(STREAM[i:i + 1])
    assert got == REPLIES and len(d) == 0


def test_an_incomplete_reply_is_none_and_keeps_its_bytes():
    assert decode(b"$5\r\nab") is None
    assert decode(b"*3\r\n$1\r\na\r\n") is None
    assert decode(b":12") is None
    d = Decoder()
    assert d.feed(b"*2\r\n$1\r\na\r\n") == [] and len(d) == 11
    assert d.feed(b"$1\r\nb\r\n+x") == [["a", "b"]] and len(d) == 2


@pytest.mark.parametrize("data, why", [
    (b"*%d\r\n" % (resp.MAX_ELEMENTS + 1), "array of 9 over the cap"),
    (b"*1000000000\r\n", "over the cap"),
    # Refused on the header alone, before any of its body has come.
    (b"$%d\r\n" % (resp.MAX_BULK + 1), "bulk string of 16385 over the cap"),
    (b"+" + b"x" * resp.MAX_LINE, "a line longer than"),
    (b"*1\r\n*1\r\n:1\r\n", "nested deeper"),
    (b":12a\r\n", "bad integer"),
    (b":" + b"9" * 20 + b"\r\n", "bad integer"),
    (b"$-2\r\n", "bad bulk string length"),
    (b"*x\r\n", "bad array length"),
    (b"$3\r\nabcd\r\n", "not ended by CRLF"),
    (b"%1\r\n", "unknown reply type"),
    (b"\r\n", "unknown reply type"),
])
def test_anything_but_resp2_within_the_caps_is_refused(data, why):
    with pytest.raises(ProtocolError, match=why):
        Decoder().feed(data)


def test_a_line_just_under_the_cap_is_taken():
    line = b"+" + b"x" * (resp.MAX_LINE - 3) + b"\r\n"
    assert Decoder().feed(line) == ["x" * (resp.MAX_LINE - 3)]
    assert Decoder().feed(b"$%d\r\n" % resp.MAX_BULK + b"y" * resp.MAX_BULK + b"\r\n") \
        == ["y" * resp.MAX_BULK]
    assert decode(b"*2\r\n:1\r\n:2\r\n") == ([1, 2], 12)


# --- the subscriptions' policy ----------------------------------------------------------


def test_back_off_doubles_from_a_tenth_of_a_second_to_two():
    assert [backoff(n) for n in range(1, 8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert backoff(10_000) == BACKOFF_MAX


def test_a_connection_authenticates_before_it_subscribes():
    eps = (Endpoint("198.51.100.11", 26379),)
    assert hello(SentinelConfig(eps)) == encode("SUBSCRIBE", *CHANNELS)
    assert hello(SentinelConfig(eps, password=Secret("s3cret"))) \
        == encode("AUTH", "s3cret") + encode("SUBSCRIBE", *CHANNELS)
    assert hello(SentinelConfig(eps, username="vf", password=Secret("s3cret"))) \
        == encode("AUTH", "vf", "s3cret") + encode("SUBSCRIBE", *CHANNELS)


# --- against loopback Sentinels ---------------------------------------------------------


class FakeSentinel(Scripted):
    """A loopback server speaking as much of Sentinel's pub/sub as the agent
    uses. ``mode``: "ok"; "silent" (reads, never answers); "refuse" (an error
    to AUTH); "garbage" (answers SUBSCRIBE with something that is not RESP)."""

    def __init__(self, mode: str = "ok", password: str | None = None) -> None:
        self.mode = mode
        self.password = password
        super().__init__(lambda cmd: self._answer(cmd))

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)

    def _answer(self, cmd: tuple[str, ...]) -> bytes | None:
        name = cmd[0].upper()
        if self.mode == "silent":
            return None
        if name == "AUTH":
            if self.mode == "refuse" or cmd[-1] != self.password:
                return b"-WRONGPASS invalid username-password pair\r\n"
            return b"+OK\r\n"
        if name == "SUBSCRIBE":
            if self.mode == "garbage":
                return b"%%%% not resp\r\n"
            return b"".join(b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:%d\r\n"
                            % (len(ch), ch.encode(), i) for i, ch in enumerate(cmd[1:], 1))
        if name == "PING":
            return b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        return b"-ERR unknown command\r\n"

    def publish(self, channel: str, payload: str) -> None:
        self.push(encode("message", channel, payload))


class Record:
    def __init__(self) -> None:
        self.events: list[tuple[Endpoint, SentinelEvent]] = []
        self.links: list[tuple[Endpoint, bool]] = []
        self.contacts: list[tuple[Endpoint, float]] = []

    def heard_from(self, ep: Endpoint, since: float = 0.0) -> int:
        return sum(1 for e, t in self.contacts if e == ep and t >= since)


def wait_for(cond: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def follow():
    """follow(servers, password=..., dead_after=...) -> (Subscriptions, Record),
    started; everything stopped and closed afterwards."""
    made: list[tuple[Subscriptions, list[FakeSentinel]]] = []

    def start(servers: list[FakeSentinel], dead_after: float = 3.0,
              password: str | None = None,
              ping_interval: float = 0.05) -> tuple[Subscriptions, Record]:
        rec = Record()
        cfg = SentinelConfig(tuple(s.endpoint for s in servers), timeout=0.5,
                             password=Secret(password) if password else None)
        subs = Subscriptions(cfg, lambda ep, ev: rec.events.append((ep, ev)),
                             lambda ep, up: rec.links.append((ep, up)),
                             ping_interval=ping_interval,
                             on_contact=lambda ep: rec.contacts.append((ep, time.monotonic())),
                             dead_after=dead_after)
        made.append((subs, servers))
        subs.start()
        return subs, rec

    yield start
    for subs, servers in made:
        subs.stop()
        for server in servers:
            server.close()


def test_every_sentinel_is_subscribed_to_on_one_thread_and_its_events_come_through(follow):
    a, b = FakeSentinel(), FakeSentinel()
    subs, rec = follow([a, b])
    wait_for(lambda: len(rec.links) == 2)
    assert all(link.alive for link in subs.links)
    assert set(rec.links) == {(a.endpoint, True), (b.endpoint, True)} and len(rec.links) == 2
    assert a.commands[0][0] == ("SUBSCRIBE", *CHANNELS)
    a.publish("+switch-master", "mymaster 198.51.100.11 6379 198.51.100.12 6379")
    a.publish("+sdown", "master mymaster 198.51.100.11 6379")
    a.publish("+nonsense", "ignored")
    wait_for(lambda: len(rec.events) == 2)
    assert [(ep, ev.channel, ev.master, ev.new_host) for ep, ev in rec.events] == [
        (a.endpoint, "+switch-master", "mymaster", "198.51.100.12"),
        (a.endpoint, "+sdown", "mymaster", None)]
    # Pings through each subscription, answered: contact with each, all the time.
    t = time.monotonic()
    wait_for(lambda: rec.heard_from(a.endpoint, t) >= 3 and rec.heard_from(b.endpoint, t) >= 3)
    assert all(cmd == ("PING",) for cmd in a.commands[0][1:])
    assert [t.name for t in threading.enumerate()].count("subscriptions") == 1


def test_a_password_is_sent_first_and_a_refusal_is_no_subscription(follow):
    good, bad = FakeSentinel(password="s3cret"), FakeSentinel(mode="refuse")
    subs, rec = follow([good, bad], password="s3cret")
    wait_for(lambda: subs.links[0].alive)
    assert good.commands[0][:2] == [("AUTH", "s3cret"), ("SUBSCRIBE", *CHANNELS)]
    # The refusing one: tried again with back-off, never up, no contact counted.
    wait_for(lambda: len(bad.commands) >= 3)
    assert not subs.links[1].alive and (bad.endpoint, True) not in rec.links
    assert rec.heard_from(bad.endpoint) == 0


def test_a_silent_sentinel_is_dropped_and_does_not_hold_up_the_others(follow):
    ok, silent = FakeSentinel(), FakeSentinel(mode="silent")
    # dead_after well above any stall of the test process (a VM's stolen time).
    subs, rec = follow([ok, silent], dead_after=1.5)
    wait_for(lambda: subs.links[0].alive)
    t = time.monotonic()
    # The silent one is connected to, given up on after dead_after, and tried again...
    wait_for(lambda: len(silent.commands) >= 2)
    assert silent.commands[0][0] == ("SUBSCRIBE", *CHANNELS)
    assert not subs.links[1].alive
    # ...while the other was never dropped (a loop held up by the silent one for
    # dead_after would have dropped it too) and its pongs kept coming.
    assert (ok.endpoint, False) not in rec.links and subs.links[0].alive
    assert rec.heard_from(ok.endpoint, t) >= 3


def test_a_sentinel_that_answers_garbage_is_dropped(follow):
    server = FakeSentinel(mode="garbage")
    subs, rec = follow([server])
    wait_for(lambda: len(server.commands) >= 2)     # reconnected after the garbage
    assert not subs.links[0].alive and rec.links == []


def test_an_oversized_message_drops_the_subscription_and_it_comes_back(follow):
    server = FakeSentinel()
    subs, rec = follow([server])
    wait_for(lambda: subs.links[0].alive)
    server.publish("+switch-master", "x" * (resp.MAX_BULK + 1))
    wait_for(lambda: len(rec.links) == 3)       # the link is told after `alive` is set
    assert rec.links == [(server.endpoint, True), (server.endpoint, False),
                         (server.endpoint, True)]
    assert rec.events == []


def test_a_sentinel_restarting_is_down_then_up_again(follow):
    server = FakeSentinel()
    subs, rec = follow([server])
    wait_for(lambda: subs.links[0].alive)
    server.drop_connections()
    wait_for(lambda: rec.links[-1:] == [(server.endpoint, True)] and len(rec.links) == 3)
    assert len(server.commands) == 2


def test_an_unreachable_sentinel_is_retried_with_back_off_and_never_up(follow):
    ok = FakeSentinel()
    gone = FakeSentinel()
    gone.close()                                      # connection refused from now on
    subs, rec = follow([ok, gone])
    wait_for(lambda: subs.links[0].alive)
    wait_for(lambda: subs.links[1].failures >= 3)
    assert not subs.links[1].alive
    assert (gone.endpoint, True) not in rec.links


def test_stop_is_prompt_and_reports_every_subscription_down(follow):
    a, b = FakeSentinel(), FakeSentinel()
    # Nothing to wake the loop for 30 s but stop itself: a stop that did not
    # wake it would outlast stop()'s 3 s join.
    subs, rec = follow([a, b], ping_interval=30.0, dead_after=60.0)
    wait_for(lambda: all(link.alive for link in subs.links))
    subs.stop()
    assert not subs._thread.is_alive()
    assert not any(link.alive for link in subs.links)
    assert all(link.sock is None for link in subs.links)
    assert set(rec.links[-2:]) == {(a.endpoint, False), (b.endpoint, False)}


def test_a_hostile_payload_ends_its_subscription_only_never_the_others(follow):
    """A +switch-master whose port has 5,000 digits (int() refuses it), or a
    callback that raises: that Sentinel's subscription is dropped and made
    again; the other Sentinel's pongs keep coming (they are the quorum)."""
    a, b = FakeSentinel(), FakeSentinel()
    subs, rec = follow([a, b])
    wait_for(lambda: len(rec.links) == 2)
    a.publish("+switch-master", "mymaster 198.51.100.11 6379 198.51.100.12 " + "9" * 5000)
    boom = {"armed": True}
    original = subs.on_event

    def raising(ep, ev):
        if boom.pop("armed", False):
            raise RuntimeError("a bug in a callback")
        original(ep, ev)

    subs.on_event = raising
    a.publish("+sdown", "master mymaster 198.51.100.11 6379")
    wait_for(lambda: not boom)
    wait_for(lambda: (a.endpoint, False) in rec.links)
    t = time.monotonic()
    wait_for(lambda: rec.heard_from(b.endpoint, t) >= 5)
    assert subs.links[1].alive and (b.endpoint, False) not in rec.links
    wait_for(lambda: subs.links[0].alive and len(a.commands) >= 2)
    a.publish("+sdown", "master mymaster 198.51.100.11 6379")
    wait_for(lambda: any(ev.channel == "+sdown" for _, ev in rec.events))


def test_a_sentinel_dropping_us_right_after_subscribe_is_retried_with_back_off(follow):
    """Up for a moment, then closed, again and again: the back-off grows as for
    any failure (each loss asks the agent for a poll), not reset by each success."""
    server = FakeSentinel()
    answer = server._answer

    def subscribe_then_close(cmd):
        out = answer(cmd)
        if cmd[0] == "SUBSCRIBE":
            threading.Timer(0.01, server.drop_connections).start()
        return out

    server._answer = subscribe_then_close
    subs, rec = follow([server])
    wait_for(lambda: len(server.accepted_at) >= 4)
    # 0.1, 0.2, then 0.4 s of back-off between the attempts, at least (a stall
    # only makes a gap longer); reset by each success, every gap would be 0.1 s.
    gaps = [b - a for a, b in zip(server.accepted_at, server.accepted_at[1:4])]
    assert all(gap >= backoff(i) for i, gap in enumerate(gaps, 1)), gaps


def test_a_lookup_finishing_after_stop_writes_nowhere(follow):
    server = FakeSentinel()
    subs, rec = follow([server])
    wait_for(lambda: subs.links[0].alive)
    subs.stop()
    r, w = os.pipe()                                   # may reuse the wake pipe's numbers
    try:
        subs._wake()                                   # what a late lookup's callback does
        assert select.select([r], [], [], 0)[0] == []
    finally:
        os.close(r)
        os.close(w)


class Named:
    """Sentinels behind one name (``names`` resolves it to their addresses)."""

    def __init__(self, port: int, *servers: object, host: str = "sentinel.test") -> None:
        self.endpoint = Endpoint(host, port)
        self.servers = servers

    def close(self) -> None:
        for server in self.servers:
            server.close()  # type: ignore[attr-defined]


def test_each_address_of_a_named_sentinel_is_tried_in_turn(follow, monkeypatch):
    """The first address a blackhole (its connect never completes: tried for the
    timeout), the second refusing at once, the third a Sentinel: subscribed to."""
    good, gone, hole = FakeSentinel(), FakeSentinel(), Blackhole()
    gone.close()
    names = Names({"sentinel.test": [("127.0.0.1", hole.port), ("127.0.0.1", gone.port),
                                     ("127.0.0.1", good.port)]})
    monkeypatch.setattr("socket.getaddrinfo", names)
    subs, rec = follow([Named(good.port, good, hole)])
    wait_for(lambda: subs.links[0].alive)
    assert good.commands[0][0][0] == "SUBSCRIBE"
    assert names.looked_up == ["sentinel.test"]


def test_a_named_sentinel_none_of_whose_addresses_answers_backs_off(follow, monkeypatch):
    first, second = FakeSentinel(), FakeSentinel()
    first.close()
    second.close()
    monkeypatch.setattr("socket.getaddrinfo", Names({"sentinel.test": [
        ("127.0.0.1", first.port), ("127.0.0.1", second.port)]}))
    subs, rec = follow([Named(first.port)])
    wait_for(lambda: subs.links[0].failures >= 2)
    assert not subs.links[0].alive and subs.links[0].last_error == "connect: Connection refused"


def test_a_lookup_failing_with_anything_is_a_failed_attempt_not_an_internal_error(
        follow, monkeypatch, caplog):
    monkeypatch.setattr("socket.getaddrinfo",
                        Names({}, errors={"odd.test": UnicodeError("label too long")}))
    subs, rec = follow([Named(26379, host="odd.test")])
    wait_for(lambda: subs.links[0].failures >= 2)
    assert subs.links[0].last_error == "cannot resolve odd.test: label too long"
    assert "internal error" not in caplog.text


def test_a_deadline_passed_while_a_reply_waits_unread_is_this_threads_stall():
    """The loop judges deadlines before it reads: after a stall of its own
    thread (a VM's stolen time) a link whose reply is already waiting must not
    be dropped for silence, nor a connect that has completed time out."""
    import socket
    from vipfloat.subscribe import State

    cfg = SentinelConfig((Endpoint("127.0.0.1", 1),), timeout=0.5)
    subs = Subscriptions(cfg, lambda ep, ev: None, lambda ep, up: None, dead_after=0.5)
    link = subs.links[0]
    ours, theirs = socket.socketpair()
    try:
        now = time.monotonic()
        link.sock, link.state, link.last_heard = ours, State.UP, now - 10
        theirs.sendall(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        subs._advance(link, now)
        assert link.state is State.UP               # read first, in this turn
        ours.recv(100)
        subs._advance(link, now)
        assert link.state is State.DOWN and link.last_error == "no reply in 0.5 s"
    finally:
        ours.close()
        theirs.close()
        subs.stop()
