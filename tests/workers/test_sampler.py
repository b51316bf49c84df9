import numpy as np
import pytest
import torch

from algorithms.policies import PolicySpec, make_policy
from workers.envs import make_family
from workers.sampler import Sampler


def spec_for(family, hidden=(16,)):
    space = family.action_space
    discrete = not hasattr(space, "shape") or space.shape == ()
    act_dim = int(space.n) if discrete else int(space.shape[0])
    return PolicySpec(obs_dim=int(family.observation_space.shape[0]), act_dim=act_dim, hidden_sizes=hidden,
                      discrete=discrete)


def test_navigation2d_sampler_shapes_rounds_and_log_probs():
    family = make_family("navigation2d")
    spec = spec_for(family)
    policy = make_policy(spec, seed=0)
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    sampler = Sampler(family, spec, envs_per_task=2, seed=0)
    eps = sampler.sample(tasks, policy.params(), episodes_per_task=5)  # 3 rounds of 2 envs
    assert len(eps) == 3
    for e in eps:
        assert e.obs.shape == (100, 5, 2) and e.actions.shape == (100, 5, 2) and e.rewards.shape == (100, 5)
        assert e.lengths.max() <= 100 and e.lengths.min() >= 1
        assert (e.dones.sum(axis=0) == 1).all()  # exactly one end per episode column
        assert (e.rewards[e.mask == 0] == 0).all()
        # stored log-probs are the behaviour policy's
        with torch.no_grad():
            lp = policy.log_prob(policy(torch.as_tensor(e.obs)), torch.as_tensor(e.actions)).numpy()
        np.testing.assert_allclose(lp * e.mask, e.log_probs, rtol=1e-4, atol=1e-4)
        # the first observation is the start at the origin; rewards are minus distances
        np.testing.assert_allclose(e.obs[0], 0.0)
    # all steps taken are counted, including the 6th episode of each task's last round (2 envs x 3 rounds)
    assert sampler.last_stats.env_steps >= sum(e.num_steps for e in eps)


def test_sampler_is_deterministic_given_seed_and_uses_per_task_params():
    family = make_family("navigation2d")
    spec = spec_for(family)
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    p0, p1 = make_policy(spec, seed=0).params(), make_policy(spec, seed=1).params()
    a = Sampler(family, spec, envs_per_task=4, seed=3).sample(tasks, [p0, p1], episodes_per_task=4)
    b = Sampler(family, spec, envs_per_task=4, seed=3).sample(tasks, [p0, p1], episodes_per_task=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.actions, y.actions)
    # deterministic actions with per-task params equal each policy's own mean action
    det = Sampler(family, spec, envs_per_task=1, seed=0).sample(
        tasks, [p0, p1], episodes_per_task=1, deterministic=True
    )
    for e, p in zip(det, (p0, p1), strict=True):
        pol = make_policy(spec)
        with torch.no_grad():
            mean = torch.func.functional_call(pol, p, (torch.as_tensor(e.obs[:5, 0]),))[0]
        np.testing.assert_allclose(e.actions[:5, 0], mean.numpy(), atol=1e-5)


@pytest.mark.parametrize("name,params,horizon", [
    ("halfcheetah-vel", {"max_episode_steps": 50}, 50),
    ("cartpole-physics", {}, 200),
    ("metaworld-ml1", {"env_name": "reach-v3", "max_episode_steps": 60}, 60),
])
def test_sampler_on_real_families(name, params, horizon):
    family = make_family(name, **params)
    spec = spec_for(family)
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    sampler = Sampler(family, spec, envs_per_task=2, seed=0)
    eps = sampler.sample(tasks, make_policy(spec, seed=0).params(), episodes_per_task=3)
    assert [e.horizon for e in eps] == [horizon, horizon]
    assert all(e.num_episodes == 3 for e in eps)
    assert all(np.isin(e.success, [0.0, 1.0]).all() for e in eps)
    assert all(np.isfinite(e.rewards).all() for e in eps)
    # a second call re-targets the same envs at new tasks
    eps2 = sampler.sample(family.sample_tasks(2, np.random.default_rng(1)), make_policy(spec, seed=0).params(),
                          episodes_per_task=2)
    assert len(eps2) == 2
    sampler.close()
