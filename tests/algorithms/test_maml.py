"""MAML's fast paths against independent computations (float64 where the math is the same)."""

import numpy as np
import pytest
import torch
from torch.func import functional_call

from algorithms import functional as F
from algorithms import reference
from algorithms.base import MetaBatch
from algorithms.maml import MAML, MAMLSpec, PPOSpec, TRPOSpec, VanillaSpec
from algorithms.policies import PolicySpec
from tests.algorithms.helpers import policy_episodes, rel_err

N_TASKS, HORIZON, EPISODES = 3, 8, 6


def make_problem(*, discrete=False, first_order=False, inner_steps=1, dtype=torch.float64, seed=0, outer=None,
                 tasks=N_TASKS, episodes=EPISODES, horizon=HORIZON, hidden=(16, 16), inner_lr=0.5):
    spec = PolicySpec(obs_dim=3, act_dim=3 if discrete else 2, hidden_sizes=hidden, discrete=discrete,
                      activation="tanh")
    cfg = MAMLSpec(inner_lr=inner_lr, inner_steps=inner_steps, first_order=first_order,
                   outer=outer or TRPOSpec(curvature_subsample=1.0))
    learner = MAML(spec, cfg, seed=seed)
    learner.policy.to(dtype)
    # a non-trivial output layer so inner steps matter
    with torch.no_grad():
        for p in learner.policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + p.numel()), dtype=dtype))
    rng = np.random.default_rng(seed)
    theta = learner.params
    train_eps = [[policy_episodes(learner.policy, theta, rng, horizon=horizon, episodes=episodes, seed=10 * k + i)
                  for i in range(tasks)] for k in range(inner_steps)]
    valid_eps = [policy_episodes(learner.policy, theta, rng, horizon=horizon, episodes=episodes, seed=100 + i)
                 for i in range(tasks)]
    train = [learner.batch(e) for e in train_eps]
    valid = learner.batch(valid_eps)
    return learner, train, valid, MetaBatch(train=train_eps, valid=valid_eps)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_stacked_and_vmap_adaptation_match_per_task_reference(first_order, inner_steps):
    learner, train, valid, _ = make_problem(first_order=first_order, inner_steps=inner_steps)
    theta = {k: v.clone().requires_grad_(True) for k, v in learner.params.items()}
    stacked = F.adapt(learner.policy, theta, train, inner_lr=0.5, first_order=first_order)
    vmapped = F.adapt_vmap(learner.policy, theta, train, inner_lr=0.5, first_order=first_order)
    for i in range(N_TASKS):
        ref = reference.adapt_task(learner.policy, theta, train, i, inner_lr=0.5, first_order=first_order)
        for k in theta:
            assert rel_err(stacked[k][i], ref[k]) < 1e-10
            assert rel_err(vmapped[k][i], ref[k]) < 1e-10
    # the inner step really moved the parameters
    assert max(float((stacked[k][0] - theta[k]).abs().max()) for k in theta) > 1e-3


def explicit_outer_gradient(learner, train, valid):
    """1/n Σ_i (I - α H_i)ᵀ ∇_φ L_i^valid(φ_i), H_i the explicit Hessian of task i's inner loss."""
    policy, alpha = learner.policy, learner.config.inner_lr
    theta = learner.params
    names = list(theta)
    shapes = [theta[k].shape for k in names]
    x0 = F.flat([theta[k] for k in names])

    def unflat(x):
        return dict(zip(names,
                        [t.view(s) for t, s in zip(F.unflat(x, [theta[k] for k in names]), shapes, strict=True)],
                        strict=True))

    total = torch.zeros_like(x0)
    for i in range(valid.n_tasks):
        def inner(x, i=i):
            dist = functional_call(policy, unflat(x), (train[0].obs[i],))
            logp = policy.log_prob(dist, train[0].actions[i])
            m = train[0].mask[i]
            return -(logp * train[0].advantages[i] * m).sum() / m.sum()

        g_in = torch.autograd.functional.jacobian(inner, x0)
        hess = torch.autograd.functional.hessian(inner, x0)
        phi = x0 - alpha * g_in
        with torch.no_grad():
            old = functional_call(policy, unflat(phi), (valid.obs[i],))
            old_logp = policy.log_prob(old, valid.actions[i])

        def outer(y, i=i, old_logp=old_logp):
            dist = functional_call(policy, unflat(y), (valid.obs[i],))
            ratio = torch.exp(policy.log_prob(dist, valid.actions[i]) - old_logp)
            m = valid.mask[i]
            return -(ratio * valid.advantages[i] * m).sum() / m.sum()

        g_out = torch.autograd.functional.jacobian(outer, phi)
        total += (torch.eye(len(x0), dtype=x0.dtype) - alpha * hess).T @ g_out
    return total / valid.n_tasks


def learner_gradient(learner, train, valid):
    theta = {k: v.clone().requires_grad_(True) for k, v in learner.params.items()}
    obj = learner.outer_objective(train, valid, theta=theta)
    return obj.loss, F.flat(torch.autograd.grad(obj.loss, list(theta.values())))


def test_second_order_outer_gradient_equals_explicit_hessian_computation():
    learner, train, valid, _ = make_problem(hidden=(8,))
    _, g = learner_gradient(learner, train, valid)
    g_ref = explicit_outer_gradient(learner, train, valid)
    assert rel_err(g, g_ref) < 1e-6
    # and the second-order term matters: dropping it changes the gradient
    fo, _, _, _ = make_problem(hidden=(8,), first_order=True)
    _, g_fo = learner_gradient(fo, train, valid)
    assert rel_err(g_fo, g_ref) > 1e-3


def test_outer_gradient_matches_central_finite_differences():
    learner, train, valid, _ = make_problem(hidden=(8,))
    _, g = learner_gradient(learner, train, valid)
    theta = learner.params
    old = learner.outer_objective(train, valid, theta={k: v.clone().requires_grad_(True) for k, v in theta.items()})

    def loss_at(x):
        th = dict(zip(theta, F.unflat(x, list(theta.values())), strict=True))
        th = {k: v.clone().requires_grad_(True) for k, v in th.items()}
        phi = learner.adapted(train, theta=th, create_graph=False)
        with torch.no_grad():
            dist = learner.policy.forward_stacked(phi, valid.obs)
            return float(F.surrogate_loss(learner.policy, dist, valid, old.old_log_probs).mean())

    x0 = F.flat(list(theta.values()))
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        v /= v.norm()
        eps = 1e-5
        fd = (loss_at(x0 + eps * v) - loss_at(x0 - eps * v)) / (2 * eps)
        assert abs(fd - float(g @ v)) <= 1e-6 * max(1.0, abs(fd)) + 1e-9


def test_stacked_outer_gradient_matches_per_task_reference_loop():
    learner, train, valid, _ = make_problem(inner_steps=2)
    loss, g = learner_gradient(learner, train, valid)
    theta = {k: v.clone().requires_grad_(True) for k, v in learner.params.items()}
    ref_loss, _, _ = reference.outer_loss_and_kl(learner.policy, theta, train, valid, inner_lr=0.5, first_order=False)
    g_ref = F.flat(torch.autograd.grad(ref_loss, list(theta.values())))
    assert abs(float(loss) - float(ref_loss)) < 1e-10
    assert rel_err(g, g_ref) < 1e-6


def test_first_order_gradient_equals_hand_built_reference():
    learner, train, valid, _ = make_problem(first_order=True)
    _, g = learner_gradient(learner, train, valid)
    # FO-MAML: the gradient of each task's valid loss at its (detached) adapted params, averaged
    total = None
    theta = learner.params
    for i in range(N_TASKS):
        phi = reference.adapt_task(learner.policy, {k: v.clone().requires_grad_(True) for k, v in theta.items()},
                                   train, i, inner_lr=0.5, first_order=True, create_graph=False)
        phi = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
        dist = functional_call(learner.policy, phi, (valid.obs[i],))
        old_logp = learner.policy.log_prob(F.detach_dist(dist), valid.actions[i])
        ratio = torch.exp(learner.policy.log_prob(dist, valid.actions[i]) - old_logp)
        m = valid.mask[i]
        loss = -(ratio * valid.advantages[i] * m).sum() / m.sum()
        gi = F.flat(torch.autograd.grad(loss, list(phi.values())))
        total = gi if total is None else total + gi
    assert rel_err(g, total / N_TASKS) < 1e-10


@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_full_batch_fisher_product_equals_exact_kl_hessian_product(discrete, first_order, inner_steps):
    learner, train, valid, _ = make_problem(discrete=discrete, first_order=first_order, inner_steps=inner_steps)
    theta = {k: v.clone().requires_grad_(True) for k, v in learner.params.items()}
    obj = learner.outer_objective(train, valid, theta=theta)
    from algorithms.maml import exact_kl_hvp
    exact = exact_kl_hvp(learner.policy, theta, obj.phi, valid, obj.old_dist, damping=0.0)
    fisher = learner.fisher_operator(theta, train, valid, damping=0.0, subsample=1.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(sum(p.numel() for p in theta.values()), generator=gen, dtype=torch.float64)
        reference_hvp = exact(v)
        assert rel_err(fisher(v), reference_hvp) < 1e-6


def test_subsampled_fisher_product_close_to_exact_full_batch():
    """Curvature on 25% of the episodes against the exact full-batch KL Hessian, at MAML's
    inner_lr 0.1 with 40 episodes per task (float32, as the learner runs).  Stated tolerance:
    cosine > 0.95 and relative error < 0.5 for every subsample drawn (measured: cosine >= 0.995,
    relative error <= 0.23).  The magnitude error is harmless for TRPO: the step is scaled by
    the same operator and the line search checks the exact KL on the full batch."""
    learner, train, valid, _ = make_problem(dtype=torch.float32, episodes=40, horizon=20, tasks=4, hidden=(32, 32),
                                            inner_lr=0.1)
    theta = {k: v.clone().requires_grad_(True) for k, v in learner.params.items()}
    obj = learner.outer_objective(train, valid, theta=theta)
    from algorithms.maml import exact_kl_hvp
    exact = exact_kl_hvp(learner.policy, theta, obj.phi, valid, obj.old_dist, damping=0.0)
    g = F.flat(torch.autograd.grad(obj.loss, list(theta.values()), retain_graph=True))
    b = exact(g)
    for draw in range(3):
        learner._rng = np.random.default_rng(draw)
        a = learner.fisher_operator(theta, train, valid, damping=0.0, subsample=0.25)(g)
        cos = float(a @ b / (a.norm() * b.norm()))
        assert cos > 0.95, cos
        assert rel_err(a, b) < 0.5, rel_err(a, b)


def test_trpo_step_respects_kl_and_improves_surrogate():
    learner, train, valid, batch = make_problem(dtype=torch.float32, episodes=10, hidden=(32, 32))
    before = learner.params
    theta = {k: v.clone().requires_grad_(True) for k, v in before.items()}
    obj = learner.outer_objective(train, valid, theta=theta)
    metrics = learner.trpo_step(train, valid)
    assert metrics.accepted
    after = learner.params
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # recompute independently at the new parameters
    phi = learner.adapted(train, theta={k: v.clone().requires_grad_(True) for k, v in after.items()},
                          create_graph=False)
    with torch.no_grad():
        dist = learner.policy.forward_stacked(phi, valid.obs)
        new_loss = F.surrogate_loss(learner.policy, dist, valid, obj.old_log_probs).mean()
        kl = F.mean_kl(learner.policy, obj.old_dist, dist, valid).mean()
    assert float(kl) <= learner.config.outer.max_kl + 1e-7
    assert float(new_loss) < float(obj.loss)
    assert metrics["loss/outer_after"] == pytest.approx(float(new_loss), rel=1e-4, abs=1e-6)


def test_trpo_step_rejected_when_line_search_fails_leaves_params_unchanged():
    learner, train, valid, _ = make_problem(dtype=torch.float32, outer=TRPOSpec(max_kl=1e-30, max_backtracks=3))
    before = {k: v.clone() for k, v in learner.params.items()}
    metrics = learner.trpo_step(train, valid)
    assert not metrics.accepted
    assert metrics["trpo/accepted"] == 0.0
    for k in before:
        assert torch.equal(before[k], learner.params[k])


@pytest.mark.parametrize("outer", [PPOSpec(epochs=3), VanillaSpec()])
def test_gradient_outer_steps_improve_the_surrogate(outer):
    learner, train, valid, batch = make_problem(dtype=torch.float32, outer=outer, episodes=10)
    theta = {k: v.clone().requires_grad_(True) for k, v in learner.params.items()}
    before = float(learner.outer_objective(train, valid, theta=theta).loss)
    old = learner.outer_objective(train, valid, theta=theta)
    metrics = learner.step(batch)
    assert np.isfinite(metrics["loss/outer"])
    phi = learner.adapted(train, theta={k: v.clone().requires_grad_(True) for k, v in learner.params.items()},
                          create_graph=False)
    with torch.no_grad():
        after = float(F.surrogate_loss(learner.policy, learner.policy.forward_stacked(phi, valid.obs), valid,
                                       old.old_log_probs).mean())
    assert after < before


def test_nan_in_loss_rejects_update_and_keeps_params():
    learner, train, valid, batch = make_problem(dtype=torch.float32)
    batch.valid[0].rewards[3, 1] = np.nan
    before = {k: v.clone() for k, v in learner.params.items()}
    from algorithms.base import NonFiniteError
    with pytest.raises(NonFiniteError, match="finite"):
        learner.step(batch)
    for k in before:
        assert torch.equal(before[k], learner.params[k])


def test_checkpoint_round_trip_continues_iteration_and_optimizer():
    learner, _, _, batch = make_problem(dtype=torch.float32, outer=PPOSpec(epochs=2))
    learner.step(batch)
    state = learner.state_dict()
    clone = MAML(state.policy_spec, state.config, seed=123)
    clone.load_state_dict(state)
    assert clone.iteration == 1
    for k in state.params:
        assert torch.equal(clone.params[k], learner.params[k])
    assert clone._optimizer.state_dict()["state"][0]["step"] == learner._optimizer.state_dict()["state"][0]["step"]
