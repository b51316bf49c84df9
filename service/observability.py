"""Prometheus metrics of one app, in a registry of its own (never the process-global one, so two
apps in a process, e.g. in tests, do not collide):

* ``metarl_http_requests_total{method, route, status}``: requests, by route *template*
  (``/v1/jobs/{job_id}``, not the path, so the label set stays small);
* ``metarl_http_request_duration_seconds{method, route, status}``: time to the end of the
  response (a server-sent event stream counts until it closes);
* ``metarl_jobs{status}`` and ``metarl_evaluations{status}``: rows of the job store by status,
  counted when scraped (jobs are kept fresh by the poller; an evaluation's status is the one it
  had when last read).

``GET /metrics`` (service.routers.health) renders :func:`render`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import Evaluation, Job

log = logging.getLogger("metarl.service.observability")

CONTENT_TYPE = CONTENT_TYPE_LATEST
STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED")
#: requests that matched no route share one label value
UNMATCHED = "<unmatched>"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class HttpMetrics:
    """The request counter and latency histogram of one app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter("metarl_http_requests", "HTTP requests", labels, registry=registry)
        self.latency = Histogram("metarl_http_request_duration_seconds",
                                 "HTTP request latency (to the end of the response)",
                                 labels, buckets=BUCKETS, registry=registry)

    def observe(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)


class MetricsMiddleware:
    """Times every HTTP request and labels it with the route template it matched."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.observe(method=scope.get("method", "GET"), route=route, status=status,
                                 seconds=time.perf_counter() - start)


class StoreCollector(Collector):
    """Jobs and evaluations by status, counted in the job store at scrape time."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        store = getattr(self.app.state, "store", None)
        if store is None:  # scraped before start-up finished
            return
        for table, name, what in ((Job, "metarl_jobs", "jobs"), (Evaluation, "metarl_evaluations", "evaluations")):
            try:
                with store.session() as s:
                    counts = dict(s.execute(select(table.status, func.count()).group_by(table.status)).tuples().all())
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the store is briefly locked
                log.warning("counting %s for /metrics: %s", what, exc)
                continue
            gauge = GaugeMetricFamily(name, f"{what} in the job store, by status", labels=["status"])
            for status in sorted(set(STATUSES) | set(counts)):
                gauge.add_metric([status], float(counts.get(status, 0)))
            yield gauge


def install(app: FastAPI) -> None:
    """Give ``app`` its own registry (``app.state.metrics_registry``), the request metrics
    middleware, and the job-store collector."""
    registry = CollectorRegistry(auto_describe=False)
    metrics = HttpMetrics(registry)
    registry.register(StoreCollector(app))
    app.state.metrics_registry = registry
    app.add_middleware(MetricsMiddleware, metrics=metrics)


def render(request: Request) -> bytes:
    """The app's metrics in the Prometheus text format."""
    return generate_latest(request.app.state.metrics_registry)
