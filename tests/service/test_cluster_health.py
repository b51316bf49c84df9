"""Cluster view, liveness and Prometheus metrics of a live server on the session's Ray head."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.db import Job, Store

pytestmark = pytest.mark.ray


def test_healthz_is_ok_without_a_key(live_service):
    r = httpx.get(f"{live_service.url}/healthz", timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "ray": True, "mlflow": True, "database": True, "version": r.json()["version"]}


def test_cluster_shows_the_head_node_and_its_cpus(live_service):
    assert httpx.get(f"{live_service.url}/v1/cluster", timeout=30).status_code == 401
    with live_service.client() as c:
        r = c.get("/v1/cluster")
    assert r.status_code == 200, r.text
    cluster = r.json()
    assert cluster["cpus"] == 2.0 and cluster["gpus"] == 0.0
    assert 0.0 <= cluster["cpus_free"] <= 2.0 and cluster["gpus_free"] == 0.0
    [head] = [n for n in cluster["nodes"] if n["is_head"]]
    assert head["alive"] and head["cpus"] == 2.0 and head["memory_gb"] > 0
    assert head["address"] and len(head["node_id"]) == 56


def _samples(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_count_requests_by_route_template_and_jobs_by_status(live_service):
    store = Store(f"sqlite:///{live_service.home / 'metarl.db'}")
    try:
        with store.session() as s:  # a finished job: the poller leaves terminal rows alone
            s.add(Job(id="job-metrics0001", owner="admin", name="m", spec=json.dumps({}), status="SUCCEEDED",
                      submission_id="job-metrics0001", iterations=1, rollout_workers=1))
    finally:
        store.dispose()
    with live_service.client() as c:
        assert c.get("/v1/models/nothing-here").status_code == 404
        assert c.get("/v1/models/nothing-else").status_code == 404
        assert c.get("/v1/cluster").status_code == 200
    r = httpx.get(f"{live_service.url}/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = _samples(r.text)

    requests = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
                for s in families["metarl_http_requests"] if s.name.endswith("_total")}
    assert requests[("GET", "/v1/models/{name}", "404")] >= 2
    assert requests[("GET", "/v1/cluster", "200")] >= 1
    assert not any("nothing-here" in route for _, route, _ in requests), "labels are route templates"
    latency = {(s.labels["route"], s.labels["status"]): s.value
               for s in families["metarl_http_request_duration_seconds"] if s.name.endswith("_count")}
    assert latency[("/v1/cluster", "200")] >= 1

    jobs = {s.labels["status"]: s.value for s in families["metarl_jobs"]}
    assert jobs["SUCCEEDED"] >= 1 and set(jobs) >= {"PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"}
