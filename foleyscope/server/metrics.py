"""Prometheus metrics at /metrics: queue depth and jobs by status (read from the store when scraped, so
they survive restarts and never drift), stage and step duration histograms, upload bytes, errors.
A registry per app, so two servers in one process (tests) do not collide."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from foleyscope.server.store import JobStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _StoreCollector(Collector):
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.store.counts()
        depth = GaugeMetricFamily("foleyscope_queue_depth", "Jobs waiting for a worker")
        depth.add_metric([], counts["queued"])
        yield depth
        jobs = GaugeMetricFamily("foleyscope_jobs", "Jobs on record, by status", labels=["status"])
        for status, n in counts.items():
            jobs.add_metric([status], n)
        yield jobs


class Metrics:
    def __init__(self, store: JobStore) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage = Histogram("foleyscope_stage_seconds", "Wall time of each pipeline stage of a job",
                               ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.step = Histogram("foleyscope_step_seconds", "Wall time of one denoising step",
                              buckets=STEP_BUCKETS, registry=r)
        self.job = Histogram("foleyscope_job_seconds", "Processing time of a succeeded job (no queue, no upload)",
                             buckets=STAGE_BUCKETS, registry=r)
        self.upload_bytes = Counter("foleyscope_upload_bytes", "Request body bytes received on job submissions",
                                    registry=r)
        self.errors = Counter("foleyscope_errors", "Refused requests and failed jobs, by error code",
                              ["error"], registry=r)
        self.finished = Counter("foleyscope_jobs_finished", "Jobs that ended, by status", ["status"], registry=r)
        r.register(_StoreCollector(store))

    def render(self) -> bytes:
        return generate_latest(self.registry)
