"""The registered meta-policy and meta-test evaluation against a real MLflow store (SQLite + a
local artifact dir in the test's temp dir), real envs and a really trained learner; no Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from algorithms import functional as F
from algorithms.batch import make_task_batch
from algorithms.maml import MAML
from algorithms.multitask import MultiTaskPG
from algorithms.policies import make_policy, stack_params, unstack_params
from tests.workers.model_store import Trained, fresh_store
from workers.contract import JobSpec
from workers.envs import make_family
from workers.evaluate import EXPERIMENT, evaluate, main
from workers.loop import train_in_process
from workers.model import MetaPolicy, ModelNotFoundError, RegisteredModel, log_meta_policy
from workers.sampler import Sampler


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh SQLite tracking store with a local artifact root, for this module."""
    with fresh_store(tmp_path_factory.mktemp("mlflow"), "metarl-model-tests") as s:
        yield s


def _train(spec: JobSpec, learner_cls: type) -> Trained:
    family = make_family(spec.task_family.name, seed=spec.seed, **spec.task_family.family_kwargs())
    space = family.action_space
    discrete = not hasattr(space, "shape") or space.shape == ()
    act_dim = int(space.n) if discrete else int(space.shape[0])
    policy_spec = spec.policy_spec(obs_dim=family.observation_space.shape[0], act_dim=act_dim, discrete=discrete)
    learner = learner_cls(policy_spec, spec.algorithm, advantage=spec.advantage, seed=spec.seed)
    results = train_in_process(
        learner, family, meta_batch_size=spec.meta_batch_size, episodes_per_task=spec.episodes_per_task,
        iterations=spec.iterations, seed=spec.seed,
    )
    return Trained(spec=spec, state=learner.state_dict(), metrics=results[-1].metrics)


@pytest.fixture(scope="module")
def nav() -> Trained:
    """MAML-TRPO on navigation2d, meta-batch 4, 4 episodes per task, 2 iterations."""
    torch.manual_seed(0)
    spec = JobSpec.model_validate(
        {
            "name": "nav-model",
            "algorithm": {"name": "maml", "inner_lr": 0.1},
            "task_family": {"name": "navigation2d"},
            "policy": {"hidden_sizes": [16, 16]},
            "meta_batch_size": 4,
            "episodes_per_task": 4,
            "iterations": 2,
            "seed": 3,
        }
    )
    return _train(spec, MAML)


@pytest.fixture(scope="module")
def registered(store, nav) -> RegisteredModel:
    with mlflow.start_run(experiment_id=store.experiment_id):
        return log_meta_policy(state=nav.state, spec=nav.spec, final_metrics=nav.metrics, register_as="nav-model")


def test_log_and_register_sets_version_tags(store, nav, registered):
    assert registered.name == "nav-model" and registered.version == 1
    assert registered.uri == "models:/nav-model/1"
    version = mlflow.MlflowClient(store.uri).get_model_version("nav-model", "1")
    assert version.run_id == registered.run_id
    tags = version.tags
    assert tags["algorithm"] == "maml"
    assert tags["task_family"] == "navigation2d"
    assert tags["env_name"] == ""
    assert float(tags["return_pre"]) == pytest.approx(nav.metrics["meta/return_pre"])
    assert float(tags["return_post"]) == pytest.approx(nav.metrics["meta/return_post"])
    # navigation has no success signal: no success metric, no success tag (not a 0 that reads as failure)
    assert "meta/success_post" not in nav.metrics and "success_post" not in tags
    assert JobSpec.model_validate_json(tags["spec"]) == nav.spec


def test_log_needs_an_active_run(nav):
    assert mlflow.active_run() is None
    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_meta_policy(state=nav.state, spec=nav.spec, final_metrics={}, register_as=None)


@pytest.mark.parametrize("how", ["version", "alias", "latest"])
def test_load_acts_with_the_trained_parameters(store, nav, registered, how):
    if how == "alias":
        mlflow.MlflowClient(store.uri).set_registered_model_alias("nav-model", "champion", "1")
    uri = {"version": "models:/nav-model/1", "alias": "models:/nav-model@champion",
           "latest": "models:/nav-model@latest"}[how]
    policy = MetaPolicy.load(uri)
    assert policy.spec == nav.spec
    assert policy.policy_spec == nav.state.policy_spec
    assert policy.algorithm == "maml" and policy.inner_lr == pytest.approx(0.1)
    assert policy.training_run_id == registered.run_id
    for k, v in nav.state.params.items():
        torch.testing.assert_close(policy.params[k], v)
    assert policy.act(np.zeros(2, np.float32)).shape == (2,)
    batch = np.random.default_rng(0).normal(size=(6, 2)).astype(np.float32)
    actions = policy.act(batch)
    assert actions.shape == (6, 2) and actions.dtype == np.float32
    np.testing.assert_allclose(actions[2], policy.act(batch[2]), rtol=1e-6)
    assert policy.act(batch, deterministic=False).shape == (6, 2)


def test_act_clips_to_the_action_space_unless_asked_not_to(registered):
    policy = MetaPolicy.load(registered.uri)
    low, high = policy.action_bounds
    # stored with the model: navigation's default bound (float32, as the action space holds it)
    np.testing.assert_array_equal(low, np.float32([-0.1, -0.1]))
    np.testing.assert_array_equal(high, np.float32([0.1, 0.1]))
    card = json.loads((Path(mlflow.artifacts.download_artifacts(f"runs:/{registered.run_id}/meta_policy")) / "artifacts"
                       / "policy.json").read_text())
    assert np.float32(card["action_bounds"][1]).tolist() == pytest.approx([0.1, 0.1])
    params = policy.params
    params["body.2.bias"] = torch.tensor([1.5, -2.0])  # a mean far outside the bounds
    far = policy.with_params(params)
    obs = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    raw = far.act(obs, clip=False)
    assert (raw[:, 0] > high[0]).all() and (raw[:, 1] < low[1]).all()
    np.testing.assert_array_equal(far.act(obs), np.clip(raw, low, high))
    sampled = far.act(obs, deterministic=False)
    assert ((sampled >= low) & (sampled <= high)).all()
    np.testing.assert_array_equal(far.act(obs[0]), np.clip(raw[0], low, high))


def test_mean_return_measures_the_policy_on_a_task(registered):
    policy = MetaPolicy.load(registered.uri)
    task = policy.family.sample_tasks(1, np.random.default_rng(0))[0]
    r = policy.mean_return(task, episodes=3)
    assert math.isfinite(r) and r < 0  # navigation's reward is minus the distance to the goal
    assert policy.mean_return(task, episodes=3) == r  # seeded
    env = policy.family.make_env(task)
    assert math.isfinite(policy.mean_return(env, episodes=2))
    with pytest.raises(TypeError, match="mean_return takes"):
        policy.mean_return("task")  # type: ignore[arg-type]


def test_pyfunc_predicts_any_batch_size(registered):
    model = mlflow.pyfunc.load_model(registered.uri)
    reference = MetaPolicy.load(registered.uri)
    for n in (5, 1, 7):
        obs = np.random.default_rng(n).normal(size=(n, 2)).astype(np.float32)
        out = model.predict(obs)
        assert out.shape == (n, 2)
        np.testing.assert_allclose(out, reference.act(obs), rtol=1e-6)
    assert model.predict(np.zeros((5, 2), np.float32)).shape == (5, 2)


def test_adapt_to_a_task_returns_a_new_policy(registered):
    policy = MetaPolicy.load(registered.uri)
    before = policy.params
    task = policy.family.sample_tasks(1, np.random.default_rng(0), split="test")[0]
    adapted = policy.adapt(task, episodes=4, steps=1)
    assert adapted is not policy and adapted.adapted_steps == 1
    assert any(not torch.equal(adapted.params[k], before[k]) for k in before)
    for k, v in before.items():  # the original is untouched
        assert torch.equal(policy.params[k], v)
    assert adapted.act(np.zeros(2)).shape == (2,)
    # same seed, same episodes, same step
    again = policy.adapt(task, episodes=4, steps=1)
    for k in before:
        torch.testing.assert_close(again.params[k], adapted.params[k])
    twice = policy.adapt(task, episodes=4, steps=2)
    assert twice.adapted_steps == 2


def test_adapt_takes_the_learners_inner_step(nav, registered):
    """MetaPolicy.adapt samples exactly what a Sampler with its seed samples, and steps exactly
    as the learner's own ``adapt`` does on those episodes."""
    policy = MetaPolicy.load(registered.uri)
    task = policy.family.sample_tasks(1, np.random.default_rng(2), split="test")[0]
    adapted = policy.adapt(task, episodes=4, steps=1, seed=5)
    learner = MAML(nav.state.policy_spec, nav.spec.algorithm, advantage=nav.spec.advantage)
    learner.load_state_dict(nav.state)
    sampler = Sampler(policy.family, policy.policy_spec, envs_per_task=4, seed=5)
    episodes = sampler.sample([task], learner.params, episodes_per_task=4)
    sampler.close()
    (expected,) = learner.adapt([learner.params], episodes)
    for k, v in expected.items():
        torch.testing.assert_close(adapted.params[k], v)


def test_log_without_registering(store, nav):
    with mlflow.start_run(experiment_id=store.experiment_id):
        logged = log_meta_policy(state=nav.state, spec=nav.spec, final_metrics={}, register_as=None)
    assert logged.name is None and logged.version is None
    assert logged.uri == f"models:/{logged.model_id}"
    policy = MetaPolicy.load(logged.uri)
    np.testing.assert_allclose(policy.act(np.ones((2, 2))),
                               MetaPolicy.load(f"runs:/{logged.run_id}/meta_policy").act(np.ones((2, 2))))


def test_adapt_to_a_gymnasium_env(registered):
    policy = MetaPolicy.load(registered.uri)
    task = policy.family.sample_tasks(1, np.random.default_rng(1), split="test")[0]
    env = policy.family.make_env(task)
    adapted = policy.adapt(env, episodes=3, steps=2, seed=1)
    assert adapted.adapted_steps == 2
    assert any(not torch.equal(adapted.params[k], policy.params[k]) for k in policy.params)
    assert all(torch.isfinite(v).all() for v in adapted.params.values())
    obs, _ = env.reset(seed=0)
    assert adapted.act(obs).shape == (2,)


def test_adapt_refuses_what_it_cannot_use(registered):
    policy = MetaPolicy.load(registered.uri)
    cartpole = make_family("cartpole-physics")
    foreign = cartpole.sample_tasks(1, np.random.default_rng(0))[0]
    with pytest.raises(ValueError, match="navigation2d"):
        policy.adapt(foreign, episodes=2)
    with pytest.raises(ValueError, match="observations have shape"):
        policy.adapt(cartpole.make_env(foreign), episodes=2)
    with pytest.raises(ValueError, match="episodes must be a positive integer"):
        policy.adapt(policy.family.sample_tasks(1, np.random.default_rng(0))[0], episodes=0)
    with pytest.raises(ValueError, match=r"obs must have shape"):
        policy.act(np.zeros(3))


def test_load_from_a_downloaded_directory(registered, tmp_path):
    local = mlflow.artifacts.download_artifacts(artifact_uri=registered.uri, dst_path=str(tmp_path))
    policy = MetaPolicy.load(local)
    reference = MetaPolicy.load(f"runs:/{registered.run_id}/meta_policy")
    np.testing.assert_allclose(policy.act(np.ones((3, 2))), reference.act(np.ones((3, 2))))
    card = json.loads((Path(local) / "artifacts" / "policy.json").read_text())
    assert card["algorithm"] == "maml" and card["policy_spec"]["hidden_sizes"] == [16, 16]
    assert card["advantage"] == {"gamma": 0.99, "gae_lambda": 1.0, "normalize": True}


def test_missing_models_give_a_clear_error(registered, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"nope.*Registered models there: \['nav-model'\]"):
        MetaPolicy.load("models:/nope/1")
    with pytest.raises(ModelNotFoundError, match="version=9"):
        MetaPolicy.load("models:/nav-model/9")
    with pytest.raises(ModelNotFoundError, match="alias"):
        MetaPolicy.load("models:/nav-model@missing")
    with pytest.raises(ModelNotFoundError, match="no model directory"):
        MetaPolicy.load(str(tmp_path / "nothing-here"))


def test_evaluate_on_held_out_tasks(store, registered):
    report = evaluate(registered.uri, episodes=4, steps=1, tasks=3, seed=0)
    assert report.tasks == 3 and [r.index for r in report.results] == [0, 1, 2]
    assert all("test#" in r.task for r in report.results)
    for r in report.results:
        for x in (r.return_pre, r.return_post, r.success_pre, r.success_post):
            assert math.isfinite(x)
    assert report.return_post.mean == pytest.approx(np.mean([r.return_post for r in report.results]))
    assert report.return_post.low <= report.return_post.mean <= report.return_post.high
    assert report.model_name == "nav-model" and report.model_version == 1
    assert report.eval_episodes == 4 and not report.deterministic_eval

    client = mlflow.MlflowClient(store.uri)
    run = client.get_run(report.run_id)
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.data.tags["metarl.model_uri"] == registered.uri
    assert run.data.tags["metarl.model_name"] == "nav-model"
    assert run.data.tags["metarl.model_version"] == "1"
    assert run.data.params == {
        "episodes": "4", "steps": "1", "tasks": "3", "seed": "0", "eval_episodes": "4", "deterministic_eval": "False",
        "split": "test", "inner_lr": "0.1", "later_lr": "0.1",
    }
    assert run.data.metrics["eval/return_post"] == pytest.approx(report.return_post.mean)
    assert {"eval/return_pre", "eval/return_post"} <= set(run.data.metrics)
    assert not report.has_success and not any("success" in k for k in run.data.metrics)
    history = client.get_metric_history(report.run_id, "eval/task_return_post")
    logged = sorted((m.step, m.value) for m in history)
    assert [step for step, _ in logged] == [0, 1, 2]
    assert [value for _, value in logged] == pytest.approx([r.return_post for r in report.results])
    # same seed, same evaluation
    again = evaluate(registered.uri, episodes=4, steps=1, tasks=3, seed=0, log_to_mlflow=False)
    assert again.run_id is None
    assert [r.return_post for r in again.results] == [r.return_post for r in report.results]


def test_evaluate_cli_json(registered, capsys):
    assert main(["--model", registered.uri, "--episodes", "2", "--tasks", "2", "--json", "--no-mlflow"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tasks"] == 2 and len(out["results"]) == 2 and out["run_id"] is None
    assert main(["--model", "models:/nope/1", "--tasks", "1", "--no-mlflow"]) == 2
    assert "nope" in capsys.readouterr().err


def test_evaluate_curve_over_steps(store, registered):
    """Step k of an n-step evaluation is the post value of a k-step one with the same seed; step
    0 is the pre value, step n the post value; the curve is logged with MLflow step = k."""
    report = evaluate(registered.uri, episodes=4, steps=3, tasks=3, seed=1, later_lr=0.05)
    assert len(report.return_steps) == len(report.success_steps) == 4
    assert report.inner_lr == pytest.approx(0.1) and report.later_lr == pytest.approx(0.05)
    assert report.return_steps[0] == report.return_pre and report.return_steps[3] == report.return_post
    for r in report.results:
        assert r.return_steps[0] == r.return_pre and r.return_steps[-1] == r.return_post
    for k in (1, 2):
        shorter = evaluate(registered.uri, episodes=4, steps=k, tasks=3, seed=1, later_lr=0.05, log_to_mlflow=False)
        assert [r.return_post for r in shorter.results] == [r.return_steps[k] for r in report.results]
        assert shorter.return_post == report.return_steps[k]
    # means of the right values, with a 95% interval around them
    for k, interval in enumerate(report.return_steps):
        assert interval.mean == pytest.approx(np.mean([r.return_steps[k] for r in report.results]))
        assert interval.low <= interval.mean <= interval.high

    client = mlflow.MlflowClient(store.uri)
    logged = sorted((m.step, m.value) for m in client.get_metric_history(report.run_id, "eval/return_step"))
    assert [k for k, _ in logged] == [0, 1, 2, 3]
    assert [v for _, v in logged] == pytest.approx([i.mean for i in report.return_steps])
    highs = sorted((m.step, m.value) for m in client.get_metric_history(report.run_id, "eval/return_step_ci_high"))
    assert [v for _, v in highs] == pytest.approx([i.high for i in report.return_steps])
    assert client.get_run(report.run_id).data.params["later_lr"] == "0.05"


def test_later_lr_is_applied_from_the_second_step(registered):
    """Two inner steps against a hand computation: φ₁ = θ − α∇L(θ), φ₂ = φ₁ − β∇L(φ₁), each
    gradient on the episodes sampled with the parameters it is taken at (α = 0.1, β = 0.05)."""
    policy = MetaPolicy.load(registered.uri)
    task = policy.family.sample_tasks(1, np.random.default_rng(4), split="test")[0]
    sampler = Sampler(policy.family, policy.policy_spec, envs_per_task=4, seed=7)
    adapted = policy.adapt_tasks([task], sampler=sampler, episodes=4, steps=2, later_lr=0.05)
    sampler.close()

    module = make_policy(policy.policy_spec)
    sampler = Sampler(policy.family, policy.policy_spec, envs_per_task=4, seed=7)
    params = policy.params
    for lr in (0.1, 0.05):
        episodes = sampler.sample([task], params, episodes_per_task=4)
        batch = make_task_batch(episodes, advantage=policy.advantage)
        stacked = {k: v.clone().requires_grad_(True) for k, v in stack_params([params]).items()}
        grads = torch.autograd.grad(F.inner_loss(module, stacked, batch).sum(), list(stacked.values()))
        params = unstack_params({k: (v - lr * g).detach() for (k, v), g in zip(stacked.items(), grads, strict=True)})[0]
    sampler.close()
    for k, v in params.items():
        torch.testing.assert_close(adapted.params[0][k], v)
    # the same steps with the default (inner_lr for every step) end elsewhere
    sampler = Sampler(policy.family, policy.policy_spec, envs_per_task=4, seed=7)
    same_lr = policy.adapt_tasks([task], sampler=sampler, episodes=4, steps=2)
    sampler.close()
    assert any(not torch.allclose(same_lr.params[0][k], params[k]) for k in params)
    assert policy.step_lr(0, later_lr=0.05) == pytest.approx(0.1) and policy.step_lr(2) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="later_lr"):
        policy.adapt(task, episodes=2, steps=2, later_lr=0.0)


def test_evaluate_cli_later_lr_and_train_split(registered, capsys):
    assert main(["--model", registered.uri, "--episodes", "2", "--steps", "2", "--tasks", "2", "--later-lr", "0.05",
                 "--split", "train", "--json", "--no-mlflow"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["later_lr"] == pytest.approx(0.05) and out["split"] == "train"
    assert len(out["return_steps"]) == 3 and all("train#" in r["task"] for r in out["results"])
    with pytest.raises(SystemExit):
        main(["--model", registered.uri, "--later-lr", "-1"])


def test_initial_policy_is_what_training_starts_from(nav, tmp_path):
    """MetaPolicy.initial(spec): the learner's parameters before the first iteration (the
    random-initialisation baseline), evaluable from a saved directory."""
    initial = MetaPolicy.initial(nav.spec)
    fresh = MAML(nav.state.policy_spec, nav.spec.algorithm, advantage=nav.spec.advantage, seed=nav.spec.seed)
    assert initial.policy_spec == nav.state.policy_spec and initial.iteration == 0
    assert initial.inner_lr == pytest.approx(0.1) and initial.algorithm == "maml"
    for k, v in fresh.params.items():
        torch.testing.assert_close(initial.params[k], v)
    assert any(not torch.equal(initial.params[k], nav.state.params[k]) for k in nav.state.params)
    other = MetaPolicy.initial(nav.spec.model_copy(update={"seed": nav.spec.seed + 1}))
    assert any(not torch.equal(initial.params[k], other.params[k]) for k in initial.params)
    initial.save(tmp_path / "initial")
    report = evaluate(str(tmp_path / "initial"), episodes=2, steps=1, tasks=2, seed=0, log_to_mlflow=False)
    assert report.model_version is None and report.tasks == 2 and math.isfinite(report.return_post.mean)


def test_evaluate_samples_the_evaluation_actions_on_request(tmp_path):
    """Meta-World's protocol takes the adapted policy's mean action; ``sampled_eval`` samples it
    instead (garage's MetaEvaluator): the same pre-adaptation episodes and inner step, other
    evaluation episodes."""
    spec = JobSpec.model_validate({
        "name": "reach-eval", "algorithm": {"name": "maml"}, "policy": {"hidden_sizes": [16]},
        "task_family": {"name": "metaworld-ml1", "env_name": "reach-v3", "max_episode_steps": 15},
    })
    MetaPolicy.initial(spec).save(tmp_path / "reach")
    mean = evaluate(str(tmp_path / "reach"), episodes=2, tasks=2, seed=0, log_to_mlflow=False)
    sampled = evaluate(str(tmp_path / "reach"), episodes=2, tasks=2, seed=0, log_to_mlflow=False, sampled_eval=True)
    assert mean.deterministic_eval and not sampled.deterministic_eval and mean.eval_episodes == 3
    assert [r.return_pre for r in mean.results] == [r.return_pre for r in sampled.results]
    assert [r.return_post for r in mean.results] != [r.return_post for r in sampled.results]
    assert main(["--model", str(tmp_path / "reach"), "--episodes", "2", "--tasks", "2", "--no-mlflow", "--json",
                 "--sampled-eval"]) == 0


def test_discrete_policy_round_trips(store, tmp_path):
    spec = JobSpec.model_validate(
        {
            "name": "cartpole-model",
            "algorithm": {"name": "multitask-pg", "epochs": 1, "minibatches": 2},
            "task_family": {"name": "cartpole-physics", "max_episode_steps": 30},
            "policy": {"hidden_sizes": [8]},
            "meta_batch_size": 2,
            "episodes_per_task": 2,
            "iterations": 1,
        }
    )
    trained = _train(spec, MultiTaskPG)
    with mlflow.start_run(experiment_id=store.experiment_id):
        reg = log_meta_policy(state=trained.state, spec=spec, final_metrics=trained.metrics,
                              register_as="cartpole-model")
    policy = MetaPolicy.load(reg.uri)
    assert policy.policy_spec.discrete and policy.algorithm == "multitask-pg"
    single = policy.act(np.zeros(4, np.float32))
    assert single.shape == () and single.dtype == np.int64
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    actions = policy.act(obs)
    assert actions.shape == (5,) and set(actions.tolist()) <= {0, 1}
    model = mlflow.pyfunc.load_model(reg.uri)
    np.testing.assert_array_equal(model.predict(obs), actions)
    assert model.predict(obs[:1]).shape == (1,)
    task = policy.family.sample_tasks(1, np.random.default_rng(0), split="test")[0]
    adapted = policy.adapt(task, episodes=2, steps=1)
    assert any(not torch.equal(adapted.params[k], policy.params[k]) for k in policy.params)
    assert policy.adapt(policy.family.make_env(task), episodes=2).act(obs).shape == (5,)
