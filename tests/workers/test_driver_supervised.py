"""Supervised few-shot jobs through the distributed engine: the same driver, rollout actors (which
draw the meta-batch's support/query episodes) and learner actor as the RL jobs; a real local Ray,
a real MLflow store."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from workers import tracking
from workers.contract import JobSpec
from workers.driver import DriverHooks, run_job

pytestmark = pytest.mark.ray


def spec(algorithm: dict, family: dict, **over) -> JobSpec:
    base = {"name": f"sl-{algorithm['name']}", "algorithm": algorithm, "task_family": family,
            "policy": {"hidden_sizes": [16, 16]}, "meta_batch_size": 4, "iterations": 3, "checkpoint_every": 2,
            "resources": {"rollout_workers": 2, "envs_per_worker": 1}, "register_as": f"sl-{algorithm['name']}"}
    base.update(over)
    return JobSpec.model_validate(base)


def history(run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in tracking.client().get_metric_history(run_id, key)}


@pytest.mark.parametrize("algorithm,family,metric", [
    ({"name": "sl-maml", "inner_lr": 0.01}, {"name": "sinusoid"}, "meta/mse"),
    ({"name": "protonet"}, {"name": "digits-rotations", "params": {"ways": 3, "shots": 1, "queries": 2}},
     "meta/accuracy"),
    ({"name": "meta-lstm", "inner_steps": 2, "test_inner_steps": 2},
     {"name": "digits-rotations", "params": {"ways": 3, "shots": 1, "queries": 2}}, "meta/accuracy"),
    ({"name": "sl-maml", "inner_lr": 0.4, "test_inner_steps": 2},
     {"name": "glyphs", "params": {"ways": 3, "shots": 1, "queries": 2}}, "meta/accuracy"),
], ids=["sl-maml-sinusoid", "protonet-digits", "meta-lstm-digits", "sl-maml-glyphs"])
def test_supervised_job_end_to_end(ray_session, mlflow_store, algorithm, family, metric):
    from workers.model import MetaPolicy

    job = spec(algorithm, family)
    assert job.episodes_per_task == 1  # a supervised task gives one episode per iteration
    result = run_job(job)
    assert result.status == "SUCCEEDED" and result.iterations == 3
    for key in ("loss/query", metric, "meta/tasks", "perf/env_steps"):
        assert sorted(history(result.run_id, key)) == [0, 1, 2], key
    assert all(v == 4.0 for v in history(result.run_id, "meta/tasks").values())
    run = tracking.client().get_run(result.run_id)
    assert not any(k.startswith("meta/return") or "success" in k for k in run.data.metrics)  # no RL fields
    assert tracking.load_checkpoint(result.run_id).iteration == 3
    model = MetaPolicy.load(result.model_uri)
    dist = model.family
    episode = dist.episode(dist.sample_tasks(1, np.random.default_rng(0), split="test")[0], np.random.default_rng(1))
    adapted = model.adapt(episode.x_support, episode.y_support)
    assert adapted.predict(episode.x_query).shape[0] == len(episode.y_query)


def test_supervised_job_survives_a_killed_rollout_actor_and_resumes(ray_session, mlflow_store):
    killed = []

    def kill_one(pool, label):
        if label == "1:train0" and not killed:
            killed.append(ray.get(pool.actors[0].info.remote())["pid"])
            ray.kill(pool.actors[0], no_restart=False)

    job = spec({"name": "protonet"}, {"name": "digits-rotations", "params": {"ways": 3, "shots": 1, "queries": 2}},
               meta_batch_size=6, iterations=4, checkpoint_every=2, register_as="sl-kill")
    first = run_job(job, hooks=DriverHooks(on_submit=kill_one, stop_after_iteration=2))
    assert killed and first.status == "STOPPED"
    assert history(first.run_id, "meta/tasks") == {0: 6.0, 1: 6.0}
    second = run_job(job, resume_run_id=first.run_id)
    assert second.status == "SUCCEEDED" and second.iterations == 4
    assert sorted(history(first.run_id, "meta/accuracy")) == [0, 1, 2, 3]
