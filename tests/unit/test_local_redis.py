"""This host's Redis as the agent asks it (health.LocalRedis over
redisconn.Conn): ROLE, CLIENT PAUSE / UNPAUSE and INFO server, against loopback
servers that answer as Redis does, and as broken or hostile ones do. No root."""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable

from vipfloat.config import RedisConfig, Secret
from vipfloat.decide import LocalRole, RedisRole
from vipfloat.health import HOLD_TIMEOUT, LocalRedis
from vipfloat.redisconn import MAX_REPLY_BYTES
from vipfloat.sentinel import ready_now

from .resp_replay import Blackhole, Names, Scripted

MASTER = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"
SLAVE = b"*5\r\n$5\r\nslave\r\n$13\r\n198.51.100.11\r\n:6379\r\n$9\r\nconnected\r\n:0\r\n"


def wait_for(cond: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def redis(role: bytes = MASTER, password: str | None = None):
    def answer(cmd: tuple[str, ...]) -> bytes | None:
        if cmd[0] == "AUTH":
            return b"+OK\r\n" if cmd[-1] == password else \
                b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        if cmd[0] == "ROLE":
            return role
        if cmd[:2] == ("CLIENT", "PAUSE") or cmd == ("CLIENT", "UNPAUSE"):
            return b"+OK\r\n"
        if cmd == ("INFO", "server"):
            text = b"# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\n"
            return b"$%d\r\n%s\r\n" % (len(text), text)
        return b"-ERR unknown command\r\n"
    return answer


def local(timeout: float = 2.0, username: str | None = None,
          password: str | None = None) -> LocalRedis:
    return LocalRedis(RedisConfig(username=username,
                                  password=Secret(password) if password else None,
                                  timeout=timeout))


def test_role_is_asked_on_one_kept_connection():
    server = Scripted(redis(SLAVE))
    lr = local()
    try:
        assert lr.role("127.0.0.1", server.port) == LocalRole(RedisRole.SLAVE)
        server.answer = redis(MASTER)
        assert lr.role("127.0.0.1", server.port) == LocalRole(RedisRole.MASTER)
    finally:
        lr.close()
        server.close()
    assert server.asked == [("ROLE",), ("ROLE",)] and server.accepted == 1


def test_a_connection_closed_since_its_last_use_is_made_again_at_once():
    """A Redis just promoted or demoted closes its clients: the kept connection
    is dead exactly when it matters, and the second try is on a new one."""
    server = Scripted(redis(SLAVE))
    lr = local()
    try:
        assert lr.role("127.0.0.1", server.port).role is RedisRole.SLAVE
        server.drop_connections()
        server.answer = redis(MASTER)
        assert lr.role("127.0.0.1", server.port).role is RedisRole.MASTER
    finally:
        lr.close()
        server.close()
    assert server.accepted == 2


def test_a_password_is_sent_first_and_a_refusal_is_an_error_not_a_role():
    good, wrong = Scripted(redis(password="s3cret")), Scripted(redis(password="other"))
    lr = local(username="vipfloat", password="s3cret")
    try:
        assert lr.role("127.0.0.1", good.port).role is RedisRole.MASTER
        refused = lr.role("127.0.0.1", wrong.port)
        again = lr.role("127.0.0.1", wrong.port)
    finally:
        lr.close()
        good.close()
        wrong.close()
    assert good.asked == [("AUTH", "vipfloat", "s3cret"), ("ROLE",)]
    assert refused == LocalRole(RedisRole.ERROR, "WRONGPASS invalid username-password pair "
                                                 "or user is disabled.")
    # Refused: closed, never left open unauthenticated, and asked again from AUTH.
    assert again == refused and wrong.accepted == 2
    assert ("ROLE",) not in wrong.asked


def test_an_error_reply_to_role_is_an_error_escaped():
    server = Scripted(lambda cmd: b"-NOPERM \x1b[2Jno ROLE for you\r\n")
    lr = local()
    try:
        got = lr.role("127.0.0.1", server.port)
    finally:
        lr.close()
        server.close()
    assert got.role is RedisRole.ERROR and got.detail is not None
    assert "\x1b" not in got.detail and "no ROLE for you" in got.detail


def test_a_refused_connection_is_unreachable_and_says_where():
    gone = Scripted(redis())
    gone.close()
    got = local().role("127.0.0.1", gone.port)
    assert got == LocalRole(RedisRole.UNREACHABLE,
                            f"connect to 127.0.0.1:{gone.port}: Connection refused")


def test_a_silent_or_trickling_redis_is_unreachable_at_the_deadline():
    """One deadline per command, not per read: a Redis sending a byte every
    50 ms would have kept a per-read timeout waiting for ever."""
    silent, trickling = Scripted(lambda cmd: None), Scripted(redis(), trickle=1)
    lr = local(timeout=0.2)
    try:
        for server in (silent, trickling):
            got = lr.role("127.0.0.1", server.port)
            assert got == LocalRole(RedisRole.UNREACHABLE, "no answer within 0.2 s")
    finally:
        lr.close()
        silent.close()
        trickling.close()
    # Tried twice, each on a connection of its own, then given up.
    wait_for(lambda: trickling.accepted >= 2)
    assert trickling.accepted == 2


def test_a_reply_that_is_not_resp_or_too_big_is_unreachable():
    garbage = Scripted(lambda cmd: b"%% not resp\r\n")
    huge = Scripted(lambda cmd: b"$%d\r\n" % (2 * MAX_REPLY_BYTES)
                    + b"x" * (2 * MAX_REPLY_BYTES) + b"\r\n")
    lr = local()
    try:
        bad = lr.role("127.0.0.1", garbage.port)
        big = lr.role("127.0.0.1", huge.port)
    finally:
        lr.close()
        garbage.close()
        huge.close()
    assert bad.role is RedisRole.UNREACHABLE and (bad.detail or "").startswith(
        "not a Redis reply")
    assert big == LocalRole(RedisRole.UNREACHABLE, f"a reply over {MAX_REPLY_BYTES} bytes")


def test_writes_are_held_renewed_and_let_through_on_a_connection_of_their_own(monkeypatch):
    monkeypatch.setattr("vipfloat.health.HOLD_TIMEOUT", 2.0)    # a loaded machine's margin
    server = Scripted(redis())
    lr = local()
    try:
        assert lr.role("127.0.0.1", server.port).role is RedisRole.MASTER
        assert lr.hold_writes("127.0.0.1", server.port, 500) is None
        assert lr.hold_writes("127.0.0.1", server.port, 3500) is None
        assert lr.hold_writes("127.0.0.1", server.port, None) is None
    finally:
        lr.close()
        server.close()
    assert server.commands == [[("ROLE",)], [
        ("CLIENT", "PAUSE", "500", "WRITE"), ("CLIENT", "PAUSE", "3500", "WRITE"),
        ("CLIENT", "UNPAUSE")]]


def test_a_hold_that_cannot_be_taken_says_why(monkeypatch):
    monkeypatch.setattr("vipfloat.health.HOLD_TIMEOUT", 2.0)    # a loaded machine's margin
    old = Scripted(lambda cmd: b"-ERR unknown subcommand 'PAUSE'\r\n")
    gone = Scripted(redis())
    gone.close()
    lr = local()
    try:
        assert lr.hold_writes("127.0.0.1", old.port, 500) == "ERR unknown subcommand 'PAUSE'"
        assert lr.hold_writes("127.0.0.1", gone.port, 500) == \
            f"connect to 127.0.0.1:{gone.port}: Connection refused"
    finally:
        lr.close()
        old.close()


def test_a_hung_redis_holds_up_a_hold_for_its_own_short_deadline_once():
    """A hung Redis acknowledges nothing anyway: the actor must not wait the
    usual timeout for it while the VIP moves, nor try it twice."""
    hung = Scripted(lambda cmd: None)
    lr = local()
    try:
        assert lr.hold_writes("127.0.0.1", hung.port, 500) == \
            f"no answer within {HOLD_TIMEOUT:g} s"
    finally:
        lr.close()
        hung.close()
    # Not tried again: one connection (whether or not a stall kept the command
    # from being sent before the deadline).
    assert hung.accepted <= 1 and len(hung.asked) <= 1


def test_process_id_comes_from_info_server_on_a_connection_of_its_own():
    server = Scripted(redis())
    odd = Scripted(lambda cmd: b"$12\r\nprocess_id:x\r\n")
    lr = local()
    try:
        assert lr.process_id("127.0.0.1", server.port) == 4242
        assert lr.process_id("127.0.0.1", odd.port) is None
    finally:
        lr.close()
        server.close()
        odd.close()
    assert server.accepted == 1 and server.asked == [("INFO", "server")]


def test_the_agents_redis_checks_do_not_import_redis_py():
    """redis-py took 100-150 ms to import here, paid at the first ROLE of a
    promotion the agent follows: the agent's own checks must not need it."""
    import subprocess
    code = ("import sys; from vipfloat.config import RedisConfig; "
            "from vipfloat.health import LocalRedis; "
            "LocalRedis(RedisConfig(timeout=0.2)).role('127.0.0.1', 9); "
            "print('redis' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_a_second_reply_to_one_command_is_never_read_as_the_next_answer():
    doubled = Scripted(lambda cmd: MASTER + b"+STALE\r\n")
    server = Scripted(redis(MASTER))
    lr = local()
    try:
        assert lr.role("127.0.0.1", doubled.port) == LocalRole(
            RedisRole.UNREACHABLE, "more replies than commands")
        assert lr.role("127.0.0.1", server.port).role is RedisRole.MASTER
        server.push(b"+STALE\r\n")          # unasked, between two commands
        conn = lr._conns[("127.0.0.1", server.port)]
        wait_for(lambda: conn.sock is not None and ready_now(conn.sock))
        assert lr.role("127.0.0.1", server.port).role is RedisRole.MASTER
    finally:
        lr.close()
        doubled.close()
        server.close()
    assert server.accepted == 2             # made again rather than read


def test_a_named_redis_is_looked_up_off_the_thread_and_each_address_tried(monkeypatch):
    good, hole = Scripted(redis(MASTER)), Blackhole()
    names = Names({"redis.test": [("127.0.0.1", hole.port), ("127.0.0.1", good.port)]})
    monkeypatch.setattr("socket.getaddrinfo", names)
    lr = local(timeout=2.0)                 # the dead first address: half of it
    try:
        assert lr.role("redis.test", 6379).role is RedisRole.MASTER
    finally:
        lr.close()
        good.close()
        hole.close()
    assert good.accepted == 1 and names.looked_up == ["redis.test"]


def test_a_hanging_lookup_is_a_timeout_and_never_doubled(monkeypatch):
    good = Scripted(redis(MASTER))
    names = Names({"redis.test": [("127.0.0.1", good.port)]}, gate=threading.Event())
    monkeypatch.setattr("socket.getaddrinfo", names)
    lr = local(timeout=0.3)
    try:
        got = lr.role("redis.test", 6379)
        assert got == LocalRole(RedisRole.UNREACHABLE, "cannot resolve redis.test within 0.3 s")
        assert names.gate is not None
        names.gate.set()
        wait_for(lambda: lr.role("redis.test", 6379).role is RedisRole.MASTER)
    finally:
        assert names.gate is not None
        names.gate.set()
        lr.close()
        good.close()
    assert names.looked_up == ["redis.test"]     # both tries waited for the one lookup


def test_actors_sharing_a_connection_take_turns():
    server = Scripted(redis(MASTER))
    lr = local()
    roles: list[RedisRole] = []

    def ask() -> None:
        for _ in range(50):
            roles.append(lr.role("127.0.0.1", server.port).role)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        lr.close()
        server.close()
    assert roles == [RedisRole.MASTER] * 150 and server.accepted == 1


def test_no_thread_or_socket_to_be_had_is_unreachable_not_an_exception(monkeypatch):
    """A name's lookup needs a thread (TasksMax may refuse it), a connection a
    socket (EMFILE): either is no answer, never an exception out of the check."""
    def no_thread(host, port):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr("vipfloat.sentinel.lookup_in_background", no_thread)
    got = local().role("redis.test", 6379)
    assert got == LocalRole(RedisRole.UNREACHABLE, "RuntimeError: can't start new thread")
