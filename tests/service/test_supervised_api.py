"""Supervised few-shot models over REST like every other job -- submitted, streamed with their own
metrics, registered, evaluated (``split=val`` too) -- and adapted as a service:
``POST /v1/models/{name}/adapt`` (a real uvicorn server, the session's Ray head with its job
server, a real MLflow store; the model server is the API's child process)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.service.helpers import sse, tiny_spec, wait_evaluation, wait_for, wait_status
from workers.adapt_protocol import MAX_EXAMPLES
from workers.contract import declared_metrics

pytestmark = pytest.mark.ray

DIGITS, SINE, NAV = "svc-digits", "svc-sine", "svc-nav-rl"
WAYS, SHOTS, QUERIES = 5, 1, 3


def digits_spec(**over) -> dict:
    return tiny_spec(DIGITS, algorithm={"name": "protonet"}, episodes_per_task=1, meta_batch_size=4, iterations=2,
                     task_family={"name": "digits-rotations", "params": {"ways": WAYS, "shots": SHOTS,
                                                                          "queries": QUERIES}},
                     resources={"rollout_workers": 1, "envs_per_worker": 1}, **over)


def sine_spec(**over) -> dict:
    return tiny_spec(SINE, algorithm={"name": "sl-maml", "inner_lr": 0.01, "test_inner_steps": 3},
                     episodes_per_task=1, meta_batch_size=4, iterations=2, task_family={"name": "sinusoid"},
                     policy={"hidden_sizes": [16, 16]}, resources={"rollout_workers": 1, "envs_per_worker": 1},
                     **over)


@dataclass(frozen=True)
class Jobs:
    digits: dict
    digits_events: list
    sine: dict
    nav: dict


@pytest.fixture(scope="module")
def jobs(live_service) -> Jobs:  # noqa: ANN001
    """A ProtoNets digits job, a MAML sinusoid job and an RL job, submitted together over REST."""
    with live_service.client() as c:
        created = {}
        for spec in (digits_spec(), sine_spec(), tiny_spec(NAV, iterations=1, meta_batch_size=2)):
            r = c.post("/v1/jobs", json=spec)
            assert r.status_code == 201, r.text
            created[spec["name"]] = r.json()
        events = list(sse(c, f"/v1/jobs/{created[DIGITS]['id']}/events"))
        done = {}
        for name, j in created.items():
            final = wait_status(c, j["id"], {"SUCCEEDED", "FAILED"}, timeout=300)
            logs = c.get(f"/v1/jobs/{j['id']}/logs").json()["logs"]
            assert final["status"] == "SUCCEEDED", logs[-3000:]
            done[name] = final
    return Jobs(digits=done[DIGITS], digits_events=events, sine=done[SINE], nav=done[NAV])


def _episode(model, seed: int = 0):  # noqa: ANN001
    dist = model.family
    task = dist.sample_tasks(1, np.random.default_rng(seed), split="test")[0]
    return dist.episode(task, np.random.default_rng(seed + 1))


def test_supervised_jobs_show_their_own_metrics_register_and_evaluate(live_service, jobs):
    d = jobs.digits
    assert d["metrics_declared"] == declared_metrics("protonet")
    assert d["model_uri"] == f"models:/{DIGITS}/1" and jobs.sine["model_uri"] == f"models:/{SINE}/1"
    metrics = [m for k, m in jobs.digits_events if k == "metrics"]
    assert [m["step"] for m in metrics] == [0, 1]
    for m in metrics:
        assert 0.0 <= m["metrics"]["meta/accuracy"] <= 1.0 and np.isfinite(m["metrics"]["loss/query"])
        assert not any(k.startswith("meta/return") or "success" in k for k in m["metrics"])  # no RL fields
    assert "meta/accuracy" in d["latest_metrics"] and "meta/mse" in jobs.sine["latest_metrics"]
    assert not any(k.startswith("meta/return") for k in jobs.sine["latest_metrics"])

    with live_service.client() as c:
        version = c.get(f"/v1/models/{DIGITS}/versions/1").json()
        assert version["tags"]["algorithm"] == "protonet" and "accuracy" in version["tags"]
        asked = {
            DIGITS: {"tasks": 40, "seed": 3, "split": "val"},
            SINE: {"tasks": 30, "seed": 3},  # steps: the model's meta-test default (3)
        }
        ids = {}
        for name, body in asked.items():
            r = c.post(f"/v1/models/{name}/versions/1/evaluations", json=body)
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
        # val is a supervised distribution's split: an RL model's evaluation is refused, nothing created
        r = c.post(f"/v1/models/{NAV}/versions/1/evaluations", json={"split": "val"})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "split"
        results = {n: wait_evaluation(c, i) for n, i in ids.items()}
    for e in results.values():
        assert e["status"] == "SUCCEEDED", e["message"]
        assert e["return_pre"] is None and e["success_post"] is None  # no RL fields
    dr, sr = results[DIGITS]["result"], results[SINE]["result"]
    assert dr["adaptation"] == "supervised" and dr["split"] == "val" and dr["tasks"] == 40
    assert set(results[DIGITS]["summary"]) >= {"accuracy"} and 0.0 <= results[DIGITS]["summary"]["accuracy"] <= 1.0
    assert sr["split"] == "test" and sr["steps"] == 3 and "mse" in results[SINE]["summary"]
    assert results[SINE]["summary"]["mse"] >= 0.0


def test_adapt_predicts_exactly_as_the_model_in_process(live_service, jobs, models_store):
    from workers.model import MetaPolicy

    digits = MetaPolicy.load(f"models:/{DIGITS}/1")
    ep = _episode(digits)
    want = digits.adapt(ep.x_support, ep.y_support)
    body = {"support_x": ep.x_support.tolist(), "support_y": ep.y_support.tolist(), "query_x": ep.x_query.tolist(),
            "probabilities": True}
    with live_service.client() as c:
        r = c.post(f"/v1/models/{DIGITS}/adapt", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert (out["model_name"], out["model_version"], out["algorithm"], out["problem"]) == (
            DIGITS, "1", "protonet", "classification")
        assert out["steps"] is None  # a metric learner takes no inner steps
        assert out["predictions"] == want.predict(ep.x_query).tolist()
        proba = np.asarray(out["probabilities"])
        assert proba.shape == (len(ep.x_query), WAYS)
        np.testing.assert_allclose(proba, want.predict_proba(ep.x_query), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
        assert out["timings_ms"]["adapt_ms"] >= 0.0

        # one flat vector per example, and the version by alias: the same answer
        assert c.put(f"/v1/models/{DIGITS}/aliases/champion", json={"version": "1"}).status_code == 200
        flat = {**body, "support_x": ep.x_support.reshape(len(ep.x_support), -1).tolist(),
                "query_x": ep.x_query.reshape(len(ep.x_query), -1).tolist(), "alias": "champion"}
        again = c.post(f"/v1/models/{DIGITS}/adapt", json=flat).json()
        assert again["predictions"] == out["predictions"] and again["timings_ms"]["load_ms"] == 0.0  # cached

        sine = MetaPolicy.load(f"models:/{SINE}/1")
        s = _episode(sine)
        for steps in (None, 1):
            asked = {"support_x": s.x_support.tolist(), "support_y": s.y_support[:, 0].tolist(),  # targets as [N]
                     "query_x": s.x_query.tolist(), **({"steps": steps} if steps else {})}
            r = c.post(f"/v1/models/{SINE}/adapt", json=asked)
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["problem"] == "regression" and got["steps"] == (steps or 3)
            np.testing.assert_allclose(got["predictions"], sine.adapt(s.x_support, s.y_support, steps=steps)
                                       .predict(s.x_query), rtol=1e-5, atol=1e-6)


def test_the_cli_adapts_from_a_file_and_shows_a_supervised_evaluation(live_service, jobs, models_store, tmp_path):
    from service.cli.models import protocol_of
    from tests.service.test_cli import metarl
    from workers.model import MetaPolicy

    model = MetaPolicy.load(f"models:/{DIGITS}/1")
    ep = _episode(model, seed=7)
    data = tmp_path / "episode.npz"
    np.savez(data, support_x=ep.x_support, support_y=ep.y_support, query_x=ep.x_query)
    r = metarl("models", "adapt", DIGITS, str(data), "--probabilities", svc=live_service)
    assert r.exit_code == 0, r.output
    assert f"{DIGITS} v1 (protonet, classification)" in r.output and "no inner steps" in r.output
    want = model.adapt(ep.x_support, ep.y_support).predict(ep.x_query)
    rows = [line.split() for line in r.output.splitlines()]  # query, prediction, p
    shown = [int(cells[1]) for cells in rows if len(cells) == 3 and cells[0].isdigit() and cells[1].isdigit()]
    assert shown == want.tolist()
    bad = tmp_path / "bad.json"
    bad.write_text('{"support_x": [[0.0]], "query_x": [[0.0]]}')
    r = metarl("models", "adapt", DIGITS, str(bad), svc=live_service)
    assert r.exit_code == 1 and "support_y" in r.output
    # an evaluation's protocol line in a supervised model's terms (no "K episodes")
    finished = {"request": {"tasks": 600, "seed": 0, "split": "val", "episodes": 10},
                "result": {"adaptation": "supervised", "steps": 0}}
    assert protocol_of(finished) == "600 val episodes (support → query), no inner steps, seed 0"


def _key(live_service, owner: str) -> str:  # noqa: ANN001
    with live_service.client() as c:
        return c.post("/v1/keys", json={"owner": owner}).json()["key"]


def test_adapt_refuses_bad_input_naming_the_field(live_service, jobs):
    n, side = 5, 8
    good = {"support_x": np.zeros((n, 1, side, side)).tolist(), "support_y": list(range(n)),
            "query_x": np.zeros((3, 1, side, side)).tolist()}
    cases = [
        ({"support_x": np.zeros((n, 1, 7, 7)).tolist()}, "support_x"),  # not the model's input shape
        ({"support_x": [[1.0, 2.0], [3.0]]}, "support_x"),  # ragged
        ({"query_x": [["a"] * 64] * 3}, "query_x"),  # strings
        ({"query_x": [[None] * 64] * 3}, "query_x"),  # nulls
        ({"support_y": [0, 1, 2, 3, 9]}, "support_y"),  # a class index beyond ways
        ({"support_y": [0.5] * n}, "support_y"),  # not class indices
        ({"support_y": [0, 1, 2]}, "support_y"),  # fewer labels than examples
        ({"steps": 2}, "steps"),  # ProtoNets takes no inner steps
        ({"steps": 0}, "steps"),
        ({"version": "1", "alias": "champion"}, "body"),
        ({"query_x": np.zeros((MAX_EXAMPLES + 1, 1)).tolist()}, "query_x"),  # over the limit
        ({"support_x": [[1e39] * 64] * n}, "support_x"),  # JSON has no inf: a float32 overflow
        ({"extra": 1}, "extra"),
    ]
    with live_service.client() as c:
        for change, field in cases:
            r = c.post(f"/v1/models/{DIGITS}/adapt", json={**good, **change})
            assert r.status_code == 422, (change, r.text)
            fields = [d["field"] for d in r.json()["error"]["details"]]
            assert field in fields or (field == "body" and fields), (change, r.json())
        # an RL model: a 422 naming the model, not a crash
        r = c.post(f"/v1/models/{NAV}/adapt", json={**good, "query_x": [[0.0, 0.0]], "support_x": [[0.0, 0.0]] * n})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "name"
        assert "RL model" in r.json()["error"]["message"]
        assert c.post("/v1/models/no-such-model/adapt", json=good).status_code == 404
        assert c.post(f"/v1/models/{DIGITS}/adapt", json={**good, "version": "7"}).status_code == 404
        assert c.post(f"/v1/models/{DIGITS}/adapt", json={**good, "alias": "nope"}).status_code == 404
        big = {**good, "query_x": [[0.1234567890123] * 200] * MAX_EXAMPLES}  # 3.4 MB: over the 1 MiB body limit
        assert c.post(f"/v1/models/{DIGITS}/adapt", json=big).status_code == 413
    with live_service.client(_key(live_service, "bob")) as bob:  # bob owns no version: as if it did not exist
        r = bob.post(f"/v1/models/{DIGITS}/adapt", json=good)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    with live_service.client() as c:  # the server survived every refusal
        assert c.post(f"/v1/models/{DIGITS}/adapt", json=good).status_code == 200


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _model_servers(pid: int) -> list[int]:
    """The API process's live model server children."""
    children = [int(p) for task in Path(f"/proc/{pid}/task").iterdir() for p in (task / "children").read_text().split()]
    return [p for p in children if _alive(p) and b"workers.model.serving" in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_a_killed_model_server_is_replaced_and_the_api_keeps_serving(live_service, jobs, models_store):
    from workers.model import MetaPolicy

    ep = _episode(MetaPolicy.load(f"models:/{DIGITS}/1"), seed=5)
    body = {"support_x": ep.x_support.tolist(), "support_y": ep.y_support.tolist(), "query_x": ep.x_query.tolist()}
    with live_service.client() as c:
        first = c.post(f"/v1/models/{DIGITS}/adapt", json=body)
        assert first.status_code == 200, first.text
        servers = _model_servers(live_service.proc.pid)
        assert len(servers) == 1  # METARL_ADAPT_SERVERS defaults to one per API process
        os.kill(servers[0], signal.SIGKILL)
        wait_for(lambda: not _alive(servers[0]), timeout=30, what="the killed model server to exit")
        r = c.post(f"/v1/models/{DIGITS}/adapt", json=body)
        assert r.status_code == 503 and "retry" in r.json()["error"]["message"], r.text
        again = c.post(f"/v1/models/{DIGITS}/adapt", json=body)
        assert again.status_code == 200 and again.json()["predictions"] == first.json()["predictions"]
        replaced = _model_servers(live_service.proc.pid)
        assert len(replaced) == 1 and replaced[0] != servers[0]
        assert c.get("/healthz").status_code == 200
    live_service.kill(signal.SIGTERM)  # the API stops: its model server goes with it
    try:
        wait_for(lambda: not _alive(replaced[0]), timeout=30, what="the model server to stop with its API")
    finally:
        live_service.start()
