"""The engine computes what it computed before it was generalised: short seeded runs of
MAML-TRPO, FO-MAML-PPO, Reptile and multi-task PG, in process and on Ray, give the metrics and
final parameters recorded in ``tests/golden/engine_metrics.json`` (recorded with the engine
before the phase runner and the algorithm registry replaced its per-shape loops).

Exact equality, except where stated:

* multi-task PG no longer samples the post-adaptation phase it never learned from, so its
  ``meta/return_post`` is gone, and since that phase also advanced the sampler's action noise,
  only its first iteration (sampled before any skipped phase) can equal the record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from algorithms import registry
from workers.contract import JobSpec
from workers.envs import make_family
from workers.loop import train_in_process

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "golden" / "engine_metrics.json").read_text())
ALGORITHMS = sorted(GOLDEN["settings"])


def _keep(key: str) -> bool:
    return not key.startswith(("time/", "perf/"))


def _expected(part: str, key: str) -> list[dict[str, float]]:
    rows = GOLDEN[part][key]
    if key == "multitask-pg":  # see the module docstring
        return [{k: v for k, v in rows[0].items() if k != "meta/return_post"}]
    return rows


def _got(rows: list[dict[str, float]], key: str) -> list[dict[str, float]]:
    rows = [{k: v for k, v in r.items() if _keep(k)} for r in rows]
    return rows[:1] if key == "multitask-pg" else rows


@pytest.mark.parametrize("key", ALGORITHMS)
def test_in_process_runs_reproduce_the_record(key):
    spec = JobSpec.model_validate(GOLDEN["settings"][key])
    family = make_family(spec.task_family.name, seed=spec.seed, **spec.task_family.family_kwargs())
    obs_dim, act_dim, discrete = family.policy_dims()
    learner = registry.make_learner(spec.algorithm,
                                    spec.policy_spec(obs_dim=obs_dim, act_dim=act_dim, discrete=discrete),
                                    advantage=spec.advantage, seed=spec.seed)
    results = train_in_process(learner, family, meta_batch_size=spec.meta_batch_size,
                               episodes_per_task=spec.episodes_per_task, iterations=spec.iterations, seed=spec.seed)
    assert _got([r.metrics for r in results], key) == _expected("in_process", key)
    if key != "multitask-pg":
        total = float(sum(v.double().sum() for v in learner.params.values()))
        assert total == GOLDEN["in_process"][f"{key}/params_sum"]


@pytest.mark.ray
@pytest.mark.parametrize("key", ALGORITHMS)
def test_ray_runs_reproduce_the_record(ray_session, mlflow_store, key):
    from workers import tracking
    from workers.driver import run_job

    result = run_job(JobSpec.model_validate(GOLDEN["settings"][key]))
    c = tracking.client()
    by_step: dict[int, dict[str, float]] = {}
    for k in c.get_run(result.run_id).data.metrics:
        if _keep(k):
            for m in c.get_metric_history(result.run_id, k):
                by_step.setdefault(m.step, {})[k] = m.value
    assert _got([by_step[s] for s in sorted(by_step)], key) == _expected("ray", key)
    if key != "multitask-pg":
        state = tracking.load_checkpoint(result.run_id)
        assert float(sum(v.double().sum() for v in state.params.values())) == GOLDEN["ray"][f"{key}/params_sum"]
