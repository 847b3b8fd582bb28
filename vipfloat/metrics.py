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
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

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
        self.last_reconcile = Gauge("vipfloat_last_reconcile_timestamp_seconds",
                                    "When the last reconcile finished", registry=r)
        ep = parse_endpoint(listen)
        self.server = None
        try:
            self.server, self.thread = start_http_server(ep.port, addr=ep.host, registry=r)
            log.info("metrics on http://%s/metrics", ep)
        except OSError as exc:
            # The VIPs matter more than the metrics: keep running without them.
            log.error("cannot serve metrics on %s: %s", ep, exc.strerror or exc)

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
