"""Adding an algorithm is one module: this file defines a small algorithm -- its spec, its
learner, its plan, its metrics -- registers it, and runs it through the in-process loop, the Ray
driver and a job submitted over REST, with no edit to the engine.

The algorithm ("mean-pg"): one phase of episodes with θ per task, then one plain gradient step
on the mean policy-gradient loss over the tasks; it adapts at meta-test with the usual inner
step.  The service and the job driver find it through ``METARL_PLUGINS`` (this module's name).
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Sequence
from typing import Literal

import pytest
import torch
from pydantic import Field

from algorithms import functional as F
from algorithms.base import MetaBatch, PolicyGradientLearner, UpdateMetrics, check_finite
from algorithms.episodes import Episodes
from algorithms.plans import adaptation_plan, single_phase_plan
from algorithms.policies import expand_params
from algorithms.registry import Algorithm, AlgorithmSpec, Metric, register

NAME = "mean-pg"


class MeanPGSpec(AlgorithmSpec):
    """The spec is the configuration (its defaults are the only ones)."""

    name: Literal["mean-pg"] = "mean-pg"
    inner_lr: float = Field(0.1, gt=0, le=10.0, description="the meta-test's inner step")
    lr: float = Field(0.05, gt=0, le=1.0, description="the outer gradient step")


class MeanPG(PolicyGradientLearner):
    name = NAME
    config: MeanPGSpec

    def __init__(self, policy_spec, spec=None, *, advantage=None, seed=0, device="cpu"):  # noqa: ANN001
        super().__init__(policy_spec, spec or MeanPGSpec(), advantage=advantage, seed=seed, device=device)

    def learn(self, phases: Sequence[Sequence[Episodes]]) -> UpdateMetrics:
        return self.step(MetaBatch(train=[list(phases[0])], valid=None))

    def step(self, batch: MetaBatch) -> UpdateMetrics:
        tb = self.batch(batch.train[0])
        theta = {k: v.detach().clone().requires_grad_(True) for k, v in self.params.items()}
        loss = F.inner_loss(self.policy, expand_params(theta, tb.n_tasks), tb).mean()
        grads = torch.autograd.grad(loss, list(theta.values()))
        new = {k: (v - self.config.lr * g).detach() for (k, v), g in zip(theta.items(), grads, strict=True)}
        check_finite("mean-pg update", *new.values())
        self._set_params(new)
        return self._finish(UpdateMetrics(values={"loss/outer": float(loss.detach())}), batch)


register(Algorithm(
    name=NAME, spec=MeanPGSpec, learner=f"{__name__}:MeanPG",
    plan=lambda spec: single_phase_plan(),
    adaptation=lambda spec, steps: adaptation_plan(steps),
    metrics=(Metric("meta/return_pre", "return", ".1f"), Metric("loss/outer", "loss", ".3f")),
    summary="a test's algorithm: one gradient step on the tasks' mean policy-gradient loss",
))


def job_spec(**over) -> dict:  # noqa: ANN003
    spec = {
        "name": "mean-pg-job", "algorithm": {"name": NAME, "lr": 0.05}, "task_family": {"name": "navigation2d"},
        "policy": {"hidden_sizes": [16, 16]}, "meta_batch_size": 4, "episodes_per_task": 4, "iterations": 3,
        "seed": 1, "checkpoint_every": 1, "resources": {"rollout_workers": 1, "envs_per_worker": 8},
        "register_as": "mean-pg-model",
    }
    spec.update(over)
    return spec


def test_the_registered_algorithm_is_part_of_the_job_contract():
    from workers.contract import JobSpec, declared_metrics

    spec = JobSpec.model_validate(job_spec())
    assert isinstance(spec.algorithm, MeanPGSpec) and spec.inner_steps == 0
    assert declared_metrics(NAME)[0] == {"key": "meta/return_pre", "label": "return", "fmt": ".1f"}
    with pytest.raises(ValueError, match="lr"):
        JobSpec.model_validate(job_spec(algorithm={"name": NAME, "lr": 5.0}))


def test_in_process_loop():
    from algorithms import registry
    from workers.contract import JobSpec
    from workers.envs import make_family
    from workers.loop import train_in_process

    spec = JobSpec.model_validate(job_spec())
    family = make_family("navigation2d")
    learner = registry.make_learner(spec.algorithm, spec.policy_spec(obs_dim=2, act_dim=2, discrete=False), seed=1)
    assert isinstance(learner, MeanPG)
    before = learner.params
    results = train_in_process(learner, family, meta_batch_size=4, episodes_per_task=4, iterations=3, seed=1)
    assert [r.iteration for r in results] == [0, 1, 2]
    assert all(math.isfinite(r.metrics["loss/outer"]) for r in results)
    assert "meta/return_post" not in results[0].metrics  # its plan samples no post-adaptation phase
    assert any(not torch.equal(before[k], v) for k, v in learner.params.items())


@pytest.mark.ray
def test_ray_driver(ray_session, mlflow_store):
    from workers import tracking
    from workers.contract import JobSpec
    from workers.driver import run_job
    from workers.model import MetaPolicy

    result = run_job(JobSpec.model_validate(job_spec()))
    assert result.status == "SUCCEEDED" and result.iterations == 3
    history = tracking.client().get_metric_history(result.run_id, "loss/outer")
    assert sorted(m.step for m in history) == [0, 1, 2]
    tags = tracking.client().get_run(result.run_id).data.tags
    assert json.loads(tags[tracking.METRICS_TAG])[1]["key"] == "loss/outer"
    policy = MetaPolicy.load(result.model_uri)  # and its model adapts like any other
    task = policy.family.sample_tasks(1, __import__("numpy").random.default_rng(0))[0]
    assert policy.adapt(task, episodes=2).adapted_steps == 1


@pytest.mark.ray
@pytest.mark.slow
def test_rest_submitted_job(tmp_path_factory, ray_head):  # noqa: ANN001
    from tests.service.conftest import LiveService, service_env
    from tests.service.helpers import wait_status

    home = tmp_path_factory.mktemp("plugin-home")
    env = service_env(home=home, ray_head=ray_head, extra={
        "METARL_PLUGINS": __name__, "METARL_JOB_ENV": json.dumps({"METARL_PLUGINS": __name__})})
    svc = LiveService(home=home, env=env, port=int(env["METARL_PORT"]))
    svc.start()
    try:
        with svc.client() as c:
            bad = c.post("/v1/jobs", json=job_spec(algorithm={"name": NAME, "lr": 5.0}))
            assert bad.status_code == 422 and "lr" in bad.text
            created = c.post("/v1/jobs", json=job_spec(name="mean-pg-rest"))
            assert created.status_code == 201, created.text
            final = wait_status(c, created.json()["id"], {"SUCCEEDED", "FAILED", "STOPPED"}, timeout=300)
            assert final["status"] == "SUCCEEDED", c.get(f"/v1/jobs/{final['id']}/logs").text[-3000:]
            assert final["progress"]["iteration"] == 3 and final["model_version"] == "1"
            assert "loss/outer" in final["latest_metrics"]
    finally:
        svc.kill(signal.SIGTERM)
