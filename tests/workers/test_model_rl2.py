"""RL²'s registered meta-policy: a really trained RL² learner logged to a real MLflow store (SQLite
+ a local artifact dir in the test's temp dir) and loaded back as a stateful recurrent policy --
acting, adapting within a trial, measuring, saving and the pyfunc model, each checked against the
torch policy or the trial sampler it must agree with; no Ray."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from algorithms import registry
from algorithms.rl2.policy import make_recurrent_policy
from algorithms.rl2.trials import TrialState
from tests.workers.model_store import Trained, fresh_store
from workers.contract import EVALUATION_REPORT, JobSpec
from workers.envs import make_family
from workers.evaluate import EXPERIMENT, evaluate, main
from workers.loop import train_in_process
from workers.model import (
    MetaPolicy,
    RecurrentMetaPolicy,
    RecurrentMetaPolicyModel,
    RegisteredModel,
    log_meta_policy,
)
from workers.trial_sampler import TrialPhaseSampler, TrialSampler

HORIZON = 20
MODEL = "rl2-nav"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh SQLite tracking store with a local artifact root, for this module."""
    with fresh_store(tmp_path_factory.mktemp("mlflow"), "metarl-rl2-model-tests") as s:
        yield s


def rl2_spec(**over) -> JobSpec:
    base = {
        "name": MODEL,
        "algorithm": {"name": "rl2", "episodes_per_trial": 2, "hidden_size": 16, "encoder_sizes": [16],
                      "epochs": 1, "minibatches": 2},
        "task_family": {"name": "navigation2d", "max_episode_steps": HORIZON},
        "meta_batch_size": 2,
        "episodes_per_task": 4,
        "iterations": 2,
        "seed": 3,
    }
    base.update(over)
    return JobSpec.model_validate(base)


@pytest.fixture(scope="module")
def trained() -> Trained:
    """RL² on navigation2d (GRU of 16, horizon 20), meta-batch 2, 2 trials of 2 episodes per task,
    2 iterations, in this process."""
    torch.manual_seed(0)
    spec = rl2_spec()
    tf = spec.task_family
    family = make_family(tf.name, seed=spec.seed, **tf.family_kwargs())
    obs_dim, act_dim, discrete = family.policy_dims()
    policy_spec = spec.policy_spec(obs_dim=obs_dim, act_dim=act_dim, discrete=discrete)
    learner = registry.make_learner(spec.algorithm, policy_spec, advantage=spec.advantage, seed=spec.seed)
    results = train_in_process(learner, family, meta_batch_size=spec.meta_batch_size,
                               episodes_per_task=spec.episodes_per_task, iterations=spec.iterations, seed=spec.seed)
    return Trained(spec=spec, state=learner.state_dict(), metrics=results[-1].metrics)


@pytest.fixture(scope="module")
def registered(store, trained) -> RegisteredModel:
    with mlflow.start_run(experiment_id=store.experiment_id):
        return log_meta_policy(state=trained.state, spec=trained.spec, final_metrics=trained.metrics,
                               register_as=MODEL)


def _task(policy: RecurrentMetaPolicy, seed: int = 0):
    return policy.family.sample_tasks(1, np.random.default_rng(seed), split="test")[0]


def _run_env(policy: RecurrentMetaPolicy, env, steps: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """``steps`` steps of ``env`` with ``policy.act`` / ``policy.observe`` (deterministic, across
    episode ends); the history as the policy's inputs, the raw and clipped actions and the state
    after every step."""
    rows: dict[str, list] = {k: [] for k in ("obs", "raw", "actions", "rewards", "dones", "states")}
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        state = policy.state
        raw = policy.with_state(state).act(obs, clip=False)  # the same step on a copy: the unclipped mean
        a = policy.act(obs)
        obs_next, r, term, trunc, _ = env.step(a)
        done = bool(term or trunc)
        policy.observe(r, done)
        rows["obs"].append(np.asarray(obs, np.float32))
        rows["raw"].append(raw)
        rows["actions"].append(a)
        rows["rewards"].append(np.float32(r))
        rows["dones"].append(done)
        rows["states"].append(policy.state.state[0])
        obs = env.reset()[0] if done else obs_next
    out = {k: np.asarray(v) for k, v in rows.items()}
    n = len(out["obs"])
    prev = {
        "prev_action": np.concatenate([np.zeros((1, out["actions"].shape[1]), np.float32), out["actions"][:-1]]),
        "prev_reward": np.concatenate([[0.0], out["rewards"][:-1]]).astype(np.float32),
        "prev_done": np.concatenate([[0.0], out["dones"][:-1]]).astype(np.float32),
    }
    assert all(len(v) == n for v in prev.values())
    return {**out, **prev}


# ---- loading ----------------------------------------------------------------------------------


def test_an_rl2_model_loads_as_a_recurrent_policy(store, trained, registered):
    assert registered.uri == f"models:/{MODEL}/1"
    policy = MetaPolicy.load(registered.uri)
    assert isinstance(policy, RecurrentMetaPolicy)
    assert policy.algorithm == "rl2" and policy.iteration == 2 and policy.spec == trained.spec
    assert policy.policy_spec == trained.state.policy_spec and policy.policy_spec.hidden_size == 16
    assert policy.training_run_id == registered.run_id and policy.adapted_episodes == 0
    for k, v in trained.state.params.items():
        torch.testing.assert_close(policy.params[k], v, rtol=0, atol=0)
    state = policy.state
    assert state.num_trials == 1 and state.state.shape == (1, 16) and state.prev_action.shape == (1, 2)
    assert not (state.state.any() or state.prev_action.any() or state.prev_reward.any() or state.prev_done.any())
    low, high = policy.action_bounds
    np.testing.assert_array_equal(high, np.float32([0.1, 0.1]))
    np.testing.assert_array_equal(low, -high)
    assert policy.clips_actions
    card = json.loads((Path(mlflow.artifacts.download_artifacts(f"runs:/{registered.run_id}/meta_policy"))
                       / "artifacts" / "policy.json").read_text())
    assert card["policy_kind"] == "recurrent" and card["format_version"] == 1 and card["trial_state"] is None
    assert card["policy_spec"]["encoder_sizes"] == [16] and "inner_lr" not in card
    # RL²'s summary tags: a trial's first and last episodes (no success on navigation)
    tags = mlflow.MlflowClient(store.uri).get_model_version(MODEL, "1").tags
    assert tags["algorithm"] == "rl2" and tags["task_family"] == "navigation2d"
    assert float(tags["return_pre"]) == pytest.approx(trained.metrics["meta/return_first_episode"])
    assert float(tags["return_post"]) == pytest.approx(trained.metrics["meta/return_last_episode"])
    assert "success_post" not in tags


def test_initial_is_the_learners_starting_point(trained):
    initial = MetaPolicy.initial(trained.spec)
    assert isinstance(initial, RecurrentMetaPolicy) and initial.iteration == 0
    fresh = registry.make_learner(trained.spec.algorithm, trained.state.policy_spec, seed=trained.spec.seed)
    for k, v in fresh.params.items():
        torch.testing.assert_close(initial.params[k], v, rtol=0, atol=0)
    assert any(not torch.equal(initial.params[k], trained.state.params[k]) for k in trained.state.params)
    learner_state = MetaPolicy.from_learner_state(trained.spec, trained.state, source="test")
    assert isinstance(learner_state, RecurrentMetaPolicy) and learner_state.source == "test"


# ---- acting -----------------------------------------------------------------------------------


def test_act_is_the_torch_policys_step_and_unroll_over_the_same_inputs(registered):
    """Stepping act/observe through two episodes (horizon 20, 30 steps) is, bit for bit, the torch
    policy's ``step`` chained over the inputs the steps saw -- the previous action clipped to the
    action space (what the env applied), the previous reward, the episode end carried over --
    and its fused ``unroll`` over the whole history to float32 rounding."""
    loaded = MetaPolicy.load(registered.uri)
    params = loaded.params
    params["head.bias"] = torch.tensor([0.0, 1.5])  # the second action's mean far outside the bounds
    policy = RecurrentMetaPolicy(spec=loaded.spec, policy_spec=loaded.policy_spec, params=params, algorithm="rl2")
    env = policy.family.make_env(_task(policy, 1))
    hist = _run_env(policy, env, 30)
    ends = np.flatnonzero(hist["dones"][:-1])
    assert len(ends) >= 1 and hist["prev_done"][ends[0] + 1] == 1.0  # an episode ended, the trial went on
    low, high = policy.action_bounds
    np.testing.assert_array_equal(hist["actions"], np.clip(hist["raw"], low, high))
    assert (hist["raw"][:, 1] > high[1]).all() and (np.abs(hist["raw"][:, 0]) < high[0]).any()  # clipping mattered

    module = make_recurrent_policy(policy.policy_spec)

    def tensor(a):
        return torch.as_tensor(np.asarray(a, np.float32))

    h = torch.zeros(1, 16)
    with torch.no_grad():
        for t in range(30):
            dist, _, h = module.step(params, tensor(hist["obs"][t : t + 1]), tensor(hist["prev_action"][t : t + 1]),
                                     tensor(hist["prev_reward"][t : t + 1]), tensor(hist["prev_done"][t : t + 1]), h)
            np.testing.assert_array_equal(hist["raw"][t], dist[0][0].numpy())
            np.testing.assert_array_equal(hist["states"][t], h[0].numpy())
        dist, _, states = module.unroll(params, tensor(hist["obs"])[:, None], tensor(hist["prev_action"])[:, None],
                                        tensor(hist["prev_reward"])[:, None], tensor(hist["prev_done"])[:, None],
                                        torch.zeros(1, 16))
    np.testing.assert_allclose(hist["raw"], dist[0][:, 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hist["states"], states[1:, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_act_on_a_batch_and_sampled_actions(registered):
    policy = MetaPolicy.load(registered.uri)
    obs = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)
    single = policy.with_state(policy.state).act(obs[1])
    out = policy.act(obs)  # three trials from the one (zero) state
    assert out.shape == (3, 2) and out.dtype == np.float32 and policy.state.num_trials == 3
    np.testing.assert_array_equal(out[1], single)
    policy.observe([1.0, 2.0, 3.0], [False, True, False])
    np.testing.assert_array_equal(policy.state.prev_reward, np.float32([1, 2, 3]))
    np.testing.assert_array_equal(policy.state.prev_done, np.float32([0, 1, 0]))
    with pytest.raises(ValueError, match="state of 3 trials"):
        policy.act(obs[0])
    with pytest.raises(ValueError, match="observe takes a reward and a done flag"):
        policy.observe([1.0, 2.0], False)
    with pytest.raises(ValueError, match="goes on from one trial's state"):
        policy.adapt(_task(policy), episodes=1)
    policy.reset()
    assert policy.state.num_trials == 1 and not policy.state.state.any()
    np.testing.assert_array_equal(policy.act(obs[1]), single)
    low, high = policy.action_bounds
    sampled = policy.act(np.zeros(2), deterministic=False)
    assert sampled.shape == (2,) and ((sampled >= low) & (sampled <= high)).all()
    with pytest.raises(ValueError, match=r"obs must have shape"):
        policy.act(np.zeros(3))


# ---- adapting and measuring ---------------------------------------------------------------------


def test_adapt_holds_the_state_the_trial_left(registered):
    policy = MetaPolicy.load(registered.uri)
    task = _task(policy, 2)
    adapted = policy.adapt(task, episodes=3, steps=1, seed=5)
    assert isinstance(adapted, RecurrentMetaPolicy) and adapted is not policy and adapted.adapted_episodes == 3
    sampler = TrialSampler(policy.family, policy.policy_spec, trials_per_task=1, seed=5)
    (trial,) = sampler.sample([task], policy.params, episodes_per_trial=3)
    sampler.close()
    assert trial.episodes_per_trial == 3
    end = adapted.state
    for name in ("state", "prev_action", "prev_reward", "prev_done"):
        np.testing.assert_array_equal(getattr(end, name), getattr(trial.end, name))
    assert end.prev_done.tolist() == [1.0] and np.abs(end.state).max() > 1e-3
    assert not policy.state.state.any() and not policy.state.prev_done.any()  # the original is untouched
    for k, v in policy.params.items():  # RL² adapts the state, never the parameters
        assert torch.equal(adapted.params[k], v)
    again = policy.adapt(task, episodes=3, seed=5)
    np.testing.assert_array_equal(again.state.state, end.state)
    # adapting an adapted policy goes on with the same trial
    more = adapted.adapt(task, episodes=1, seed=6)
    sampler = TrialSampler(policy.family, policy.policy_spec, trials_per_task=1, seed=6)
    (trial,) = sampler.sample([task], policy.params, episodes_per_trial=1, start=end)
    sampler.close()
    np.testing.assert_array_equal(more.state.state, trial.end.state)
    assert more.adapted_episodes == 4


def test_adapt_refuses_inner_steps_and_what_it_cannot_use(registered):
    policy = MetaPolicy.load(registered.uri)
    task = _task(policy)
    with pytest.raises(ValueError, match="RL² adapts within a trial"):
        policy.adapt(task, episodes=2, steps=2)
    with pytest.raises(ValueError, match="episodes must be a positive integer"):
        policy.adapt(task, episodes=0)
    cartpole = make_family("cartpole-physics")
    foreign = cartpole.sample_tasks(1, np.random.default_rng(0))[0]
    with pytest.raises(ValueError, match="navigation2d"):
        policy.adapt(foreign, episodes=2)
    with pytest.raises(ValueError, match="observations have shape"):
        policy.adapt(cartpole.make_env(foreign), episodes=2)
    with pytest.raises(TypeError, match="adapt takes"):
        policy.adapt("task", episodes=2)  # type: ignore[arg-type]


def test_mean_return_starts_every_episode_from_the_policys_state(registered):
    policy = MetaPolicy.load(registered.uri)
    task = _task(policy, 3)
    adapted = policy.adapt(task, episodes=2, seed=0)
    r = adapted.mean_return(task, episodes=3)
    sampler = TrialPhaseSampler(policy.family, policy.policy_spec, episodes_per_trial=1, envs_per_task=3, seed=1)
    (trials,) = sampler.trials([task], policy.params, trials_per_task=3, episodes_per_trial=1,
                               start=adapted.state.repeat(3))
    sampler.close()
    assert trials.episodes_per_trial == 1 and trials.num_trials == 3
    assert r == pytest.approx(float(trials.returns_per_episode()[:, 0].mean()), rel=1e-12)
    assert math.isfinite(r) and r < 0  # navigation's reward is minus the distance to the goal
    assert adapted.mean_return(task, episodes=3) == r  # seeded; the state is left as it was
    fresh = policy.mean_return(task, episodes=3)  # from zeros: other actions, another return
    assert math.isfinite(fresh) and fresh != r


def test_adapt_and_measure_on_a_gymnasium_env(registered):
    """A plain env: the trial's episodes one after another, the state carried across them."""
    policy = MetaPolicy.load(registered.uri)
    env = policy.family.make_env(_task(policy, 4))
    adapted = policy.adapt(env, episodes=2, seed=1)
    assert adapted.state.prev_done.tolist() == [1.0] and np.abs(adapted.state.state).max() > 1e-3
    again = policy.adapt(env, episodes=2, seed=1)
    np.testing.assert_array_equal(again.state.state, adapted.state.state)
    r = adapted.mean_return(env, episodes=2)
    assert math.isfinite(r) and adapted.mean_return(env, episodes=2) == r
    assert not policy.state.state.any()


def test_the_readme_snippet_runs_unchanged_on_an_rl2_model(registered, capsys):
    """README's load-adapt lines, with the RL² model's URI in place of the demo's."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    m = re.search(r"<!-- snippet: load-adapt -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no load-adapt snippet"
    code, n = re.subn(r'MetaPolicy\.load\("models:/[^"]+"\)', f'MetaPolicy.load("{registered.uri}")', m[1])
    assert n == 1
    exec(compile(code, "README.md:load-adapt", "exec"), {})
    out = re.search(r"return before adaptation (-?[\d.]+), after (-?[\d.]+)", capsys.readouterr().out)
    assert out and all(math.isfinite(float(x)) for x in out.groups())


# ---- saving and the pyfunc model ----------------------------------------------------------------


def test_save_and_load_keep_the_adapted_state(registered, tmp_path):
    policy = MetaPolicy.load(registered.uri)
    adapted = policy.adapt(_task(policy, 5), episodes=2, seed=2)
    adapted.save(tmp_path / "adapted")
    loaded = MetaPolicy.load(str(tmp_path / "adapted"))
    assert isinstance(loaded, RecurrentMetaPolicy) and loaded.adapted_episodes == 2
    assert loaded.training_run_id == registered.run_id and loaded.spec == policy.spec
    for name in ("state", "prev_action", "prev_reward", "prev_done"):
        np.testing.assert_array_equal(getattr(loaded.state, name), getattr(adapted.state, name))
    for k, v in adapted.params.items():
        assert torch.equal(loaded.params[k], v)
    obs = np.float32([0.3, -0.2])
    np.testing.assert_array_equal(loaded.act(obs), adapted.act(obs))
    card = json.loads((tmp_path / "adapted" / "policy.json").read_text())
    assert card["policy_kind"] == "recurrent" and len(card["trial_state"]["state"][0]) == 16
    policy.save(tmp_path / "fresh")  # a fresh policy's card holds no state; it loads at zeros
    assert json.loads((tmp_path / "fresh" / "policy.json").read_text())["trial_state"] is None
    assert not MetaPolicy.load(str(tmp_path / "fresh")).state.state.any()


def test_pyfunc_predict_over_a_history_equals_stepping_act(registered):
    model = mlflow.pyfunc.load_model(registered.uri)
    assert isinstance(model.unwrap_python_model(), RecurrentMetaPolicyModel)
    policy = MetaPolicy.load(registered.uri)
    env = policy.family.make_env(_task(policy, 6))
    hist = _run_env(policy, env, 25)
    inputs = {k: hist[k] for k in ("obs", "prev_action", "prev_reward", "prev_done")}
    out = model.predict(inputs)
    assert out["actions"].shape == (25, 2) and out["state"].shape == (16,)
    np.testing.assert_array_equal(out["actions"], hist["actions"])
    np.testing.assert_array_equal(out["state"], policy.state.state[0])
    # the same trial in two calls: the second goes on from the state the first returned
    first = model.predict({k: v[:HORIZON + 2] for k, v in inputs.items()})
    second = model.predict({**{k: v[HORIZON + 2 :] for k, v in inputs.items()}, "state": first["state"]})
    np.testing.assert_array_equal(np.concatenate([first["actions"], second["actions"]]), hist["actions"])
    np.testing.assert_array_equal(second["state"], out["state"])
    # float64 inputs are taken as well
    wide = model.predict({k: np.asarray(v, np.float64) for k, v in inputs.items()})
    np.testing.assert_array_equal(wide["actions"], out["actions"])
    with pytest.raises(Exception, match="prev_done"):
        model.predict({k: v for k, v in inputs.items() if k != "prev_done"})


def test_an_mlp_card_without_a_kind_still_loads_as_before(tmp_path):
    """Cards written before kinds were stored name none: they are MLP policies."""
    from algorithms.maml import MAML

    spec = JobSpec.model_validate({"name": "old", "algorithm": {"name": "maml", "inner_lr": 0.1},
                                   "task_family": {"name": "navigation2d"}, "policy": {"hidden_sizes": [8]}})
    family = make_family("navigation2d")
    learner = MAML(spec.policy_spec(obs_dim=2, act_dim=2, discrete=False), spec.algorithm, seed=0)
    mlp = MetaPolicy.from_learner_state(spec, learner.state_dict(), source="test")
    mlp._family = family
    mlp.save(tmp_path / "old")
    card_file = tmp_path / "old" / "policy.json"
    card = json.loads(card_file.read_text())
    assert card.pop("policy_kind") == "mlp"
    card_file.write_text(json.dumps(card))
    loaded = MetaPolicy.load(str(tmp_path / "old"))
    assert type(loaded) is MetaPolicy and loaded.inner_lr == pytest.approx(0.1)
    np.testing.assert_array_equal(loaded.act(np.ones((2, 2))), mlp.act(np.ones((2, 2))))
    card["policy_kind"] = "transformer"
    card_file.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="kind 'transformer'"):
        MetaPolicy.load(str(tmp_path / "old"))


def test_trial_state_must_fit_the_policy(registered):
    policy = MetaPolicy.load(registered.uri)
    with pytest.raises(ValueError, match="does not fit"):
        policy.with_state(TrialState.zeros(1, 8, 2))


# ---- meta-test evaluation -----------------------------------------------------------------------


def _meta_test_directly(policy: RecurrentMetaPolicy, *, episodes: int, tasks: int, seed: int,
                        deterministic: bool | None = None):
    """The meta-test evaluate() must have run: the trial sampler's, on the same test tasks
    (evaluation episodes deterministic where the family says, unless ``deterministic`` is given)."""
    family = policy.family
    test_tasks = family.sample_tasks(tasks, np.random.default_rng(seed), split="test")
    eval_episodes = family.eval_episodes or episodes
    sampler = TrialPhaseSampler(family, policy.policy_spec, episodes_per_trial=episodes, envs_per_task=eval_episodes,
                                seed=seed)
    adaptation, evaluation = sampler.meta_test(test_tasks, policy.params, adaptation_episodes=episodes,
                                               eval_episodes=eval_episodes,
                                               deterministic_eval=family.deterministic_eval if deterministic is None
                                               else deterministic)
    sampler.close()
    return test_tasks, adaptation, evaluation


def test_evaluate_meta_tests_an_rl2_model_within_a_trial(store, registered):
    report = evaluate(registered.uri, episodes=3, steps=1, tasks=2, seed=0)
    assert report.adaptation == "trial" and report.steps == 1 and report.episodes == 3 and report.tasks == 2
    assert report.eval_episodes == 3 and not report.deterministic_eval and not report.has_success
    assert report.inner_lr is None and report.later_lr is None
    assert report.model_name == MODEL and report.model_version == 1
    assert len(report.return_steps) == len(report.success_steps) == 4  # episodes 0, 1, 2 of the trial, then eval

    tasks, adaptation, evaluation = _meta_test_directly(MetaPolicy.load(registered.uri), episodes=3, tasks=2, seed=0)
    for r, task, a, e in zip(report.results, tasks, adaptation, evaluation, strict=True):
        assert r.task == task.describe() and "test#" in r.task
        per_episode = a.returns_per_episode()[0]
        assert a.num_trials == 1 and len(per_episode) == 3 and e.num_trials == 3 and e.episodes_per_trial == 1
        # every evaluation episode started from the state the adaptation trial left
        np.testing.assert_array_equal(e.initial_state, np.repeat(a.end.state, 3, axis=0))
        assert r.return_pre == per_episode[0] and r.return_steps[:3] == tuple(per_episode)
        assert r.return_post == float(e.returns_per_episode()[:, 0].mean()) == r.return_steps[3]
        assert r.success_pre == r.success_post == 0.0  # navigation has no success signal
    # over tasks: the curve's first point is the mean first-episode return of the adaptation trials
    assert report.return_steps[0].mean == pytest.approx(np.mean([a.returns_per_episode()[0, 0] for a in adaptation]))
    assert report.return_pre == report.return_steps[0] and report.return_post == report.return_steps[3]
    for k, interval in enumerate(report.return_steps):
        assert interval.mean == pytest.approx(np.mean([r.return_steps[k] for r in report.results]))
        assert interval.low <= interval.mean <= interval.high

    client = mlflow.MlflowClient(store.uri)
    run = client.get_run(report.run_id)
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.data.params == {
        "episodes": "3", "steps": "1", "tasks": "2", "seed": "0", "eval_episodes": "3", "deterministic_eval": "False",
        "split": "test", "adaptation": "trial",
    }
    assert run.data.tags["metarl.adaptation"] == "trial" and run.data.tags["metarl.model_uri"] == registered.uri
    logged = sorted((m.step, m.value) for m in client.get_metric_history(report.run_id, "eval/return_step"))
    assert [k for k, _ in logged] == [0, 1, 2, 3]
    assert [v for _, v in logged] == pytest.approx([i.mean for i in report.return_steps])
    logged_report = json.loads(Path(client.download_artifacts(report.run_id, EVALUATION_REPORT)).read_text())
    assert logged_report["adaptation"] == "trial" and len(logged_report["return_steps"]) == 4
    # same seed, same evaluation
    again = evaluate(registered.uri, episodes=3, tasks=2, seed=0, log_to_mlflow=False)
    assert [r.return_steps for r in again.results] == [r.return_steps for r in report.results]


def test_evaluate_refuses_inner_steps_for_an_rl2_model(registered, capsys, monkeypatch):
    with pytest.raises(ValueError, match=r"RL² model.*no inner steps; evaluate it with steps=1"):
        evaluate(registered.uri, episodes=2, steps=2, tasks=1, log_to_mlflow=False)
    with pytest.raises(ValueError, match="later_lr"):
        evaluate(registered.uri, episodes=2, tasks=1, later_lr=0.05, log_to_mlflow=False)
    assert main(["--model", registered.uri, "--steps", "2", "--tasks", "1", "--no-mlflow"]) == 2
    assert "RL² model" in capsys.readouterr().err
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps nothing
    assert main(["--model", registered.uri, "--episodes", "2", "--tasks", "2", "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    assert "a trial of K=2 episodes" in out and "episode of the trial" in out and "inner step" not in out
    assert main(["--model", registered.uri, "--episodes", "2", "--tasks", "2", "--no-mlflow", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["adaptation"] == "trial" and len(data["return_steps"]) == 3 and data["inner_lr"] is None


def test_evaluate_an_rl2_model_on_metaworld_ml1(tmp_path):
    """Meta-World's protocol: per test goal, the adaptation trial, then 3 deterministic evaluation
    episodes from its state; an episode succeeds if success was 1 at any of its steps."""
    spec = rl2_spec(name="rl2-reach", episodes_per_task=2,
                    task_family={"name": "metaworld-ml1", "env_name": "reach-v3", "max_episode_steps": 15})
    initial = MetaPolicy.initial(spec)
    assert isinstance(initial, RecurrentMetaPolicy) and initial.policy_spec.obs_dim == 39
    initial.save(tmp_path / "reach")
    report = evaluate(str(tmp_path / "reach"), episodes=2, tasks=2, seed=0, log_to_mlflow=False)
    assert report.adaptation == "trial" and report.task_family == "metaworld-ml1"
    assert report.has_success and report.deterministic_eval and report.eval_episodes == 3
    assert report.model_version is None and len(report.return_steps) == len(report.success_steps) == 3

    tasks, adaptation, evaluation = _meta_test_directly(MetaPolicy.load(str(tmp_path / "reach")), episodes=2, tasks=2,
                                                        seed=0)
    for r, task, a, e in zip(report.results, tasks, adaptation, evaluation, strict=True):
        assert r.task == task.describe()
        success = a.success_per_episode()[0]
        assert r.return_steps[:2] == tuple(a.returns_per_episode()[0]) and r.success_steps[:2] == tuple(success)
        assert r.success_pre == success[0] and r.success_post == float(e.success_per_episode()[:, 0].mean())
        assert r.success_post * 3 == pytest.approx(round(r.success_post * 3))  # 3 episodes, each 0 or 1
        assert r.return_steps[2] == r.return_post and r.success_steps[2] == r.success_post
        # success at any step of an episode
        for b in range(3):
            steps = e.mask[:, b] > 0
            assert e.success_per_episode()[b, 0] == float(e.success[steps, b].max())
    assert report.success_steps[0].mean == pytest.approx(np.mean([a.success_per_episode()[0, 0] for a in adaptation]))

    # garage's protocol: the same trial, then the evaluation episodes with sampled actions
    sampled = evaluate(str(tmp_path / "reach"), episodes=2, tasks=2, seed=0, log_to_mlflow=False, sampled_eval=True)
    assert not sampled.deterministic_eval
    _, adaptation_s, evaluation_s = _meta_test_directly(MetaPolicy.load(str(tmp_path / "reach")), episodes=2,
                                                        tasks=2, seed=0, deterministic=False)
    for r, r_det, a, e in zip(sampled.results, report.results, adaptation_s, evaluation_s, strict=True):
        assert r.return_steps[:2] == r_det.return_steps[:2] == tuple(a.returns_per_episode()[0])  # same trial
        assert r.return_post == pytest.approx(float(e.returns_per_episode()[:, 0].mean()))
    assert [r.return_post for r in sampled.results] != [r.return_post for r in report.results]
