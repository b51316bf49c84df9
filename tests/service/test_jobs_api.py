"""Jobs over REST end to end: a real uvicorn server, a real Ray head with its job server, a real
MLflow store; drivers run as Ray jobs (``python -m workers.driver``)."""

from __future__ import annotations

import httpx
import pytest
from ray.util.state import list_actors, list_placement_groups

from tests.service.helpers import job, sse, sse_events, tiny_spec, wait_for, wait_status
from workers.contract import declared_metrics

pytestmark = pytest.mark.ray


def test_submit_streams_live_metrics_and_succeeds(live_service):
    with live_service.client() as c:
        r = c.post("/v1/jobs", json=tiny_spec("svc-e2e", iterations=3))
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["status"] == "PENDING"
        assert created["progress"] == {"iteration": 0, "iterations": 3, "fraction": 0.0}
        assert created["metrics_declared"] == declared_metrics("maml")  # stored with the job at submission
        assert r.headers["location"] == f"/v1/jobs/{created['id']}"
        events = list(sse(c, f"/v1/jobs/{created['id']}/events"))
    kinds = [k for k, _ in events]
    with live_service.client() as c:
        logs = c.get(f"/v1/jobs/{created['id']}/logs").json()["logs"]
    assert kinds[-1] == "end" and events[-1][1]["status"] == "SUCCEEDED", (events[-1][1]["message"], logs[-3000:])
    steps = [d["step"] for k, d in events if k == "metrics"]
    assert steps == [0, 1, 2]
    first_metrics = kinds.index("metrics")
    statuses_before = [d["status"] for k, d in events[:first_metrics] if k == "status"]
    assert statuses_before[-1] == "RUNNING", "metrics arrive while the job runs"
    assert any(k == "status" and d["status"] == "SUCCEEDED" for k, d in events[first_metrics:])
    m = events[first_metrics][1]["metrics"]
    for key in ("meta/return_pre", "meta/return_post", "loss/outer", "meta/kl", "time/sample_s",
                "perf/env_steps_per_s"):
        assert key in m

    with live_service.client() as c:
        # every event's id is the last iteration streamed; a reconnect with Last-Event-ID gets the rest
        ids = [i for i, _, _ in sse_events(c, f"/v1/jobs/{created['id']}/events")]
        assert ids[-1] == "2" and all(i is not None for i in ids)
        again = list(sse_events(c, f"/v1/jobs/{created['id']}/events", last_event_id="1"))
        assert [(e, d.get("step")) for _, e, d in again if e == "metrics"] == [("metrics", 2)]
        assert again[-1][1] == "end" and again[-1][2]["status"] == "SUCCEEDED"
        done = job(c, created["id"])
        assert done["progress"]["iteration"] == 3 and done["progress"]["fraction"] == 1.0
        assert done["model_name"] == "svc-e2e" and done["model_version"] == "1"
        assert done["model_uri"] == "models:/svc-e2e/1" and done["run_id"]
        latest = done["latest_metrics"]
        assert latest["meta/return_post"] == pytest.approx(events[-2][1]["metrics"]["meta/return_post"]) \
            if events[-2][0] == "metrics" else "meta/return_post" in done["latest_metrics"]
        hist = c.get(f"/v1/jobs/{created['id']}/metrics", params={"key": ["meta/return_post"]}).json()
        assert [p["step"] for p in hist["metrics"]["meta/return_post"]] == [0, 1, 2]
        logs = c.get(f"/v1/jobs/{created['id']}/logs", params={"tail": 200}).json()["logs"]
        assert "iteration 3/3" in logs
        listed = c.get("/v1/jobs", params={"status": "SUCCEEDED"}).json()
        assert created["id"] in [j["id"] for j in listed["data"]] and listed["count"] >= 1


def test_bad_input_is_a_clear_error_and_nothing_is_created(live_service):
    with live_service.client() as c:
        before = c.get("/v1/jobs").json()["count"]
        r = c.post("/v1/jobs", json=tiny_spec(meta_batch_size=0))
        assert r.status_code == 422
        err = r.json()["error"]
        assert err["code"] == "invalid_request" and "meta_batch_size" in err["message"]
        assert err["details"][0]["field"] == "meta_batch_size"
        r = c.post("/v1/jobs", json={**tiny_spec(), "entrypoint": "rm -rf /"})
        assert r.status_code == 422 and "entrypoint" in r.json()["error"]["message"]
        r = c.post("/v1/jobs", json=tiny_spec(task_family={"name": "nope"}))
        assert r.status_code == 422 and "unknown task family" in r.text
        r = c.post("/v1/jobs", content=b'{"name": "' + b"x" * (2 << 20) + b'"}',
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        r = c.patch("/v1/jobs/job-missing", json={"rollout_workers": 0})
        assert r.status_code == 422 and "rollout_workers" in r.json()["error"]["message"]
        assert c.get("/v1/jobs/job-missing").status_code == 404
        assert c.get("/v1/jobs").json()["count"] == before
    assert httpx.get(f"{live_service.url}/v1/jobs").status_code == 401
    assert httpx.get(f"{live_service.url}/v1/jobs", headers={"Authorization": "Bearer mrl_x_y"}).status_code == 401


def test_owners_idempotency_and_keys(live_service):
    with live_service.client() as admin:
        r = admin.post("/v1/keys", json={"owner": "bob"})
        assert r.status_code == 201
        bob_key = r.json()["key"]
        assert bob_key.startswith("mrl_")
        assert admin.post("/v1/keys", json={"owner": "not valid!"}).status_code == 422
    spec = tiny_spec("bob-job", iterations=1)
    with live_service.client(bob_key) as bob:
        assert bob.post("/v1/keys", json={"owner": "eve"}).status_code == 403
        first = bob.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "k-1"})
        again = bob.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 201 and again.status_code == 200
        assert first.json()["id"] == again.json()["id"]
        other = bob.post("/v1/jobs", json={**spec, "seed": 1}, headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 409 and other.json()["error"]["details"]["job_id"] == first.json()["id"]
        job_id = first.json()["id"]
        assert [j["id"] for j in bob.get("/v1/jobs").json()["data"]] == [job_id]
    with live_service.client() as admin:
        carol_key = admin.post("/v1/keys", json={"owner": "carol"}).json()["key"]
        assert job(admin, job_id)["owner"] == "bob"  # admins see every job
    with live_service.client(carol_key) as carol:
        for r in (carol.get(f"/v1/jobs/{job_id}"), carol.get(f"/v1/jobs/{job_id}/events"),
                  carol.post(f"/v1/jobs/{job_id}/cancel"),
                  carol.patch(f"/v1/jobs/{job_id}", json={"rollout_workers": 2})):
            assert r.status_code == 404, r.text
        assert carol.get("/v1/jobs").json()["count"] == 0
        taken = carol.post("/v1/jobs", json=tiny_spec("carol-job", register_as="bob-job"))
        assert taken.status_code == 409 and "register_as" in taken.text
    with live_service.client(bob_key) as bob:
        wait_status(bob, job_id, {"SUCCEEDED"})


def _alive(class_name: str, address: str) -> list:
    return list_actors(address=address, filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")])


def test_scale_cancel_frees_actors_then_resume_continues_from_checkpoint(live_service, ray_head):
    address = ray_head.dashboard_url
    with live_service.client() as c:
        created = c.post("/v1/jobs", json=tiny_spec("svc-long", iterations=30)).json()
        job_id = created["id"]
        wait_for(lambda: job(c, job_id)["progress"]["iteration"] >= 1, timeout=240, what="the first iteration")
        assert len(_alive("RolloutWorker", address)) == 1
        r = c.patch(f"/v1/jobs/{job_id}", json={"rollout_workers": 2})
        assert r.status_code == 200 and r.json()["rollout_workers"] == 2

        def workers_metric() -> list[float]:
            points = c.get(f"/v1/jobs/{job_id}/metrics", params={"key": ["perf/rollout_workers"]}).json()["metrics"]
            return [p["value"] for p in points.get("perf/rollout_workers", [])]

        wait_for(lambda: 2.0 in workers_metric(), timeout=120, what="2 rollout workers")
        assert workers_metric()[0] == 1.0
        assert len(_alive("RolloutWorker", address)) == 2

        stopped = c.post(f"/v1/jobs/{job_id}/cancel")
        assert stopped.status_code == 200 and stopped.json()["status"] == "STOPPED"
        wait_for(lambda: not _alive("RolloutWorker", address) and not _alive("Learner", address), timeout=10,
                 what="the job's actors to be gone", every=0.2)
        assert not [p for p in list_placement_groups(address=address) if p.state == "CREATED"]
        assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 409

        def cancelled_log() -> str | None:
            text = c.get(f"/v1/jobs/{job_id}/logs").json()["logs"]
            return text if "cancelled" in text else None

        # the driver says it was cancelled; no stack dump that reads like a crash
        stopped_log = wait_for(cancelled_log, timeout=30, what="the driver's cancel line", every=0.5)
        assert "Traceback" not in stopped_log, stopped_log[-3000:]
        done_before = job(c, job_id)["progress"]["iteration"]
        assert 1 <= done_before < 30

        resumed = c.post(f"/v1/jobs/{job_id}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["attempt"] == 2 and resumed.json()["submission_id"] == f"{job_id}-r2"
        try:
            final = wait_status(c, job_id, {"SUCCEEDED", "FAILED"}, timeout=300)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {job(c, job_id)}\n{c.get(f'/v1/jobs/{job_id}/logs').text[-3000:]}") from None
        assert final["status"] == "SUCCEEDED", c.get(f"/v1/jobs/{job_id}/logs").text[-3000:]
        assert final["run_id"] == created["run_id"] or created["run_id"] is None
        steps = [p["step"] for p in c.get(f"/v1/jobs/{job_id}/metrics", params={"key": ["perf/env_steps_total"]})
                 .json()["metrics"]["perf/env_steps_total"]]
        # one point per iteration: the resumed attempt continued at the checkpoint, not at 0
        assert sorted(steps) == list(range(30)) or sorted(set(steps)) == list(range(30))
        assert len(steps) - 30 <= 1  # at most the iteration in flight at the cancel is re-run
        logs = c.get(f"/v1/jobs/{job_id}/logs").json()["logs"]
        assert "resumed run" in logs
        assert c.post(f"/v1/jobs/{job_id}/resume").status_code == 409


def test_service_killed_and_restarted_mid_job_loses_nothing(live_service):
    with live_service.client() as c:
        job_id = c.post("/v1/jobs", json=tiny_spec("svc-restart", iterations=25)).json()["id"]
        wait_for(lambda: job(c, job_id)["progress"]["iteration"] >= 1, timeout=240, what="the first iteration")
    live_service.restart()  # SIGKILL, then a fresh process on the same data dir
    with live_service.client() as c:
        again = job(c, job_id)
        assert again["status"] in ("RUNNING", "SUCCEEDED")
        final = wait_status(c, job_id, {"SUCCEEDED", "FAILED"}, timeout=300)
        assert final["status"] == "SUCCEEDED" and final["progress"]["iteration"] == 25
        assert final["model_version"] is not None
