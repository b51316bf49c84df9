import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from algorithms.maml import MAMLSpec, PPOSpec, TRPOSpec
from algorithms.multitask import MultiTaskPGSpec
from algorithms.reptile import ReptileSpec
from workers.contract import JobSpec

PRESETS = Path(__file__).resolve().parents[2] / "workers" / "presets"
BASE = {"name": "j", "algorithm": {"name": "maml"}, "task_family": {"name": "navigation2d"}}


def spec(**over):
    d = json.loads(json.dumps(BASE))
    d.update(over)
    return JobSpec.model_validate(d)


def error_locs(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}


@pytest.mark.parametrize("path", sorted(PRESETS.glob("*.json")), ids=lambda p: p.stem)
def test_presets_are_valid_specs(path):
    s = JobSpec.model_validate_json(path.read_text())
    assert s.register_as == s.name


@pytest.mark.parametrize(
    "over,field",
    [
        ({"surprise": 1}, "surprise"),
        ({"meta_batch_size": 0}, "meta_batch_size"),
        ({"meta_batch_size": 10**6}, "meta_batch_size"),
        ({"episodes_per_task": "many"}, "episodes_per_task"),
        ({"iterations": -3}, "iterations"),
        ({"name": "bad name!"}, "name"),
        ({"algorithm": {"name": "maml", "inner_lr": -0.1}}, "algorithm.maml.inner_lr"),
        ({"algorithm": {"name": "maml", "outer": {"name": "trpo", "max_kl": 0}}}, "algorithm.maml.outer.trpo.max_kl"),
        ({"algorithm": {"name": "maml", "entrypoint": "rm -rf /"}}, "algorithm.maml.entrypoint"),
        ({"resources": {"rollout_workers": 0}}, "resources.rollout_workers"),
        ({"resources": {"runtime_env": {}}}, "resources.runtime_env"),
        ({"policy": {"hidden_sizes": [0]}}, "policy.hidden_sizes"),
        ({"policy": {"output_gain": 0}}, "policy.output_gain"),
    ],
)
def test_bad_specs_name_the_field(over, field):
    with pytest.raises(ValidationError) as info:
        spec(**over)
    assert any(loc.startswith(field) for loc in error_locs(info.value)), error_locs(info.value)


def test_unknown_algorithm_family_and_env_name_list_valid_choices():
    with pytest.raises(ValidationError, match="maml"):
        spec(algorithm={"name": "mamI"})
    with pytest.raises(ValidationError, match="navigation2d"):
        spec(task_family={"name": "nav"})
    with pytest.raises(ValidationError, match="reach-v3"):
        spec(task_family={"name": "metaworld-ml1", "env_name": "reachh-v3"})
    with pytest.raises(ValidationError, match="needs env_name"):
        spec(task_family={"name": "metaworld-ml1"})
    with pytest.raises(ValidationError, match="at most 500"):
        spec(task_family={"name": "metaworld-ml10", "max_episode_steps": 900})
    with pytest.raises(ValidationError, match="velocity_high"):
        spec(task_family={"name": "halfcheetah-vel", "params": {"speed": 1.0}})


def test_spec_is_frozen_and_its_algorithm_section_is_the_learners_config():
    s = spec(algorithm={"name": "maml", "outer": {"name": "ppo", "epochs": 3}})
    with pytest.raises(ValidationError):
        s.meta_batch_size = 3  # type: ignore[misc]
    cfg = s.algorithm  # the registered spec model itself: no second config class
    assert isinstance(cfg, MAMLSpec) and isinstance(cfg.outer, PPOSpec) and cfg.outer.epochs == 3
    assert isinstance(spec().algorithm.outer, TRPOSpec)
    assert isinstance(spec(algorithm={"name": "reptile"}).algorithm, ReptileSpec)
    assert isinstance(spec(algorithm={"name": "multitask-pg"}).algorithm, MultiTaskPGSpec)
    # one default for every path: the job's advantage section (GAE lambda 1.0), in process too
    assert spec(algorithm={"name": "multitask-pg"}).advantage.gae_lambda == 1.0
    flat = s.flat_params()
    assert flat["algorithm.outer.name"] == "ppo" and flat["task_family.name"] == "navigation2d"
