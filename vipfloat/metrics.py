"""Prometheus metrics for the agent (prometheus-client), only when
`metrics_listen` is set: otherwise every call is a no-op and the library is not
even imported (it costs memory the idle agent does not need to spend)."""

from __future__ import annotations

import logging
from typing import Any

from .config import parse_endpoint

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self, listen: str | None) -> None:
        self.enabled = bool(listen)
        if not listen:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        r = self.registry
        self.held = Gauge("vipfloat_vip_held", "1 when this host holds the VIP",
                          ["master", "vip"], registry=r)
        self.transitions = Counter("vipfloat_transitions_total",
                                   "VIPs acquired or released by this host",
                                   ["master", "action"], registry=r)
        self.announcements = Counter("vipfloat_announcement_rounds_total",
                                     "Announcement rounds sent (ARP request+reply, or NA)",
                                     ["master"], registry=r)
        self.sentinels_reachable = Gauge("vipfloat_sentinels_reachable",
                                         "Sentinels that answered the last poll", registry=r)
        self.sentinels_configured = Gauge("vipfloat_sentinels_configured",
                                          "Sentinels in the config", registry=r)
        self.quorum_ok = Gauge("vipfloat_quorum_ok",
                               "1 when a majority of Sentinels is reachable", registry=r)
        self.conflict = Gauge("vipfloat_conflict",
                              "1 while another MAC answers for a VIP held here",
                              ["master", "vip"], registry=r)
        self.conflicts = Counter("vipfloat_conflicts_total", "Conflicts detected",
                                 ["master", "vip"], registry=r)
        self.early_binds = Counter("vipfloat_early_binds_total",
                                   "VIPs bound on a failover leader's promotion, before "
                                   "Sentinel's +promoted-slave", ["master"], registry=r)
        self.write_holds = Counter("vipfloat_write_holds_total",
                                   "Failovers during which this host paused its Redis's "
                                   "writes", ["master"], registry=r)
        self.crash_failovers = Counter("vipfloat_crash_failovers_total",
                                       "SENTINEL FAILOVER requests after the local Redis "
                                       "crashed, by Sentinel's answer", ["master", "result"],
                                       registry=r)
        self.last_reconcile = Gauge("vipfloat_last_reconcile_timestamp_seconds",
                                    "When the last reconcile finished", registry=r)
        ep = parse_endpoint(listen)
        self.server = None
        try:
            self.server, self.thread = serve(ep.host, ep.port, r)
            log.info("metrics on http://%s/metrics", ep)
        except OSError as exc:
            # The VIPs matter more than the metrics: keep running without them.
            log.error("cannot serve metrics on %s: %s", ep, exc.strerror or exc)

    def declare(self, master: str, vip: str) -> None:
        """A VIP's series at their starting values, as its actor starts: a
        counter's first increment is then an increase Prometheus can see
        (increase() over a series born at 1 is 0), and a VIP this host does not
        hold reads 0 rather than nothing."""
        if not self.enabled:
            return
        self.held.labels(master, vip).set(0)
        self.conflict.labels(master, vip).set(0)
        self.conflicts.labels(master, vip)
        for action in ("acquire", "release"):
            self.transitions.labels(master, action)
        for counter in (self.announcements, self.early_binds, self.write_holds):
            counter.labels(master)

    def __getattr__(self, name: str) -> Any:
        # Disabled: every metric is a sink that accepts any call.
        return _Sink()

    def close(self) -> None:
        if self.enabled and self.server is not None:
            self.server.shutdown()
            self.server.server_close()  # free the port for a reloaded agent


class _Sink:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self


# Anybody who can reach the port is a client: at most this many are served at
# once (others are closed at once), and each connection is cut after
# REQUEST_DEADLINE whatever it does. 250 idle connections once made thread
# creation fail in the agent; a scrape takes milliseconds.
MAX_CLIENTS = 4
REQUEST_DEADLINE = 5.0


def serve(host: str, port: int, registry: Any) -> tuple[Any, Any]:
    """prometheus-client's WSGI app on a bounded server (its own
    start_http_server spawns a thread per connection, with no timeout)."""
    import socket
    import threading
    import time
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class ToLog:
        """wsgiref writes an application's traceback to the handler's stderr:
        through logging instead, one escaped line per write."""

        def write(self, text: str) -> None:
            if text.strip():
                log.warning("metrics: %s", text.strip())

        def flush(self) -> None:
            pass

    class Handler(WSGIRequestHandler):
        timeout = 2.0          # per read; REQUEST_DEADLINE bounds the whole

        def log_message(self, *args: Any) -> None:
            pass

        def get_stderr(self) -> Any:
            return ToLog()

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
            self.active: dict[Any, float] = {}
            self.active_lock = threading.Lock()
            super().__init__(*args, **kwargs)

        def process_request(self, request: Any, client_address: Any) -> None:
            if not self.slots.acquire(blocking=False):
                self.shutdown_request(request)
                return
            with self.active_lock:
                self.active[request] = time.monotonic()
            try:
                super().process_request(request, client_address)
            except BaseException:
                self._done(request)
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self._done(request)

        def _done(self, request: Any) -> None:
            with self.active_lock:
                if self.active.pop(request, None) is not None:
                    self.slots.release()

        def handle_error(self, request: Any, client_address: Any) -> None:
            # socketserver prints a raw multi-line traceback to stderr for every
            # client that times out: one log line instead, quiet for timeouts.
            import sys

            exc = sys.exc_info()[1]
            if isinstance(exc, (TimeoutError, ConnectionError)):
                log.debug("metrics: client %s: %s", client_address, exc)
            else:
                log.warning("metrics: client %s: %s: %s", client_address,
                            type(exc).__name__, exc)

        def service_actions(self) -> None:
            # Called by serve_forever between polls: cut connections past the
            # deadline (a shutdown makes the handler's next read or write fail).
            now = time.monotonic()
            with self.active_lock:
                late = [r for r, t in self.active.items() if now - t > REQUEST_DEADLINE]
            for request in late:
                try:
                    request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                              name="metrics", daemon=True)
    thread.start()
    return server, thread
