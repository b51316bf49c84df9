"""RL² trial sampling (Duan et al. 2016, sec. 2.2): every sub-env plays ``episodes_per_trial``
episodes back to back with the GRU state carried across them; one batched policy step per env step;
the stored log-probabilities and values are the torch policy's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.rl2.policy import RecurrentPolicySpec, make_recurrent_policy
from algorithms.rl2.trials import Trials
from workers.envs import make_family
from workers.trial_sampler import TrialSampler

HORIZON = 15


def setup(name: str = "navigation2d", *, trials_per_task: int = 3, seed: int = 0, keep_states: bool = True,
          **family_kw):
    family = make_family(name, max_episode_steps=HORIZON, **family_kw)
    obs_dim, act_dim, discrete = family.policy_dims()
    spec = RecurrentPolicySpec(obs_dim, act_dim, discrete, encoder_sizes=(8,), hidden_size=12)
    policy = make_recurrent_policy(spec, seed=0)
    sampler = TrialSampler(family, spec, trials_per_task=trials_per_task, seed=seed, keep_states=keep_states)
    return family, policy, sampler


def unroll(policy, tr: Trials, params=None, state0=None):
    def f(a):
        return torch.as_tensor(a)

    with torch.no_grad():
        return policy.unroll(policy.params() if params is None else params, f(tr.obs), f(tr.prev_actions),
                             f(tr.prev_rewards), f(tr.prev_dones), f(tr.initial_state) if state0 is None else state0)


def check_structure(tr: Trials, episodes: int, horizon: int) -> None:
    """What every trial column must satisfy, whatever the family."""
    lengths = tr.mask.sum(axis=0).astype(int)
    assert tr.horizon == lengths.max() and (lengths >= episodes).all() and (lengths <= episodes * horizon).all()
    for b in range(tr.num_trials):
        n = lengths[b]
        assert (tr.mask[:n, b] == 1).all() and (tr.mask[n:, b] == 0).all()
        ends = np.flatnonzero(tr.dones[:, b])
        assert len(ends) == episodes and ends[-1] == n - 1  # N episodes, the last one ends the trial
        assert np.flatnonzero(tr.trial_end[:, b]).tolist() == [n - 1]
        starts = np.concatenate([[0], ends[:-1] + 1])
        assert (np.diff(np.concatenate([[-1], ends])) <= horizon).all()  # no episode past the horizon
        for k, (s, e) in enumerate(zip(starts, ends, strict=True)):
            assert (tr.episode_index[s : e + 1, b] == k).all()
        assert (tr.episode_index[n:, b] == -1).all()
        # the previous step's reward and done flag are the inputs of the next step, across episodes
        np.testing.assert_array_equal(tr.prev_rewards[1:n, b], tr.rewards[: n - 1, b])
        np.testing.assert_array_equal(tr.prev_dones[1:n, b], tr.dones[: n - 1, b].astype(np.float32))
        assert tr.prev_rewards[0, b] == 0 and tr.prev_dones[0, b] == 0 and not tr.prev_actions[0, b].any()
    off = tr.mask == 0
    assert not tr.rewards[off].any() and not tr.log_probs[off].any() and not tr.obs[off].any()
    assert not tr.initial_state.any()


def test_navigation2d_trials_shapes_episodes_and_inputs():
    family, policy, sampler = setup(action_bound=1.0)
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    out = sampler.sample(tasks, policy.params(), episodes_per_trial=3)
    assert len(out) == 2
    for tr, task in zip(out, tasks, strict=True):
        t = tr.horizon
        assert tr.obs.shape == (t, 3, 2) and tr.actions.shape == (t, 3, 2) and tr.prev_actions.shape == (t, 3, 2)
        assert tr.initial_state.shape == (3, 12) and tr.states is not None and tr.states.shape == (t, 3, 12)
        assert tr.actions.dtype == np.float32 and tr.episode_index.dtype == np.int64 and not tr.has_success
        check_structure(tr, 3, HORIZON)
        assert tr.returns_per_episode().shape == (3, 3)
        goal = np.array([task.params["goal_x"], task.params["goal_y"]])
        for b in range(3):
            n = int(tr.mask[:, b].sum())
            # the previous action is the action the env applied: clipped to [-1, 1]
            np.testing.assert_array_equal(tr.prev_actions[1:n, b], np.clip(tr.actions[: n - 1, b], -1.0, 1.0))
            # every episode starts at the origin; the reward is minus the new position's distance
            starts = np.concatenate([[0], np.flatnonzero(tr.dones[:n, b])[:-1] + 1])
            assert not tr.obs[starts, b].any()
            inner = [s for s in range(n - 1) if not tr.dones[s, b]]
            np.testing.assert_allclose(tr.rewards[inner, b], -np.linalg.norm(tr.obs[[s + 1 for s in inner], b] - goal,
                                                                             axis=-1), rtol=1e-5)
    assert sampler.last_stats.env_steps == sum(tr.num_steps for tr in out) and sampler.last_stats.seconds > 0


def test_log_probs_and_values_are_the_torch_policys_exactly():
    family, policy, sampler = setup(action_bound=1.0)
    tasks = family.sample_tasks(3, np.random.default_rng(1))
    out = sampler.sample(tasks, policy.params(), episodes_per_trial=2)
    both = Trials.concatenate(out)  # all sub-envs, as the sampler unrolled them
    dist, values, _ = unroll(policy, both)
    lp = policy.log_prob(dist, torch.as_tensor(both.actions)).numpy()
    np.testing.assert_array_equal(np.where(both.mask > 0, lp, 0.0), both.log_probs)
    np.testing.assert_array_equal(np.where(both.mask > 0, values.numpy(), 0.0), both.values)
    # and each task's trials on their own (other batch shapes: equal to float32 rounding)
    for tr in out:
        dist, values, _ = unroll(policy, tr)
        lp = policy.log_prob(dist, torch.as_tensor(tr.actions)).numpy()
        np.testing.assert_allclose(lp * tr.mask, tr.log_probs, rtol=1e-5, atol=1e-5)


def test_hidden_state_is_carried_across_episodes_and_reset_between_trials():
    family, policy, sampler = setup(action_bound=1.0)
    tasks = family.sample_tasks(2, np.random.default_rng(2))
    for _ in range(2):  # a second call starts fresh trials: zeros again
        out = sampler.sample(tasks, policy.params(), episodes_per_trial=2)
        for tr in out:
            assert tr.states is not None and not tr.states[0].any()
            _, _, states = unroll(policy, tr)
            m = tr.mask[..., None] > 0
            # the numpy GRU that acted is the torch policy's (to float32 rounding)
            np.testing.assert_allclose(tr.states * m, states[:-1].numpy() * m, atol=2e-6)
            for b in range(tr.num_trials):
                second = int(np.argmax(tr.episode_index[:, b] == 1))  # the first step of episode 2
                assert second > 0 and tr.obs[second, b].tolist() == [0.0, 0.0] and tr.prev_dones[second, b] == 1
                assert np.abs(tr.states[second, b]).max() > 1e-3  # not reset at the episode boundary
                np.testing.assert_allclose(tr.states[second, b], states[second, b].numpy(), atol=2e-6)
    # the carried state matters: restarting the GRU at episode 2 gives other actions
    tr = out[0]
    b = 0
    second = int(np.argmax(tr.episode_index[:, b] == 1))
    col = tr.select(slice(b, b + 1))
    dist, _, _ = unroll(policy, col)
    restarted = Trials(**{**{k: (v[second:] if isinstance(v, np.ndarray) and v.ndim >= 2 and k != "initial_state"
                                 else v) for k, v in col.__dict__.items()}, "states": None})
    dist_reset, _, _ = unroll(policy, restarted)
    assert not np.allclose(dist[0][second:].numpy(), dist_reset[0].numpy(), atol=1e-6)


def test_seeded_determinism_and_deterministic_actions():
    family, policy, _ = setup(action_bound=1.0)
    tasks = family.sample_tasks(2, np.random.default_rng(3))
    runs = []
    for seed in (5, 5, 6):
        _, _, sampler = setup(action_bound=1.0, seed=seed, keep_states=False)
        runs.append([sampler.sample(tasks, policy.params(), episodes_per_trial=2) for _ in range(2)])
    for (a1, a2), (b1, b2) in zip(runs[0], runs[1], strict=True):  # call by call
        np.testing.assert_array_equal(a1.actions, b1.actions)
        np.testing.assert_array_equal(a2.log_probs, b2.log_probs)
    assert not np.array_equal(runs[0][0][0].actions, runs[0][1][0].actions)  # the noise moves on
    assert not np.array_equal(runs[0][0][0].actions[:5], runs[2][0][0].actions[:5])  # another seed
    # deterministic: the mode of the torch policy's distribution, state carried
    _, _, sampler = setup(action_bound=1.0, keep_states=False)
    for tr in sampler.sample(tasks, policy.params(), episodes_per_trial=2, deterministic=True):
        dist, _, _ = unroll(policy, tr)
        m = tr.mask[..., None] > 0
        np.testing.assert_allclose(tr.actions * m, dist[0].numpy() * m, atol=1e-5)


def test_retargets_the_vector_env_between_calls():
    family, policy, sampler = setup(action_bound=1.0, trials_per_task=1)
    rng = np.random.default_rng(4)
    for _ in range(2):
        tasks = family.sample_tasks(2, rng)
        for tr, task in zip(sampler.sample(tasks, policy.params(), episodes_per_trial=1), tasks, strict=True):
            goal = np.array([task.params["goal_x"], task.params["goal_y"]])
            np.testing.assert_allclose(tr.rewards[0, 0], -np.linalg.norm(tr.obs[1, 0] - goal), rtol=1e-5)


def test_cartpole_discrete_trials():
    family, policy, sampler = setup("cartpole-physics", trials_per_task=2)
    tasks = family.sample_tasks(2, np.random.default_rng(5))
    out = sampler.sample(tasks, policy.params(), episodes_per_trial=3)
    for tr in out:
        assert tr.obs.shape[1:] == (2, 4) and tr.actions.shape == (tr.horizon, 2) and tr.actions.dtype == np.int64
        assert tr.prev_actions.shape == (tr.horizon, 2, 2)
        check_structure(tr, 3, HORIZON)
        for b in range(2):
            n = int(tr.mask[:, b].sum())
            assert set(np.unique(tr.actions[:n, b])) <= {0, 1}
            np.testing.assert_array_equal(tr.prev_actions[1:n, b], np.eye(2, dtype=np.float32)[tr.actions[: n - 1, b]])
            assert (tr.rewards[:n, b] == 1.0).all()  # CartPole: 1 per step
    both = Trials.concatenate(out)
    dist, _, _ = unroll(policy, both)
    lp = policy.log_prob(dist, torch.as_tensor(both.actions)).numpy()
    np.testing.assert_array_equal(np.where(both.mask > 0, lp, 0.0), both.log_probs)
    _, _, states = unroll(policy, both)
    m = both.mask[..., None] > 0
    np.testing.assert_allclose(both.states * m, states[:-1].numpy() * m, atol=2e-6)


def test_rejects_a_mismatched_policy_and_bad_arguments():
    family = make_family("navigation2d")
    with pytest.raises(ValueError, match="obs_dim"):
        TrialSampler(family, RecurrentPolicySpec(3, 2, False), trials_per_task=1, seed=0)
    with pytest.raises(ValueError, match="trials_per_task"):
        TrialSampler(family, RecurrentPolicySpec(2, 2, False), trials_per_task=0, seed=0)
    _, policy, sampler = setup()
    tasks = family.sample_tasks(1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="episodes_per_trial"):
        sampler.sample(tasks, policy.params(), episodes_per_trial=0)
    with pytest.raises(TypeError, match="one params dict"):
        sampler.sample(tasks, [policy.params()], episodes_per_trial=1)  # type: ignore[arg-type]
