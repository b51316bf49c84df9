"""The learned update rules over REST like every other job: an ``lstm-optimizer`` job and an LSTM
meta-learner (``meta-lstm``) job submitted together, run on the session's Ray head, streamed with
their own metrics, registered, evaluated and adapted over HTTP; the registered optimizer then loads
as a ``torch.optim.Optimizer`` from the service's MLflow store (a real uvicorn server, real MLflow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.service.helpers import sse, tiny_spec, wait_evaluation, wait_status
from workers.contract import declared_metrics

pytestmark = pytest.mark.ray

L2L, METALSTM = "svc-l2l", "svc-metalstm"
DIGITS = {"name": "digits-rotations", "params": {"ways": 5, "shots": 2, "queries": 3}}


def _specs() -> list[dict]:
    common = {"episodes_per_task": 1, "meta_batch_size": 2, "iterations": 2, "task_family": DIGITS,
              "resources": {"rollout_workers": 1, "envs_per_worker": 1}}
    return [
        tiny_spec(L2L, algorithm={"name": "lstm-optimizer", "steps": 6, "unroll": 3, "test_steps": 5},
                  policy={"hidden_sizes": [12]}, **common),
        tiny_spec(METALSTM, algorithm={"name": "meta-lstm", "inner_steps": 2, "test_inner_steps": 3}, **common),
    ]


@pytest.fixture(scope="module")
def jobs(live_service) -> dict[str, dict]:  # noqa: ANN001
    with live_service.client() as c:
        created = {}
        for spec in _specs():
            r = c.post("/v1/jobs", json=spec)
            assert r.status_code == 201, r.text
            created[spec["name"]] = r.json()
        events = list(sse(c, f"/v1/jobs/{created[L2L]['id']}/events"))
        done: dict[str, dict] = {"events": {"l2l": events}}
        for name, j in created.items():
            final = wait_status(c, j["id"], {"SUCCEEDED", "FAILED"}, timeout=300)
            logs = c.get(f"/v1/jobs/{j['id']}/logs").json()["logs"]
            assert final["status"] == "SUCCEEDED", logs[-3000:]
            done[name] = final
    return done


def test_learned_update_rules_train_stream_register_and_evaluate(live_service, jobs):
    for name, algorithm in ((L2L, "lstm-optimizer"), (METALSTM, "meta-lstm")):
        assert jobs[name]["metrics_declared"] == declared_metrics(algorithm)
        assert jobs[name]["model_uri"] == f"models:/{name}/1"
        assert 0.0 <= jobs[name]["latest_metrics"]["meta/accuracy"] <= 1.0
    streamed = [m for k, m in jobs["events"]["l2l"] if k == "metrics"]
    assert [m["step"] for m in streamed] == [0, 1]
    for m in streamed:
        assert {"loss/meta", "loss/support_final", "meta/accuracy", "meta/accuracy_pre"} <= m["metrics"].keys()
        assert all(np.isfinite(v) for v in m["metrics"].values())

    with live_service.client() as c:
        ids = {}
        for name in (L2L, METALSTM):
            version = c.get(f"/v1/models/{name}/versions/1").json()
            assert version["tags"]["algorithm"] in ("lstm-optimizer", "meta-lstm")
            r = c.post(f"/v1/models/{name}/versions/1/evaluations", json={"tasks": 20, "seed": 1})
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
        results = {n: wait_evaluation(c, i) for n, i in ids.items()}
    for e in results.values():
        assert e["status"] == "SUCCEEDED", e["message"]
        assert e["result"]["adaptation"] == "supervised" and e["result"]["tasks"] == 20
        assert 0.0 <= e["summary"]["accuracy"] <= 1.0
    assert results[L2L]["result"]["steps"] == 5 and results[METALSTM]["result"]["steps"] == 3


def test_the_job_trained_optimizer_adapts_over_http_and_loads_as_a_torch_optimizer(live_service, jobs,
                                                                                  models_store):
    from workers.model import LearnedOptimizer, MetaPolicy

    model = MetaPolicy.load(f"models:/{L2L}/1")
    dist = model.family
    rng = np.random.default_rng(4)
    ep = dist.episode(dist.sample_tasks(1, rng, split="test")[0], rng)
    with live_service.client() as c:
        assert c.put(f"/v1/models/{L2L}/aliases/champion", json={"version": "1"}).status_code == 200
        r = c.post(f"/v1/models/{L2L}/adapt", json={"support_x": ep.x_support.tolist(),
                                                      "support_y": ep.y_support.tolist(),
                                                      "query_x": ep.x_query.tolist(), "alias": "champion"})
        assert r.status_code == 200, r.text
        out = r.json()
    assert out["algorithm"] == "lstm-optimizer" and out["steps"] == 5
    assert out["predictions"] == model.adapt(ep.x_support, ep.y_support).predict(ep.x_query).tolist()

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 5))
    opt = LearnedOptimizer.load(f"models:/{L2L}@champion", net.parameters())
    x, y = torch.as_tensor(ep.x_support), torch.as_tensor(ep.y_support)
    before = [p.detach().clone() for p in net.parameters()]
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
    assert len(opt.state) == 4 and all(s["h"].shape[1] == p.numel() for p, s in opt.state.items())
