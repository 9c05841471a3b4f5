"""The Prometheus view of received batches, following Prometheus's naming conventions.

Latencies arrive in milliseconds (the seed's JSON) and are exposed in seconds, the base
unit Prometheus asks for (`promtool check metrics` refuses "_ms" names). Labels are only
fixed names (statistic, token kind, reject reason): a fleet of desktops never multiplies
the series (no label per session).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from server.metrics.batch import TOKEN_KINDS, MetricsBatch

log = logging.getLogger(__name__)

HIGH_P99_MS = 1000.0
STATS = ("avg", "p95", "p99")
REJECT_REASONS = ("invalid", "too_large", "rate_limited", "origin")
# Latency buckets around what a voice answer feels like: snappy, fine, slow, broken.
BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class LatencyMetrics:
    """Counters, gauges and a histogram over the batches, in their own registry (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batches = Counter("sandra_metrics_batches", "Latency batches received", registry=self.registry)
        self.high_p99 = Counter("sandra_metrics_high_p99_batches", f"Batches reporting p99 over {HIGH_P99_MS:g} ms",
                                registry=self.registry)
        self.latest = Gauge("sandra_latency_latest_seconds", "Latest reported latency statistic", ["stat"],
                            registry=self.registry)
        self.reported = Histogram("sandra_latency_reported_seconds", "Distribution of reported latency statistics",
                                  ["stat"], buckets=BUCKETS_S, registry=self.registry)
        self.tokens = Counter("sandra_tokens", "Tokens the desktops used (input includes its text, audio and "
                              "cached kinds: do not sum the kinds)", ["kind"], registry=self.registry)
        self.cost = Counter("sandra_cost_usd", "Estimated cost the desktops reported, in US dollars",
                            registry=self.registry)
        self.last_received = Gauge("sandra_metrics_last_batch_timestamp_seconds", "When the latest batch arrived",
                                   registry=self.registry)
        self.rejected = Counter("sandra_metrics_rejected", "Posts refused since the receiver started", ["reason"],
                                registry=self.registry)
        # Present at 0 from the start, so alerts and rate() work before the first event.
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for kind in TOKEN_KINDS:
            self.tokens.labels(kind)

    def observe(self, batch: MetricsBatch, received_at: float) -> None:
        self.batches.inc()
        if batch.p99 > HIGH_P99_MS:
            self.high_p99.inc()
        for stat in STATS:
            seconds = getattr(batch, stat) / 1000
            self.latest.labels(stat).set(seconds)
            self.reported.labels(stat).observe(seconds)
        if batch.usage is not None:
            for kind, count in batch.usage.tokens():
                self.tokens.labels(kind).inc(count)
            if batch.usage.cost_usd is not None:
                self.cost.inc(batch.usage.cost_usd)
        self.last_received.set(received_at)

    def render(self) -> bytes:
        return generate_latest(self.registry)
