import numpy as np
import torch

from algorithms import reference
from algorithms.base import MetaBatch, MetaLearner
from algorithms.maml import MAML
from algorithms.multitask import MultiTaskPG, MultiTaskPGSpec
from algorithms.policies import PolicySpec
from algorithms.reptile import Reptile, ReptileSpec
from tests.algorithms.helpers import policy_episodes

SPEC = PolicySpec(obs_dim=3, act_dim=2, hidden_sizes=(16,), activation="tanh")


def episodes_for(learner, rng, n_tasks=3, seed=0):
    return [policy_episodes(learner.policy, learner.params, rng, horizon=10, episodes=4, seed=seed + i)
            for i in range(n_tasks)]


def test_reptile_update_is_theta_plus_eps_mean_of_adapted_minus_theta():
    learner = Reptile(SPEC, ReptileSpec(inner_lr=0.3, inner_steps=2, outer_lr=0.4), seed=0)
    rng = np.random.default_rng(0)
    train = [episodes_for(learner, rng, seed=0), episodes_for(learner, rng, seed=10)]
    batch = MetaBatch(train=train, valid=episodes_for(learner, rng, seed=20))
    theta = learner.params
    tb = [learner.batch(s) for s in train]
    # independent: per-task plain autograd inner loop, then the Reptile formula by hand
    phis = [reference.adapt_task(learner.policy, {k: v.clone().requires_grad_(True) for k, v in theta.items()}, tb, i,
                                 inner_lr=0.3, first_order=True, create_graph=False) for i in range(3)]
    expected = {k: theta[k] + 0.4 * torch.stack([p[k].detach() - theta[k] for p in phis]).mean(0) for k in theta}
    metrics = learner.step(batch)
    for k in theta:
        assert torch.allclose(learner.params[k], expected[k], atol=1e-6)
    assert metrics["outer/step_norm"] > 0
    assert learner.iteration == 1


def test_multitask_pg_ppo_improves_clipped_objective_and_adapts_by_fine_tuning():
    learner = MultiTaskPG(SPEC, MultiTaskPGSpec(epochs=4, minibatches=2, lr=1e-2), seed=0)
    rng = np.random.default_rng(1)
    train = episodes_for(learner, rng)
    batch = MetaBatch(train=[train], valid=episodes_for(learner, rng, seed=5))
    tb = learner.batch(train)
    obs, act, adv, m = tb.obs, tb.actions, tb.advantages, tb.mask

    def pg_objective():
        with torch.no_grad():
            return float(((learner.policy.log_prob(learner.policy(obs), act)) * adv * m).sum() / m.sum())

    before = pg_objective()
    learner.step(batch)
    assert pg_objective() > before
    adapted = learner.adapt([learner.params] * 3, train)
    assert len(adapted) == 3
    assert not torch.equal(adapted[0]["body.0.weight"], learner.params["body.0.weight"])


def test_all_learners_implement_the_protocol():
    for cls in (MAML, Reptile, MultiTaskPG):
        assert isinstance(cls(SPEC, seed=0), MetaLearner)
