"""Prometheus metrics: bounded route labels, and state gauges read at scrape time."""

from __future__ import annotations

from typing import Any

from kvd.metrics import Metrics, route_of
from kvd.store import put_command
from tests.support import InlineReactor, open_inline_node


def test_route_labels_are_bounded() -> None:
    assert route_of(b"/api/v1/keys/any/thing") == "/api/v1/keys/{key}"
    assert route_of(b"/peer/v1/prepare") == "/peer/v1/prepare"
    assert route_of(b"/api/v1/") == "/api/v1/"
    assert route_of(b"/random/garbage") == "other"


def test_scrape_reports_state_requests_wal_and_rounds(tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = open_inline_node(str(tmp_path), reactor)
    metrics = Metrics(lambda: node, lambda: "SUSPENDED")
    node.leader.observe_round = metrics.observe_round  # type: ignore[union-attr]
    node.submit([put_command(b"k", b"value", "r1")])
    reactor.advance(0)

    class Request:
        path, method, code, kvd_started = b"/api/v1/keys/k", b"PUT", 200, 0.0

    metrics.observe_request(Request())
    metrics.observe_wal_batch(3, 0.002)
    text = metrics.render().decode()
    assert "kvd_keys 1.0" in text
    assert "kvd_value_bytes 5.0" in text
    assert f"kvd_applied_index {node.store.applied_index}.0" in text
    assert 'kvd_zookeeper_session{state="SUSPENDED"} 1.0' in text
    assert ('kvd_http_requests_total{method="PUT",route="/api/v1/keys/{key}",status="200"} 1.0'
            in text)
    assert "kvd_wal_batch_appends_count 1.0" in text
    assert "kvd_replication_round_seconds_count 1.0" in text
    assert "kvd_replication_batch_commands_sum 1.0" in text
