"""RL² through the distributed engine: a real local Ray, a real MLflow store, real envs -- the
same driver, rollout actors and learner actor as MAML, with RL²'s registered sampler (trials) and
learner; and the fault tests run for an RL² job too (a killed rollout actor, resume from a
checkpoint, elastic workers, a non-finite update)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import ray
import torch

from algorithms.rl2.policy import RecurrentPolicySpec
from workers import tracking
from workers.contract import JobSpec
from workers.driver import DriverHooks, JobFailed, run_job

pytestmark = pytest.mark.ray

HORIZON = 20


def rl2_spec(**over) -> JobSpec:
    base = {
        "name": "rl2-test",
        "algorithm": {"name": "rl2", "episodes_per_trial": 2, "hidden_size": 16, "encoder_sizes": [16],
                      "epochs": 2, "minibatches": 2},
        "task_family": {"name": "navigation2d", "max_episode_steps": HORIZON},
        "meta_batch_size": 4,
        "episodes_per_task": 4,
        "iterations": 3,
        "checkpoint_every": 2,
        "resources": {"rollout_workers": 2, "envs_per_worker": 8},
        "register_as": "rl2-test",
    }
    base.update(over)
    return JobSpec.model_validate(base)


def history(run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in tracking.client().get_metric_history(run_id, key)}


def test_rl2_job_end_to_end(ray_session, mlflow_store):
    result = run_job(rl2_spec())
    assert result.status == "SUCCEEDED" and result.iterations == 3
    for key in ("loss/policy", "loss/value", "meta/kl", "meta/return_first_episode", "meta/return_last_episode",
                "meta/return_episode0", "meta/return_episode1", "perf/env_steps", "time/sample_s"):
        assert sorted(history(result.run_id, key)) == [0, 1, 2], key
    # every iteration: 4 tasks x 2 trials x 2 episodes, each of exactly HORIZON steps (navigation
    # episodes end at the horizon unless the goal is reached)
    steps = history(result.run_id, "perf/env_steps")
    assert all(0 < v <= 4 * 4 * HORIZON for v in steps.values()), steps
    run = tracking.client().get_run(result.run_id)
    assert not any("success" in k for k in run.data.metrics)  # navigation has no success signal
    assert run.data.tags[tracking.METRICS_TAG].startswith('[{"key": "meta/return_first_episode"')
    state = tracking.load_checkpoint(result.run_id)
    assert state.algorithm == "rl2" and state.iteration == 3
    assert state.policy_spec == RecurrentPolicySpec(2, 2, False, encoder_sizes=(16,), hidden_size=16,
                                                    activation="relu")
    assert result.model_uri == "models:/rl2-test/1"


def test_rl2_killed_rollout_actor_mid_iteration(ray_session, mlflow_store):
    killed = []

    def kill_one(pool, label):
        if label == "1:train0" and not killed:
            killed.append(ray.get(pool.actors[0].info.remote())["pid"])
            ray.kill(pool.actors[0], no_restart=False)  # the actor dies; Ray restarts it

    spec = rl2_spec(meta_batch_size=6, register_as="rl2-kill")
    result = run_job(spec, hooks=DriverHooks(on_submit=kill_one))
    assert killed and result.status == "SUCCEEDED"
    assert history(result.run_id, "meta/tasks") == {0: 6.0, 1: 6.0, 2: 6.0}
    steps = history(result.run_id, "perf/env_steps")
    assert steps[1] >= 0.9 * steps[0]  # the lost shard's trials were sampled again


def test_rl2_resume_continues_iterations_and_adam(ray_session, mlflow_store):
    """Stopped after iteration 3 with the last checkpoint at 2: the resumed attempt runs iteration 3
    again, Adam continues from the checkpoint, and the env-step total counts iteration 3 once."""
    spec = rl2_spec(iterations=4, checkpoint_every=2, register_as="rl2-resume")
    first = run_job(spec, hooks=DriverHooks(stop_after_iteration=3))
    assert first.status == "STOPPED" and first.iterations == 3
    state = tracking.load_checkpoint(first.run_id)
    updates = 2 * 2  # epochs x minibatches per iteration
    assert state.iteration == 2 and state.optimizer["state"][0]["step"].item() == 2 * updates
    second = run_job(spec, resume_run_id=first.run_id)
    assert second.status == "SUCCEEDED" and second.run_id == first.run_id and second.iterations == 4
    final = tracking.load_checkpoint(first.run_id)
    assert final.iteration == 4 and final.optimizer["state"][0]["step"].item() == 4 * updates
    assert sorted(history(first.run_id, "meta/return_last_episode")) == [0, 1, 2, 3]
    steps = dict(tracking.metric_history(first.run_id, "perf/env_steps"))  # the latest value of each step
    totals = dict(tracking.metric_history(first.run_id, "perf/env_steps_total"))
    assert totals[3] == sum(steps[i] for i in range(4))


def test_rl2_desired_worker_count_applied_between_iterations(ray_session, mlflow_store):
    run: dict[str, str] = {}

    def control(it, metrics):
        desired = {0: "2", 1: "1"}.get(it)
        if desired is not None:
            tracking.Tracker(run_id=run["id"], experiment_id="").set_tags({tracking.DESIRED_WORKERS_TAG: desired})

    spec = rl2_spec(resources={"rollout_workers": 1, "envs_per_worker": 8}, register_as="rl2-scale")
    result = run_job(spec, hooks=DriverHooks(on_start=lambda run_id: run.update(id=run_id), on_iteration=control))
    assert history(result.run_id, "perf/rollout_workers") == {0: 1.0, 1: 2.0, 2: 1.0}


def test_rl2_nan_reward_rejects_update_and_keeps_last_checkpoint(ray_session, mlflow_store):
    spec = rl2_spec(iterations=4, checkpoint_every=1, register_as="rl2-nan")
    with pytest.raises(JobFailed, match="not finite") as info:
        run_job(spec, hooks=DriverHooks(nan_reward_at_iteration=2))
    run_id = re.search(r"[0-9a-f]{32}", str(info.value)).group(0)
    run = tracking.client().get_run(run_id)
    assert run.info.status == "FAILED" and "not finite" in run.data.tags[tracking.FAILURE_TAG]
    state = tracking.load_checkpoint(run_id)
    assert state.iteration == 2 and all(torch.isfinite(v).all() for v in state.params.values())


def test_rl2_metaworld_ml1_job_reports_success_per_episode(ray_session, mlflow_store):
    spec = JobSpec.model_validate({
        "name": "rl2-reach-tiny",
        "algorithm": {"name": "rl2", "episodes_per_trial": 2, "hidden_size": 16, "encoder_sizes": [16], "epochs": 1},
        "task_family": {"name": "metaworld-ml1", "env_name": "reach-v3", "max_episode_steps": 30},
        "meta_batch_size": 2, "episodes_per_task": 2, "iterations": 3, "checkpoint_every": 1,
        "resources": {"rollout_workers": 2, "envs_per_worker": 2},
    })
    result = run_job(spec, hooks=DriverHooks(stop_after_iteration=2))
    for key in ("meta/success_episode0", "meta/success_episode1", "meta/success_last_episode"):
        h = history(result.run_id, key)
        assert sorted(h) == [0, 1] and all(0.0 <= v <= 1.0 for v in h.values()), key
    assert np.isfinite(list(history(result.run_id, "meta/return_first_episode").values())).all()
