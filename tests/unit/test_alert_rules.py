"""The shipped Prometheus rules name only metrics the agent exports.

`make lint` runs `promtool check rules` and `promtool test rules` over the same
file (examples/prometheus/); this checks what promtool cannot know: that every
vipfloat_* series in it exists, so a renamed metric cannot leave an alert that
never fires."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from vipfloat.metrics import Metrics

RULES = Path(__file__).resolve().parents[2] / "examples" / "prometheus" / "vipfloat-alerts.yml"


def serving() -> Metrics:
    with socket.socket() as s:       # a free port for the metrics listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Metrics(f"127.0.0.1:{port}")


@pytest.fixture(scope="module")
def exported() -> set[str]:
    metrics = serving()
    try:
        # Every series name the registry would serve (a counter's _total among
        # them), children or not: collect() shows a labelled family's samples
        # only once it has a child.
        return set(metrics.registry._names_to_collectors)
    finally:
        metrics.close()


def named_in_rules(text: str) -> set[str]:
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return set(re.findall(r"\bvipfloat_[a-z0-9_]+\b", body))


def test_every_metric_in_the_rules_is_exported(exported):
    named = named_in_rules(RULES.read_text())
    assert {"vipfloat_vip_held", "vipfloat_quorum_ok", "vipfloat_conflict",
            "vipfloat_conflicts_total", "vipfloat_last_reconcile_timestamp_seconds"} <= named
    assert named - exported == set()


def test_a_misspelt_metric_would_be_caught(exported):
    named = named_in_rules("expr: sum by (vip) (vipfloat_vip_hold) > 1\n")
    assert named - exported == {"vipfloat_vip_hold"}


def test_every_alert_the_issue_asks_for_is_there():
    alerts = set(re.findall(r"alert: (\w+)", RULES.read_text()))
    assert {"VipfloatNoHolder", "VipfloatTwoHolders", "VipfloatQuorumLost",
            "VipfloatConflict", "VipfloatReconcileStale"} <= alerts


def test_a_vips_series_exist_at_zero_from_its_actors_start():
    # VipfloatConflict's increase() cannot see a counter born at 1, and a VIP not
    # held here must read 0 for VipfloatNoHolder's sum.
    metrics = serving()
    try:
        labels = {"master": "m", "vip": "198.51.100.250/24"}
        get = metrics.registry.get_sample_value
        assert get("vipfloat_conflicts_total", labels) is None
        metrics.declare("m", "198.51.100.250/24")
        assert get("vipfloat_conflicts_total", labels) == 0.0
        assert get("vipfloat_vip_held", labels) == 0.0
        assert get("vipfloat_conflict", labels) == 0.0
        assert get("vipfloat_transitions_total", {"master": "m", "action": "acquire"}) == 0.0
    finally:
        metrics.close()
    Metrics(None).declare("m", "198.51.100.250/24")      # disabled: a no-op
