"""The distributed engine end to end: a real local Ray, a real MLflow store, real envs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from workers import tracking
from workers.contract import JobSpec
from workers.driver import DriverHooks, JobFailed, run_job

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]


def nav_spec(**over) -> JobSpec:
    base = {
        "name": "nav-test",
        "algorithm": {"name": "maml", "inner_lr": 0.1},
        "task_family": {"name": "navigation2d"},
        "policy": {"hidden_sizes": [32, 32]},
        "meta_batch_size": 4,
        "episodes_per_task": 4,
        "iterations": 3,
        "checkpoint_every": 2,
        "resources": {"rollout_workers": 2, "envs_per_worker": 8},
        "register_as": "nav-test",
    }
    base.update(over)
    return JobSpec.model_validate(base)


def run_artifacts(run_id: str) -> set[str]:
    c = tracking.client()
    out = set()
    for top in c.list_artifacts(run_id):
        if top.is_dir:
            out.update(a.path for a in c.list_artifacts(run_id, top.path))
        else:
            out.add(top.path)
    return out


@pytest.mark.parametrize(
    "algorithm",
    [
        {"name": "maml", "inner_lr": 0.1},
        {"name": "reptile", "inner_lr": 0.1, "inner_steps": 2},
        {"name": "multitask-pg", "epochs": 2},
    ],
    ids=["maml", "reptile", "multitask-pg"],
)
def test_job_end_to_end_metrics_checkpoint_plot_registered_model(ray_session, mlflow_store, algorithm):
    from workers.model import MetaPolicy

    spec = nav_spec(algorithm=algorithm, register_as=f"nav-{algorithm['name']}")
    result = run_job(spec)
    assert result.status == "SUCCEEDED" and result.iterations == 3
    c = tracking.client()
    from algorithms import registry

    # what every job logs, and the returns its algorithm declares (multi-task PG samples no
    # post-adaptation phase: no return_post); navigation has no success signal
    declared = [m.key for m in registry.get(algorithm["name"]).metrics if "success" not in m.key]
    assert ("meta/return_post" in declared) == (algorithm["name"] != "multitask-pg")
    for key in ("loss/outer", "meta/kl", "time/sample_s", "time/learn_s", "perf/env_steps_per_s",
                "perf/env_steps_total", *declared):
        steps = sorted(m.step for m in c.get_metric_history(result.run_id, key))
        assert steps == [0, 1, 2], key
    # the iteration's profile: the learner actor's own compute within what the driver waited,
    # every phase timed, each side's busy share a fraction; bookkeeping from the second iteration
    phases = {"maml": ["train0", "valid"], "reptile": ["train0", "train1", "valid"],
              "multitask-pg": ["train0"]}[algorithm["name"]]
    logged = c.get_run(result.run_id).data.metrics
    assert sorted(k for k in logged if re.fullmatch(r"time/sample_.+_s", k) and k != "time/sample_s") == sorted(
        f"time/sample_{p}_s" for p in phases)
    profile = {key: {x.step: x.value for x in c.get_metric_history(result.run_id, key)} for key in (
        "time/learn_s", "time/learner_learn_s", "time/adapt_s", "time/learner_adapt_s", "time/sample_s",
        "time/iteration_s", "perf/rollout_busy_frac", "perf/learner_busy_frac",
        *(f"time/sample_{p}_s" for p in phases))}
    for step in range(3):
        m = {key: h[step] for key, h in profile.items()}
        assert 0 < m["time/learner_learn_s"] <= m["time/learn_s"], m
        assert 0 < m["perf/rollout_busy_frac"] <= 1 and 0 < m["perf/learner_busy_frac"] <= 1, m
        assert sum(m[f"time/sample_{p}_s"] for p in phases) == pytest.approx(m["time/sample_s"]), m
        assert m["time/sample_s"] <= m["time/iteration_s"], m
        if algorithm["name"] == "multitask-pg":  # no inner step
            assert m["time/learner_adapt_s"] == 0.0, m
        else:
            assert 0 < m["time/learner_adapt_s"] <= m["time/adapt_s"], m
    if algorithm["name"] == "maml":  # TRPO's parts, timed inside the update
        for key in ("time/outer_batch_s", "time/outer_gradient_s", "time/outer_curvature_s",
                    "time/outer_line_search_s"):
            assert len(c.get_metric_history(result.run_id, key)) == 3, key
    assert sorted(m.step for m in c.get_metric_history(result.run_id, "time/bookkeeping_s")) == [1, 2]
    run_metrics = c.get_run(result.run_id).data.metrics
    assert not any("success" in k for k in run_metrics), sorted(run_metrics)  # navigation has no success signal
    arts = run_artifacts(result.run_id)
    assert {"checkpoints/ckpt-000002.pt", "checkpoints/ckpt-000003.pt", "plots/learning_curve.png"} <= arts
    state = tracking.load_checkpoint(result.run_id)
    assert state.iteration == 3 and state.algorithm == algorithm["name"]
    run = c.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm.name"] == algorithm["name"]
    # the registered model loads, acts and adapts
    assert result.model_uri == f"models:/nav-{algorithm['name']}/1"
    policy = MetaPolicy.load(result.model_uri)
    assert policy.act(np.zeros(2, np.float32)).shape == (2,)
    assert policy.act(np.zeros((5, 2), np.float32)).shape == (5, 2)
    from workers.envs import make_family

    task = make_family("navigation2d").sample_tasks(1, np.random.default_rng(0), split="test")[0]
    adapted = policy.adapt(task, episodes=4, steps=1)
    assert any(not torch.equal(adapted.params[k], policy.params[k]) for k in policy.params)


def test_metaworld_ml1_reach_job(ray_session, mlflow_store):
    spec = JobSpec.model_validate({
        "name": "reach-tiny",
        "algorithm": {"name": "maml"},
        "task_family": {"name": "metaworld-ml1", "env_name": "reach-v3", "max_episode_steps": 50},
        "policy": {"hidden_sizes": [32, 32]},
        "meta_batch_size": 2, "episodes_per_task": 2, "iterations": 2, "checkpoint_every": 1,
        "resources": {"rollout_workers": 2, "envs_per_worker": 2},
    })
    result = run_job(spec)
    assert result.status == "SUCCEEDED"
    hist = tracking.client().get_metric_history(result.run_id, "meta/success_post")
    assert sorted(m.step for m in hist) == [0, 1]
    assert all(0.0 <= m.value <= 1.0 for m in hist)
    assert result.model_version == "1"


def test_killed_rollout_actor_mid_iteration_job_completes_with_all_tasks(ray_session, mlflow_store):
    killed = []

    def kill_one(pool, label):
        if label == "1:train0" and not killed:
            pid = ray.get(pool.actors[0].info.remote())["pid"]
            ray.kill(pool.actors[0], no_restart=False)  # the actor dies; Ray restarts it
            killed.append(pid)

    spec = nav_spec(meta_batch_size=6, episodes_per_task=6, register_as="nav-kill")
    result = run_job(spec, hooks=DriverHooks(on_submit=kill_one))
    assert killed and result.status == "SUCCEEDED"
    c = tracking.client()
    tasks = {m.step: m.value for m in c.get_metric_history(result.run_id, "meta/tasks")}
    assert tasks == {0: 6.0, 1: 6.0, 2: 6.0}
    steps = {m.step: m.value for m in c.get_metric_history(result.run_id, "perf/env_steps")}
    # navigation2d episodes rarely end early: every iteration sampled all 2 phases x 6 tasks x 6 episodes
    assert steps[1] >= 0.9 * steps[0]


def test_resume_continues_iteration_counter_and_optimizer_state(ray_session, mlflow_store):
    spec = nav_spec(algorithm={"name": "maml", "outer": {"name": "vanilla", "lr": 1e-3}}, iterations=4,
                    checkpoint_every=2, register_as="nav-resume")
    first = run_job(spec, hooks=DriverHooks(stop_after_iteration=2))
    assert first.status == "STOPPED" and first.iterations == 2
    state = tracking.load_checkpoint(first.run_id)
    assert state.iteration == 2
    assert state.optimizer["state"][0]["step"].item() == 2
    second = run_job(spec, resume_run_id=first.run_id)
    assert second.status == "SUCCEEDED" and second.run_id == first.run_id and second.iterations == 4
    final = tracking.load_checkpoint(first.run_id)
    assert final.iteration == 4
    assert final.optimizer["state"][0]["step"].item() == 4  # Adam continued, not restarted
    steps = [m.step for m in tracking.client().get_metric_history(first.run_id, "meta/return_post")]
    assert sorted(steps) == [0, 1, 2, 3]


def test_desired_worker_count_applied_between_iterations(ray_session, mlflow_store):
    run: dict[str, str] = {}

    def control(it, metrics):
        desired = {0: "2", 1: "1"}.get(it)
        if desired is not None:  # what the control plane does while the job runs
            tracking.Tracker(run_id=run["id"], experiment_id="").set_tags({tracking.DESIRED_WORKERS_TAG: desired})

    spec = nav_spec(iterations=3, resources={"rollout_workers": 1, "envs_per_worker": 8}, register_as="nav-scale")
    hooks = DriverHooks(on_start=lambda run_id: run.update(id=run_id), on_iteration=control)
    result = run_job(spec, hooks=hooks)
    workers = {m.step: m.value for m in tracking.client().get_metric_history(result.run_id, "perf/rollout_workers")}
    assert workers == {0: 1.0, 1: 2.0, 2: 1.0}


def test_nan_in_loss_rejects_update_fails_job_and_keeps_last_checkpoint(ray_session, mlflow_store):
    spec = nav_spec(iterations=4, checkpoint_every=1, register_as="nav-nan")
    with pytest.raises(JobFailed, match="non-finite") as info:
        run_job(spec, hooks=DriverHooks(nan_reward_at_iteration=2))
    run_id = re.search(r"[0-9a-f]{32}", str(info.value)).group(0)
    run = tracking.client().get_run(run_id)
    assert run.info.status == "FAILED"
    assert "non-finite" in run.data.tags[tracking.FAILURE_TAG]
    state = tracking.load_checkpoint(run_id)
    assert state.iteration == 2  # the last good checkpoint, intact and loadable
    assert all(torch.isfinite(v).all() for v in state.params.values())


@pytest.mark.gpu
def test_learner_runs_on_cuda(ray_session, mlflow_store):
    spec = nav_spec(resources={"rollout_workers": 1, "envs_per_worker": 4, "learner_gpus": 1}, register_as="nav-gpu")
    result = run_job(spec)
    run = tracking.client().get_run(result.run_id)
    assert run.data.tags["metarl.learner_device"].startswith("cuda")


def test_driver_refuses_bad_spec_before_touching_cluster(tmp_path):
    bad = tmp_path / "spec.json"
    bad.write_text(json.dumps({"name": "x", "algorithm": {"name": "maml", "inner_lr": -1},
                               "task_family": {"name": "navigation2d"}, "surprise": 1}))
    proc = subprocess.run([sys.executable, "-m", "workers.driver", "--spec", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "RAY_ADDRESS": "127.0.0.1:1", "HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert "inner_lr" in proc.stderr and "surprise" in proc.stderr
