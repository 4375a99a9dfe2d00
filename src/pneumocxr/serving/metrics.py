"""Prometheus metrics of one app (its own registry, so several apps in one process do not clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "pneumocxr_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "pneumocxr_request_seconds",
            "End-to-end request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "pneumocxr_model_seconds",
            "Decode + model time per prediction",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("pneumocxr_in_flight", "Requests being handled", registry=r)
        self.queue_depth = Gauge("pneumocxr_queue_depth", "Requests waiting for a model slot", registry=r)
        self.rejected = Counter(
            "pneumocxr_rejected", "Requests refused because the queue was full", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
