"""The registry and evaluations over REST: a real uvicorn server, a real MLflow store with a model
trained here by the real driver on the session's Ray, and evaluations run as Ray jobs."""

from __future__ import annotations

import io
import signal
import tarfile
from dataclasses import dataclass

import mlflow
import numpy as np
import pytest

from tests.ports import free_port
from tests.service.conftest import LiveService, service_env
from tests.service.helpers import wait_evaluation
from workers.contract import declared_metrics

pytestmark = pytest.mark.ray

MODEL = "svc-registry"


@dataclass(frozen=True)
class Trained:
    name: str
    run_id: str
    final_metrics: dict[str, float]
    bob: str  # owns nothing
    carol: str  # owns version 2 only


def _key(live_service: LiveService, owner: str) -> str:
    with live_service.client() as c:
        r = c.post("/v1/keys", json={"owner": owner})
        assert r.status_code == 201, r.text
        return r.json()["key"]


@pytest.fixture(scope="module")
def trained(live_service, ray_session) -> Trained:  # noqa: ANN001
    """One tiny model trained by the real driver into the live service's MLflow store (owner
    admin, version 1), plus version 2 of the same files registered for owner carol."""
    from workers.contract import JobSpec
    from workers.driver import run_job

    spec = JobSpec.model_validate({
        "name": MODEL, "algorithm": {"name": "maml", "inner_lr": 0.1}, "task_family": {"name": "navigation2d"},
        "policy": {"hidden_sizes": [16, 16]}, "meta_batch_size": 4, "episodes_per_task": 4, "iterations": 2,
        "checkpoint_every": 2, "resources": {"rollout_workers": 1, "envs_per_worker": 16}, "register_as": MODEL,
    })
    env = live_service.env
    previous_uri = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "METARL_ARTIFACT_ROOT", "METARL_HOME"):
            mp.setenv(var, env[var])
        mp.setenv("METARL_OWNER", "admin")
        result = run_job(spec)
        assert result.status == "SUCCEEDED" and result.model_uri == f"models:/{MODEL}/1"
        client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
        v1 = client.get_model_version(MODEL, "1")
        v2 = client.create_model_version(MODEL, v1.source, run_id=v1.run_id, model_id=v1.model_id,
                                         tags={**v1.tags, "owner": "carol", "job_id": "job-carol"})
        assert v2.version in (2, "2")
    mlflow.set_tracking_uri(previous_uri)
    return Trained(name=MODEL, run_id=result.run_id, final_metrics=result.final_metrics,
                   bob=_key(live_service, "bob"), carol=_key(live_service, "carol"))


def test_models_versions_and_show_with_tags_and_metrics(live_service, trained):
    with live_service.client() as c:
        models = c.get("/v1/models").json()
        [m] = [m for m in models["data"] if m["name"] == MODEL]
        assert m["versions"] == 2 and m["latest_version"] == "2" and models["count"] >= 1
        assert c.get(f"/v1/models/{MODEL}").json()["versions"] == 2

        versions = c.get(f"/v1/models/{MODEL}/versions").json()
        assert versions["count"] == 2 and [v["version"] for v in versions["data"]] == ["2", "1"]

        v1 = c.get(f"/v1/models/{MODEL}/versions/1").json()
    assert v1["uri"] == f"models:/{MODEL}/1" and v1["run_id"] == trained.run_id and v1["status"] == "READY"
    tags = v1["tags"]
    assert tags["owner"] == "admin" and tags["job_id"].startswith("job-")
    assert tags["algorithm"] == "maml" and tags["task_family"] == "navigation2d"
    assert v1["metrics_declared"] == declared_metrics("maml")  # what the CLI shows of it, by its algorithm
    assert float(tags["return_post"]) == pytest.approx(trained.final_metrics["meta/return_post"])
    for key in ("meta/return_pre", "meta/return_post", "loss/outer", "perf/env_steps_total"):
        assert v1["metrics"][key] == pytest.approx(trained.final_metrics[key]), key
    assert v1["created_at"]


def test_each_owner_sees_only_its_versions(live_service, trained):
    with live_service.client(trained.carol) as c:
        [m] = c.get("/v1/models").json()["data"]
        assert m["name"] == MODEL and m["versions"] == 1 and m["latest_version"] == "2"
        assert [v["version"] for v in c.get(f"/v1/models/{MODEL}/versions").json()["data"]] == ["2"]
        assert c.get(f"/v1/models/{MODEL}/versions/2").json()["tags"]["owner"] == "carol"
        assert c.get(f"/v1/models/{MODEL}/versions/1").status_code == 404
        assert c.put(f"/v1/models/{MODEL}/aliases/mine", json={"version": "1"}).status_code == 404
    with live_service.client(trained.bob) as c:
        assert c.get("/v1/models").json() == {"data": [], "count": 0}
        for path in (f"/v1/models/{MODEL}", f"/v1/models/{MODEL}/versions", f"/v1/models/{MODEL}/versions/1",
                     f"/v1/models/{MODEL}/versions/1/download", f"/v1/models/{MODEL}/versions/1/evaluations"):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
        assert c.post(f"/v1/models/{MODEL}/versions/1/evaluations", json={}).status_code == 404
        assert c.put(f"/v1/models/{MODEL}/aliases/x", json={"version": "1"}).status_code == 404


def test_alias_set_moved_and_read_back(live_service, trained):
    with live_service.client() as c:
        r = c.put(f"/v1/models/{MODEL}/aliases/champion", json={"version": "1"})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == "1" and r.json()["aliases"] == ["champion"]
        assert c.get(f"/v1/models/{MODEL}/versions/1").json()["aliases"] == ["champion"]
        assert c.get(f"/v1/models/{MODEL}").json()["aliases"] == {"champion": "1"}
        listed = {v["version"]: v["aliases"] for v in c.get(f"/v1/models/{MODEL}/versions").json()["data"]}
        assert listed["1"] == ["champion"]

        assert c.put(f"/v1/models/{MODEL}/aliases/champion", json={"version": "2"}).status_code == 200
        assert c.get(f"/v1/models/{MODEL}/versions/1").json()["aliases"] == []
        assert c.get(f"/v1/models/{MODEL}").json()["aliases"] == {"champion": "2"}
    with live_service.client(trained.carol) as c:  # carol's only version: she sees the alias
        assert c.get(f"/v1/models/{MODEL}").json()["aliases"] == {"champion": "2"}


@pytest.mark.parametrize("alias", ["latest", "v3", "V12", "has%20space", "a.b", "x" * 256])
def test_bad_alias_is_a_422_naming_the_field(live_service, trained, alias):
    with live_service.client() as c:
        r = c.put(f"/v1/models/{MODEL}/aliases/{alias}", json={"version": "1"})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["details"][0]["field"] == "alias"


def test_bad_or_unknown_alias_target(live_service, trained):
    with live_service.client() as c:
        r = c.put(f"/v1/models/{MODEL}/aliases/ok", json={"version": "one"})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "version"
        r = c.put(f"/v1/models/{MODEL}/aliases/ok", json={"version": "1", "extra": 1})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "extra"
        r = c.put(f"/v1/models/{MODEL}/aliases/ok", json={"version": "99"})
        assert r.status_code == 404 and "99" in r.json()["error"]["message"]
        assert c.get(f"/v1/models/{MODEL}/versions/99").status_code == 404
        assert c.get("/v1/models/no-such-model/versions").status_code == 404
        assert "ok" not in c.get(f"/v1/models/{MODEL}").json()["aliases"]


def test_download_extracts_to_a_loadable_policy(live_service, trained, tmp_path):
    from workers.model import MetaPolicy

    with live_service.client() as c:
        r = c.get(f"/v1/models/{MODEL}/versions/1/download")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/gzip"
    assert f'filename="{MODEL}-v1.tar.gz"' in r.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        names = tar.getnames()
        tar.extractall(tmp_path, filter="data")
    top = tmp_path / f"{MODEL}-v1"
    assert {f"{MODEL}-v1/MLmodel", f"{MODEL}-v1/artifacts/params.pt", f"{MODEL}-v1/artifacts/policy.json"} <= set(names)
    assert all(n == top.name or n.startswith(f"{top.name}/") for n in names)

    policy = MetaPolicy.load(str(top))  # the user-facing loader takes the extracted archive as is
    assert policy.algorithm == "maml" and policy.family.name == "navigation2d"
    obs_dim, act_dim = policy.policy_spec.obs_dim, policy.policy_spec.act_dim
    assert policy.act(np.zeros(obs_dim, np.float32)).shape == (act_dim,)
    batch = policy.act(np.random.default_rng(0).normal(size=(5, obs_dim)).astype(np.float32))
    assert batch.shape == (5, act_dim) and np.isfinite(batch).all()


def test_evaluation_runs_on_ray_and_reports_pre_and_post_return(live_service, trained):
    from service import evaluations
    from workers import contract, evaluate

    # the names the service looks the report up by are the engine's (both from the job contract)
    assert (evaluations.EVALUATION_EXPERIMENT, evaluations.EVALUATION_ID_TAG, evaluations.EVALUATION_REPORT) == (
        evaluate.EXPERIMENT, evaluate.EVALUATION_ID_TAG, contract.EVALUATION_REPORT)
    with live_service.client() as c:
        asked = {"episodes": 2, "steps": 2, "tasks": 2, "seed": 3, "later_lr": 0.05, "split": "test"}
        r = c.post(f"/v1/models/{MODEL}/versions/1/evaluations", json=asked)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["id"].startswith("eval-") and created["status"] == "PENDING"
        assert created["request"] == asked
        assert r.headers["location"] == f"/v1/evaluations/{created['id']}"
        done = wait_evaluation(c, created["id"])
        assert done["status"] == "SUCCEEDED", done["message"]
        listed = c.get(f"/v1/models/{MODEL}/versions/1/evaluations").json()
    for key in ("return_pre", "return_post"):
        assert isinstance(done[key], float) and np.isfinite(done[key]), key
    assert done["success_post"] is None  # navigation reports no success (not a success rate of 0)
    assert done["summary"] == {"return_pre": done["return_pre"], "return_post": done["return_post"]}
    report = done["result"]
    assert report["tasks"] == 2 and report["model_name"] == MODEL and report["model_version"] == 1
    assert report["return_post"]["mean"] == pytest.approx(done["return_post"])
    assert report["seed"] == 3 and report["run_id"] == done["run_id"]
    # the same code path as benchmarks/reproduce.py: the curve over inner steps, the later step size
    assert report["steps"] == 2 and report["later_lr"] == 0.05 and report["split"] == "test"
    curve = [p["mean"] for p in report["return_steps"]]  # after k = 0, 1, 2 inner steps
    assert len(curve) == 3
    assert curve[0] == pytest.approx(done["return_pre"]) and curve[-1] == pytest.approx(done["return_post"])
    assert [e["id"] for e in listed["data"]] == [created["id"]] and listed["count"] == 1

    run = mlflow.MlflowClient(live_service.env["MLFLOW_TRACKING_URI"]).get_run(done["run_id"])
    assert run.data.tags[evaluate.EVALUATION_ID_TAG] == created["id"]
    assert run.data.metrics["eval/return_post"] == pytest.approx(done["return_post"])

    with live_service.client(trained.bob) as c:  # another owner's evaluation does not exist for bob
        assert c.get(f"/v1/evaluations/{created['id']}").status_code == 404
    with live_service.client(trained.carol) as c:
        assert c.get(f"/v1/evaluations/{created['id']}").status_code == 404
        assert c.get(f"/v1/models/{MODEL}/versions/2/evaluations").json() == {"data": [], "count": 0}


def test_evaluation_refused_by_ray_is_a_503_and_leaves_nothing(live_service, trained, tmp_path, ray_head):
    """A second service on the same MLflow store whose Ray job server cannot be reached."""
    home = tmp_path / "home"
    home.mkdir()
    env = service_env(home=home, ray_head=ray_head, extra={
        "METARL_RAY_DASHBOARD": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_TRACKING_URI": live_service.env["MLFLOW_TRACKING_URI"],
        "METARL_ARTIFACT_ROOT": live_service.env["METARL_ARTIFACT_ROOT"],
    })
    cut_off = LiveService(home=home, env=env, port=int(env["METARL_PORT"]))
    cut_off.start()
    try:
        with cut_off.client() as c:
            r = c.post(f"/v1/models/{MODEL}/versions/1/evaluations", json={"tasks": 1})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable"
            assert c.get(f"/v1/models/{MODEL}/versions/1/evaluations").json() == {"data": [], "count": 0}
            assert 'metarl_evaluations{status="PENDING"} 0.0' in c.get("/metrics").text
            health = c.get("/healthz")
            assert health.status_code == 503
            assert health.json() | {"version": None} == {"status": "degraded", "ray": False, "mlflow": True,
                                                          "database": True, "version": None}
    finally:
        cut_off.kill(signal.SIGTERM)
