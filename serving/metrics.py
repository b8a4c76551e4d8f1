"""Prometheus metrics of one server, on its own registry (several servers can share a process).

Exposed at `GET /metrics`: requests by route and status code, request latency by route,
latency by pipeline stage (queue wait, batch run, and each model's preprocess / inference /
decode as the perceiver reports them), queue depth, batch sizes and dropped frames by reason
(`queue_full`, `deadline`, `stream_newest_wins`, `pixel_budget`).
A client that left mid-body is counted with code 499.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("perception_requests", "Requests by route and status code",
                                ["route", "code"], registry=r)
        self.latency = Histogram("perception_request_seconds", "Request latency by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram("perception_stage_seconds", "Latency by pipeline stage",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("perception_queue_depth", "Requests waiting for a batch",
                                 registry=r)
        self.batch_size = Histogram("perception_batch_size", "Frames per batch run",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), registry=r)
        self.dropped = Counter("perception_dropped_frames", "Frames not processed, by reason",
                               ["reason"], registry=r)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
