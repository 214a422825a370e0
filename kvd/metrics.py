"""
Prometheus metrics of one node, on a registry of its own.

Counters and histograms are fed where things happen (HTTP requests, WAL
batches, 2PC rounds); gauges of state (indexes, lag, keys, session) are read
at scrape time, so nothing is computed when nobody looks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from kvd.node import Node

_KNOWN_ROUTES = ("/api/v1/", "/api/v1/keys", "/api/v1/txn", "/api/v1/watch", "/api/v1/cluster",
                 "/api/v1/openapi.json", "/healthz", "/readyz", "/metrics")
_SESSION_STATES = ("CONNECTED", "SUSPENDED", "LOST")


def route_of(path: bytes) -> str:
    """A bounded label for a request path: keys collapse to their route."""
    text = path.decode("utf-8", "replace")
    if text.startswith("/api/v1/keys/"):
        return "/api/v1/keys/{key}"
    if text.startswith("/peer/v1/"):
        return "/peer/v1/" + text[len("/peer/v1/"):].split("/", 1)[0]
    return text if text in _KNOWN_ROUTES else "other"


class _StateCollector(Collector):
    """Gauges computed from the node at scrape time."""

    def __init__(self, node: Callable[[], Node | None],
                 session_state: Callable[[], str | None]) -> None:
        self._node = node
        self._session_state = session_state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        node = self._node()
        if node is not None:
            yield GaugeMetricFamily("kvd_commit_index", "Highest committed log index.",
                                    value=node.rlog.commit_index)
            yield GaugeMetricFamily("kvd_applied_index", "Highest applied log index.",
                                    value=node.store.applied_index)
            yield GaugeMetricFamily("kvd_last_index", "Last log index held here.",
                                    value=node.rlog.last_index)
            yield GaugeMetricFamily("kvd_epoch", "Epoch this node leads or follows.",
                                    value=node.epoch)
            yield GaugeMetricFamily("kvd_keys", "Keys stored.", value=len(node.store))
            yield GaugeMetricFamily("kvd_value_bytes", "Bytes of values stored.",
                                    value=node.store.value_bytes)
            yield GaugeMetricFamily("kvd_revision", "Store revision.",
                                    value=node.store.revision)
            lag = GaugeMetricFamily("kvd_follower_lag_entries",
                                    "Entries a follower is behind the leader (leader only).",
                                    labels=["follower"])
            if node.leader is not None:
                for link in node.leader.links.values():
                    lag.add_metric([link.node_id],
                                   max(0, node.rlog.last_index - link.match_index))
            yield lag
        state = self._session_state()
        session = GaugeMetricFamily("kvd_zookeeper_session", "1 for the current session state.",
                                    labels=["state"])
        for name in _SESSION_STATES:
            session.add_metric([name], 1.0 if state == name else 0.0)
        yield session


class Metrics:
    """Every metric of one node."""

    def __init__(self, node: Callable[[], Node | None],
                 session_state: Callable[[], str | None] = lambda: None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("kvd_http_requests", "HTTP requests answered.",
                                ["route", "method", "status"], registry=self.registry)
        self.request_seconds = Histogram("kvd_http_request_seconds", "HTTP request latency.",
                                         ["route", "method"], registry=self.registry)
        self.wal_fsync_seconds = Histogram(
            "kvd_wal_batch_seconds", "Time to write and fsync one WAL batch.",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.wal_batch_appends = Histogram(
            "kvd_wal_batch_appends", "Appends covered by one WAL write + fsync (group commit).",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024))
        self.round_seconds = Histogram(
            "kvd_replication_round_seconds", "From proposing a log entry to its commit.",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0))
        self.batch_commands = Histogram(
            "kvd_replication_batch_commands", "Commands batched in one log entry.",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096))
        self.registry.register(_StateCollector(node, session_state))

    def observe_request(self, request: Any) -> None:
        started = getattr(request, "kvd_started", None)
        route = route_of(request.path)
        method = request.method.decode("ascii", "replace")
        self.requests.labels(route, method, str(request.code)).inc()
        if started is not None:
            self.request_seconds.labels(route, method).observe(time.monotonic() - started)

    def observe_wal_batch(self, appends: int, seconds: float) -> None:
        self.wal_batch_appends.observe(appends)
        self.wal_fsync_seconds.observe(seconds)

    def observe_round(self, commands: int, seconds: float) -> None:
        self.batch_commands.observe(commands)
        self.round_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
