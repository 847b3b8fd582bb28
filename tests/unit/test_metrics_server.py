"""The metrics port faces anybody who can reach it: idle and slow clients must
cost a bounded number of threads and never stop a scrape for long."""
from __future__ import annotations

import socket
import threading
import time

from vipfloat import metrics


def scrape(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return data


def test_idle_clients_hold_at_most_max_clients_threads_and_are_cut(monkeypatch):
    monkeypatch.setattr(metrics, "REQUEST_DEADLINE", 1.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    m = metrics.Metrics(f"127.0.0.1:{port}")
    try:
        assert b"vipfloat_quorum_ok" in scrape(port)
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        try:
            time.sleep(0.5)
            # One thread per admitted client at most, whatever the crowd.
            assert threading.active_count() <= before + metrics.MAX_CLIENTS
            # Past the deadline the admitted ones are cut and scrapes work again.
            deadline = time.monotonic() + 15
            while True:
                try:
                    if b"vipfloat_quorum_ok" in scrape(port):
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "the metrics port never served again"
                time.sleep(0.2)
        finally:
            for c in idle:
                c.close()
    finally:
        m.close()


def test_a_client_that_times_out_costs_one_log_line_not_a_traceback(capfd, caplog,
                                                                     monkeypatch):
    import logging

    # Only the handler's 2 s read timeout may end the idle connection: the
    # whole-connection deadline (5 s after accept) would cut it with EOF
    # instead if the handler's thread started late.
    monkeypatch.setattr(metrics, "REQUEST_DEADLINE", 60.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    m = metrics.Metrics(f"127.0.0.1:{port}")
    try:
        with caplog.at_level(logging.DEBUG, logger="vipfloat.metrics"):
            with socket.create_connection(("127.0.0.1", port)) as idle:
                idle.sendall(b"GET /metr")      # and then nothing: the handler times out
                # Held open until the server closes it, however late its handler
                # started: closing it first gives the handler EOF, not a timeout.
                # The server reports the error (log line or traceback) before it
                # closes (socketserver: handle_error, then shutdown_request).
                idle.settimeout(30)
                try:
                    idle.recv(1)
                except ConnectionResetError:
                    pass
            assert b"vipfloat_quorum_ok" in scrape(port)
    finally:
        m.close()
    # (Only socketserver's own report is looked for: a handler another test left
    # on a closed stream may print its own "Logging error" here.)
    err = capfd.readouterr().err
    assert "Exception occurred during processing of request" not in err, err
    assert any("timed out" in r.getMessage() for r in caplog.records)
