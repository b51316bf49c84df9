"""RL² over REST like any other algorithm: submitted, streamed, registered, downloaded, evaluated
(a real uvicorn server, the session's Ray head with its job server, a real MLflow store; the
driver and the evaluation run as Ray jobs)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.service.helpers import job, sse, tiny_spec, wait_evaluation
from workers.contract import declared_metrics

pytestmark = pytest.mark.ray

NAME = "svc-rl2"


def rl2_spec(name: str = NAME, **over) -> dict:
    return tiny_spec(name, algorithm={"name": "rl2", "episodes_per_trial": 2, "hidden_size": 16,
                                      "encoder_sizes": [16], "epochs": 2},
                     task_family={"name": "navigation2d", "max_episode_steps": 20}, **over)


def test_rl2_spec_with_an_inner_step_setting_is_a_422_naming_the_field(live_service):
    with live_service.client() as c:
        before = c.get("/v1/jobs").json()["count"]
        for field in ("inner_steps", "inner_lr", "first_order"):
            spec = rl2_spec()
            spec["algorithm"] = {**spec["algorithm"], field: 1}
            r = c.post("/v1/jobs", json=spec)
            assert r.status_code == 422, r.text
            err = r.json()["error"]
            assert err["code"] == "invalid_request" and field in err["message"]
            assert "hidden state" in err["message"]
        r = c.post("/v1/jobs", json=rl2_spec(episodes_per_task=3))  # not whole trials of 2 episodes
        assert r.status_code == 422 and "episodes_per_task" in r.json()["error"]["message"]
        assert c.get("/v1/jobs").json()["count"] == before


def test_rl2_job_streams_registers_and_evaluates(live_service):
    with live_service.client() as c:
        r = c.post("/v1/jobs", json=rl2_spec(iterations=2))
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["metrics_declared"] == declared_metrics("rl2")
        events = list(sse(c, f"/v1/jobs/{created['id']}/events"))
        logs = c.get(f"/v1/jobs/{created['id']}/logs").json()["logs"]
        assert events[-1][0] == "end" and events[-1][1]["status"] == "SUCCEEDED", logs[-3000:]
        metrics = [d for k, d in events if k == "metrics"]
        assert [d["step"] for d in metrics] == [0, 1]
        for key in ("meta/return_first_episode", "meta/return_last_episode", "loss/policy", "meta/kl"):
            assert np.isfinite(metrics[0]["metrics"][key]), key
        done = job(c, created["id"])
        assert done["model_uri"] == f"models:/{NAME}/1"
        version = c.get(f"/v1/models/{NAME}/versions/1").json()
        assert version["metrics_declared"] == declared_metrics("rl2")

        asked = {"episodes": 3, "tasks": 2, "seed": 1, "split": "test"}  # steps: the model's default
        r = c.post(f"/v1/models/{NAME}/versions/1/evaluations", json=asked)
        assert r.status_code == 201, r.text
        assert r.json()["request"]["steps"] is None
        eval_id = r.json()["id"]
        ev = wait_evaluation(c, eval_id)
    assert ev["status"] == "SUCCEEDED", ev["message"]
    report = ev["result"]
    assert report["adaptation"] == "trial" and report["tasks"] == 2 and report["episodes"] == 3
    assert report["steps"] == 1
    curve = [p["mean"] for p in report["return_steps"]]  # episodes 0, 1, 2 of the trial, then the evaluation
    assert len(curve) == 4 and all(np.isfinite(curve))
    assert curve[0] == pytest.approx(ev["return_pre"]) and curve[-1] == pytest.approx(ev["return_post"])
