"""Task families: registry, determinism, task switching, rewards and vector envs (real envs)."""

from __future__ import annotations

import pickle
import warnings
from typing import Any, cast

import gymnasium as gym
import numpy as np
import pytest

from workers.envs import (
    FAMILIES,
    Task,
    TaskEnv,
    TaskFamily,
    TaskFamilyError,
    family_names,
    family_parameters,
    make_family,
    set_vector_tasks,
)
from workers.envs.metaworld import MetaWorldFamily, decode_task
from workers.envs.navigation2d import Navigation2DEnv, Navigation2DFamily, Navigation2DVectorEnv

ALL_FAMILIES = [
    "navigation2d",
    "halfcheetah-vel",
    "halfcheetah-dir",
    "ant-dir",
    "cartpole-physics",
    "metaworld-ml1",
    "metaworld-ml10",
    "metaworld-ml45",
]

#: Cheap families with short horizons for the generic checks (ML1 builds in a few seconds).
QUICK: dict[str, dict[str, Any]] = {
    "navigation2d": {"max_episode_steps": 8},
    "halfcheetah-vel": {"max_episode_steps": 8},
    "halfcheetah-dir": {"max_episode_steps": 8},
    "ant-dir": {"max_episode_steps": 8},
    "cartpole-physics": {"max_episode_steps": 8},
    "metaworld-ml1": {"env_name": "reach-v3", "max_episode_steps": 8},
}


@pytest.fixture(scope="module")
def quick_families() -> dict[str, TaskFamily]:
    return {name: make_family(name, **params) for name, params in QUICK.items()}


@pytest.fixture(scope="module")
def ml10() -> MetaWorldFamily:
    family = make_family("metaworld-ml10", seed=0, max_episode_steps=20)
    assert isinstance(family, MetaWorldFamily)
    family.benchmark  # noqa: B018 - build it once for the module (≈ 7-20 s)
    return family


def _rollout(env: gym.Env, actions: list) -> list[tuple]:
    out = []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append((np.array(obs), float(reward), terminated, truncated))
    return out


# --- registry and parameters ----------------------------------------------------------------
def test_registry_lists_every_family() -> None:
    assert family_names() == sorted(ALL_FAMILIES)
    assert set(FAMILIES) == set(ALL_FAMILIES)
    assert family_parameters("navigation2d") == {
        "max_episode_steps": 100, "low": -0.5, "high": 0.5, "action_bound": 0.1
    }


def test_unknown_family_names_the_valid_ones() -> None:
    with pytest.raises(TaskFamilyError, match="valid families") as err:
        make_family("half-cheetah")
    for name in ALL_FAMILIES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("name", "params", "needles"),
    [
        ("navigation2d", {"goal_radius": 0.1}, ["goal_radius", "low", "high", "max_episode_steps"]),
        ("halfcheetah-vel", {"max_episode_steps": -1}, ["max_episode_steps", ">= 1"]),
        ("halfcheetah-dir", {"max_episode_steps": "10"}, ["max_episode_steps", "integer"]),
        ("halfcheetah-dir", {"observe_position": 2}, ["observe_position", "true or false"]),
        ("ant-dir", {"frame_skip": 0}, ["frame_skip", "[1, 50]"]),
        ("halfcheetah-vel", {"clip_actions": "no"}, ["clip_actions", "true or false"]),
        ("cartpole-physics", {"length_low": 2.0}, ["length_low", "length_high"]),
        ("navigation2d", {"low": float("nan")}, ["low", "finite"]),
        ("metaworld-ml1", {}, ["env_name", "missing"]),
        ("metaworld-ml1", {"env_name": "reach-v2"}, ["reach-v2", "reach-v3", "pick-place-v3"]),
        ("metaworld-ml10", {"max_episode_steps": 501}, ["max_episode_steps", "500"]),
        ("metaworld-ml45", {"env_name": "reach-v3"}, ["env_name", "max_episode_steps"]),
    ],
)
def test_invalid_parameters_name_the_parameter_and_valid_values(
    name: str, params: dict, needles: list[str]
) -> None:
    with pytest.raises(TaskFamilyError) as err:
        make_family(name, **params)
    for needle in needles:
        assert needle in str(err.value)


def test_invalid_sampling_arguments(quick_families: dict[str, TaskFamily]) -> None:
    family = quick_families["navigation2d"]
    with pytest.raises(TaskFamilyError, match="valid splits"):
        family.sample_tasks(2, np.random.default_rng(0), split="validation")  # type: ignore[arg-type]
    with pytest.raises(TaskFamilyError, match="positive integer"):
        family.sample_tasks(0, np.random.default_rng(0))


# --- generic behaviour of every family ----------------------------------------------------
@pytest.mark.parametrize("name", list(QUICK))
def test_family_tasks_are_deterministic_and_distinct(
    name: str, quick_families: dict[str, TaskFamily]
) -> None:
    family = quick_families[name]
    for split in ("train", "test"):
        a = family.sample_tasks(20, np.random.default_rng(7), split=split)
        b = family.sample_tasks(20, np.random.default_rng(7), split=split)
        c = family.sample_tasks(20, np.random.default_rng(8), split=split)
        assert a == b
        assert a != c
        assert all(t.family == name and t.split == split for t in a)
        keys = {(tuple(sorted(t.params.items())), t.data) for t in a}
        if name.endswith("-dir"):
            assert {t.params["direction"] for t in a} == {-1.0, 1.0}
        else:
            assert len(keys) == 20, "tasks must differ"
        assert pickle.loads(pickle.dumps(a)) == a


@pytest.mark.parametrize("name", list(QUICK))
def test_env_resets_deterministically_and_switches_task(
    name: str, quick_families: dict[str, TaskFamily]
) -> None:
    family = quick_families[name]
    pool = family.sample_tasks(20, np.random.default_rng(0))
    tasks = [pool[0], next(t for t in pool if t.params != pool[0].params or t.data != pool[0].data)]
    env = family.make_env(tasks[0])
    assert isinstance(env, TaskEnv)
    assert env.observation_space == family.observation_space
    assert env.action_space == family.action_space
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(family.max_episode_steps + 3)]

    obs1, _ = env.reset(seed=3)
    run1 = _rollout(env, actions)
    obs2, _ = env.reset(seed=3)
    run2 = _rollout(env, actions)
    np.testing.assert_array_equal(obs1, obs2)
    for s1, s2 in zip(run1, run2, strict=True):
        np.testing.assert_array_equal(s1[0], s2[0])
        assert s1[1:] == s2[1:]
    assert obs1.dtype == np.float32 and family.observation_space.contains(obs1)

    # the episode ends at the horizon at the latest; later steps are harmless repeats
    ends = [i for i, s in enumerate(run1) if s[2] or s[3]]
    assert ends and ends[0] <= family.max_episode_steps - 1
    assert run1[-1][1] == 0.0 and (run1[-1][2] or run1[-1][3])

    env.get_wrapper_attr("set_task")(tasks[1])
    assert env.get_wrapper_attr("task") == tasks[1]
    env.reset(seed=3)
    run3 = _rollout(env, actions)
    assert any(
        s1[1] != s3[1] or not np.array_equal(s1[0], s3[0])
        for s1, s3 in zip(run1, run3, strict=True)
    ), "another task must change the rewards or the dynamics"
    env.close()


@pytest.mark.parametrize("name", list(QUICK))
def test_vector_env_runs_past_the_horizon_and_retargets(
    name: str, quick_families: dict[str, TaskFamily]
) -> None:
    family = quick_families[name]
    tasks = family.sample_tasks(2, np.random.default_rng(1))
    vec = family.make_vector_env(tasks, 2)
    assert vec.num_envs == 4
    assert vec.single_observation_space == family.observation_space
    assert vec.single_action_space == family.action_space
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (4, *family.observation_space.shape)
    vec.action_space.seed(0)
    done = np.zeros(4, dtype=bool)
    for _ in range(family.max_episode_steps + 3):  # finished sub-envs get stepped too
        _, _, terminated, truncated, _ = vec.step(vec.action_space.sample())
        done |= terminated | truncated
    assert done.all()

    new_tasks = family.sample_tasks(2, np.random.default_rng(2))
    set_vector_tasks(vec, new_tasks, 2)
    vec.reset(seed=0)
    if isinstance(vec, Navigation2DVectorEnv):
        assert vec.tasks == new_tasks
    else:
        current = [env.get_wrapper_attr("task") for env in vec.envs]  # type: ignore[attr-defined]
        assert current == [new_tasks[0]] * 2 + [new_tasks[1]] * 2
    with pytest.raises(ValueError, match="sub-envs"):
        set_vector_tasks(vec, new_tasks, 3)
    vec.close()


@pytest.mark.parametrize("name", list(QUICK))
def test_env_rejects_misuse(name: str, quick_families: dict[str, TaskFamily]) -> None:
    family = quick_families[name]
    task = family.sample_tasks(1, np.random.default_rng(0))[0]
    env = family.make_env(task)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    other = "cartpole-physics" if name != "cartpole-physics" else "navigation2d"
    foreign = quick_families[other].sample_tasks(1, np.random.default_rng(0))[0]
    with pytest.raises(TaskFamilyError, match=other):
        env.get_wrapper_attr("set_task")(foreign)
    env.close()


# --- navigation2d ----------------------------------------------------------------------------
def test_navigation2d_reward_and_termination_by_hand() -> None:
    family = make_family("navigation2d", max_episode_steps=10)
    env = family.make_env(Task("navigation2d", "train", 0, {"goal_x": 0.25, "goal_y": 0.0}))
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, [0.0, 0.0])

    obs, reward, terminated, truncated, _ = env.step(np.array([0.1, 0.0], np.float32))
    assert obs == pytest.approx([0.1, 0.0]) and reward == pytest.approx(-0.15)
    assert not terminated and not truncated
    obs, reward, terminated, _, _ = env.step(np.array([5.0, 0.0], np.float32))  # clipped to 0.1
    assert obs == pytest.approx([0.2, 0.0]) and reward == pytest.approx(-0.05)
    assert not terminated
    obs, reward, terminated, truncated, _ = env.step(np.array([0.05, 0.005], np.float32))
    assert obs == pytest.approx([0.25, 0.005]) and reward == pytest.approx(-0.005)
    assert terminated and not truncated  # 0.005 < 0.01
    again = env.step(np.array([0.1, 0.1], np.float32))  # after the end: a harmless repeat
    assert again[0] == pytest.approx([0.25, 0.005]) and again[1:4] == (0.0, True, False)

    short = make_family("navigation2d", max_episode_steps=3).make_env(
        Task("navigation2d", "train", 0, {"goal_x": 0.4, "goal_y": -0.3})
    )
    short.reset()
    steps = [short.step(np.array([-0.1, 0.1], np.float32)) for _ in range(3)]
    assert [s[3] for s in steps] == [False, False, True]
    assert steps[-1][0] == pytest.approx([-0.3, 0.3])
    assert steps[-1][1] == pytest.approx(-np.hypot(0.7, 0.6))


def test_navigation2d_vector_env_matches_single_envs() -> None:
    family = make_family("navigation2d", max_episode_steps=30)
    assert isinstance(family, Navigation2DFamily)
    rng = np.random.default_rng(0)
    tasks = family.sample_tasks(3, rng)
    tasks.append(Task("navigation2d", "train", 3, {"goal_x": 0.05, "goal_y": 0.0}))  # reached
    vec = family.make_vector_env(tasks, 2)
    singles = [family.make_env(t) for t in tasks for _ in range(2)]
    actions = rng.uniform(-0.15, 0.15, size=(35, 8, 2)).astype(np.float32)
    actions[:, 6:] = [0.05, 0.0]  # sub-envs 6, 7 terminate on step 1

    for _round in range(2):
        obs, _ = vec.reset()
        single_obs = np.stack([env.reset()[0] for env in singles])
        np.testing.assert_array_equal(obs, single_obs)
        for t in range(35):
            obs, rew, term, trunc, _ = vec.step(actions[t])
            results = [env.step(actions[t, i]) for i, env in enumerate(singles)]
            np.testing.assert_array_equal(obs, np.stack([r[0] for r in results]))
            np.testing.assert_array_equal(rew, [r[1] for r in results])
            np.testing.assert_array_equal(term, [r[2] for r in results])
            np.testing.assert_array_equal(trunc, [r[3] for r in results])
        if _round == 0:
            assert term[6:].all() and not trunc[6:].any() and trunc[:6].all()
        # second round: new tasks, applied at reset
        tasks = family.sample_tasks(4, rng)
        set_vector_tasks(vec, tasks, 2)
        for i, env in enumerate(singles):
            env.set_task(tasks[i // 2])
    goals = np.repeat([[t.params["goal_x"], t.params["goal_y"]] for t in tasks], 2, axis=0)
    assert not np.array_equal(vec.goals, goals)  # set_tasks takes effect at the next reset
    vec.reset()
    np.testing.assert_array_equal(vec.goals, goals)


def test_navigation2d_normalised_actions_scale_to_the_same_velocity() -> None:
    """``action_bound = 1`` (rllab's ``normalize``, the paper's setting): the policy acts in
    [-1, 1] and the robot moves a tenth of it, so the episode is the one of the env-unit action."""
    unit = make_family("navigation2d", max_episode_steps=20, action_bound=1.0)
    env_units = make_family("navigation2d", max_episode_steps=20)
    np.testing.assert_array_equal(unit.action_space.low, [-1.0, -1.0])
    np.testing.assert_array_equal(unit.action_space.high, [1.0, 1.0])
    np.testing.assert_allclose(env_units.action_space.high, [0.1, 0.1])
    assert unit.describe()["action_bound"] == 1.0

    task = Task("navigation2d", "train", 0, {"goal_x": 0.25, "goal_y": 0.0})
    env = unit.make_env(task)
    np.testing.assert_array_equal(env.action_space.high, [1.0, 1.0])
    env.reset()
    obs, reward, *_ = env.step(np.array([1.0, 0.0], np.float32))
    assert obs == pytest.approx([0.1, 0.0]) and reward == pytest.approx(-0.15)
    obs, reward, *_ = env.step(np.array([7.0, -0.5], np.float32))  # clipped to 1, then 0.1 * a
    assert obs == pytest.approx([0.2, -0.05]) and reward == pytest.approx(-np.hypot(0.05, 0.05))

    # the same trajectory in both units, and the vector env agrees with the single env
    rng = np.random.default_rng(3)
    tasks = unit.sample_tasks(3, rng)
    a = rng.uniform(-1.2, 1.2, size=(20, 3, 2)).astype(np.float32)
    vec_unit, vec_env = unit.make_vector_env(tasks, 1), env_units.make_vector_env(tasks, 1)
    assert vec_unit.single_action_space.high.tolist() == [1.0, 1.0]
    singles = [unit.make_env(t) for t in tasks]
    vec_unit.reset(), vec_env.reset(), [e.reset() for e in singles]
    for t in range(20):
        obs_u, rew_u, term_u, *_ = vec_unit.step(a[t])
        obs_e, rew_e, term_e, *_ = vec_env.step(np.clip(a[t], -1, 1) * np.float32(0.1))
        np.testing.assert_allclose(obs_u, obs_e, atol=1e-6)
        np.testing.assert_allclose(rew_u, rew_e, atol=1e-6)
        single = [e.step(a[t, i]) for i, e in enumerate(singles)]
        np.testing.assert_array_equal(obs_u, np.stack([r[0] for r in single]))
        np.testing.assert_array_equal(rew_u, [r[1] for r in single])

    for bad in (0.0, -1.0, float("nan"), "1"):
        with pytest.raises(TaskFamilyError, match="action_bound"):
            make_family("navigation2d", action_bound=bad)


def test_navigation2d_action_bound_is_a_job_spec_parameter() -> None:
    from pydantic import ValidationError

    from workers.contract import JobSpec

    base = {"name": "n", "algorithm": {"name": "maml"}, "iterations": 1}
    spec = JobSpec.model_validate(
        {**base, "task_family": {"name": "navigation2d", "params": {"action_bound": 1.0}}}
    )
    assert spec.task_family.family_kwargs()["action_bound"] == 1.0
    with pytest.raises(ValidationError, match="action_bound"):
        JobSpec.model_validate({**base, "task_family": {"name": "navigation2d", "params": {"action_bound": 0.0}}})


def test_navigation2d_vector_env_reset_mask() -> None:
    family = make_family("navigation2d")
    vec = family.make_vector_env(family.sample_tasks(40, np.random.default_rng(0)), 10)
    assert isinstance(vec, Navigation2DVectorEnv) and vec.num_envs == 400
    vec.reset()
    actions = np.full((400, 2), 0.05, np.float32)
    for _ in range(100):
        obs, *_ = vec.step(actions)
    mask = np.zeros(400, dtype=bool)
    mask[:5] = True
    obs, _ = vec.reset(options={"reset_mask": mask})
    assert not obs[:5].any() and obs[5:].all()
    with pytest.raises(ValueError, match="shape"):
        vec.step(np.zeros((3, 2)))
    assert isinstance(family.make_env(vec.tasks[0]), Navigation2DEnv)


# --- MuJoCo task rewards ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("halfcheetah-vel", {"velocity": 1.3}),
        ("halfcheetah-dir", {"direction": -1.0}),
        ("ant-dir", {"direction": -1.0}),
        ("ant-dir", {"direction": 1.0}),
    ],
)
def test_mujoco_task_reward_matches_the_formula(name: str, params: dict) -> None:
    family = make_family(name, max_episode_steps=20)
    env = family.make_env(Task(name, "train", 0, params))
    inner = env.get_wrapper_attr("env")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        action = rng.uniform(-1.5, 1.5, size=env.action_space.shape)  # partly out of bounds
        # the cheetah's root x is qpos[0]; Ant-v5 differences the torso body's xpos, which
        # MuJoCo computed before the last physics substep (it lags qpos by one substep)
        x_of = (
            (lambda: inner.data.qpos[0])
            if name.startswith("half")
            else (lambda: inner.data.body("torso").xpos[0])
        )
        x_before = float(x_of())
        _, reward, terminated, _, info = env.step(action)
        x_velocity = (float(x_of()) - x_before) / inner.dt
        applied = np.clip(action, -1.0, 1.0)
        assert info["x_velocity"] == pytest.approx(x_velocity, abs=1e-9)
        if name == "halfcheetah-vel":
            expected = -abs(x_velocity - 1.3) - 0.05 * np.sum(applied**2)
        elif name == "halfcheetah-dir":
            expected = -x_velocity - 0.05 * np.sum(applied**2)
        else:
            expected = (
                params["direction"] * x_velocity
                + 1.0 * inner.is_healthy  # Ant-v5's healthy reward
                - 0.5 * np.sum(applied**2)  # its ctrl cost
                - 5e-4 * np.sum(np.clip(inner.data.cfrc_ext, -1.0, 1.0) ** 2)  # its contact cost
            )
        assert reward == pytest.approx(expected, abs=1e-9)
        assert info["task_reward"] == reward
        if terminated:
            break


def test_cheetah_unclipped_actions_pay_their_control_cost() -> None:
    """``clip_actions=False``: the simulator gets the action as it is (MuJoCo clamps the
    controls), the control cost is the unclipped action's, and the sampler does not clip."""
    from algorithms.policies import PolicySpec
    from workers.sampler import Sampler

    family = make_family("halfcheetah-dir", max_episode_steps=20, clip_actions=False)
    assert not family.clips_actions and make_family("halfcheetah-dir").clips_actions
    env = family.make_env(Task("halfcheetah-dir", "train", 0, {"direction": 1.0}))
    inner = env.get_wrapper_attr("env")
    env.reset(seed=0)
    action = np.array([1.5, -2.0, 0.5, 0.0, 3.0, -0.2])
    x_before = float(inner.data.qpos[0])
    _, reward, _, _, _ = env.step(action)
    np.testing.assert_array_equal(inner.data.ctrl, action)
    x_velocity = (float(inner.data.qpos[0]) - x_before) / inner.dt
    assert reward == pytest.approx(x_velocity - 0.05 * np.sum(action**2), abs=1e-9)
    spec = PolicySpec(obs_dim=17, act_dim=6, hidden_sizes=(8,))
    sampler = Sampler(family, spec, envs_per_task=1, seed=0)
    assert sampler._low is None and sampler._high is None
    clipped = Sampler(make_family("halfcheetah-dir", max_episode_steps=20), spec, envs_per_task=1, seed=0)
    assert clipped._low is not None


@pytest.mark.parametrize(
    ("name", "observe_position"),
    [("halfcheetah-vel", False), ("halfcheetah-dir", False), ("halfcheetah-dir", True)],
)
@pytest.mark.parametrize(("frame_skip", "clip_actions"), [(5, True), (1, True), (1, False)])
def test_cheetah_vector_env_matches_single_envs_bit_for_bit(
    name: str, observe_position: bool, frame_skip: int, clip_actions: bool
) -> None:
    """The batched cheetah step (simulators stepped directly, rewards and observations computed
    for the batch) gives exactly what the single envs give: over the horizon and past it, after
    a partial reset (``reset_mask``) and after a task switch; with and without the root's x
    position in the observation, with gymnasium's 5 simulator steps per env step and the MAML
    paper's 1."""
    from workers.envs.mujoco_vector import CheetahVectorEnv

    family = make_family(
        name, max_episode_steps=25, observe_position=observe_position, frame_skip=frame_skip, clip_actions=clip_actions
    )
    assert family.observation_space.shape == (18 if observe_position else 17,)
    rng = np.random.default_rng(0)
    tasks = family.sample_tasks(3, rng)
    vec = family.make_vector_env(tasks, 2)
    assert isinstance(vec, CheetahVectorEnv)
    singles = [family.make_env(t) for t in tasks for _ in range(2)]

    def run(steps: int) -> tuple:
        out = None
        for _ in range(steps):
            actions = rng.normal(0.0, 1.5, size=(6, 6)).astype(np.float32)  # partly out of bounds
            out = vec.step(actions)
            results = [env.step(actions[i]) for i, env in enumerate(singles)]
            for got, k in zip(out[:4], range(4), strict=True):
                np.testing.assert_array_equal(got, [r[k] for r in results])
        return out

    for round_ in range(2):
        seeds = [10 * round_ + i for i in range(6)]
        obs, _ = vec.reset(seed=seeds)
        np.testing.assert_array_equal(
            obs, np.stack([env.reset(seed=s)[0] for env, s in zip(singles, seeds, strict=True)])
        )
        if observe_position:  # the root's x leads the observation
            np.testing.assert_array_equal(obs[:, 0], [np.float32(env.env.data.qpos[0]) for env in singles])
        _, rew, _, trunc, _ = run(30)  # 5 steps past the horizon: finished sub-envs hold
        assert trunc.all() and not rew.any()
        tasks = family.sample_tasks(3, rng)
        set_vector_tasks(vec, tasks, 2)
        for i, env in enumerate(singles):
            env.set_task(tasks[i // 2])
    mask = np.array([True, False, True, False, False, True])
    vec.reset(options={"reset_mask": mask})
    for env, m in zip(singles, mask, strict=True):
        if m:
            env.reset()
    _, rew, _, trunc, _ = run(10)  # only the reset sub-envs move
    np.testing.assert_array_equal(trunc, ~mask)
    assert (rew[~mask] == 0.0).all() and (rew[mask] != 0.0).all()


# --- CartPole --------------------------------------------------------------------------------
def test_cartpole_physics_are_applied_and_finished_episodes_stay_quiet() -> None:
    family = make_family("cartpole-physics", max_episode_steps=200)
    task = Task("cartpole-physics", "train", 0, {"length": 0.9, "masspole": 0.3})
    env = family.make_env(task)
    env.reset(seed=0)
    pole = env.get_wrapper_attr("env").unwrapped
    assert (pole.length, pole.masspole) == (0.9, 0.3)
    assert pole.total_mass == pytest.approx(1.3)
    assert pole.polemass_length == pytest.approx(0.27)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CartPole warns when stepped after termination
        results = [env.step(1) for _ in range(60)]
    ends = [i for i, r in enumerate(results) if r[2]]
    assert ends and all(r[1] == 0.0 for r in results[ends[0] + 1 :])

    family_tasks = family.sample_tasks(50, np.random.default_rng(0))
    lengths = [float(t.params["length"]) for t in family_tasks]
    masses = [float(t.params["masspole"]) for t in family_tasks]
    assert 0.25 <= min(lengths) and max(lengths) <= 1.0
    assert 0.05 <= min(masses) and max(masses) <= 0.5


# --- Meta-World ------------------------------------------------------------------------------
def test_metaworld_ml1_reach_success_and_disjoint_goals(
    quick_families: dict[str, TaskFamily],
) -> None:
    family = quick_families["metaworld-ml1"]
    assert family.has_success
    assert family.num_tasks("train") == 50 and family.num_tasks("test") == 50
    train = family.sample_tasks(50, np.random.default_rng(0))
    test = family.sample_tasks(50, np.random.default_rng(0), split="test")
    assert sorted(t.index for t in train) == list(range(50))  # without replacement
    assert {t.params["env_name"] for t in train + test} == {"reach-v3"}

    def goal(task: Task) -> tuple:
        return tuple(np.round(pickle.loads(decode_task(task).data)["rand_vec"], 9))

    train_goals, test_goals = {goal(t) for t in train}, {goal(t) for t in test}
    assert len(train_goals) == 50 and len(test_goals) == 50
    assert not train_goals & test_goals

    env = family.make_env(train[0])
    obs, _ = env.reset()
    assert obs.shape == (39,) and obs.dtype == np.float32
    _, _, _, _, info = env.step(np.zeros(4, np.float32))
    assert isinstance(info["success"], float) and info["success"] in (0.0, 1.0)
    # seed-dependent goals
    other = make_family("metaworld-ml1", env_name="reach-v3", seed=1)
    assert goal(other.sample_tasks(1, np.random.default_rng(0))[0]) not in train_goals


def test_metaworld_full_episode_never_steps_past_500(
    quick_families: dict[str, TaskFamily],
) -> None:
    family = make_family("metaworld-ml1", env_name="reach-v3")  # horizon 500, cached benchmark
    env = family.make_env(family.sample_tasks(1, np.random.default_rng(0))[0])
    env.reset()
    action = np.array([0.0, 0.5, 0.0, 0.0], np.float32)
    truncated_at = []
    for t in range(505):  # Meta-World itself raises on step 501 without a reset
        _, _, terminated, truncated, info = env.step(action)
        assert not terminated and "success" in info
        if truncated:
            truncated_at.append(t)
    assert truncated_at[0] == 499
    env.reset()  # and a new episode starts
    env.step(action)


def test_metaworld_ml10_splits_and_class_switching(ml10: MetaWorldFamily) -> None:
    bench = ml10.benchmark
    assert len(bench.train_classes) == 10 and len(bench.test_classes) == 5
    assert ml10.classes("train") == bench.train_classes
    assert ml10.classes("test") == bench.test_classes
    assert ml10.num_tasks("train") == 500 and ml10.num_tasks("test") == 250
    train = ml10.sample_tasks(40, np.random.default_rng(0))
    test = ml10.sample_tasks(10, np.random.default_rng(0), split="test")
    train_names = {t.env_name for t in train}
    test_names = {t.env_name for t in test}
    assert train_names <= set(bench.train_classes) and test_names <= set(bench.test_classes)
    assert len(train_names) > 1 and not train_names & test_names

    a, b = train[0], next(t for t in test if t.env_name != train[0].env_name)
    env = ml10.make_env(a)
    obs_a, _ = env.reset()
    env.get_wrapper_attr("set_task")(b)
    obs_b, _ = env.reset()
    assert isinstance(env.get_wrapper_attr("active_env"), bench.test_classes[b.env_name])
    assert not np.array_equal(obs_a, obs_b)
    env.get_wrapper_attr("set_task")(a)
    np.testing.assert_array_equal(env.reset()[0], obs_a)  # back to the first, same start
    _, _, _, _, info = env.step(env.action_space.sample())
    assert info["success"] in (0.0, 1.0)

    vec = ml10.make_vector_env(train[:2], 1)
    vec.reset(seed=0)
    set_vector_tasks(vec, test[:2], 1)
    vec.reset(seed=0)
    for _ in range(ml10.max_episode_steps + 2):
        vec.step(vec.action_space.sample())
    vec.close()


@pytest.mark.parametrize("benchmark", ["ml1-reach", "ml10"])
def test_metaworld_vector_env_matches_single_envs_bit_for_bit(benchmark: str, request: pytest.FixtureRequest) -> None:
    """The batched Meta-World step (simulators stepped directly, observations for the batch;
    reach-v3's reward for the batch, ML10's classes through their own ``evaluate_state``) gives
    exactly what the single envs give: float32 and float64 actions, partly out of bounds and
    partly steering the hand to the goal (so ``success`` is 1 on some steps), over the horizon
    and past it, after a task switch (ML10: to the test classes) and a partial reset."""
    from workers.envs.metaworld_vector import MetaWorldVectorEnv

    if benchmark == "ml10":
        family: MetaWorldFamily = request.getfixturevalue("ml10")
    else:
        family = cast(MetaWorldFamily, make_family("metaworld-ml1", env_name="reach-v3", max_episode_steps=60))
    rng = np.random.default_rng(0)
    tasks = family.sample_tasks(3, rng)
    vec = family.make_vector_env(tasks, 2)
    assert isinstance(vec, MetaWorldVectorEnv)
    singles = [family.make_env(t) for t in tasks for _ in range(2)]
    successes = 0.0

    def run(steps: int, dtype: type) -> tuple:
        nonlocal successes
        out: tuple = ()
        for _ in range(steps):
            actions = rng.normal(0.0, 1.5, size=(6, 4))
            for i in (0, 3, 4):  # towards the goal: the hand is obs[:3]
                mw = singles[i].get_wrapper_attr("active_env")
                actions[i, :3] = 30.0 * (mw._target_pos - mw.tcp_center)
            actions = actions.astype(dtype)
            out = vec.step(actions)
            results = [env.step(actions[i]) for i, env in enumerate(singles)]
            for k in range(4):
                np.testing.assert_array_equal(out[k], [r[k] for r in results])
            np.testing.assert_array_equal(out[4]["success"], [r[4]["success"] for r in results])
            successes += float(np.sum(out[4]["success"]))
        return out

    for round_ in range(2):
        seeds = [10 * round_ + i for i in range(6)]
        obs, _ = vec.reset(seed=seeds)
        np.testing.assert_array_equal(
            obs, np.stack([env.reset(seed=s)[0] for env, s in zip(singles, seeds, strict=True)])
        )
        _, rew, _, trunc, _ = run(family.max_episode_steps + 5, np.float32 if round_ == 0 else np.float64)
        assert trunc.all() and not rew.any()
        tasks = family.sample_tasks(3, rng, split="test" if benchmark == "ml10" else "train")
        set_vector_tasks(vec, tasks, 2)
        for i, env in enumerate(singles):
            env.get_wrapper_attr("set_task")(tasks[i // 2])
    mask = np.array([True, False, True, False, False, True])
    vec.reset(options={"reset_mask": mask})
    for env, m in zip(singles, mask, strict=True):
        if m:
            env.reset()
    _, rew, _, trunc, _ = run(10, np.float32)  # only the reset sub-envs move
    np.testing.assert_array_equal(trunc, ~mask)
    assert (rew[~mask] == 0.0).all()
    if benchmark == "ml1-reach":
        assert successes > 0  # the success branch of the batched reward was compared too
    vec.close()


@pytest.mark.slow
def test_metaworld_ml45_builds() -> None:
    family = make_family("metaworld-ml45", seed=0)
    assert family.num_tasks("train") == 2250 and family.num_tasks("test") == 250
    bench = family.benchmark  # type: ignore[attr-defined]
    assert len(bench.train_classes) == 45 and len(bench.test_classes) == 5
    test = family.sample_tasks(3, np.random.default_rng(0), split="test")
    env = family.make_env(test[0])
    env.reset()
    _, _, _, _, info = env.step(env.action_space.sample())
    assert "success" in info
