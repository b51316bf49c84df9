"""The ``lstm-optimizer`` algorithm (Andrychowicz et al. 2016 on a task distribution's problems):
its batched problems against a per-task computation, its meta-gradient against an independent
unrolled computation, adaptation against the optimizer run by hand, its spec's refusals, and that
meta-training makes the optimizer better on held-out problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from algorithms import registry
from algorithms.learned_opt.learner import LSTMOptimizerLearner
from algorithms.learned_opt.lstm_optimizer_job import LSTMOptimizerJobSpec
from algorithms.learned_opt.specs import LSTMOptimizerSpec
from algorithms.supervised.data import SupportQuery
from algorithms.supervised.learner import task_loss
from algorithms.supervised.nets import NetSpec

SPEC = NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(8,))


def _episodes(rng: np.random.Generator, tasks: int = 4, ways: int = 3, shots: int = 4, dim: int = 4,
              means: np.ndarray | None = None) -> list[SupportQuery]:
    """Classification episodes whose classes are Gaussian blobs around random means."""
    out = []
    for _ in range(tasks):
        centres = rng.normal(scale=2.0, size=(ways, dim)) if means is None else means[rng.choice(len(means), ways,
                                                                                                   replace=False)]

        def draw(centres=centres):
            y = np.repeat(np.arange(ways), shots)
            return (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y.astype(np.int64)

        out.append(SupportQuery(*draw(), *draw()))
    return out


def test_batched_problems_equal_each_task_alone():
    learner = LSTMOptimizerLearner(SPEC, LSTMOptimizerJobSpec(steps=4, unroll=2), seed=3)
    batch = learner.batch(_episodes(np.random.default_rng(0)))
    theta = learner.fresh_inits(batch.n_tasks, key=5).requires_grad_(True)
    problems = learner.problems(theta, batch.x_support, batch.y_support, classification=True)
    losses = problems.loss(theta)
    (grads,) = torch.autograd.grad(losses.sum(), theta)
    for b in range(batch.n_tasks):
        row = theta[b].detach().clone().requires_grad_(True)
        params = problems.unflatten(row)
        want = task_loss(learner.net(params, batch.x_support[b]), batch.y_support[b], classification=True)
        (g,) = torch.autograd.grad(want, row)
        assert torch.allclose(losses[b], want, atol=1e-6)
        assert torch.allclose(grads[b], g, atol=1e-6)
    # the starting points are the network's default initialisation, different per task and per key
    assert not torch.equal(theta[0], theta[1])
    assert torch.equal(learner.fresh_inits(2, key=5), learner.fresh_inits(2, key=5))
    assert not torch.equal(learner.fresh_inits(2, key=5), learner.fresh_inits(2, key=6))


def test_meta_gradient_matches_an_independent_unroll():
    """One truncation of the learner's update against the same trajectory written out with
    ``torch.func.functional_call`` on the LSTM, the optimizee's gradients as constants."""
    torch.manual_seed(0)
    cfg = LSTMOptimizerJobSpec(steps=3, unroll=3, optimizer=LSTMOptimizerSpec(hidden_size=6))
    learner = LSTMOptimizerLearner(SPEC, cfg, seed=1)
    learner.policy.double()
    learner.optimizer_net.double()
    learner._optimizer = torch.optim.SGD(learner.meta_parameters(), lr=1.0)  # the step is -grad: readable
    episodes = _episodes(np.random.default_rng(1), tasks=2)
    batch = learner.batch(episodes)
    data = batch.x_support.detach().to("cpu", torch.float32).contiguous().numpy()
    import zlib

    theta0 = learner.fresh_inits(batch.n_tasks, key=zlib.crc32(data.tobytes()))
    phi = {k: v.detach().clone().requires_grad_(True) for k, v in learner.optimizer_net.named_parameters()}
    keys = list(learner.params)
    shapes = [learner.params[k].shape for k in keys]
    sizes = [int(np.prod(s)) for s in shapes]

    def loss_of(theta):  # per-task loop, no vmap
        out = []
        for b in range(batch.n_tasks):
            params = {k: v.reshape(s) for k, v, s in zip(keys, theta[b].split(sizes), shapes, strict=True)}
            out.append(task_loss(learner.net(params, batch.x_support[b]), batch.y_support[b], classification=True))
        return torch.stack(out)

    theta = theta0.clone()
    state = learner.optimizer_net.init_state(theta.numel())
    meta = 0.0
    for _ in range(3):
        leaf = theta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_of(leaf).sum(), leaf)
        update, state = torch.func.functional_call(learner.optimizer_net, phi, (g.reshape(-1), state))
        theta = theta + update.view_as(theta)
        meta = meta + loss_of(theta).mean()
    want = torch.autograd.grad(meta, list(phi.values()))
    before = {k: v.detach().clone() for k, v in phi.items()}
    learner.learn([episodes])
    for (k, p), w in zip(learner.optimizer_net.named_parameters(), want, strict=True):
        assert torch.allclose(before[k] - p.detach(), w, rtol=1e-6, atol=1e-9), k


def test_adaptation_runs_the_learned_optimizer_from_theta():
    learner = LSTMOptimizerLearner(SPEC, LSTMOptimizerJobSpec(steps=4, unroll=2, test_steps=6), seed=2)
    ep = _episodes(np.random.default_rng(2), tasks=1)[0]
    got = learner.adapt_task(learner.params, ep)
    theta = torch.cat([v.reshape(-1) for v in learner.params.values()])
    state = learner.optimizer_net.init_state(theta.numel())
    xs, ys = torch.as_tensor(ep.x_support), torch.as_tensor(ep.y_support)
    keys = list(learner.params)
    curve = []
    with torch.no_grad():
        for _ in range(6):
            with torch.enable_grad():
                leaf = theta.clone().requires_grad_(True)
                params = dict(zip(keys, [v.reshape(learner.params[k].shape) for k, v in
                                         zip(keys, leaf.split([learner.params[k].numel() for k in keys]),
                                             strict=True)], strict=True))
                loss = task_loss(learner.net(params, xs), ys, classification=True)
                (g,) = torch.autograd.grad(loss, leaf)
            curve.append(float(loss))
            update, state = learner.optimizer_net(g, state)
            theta = theta + update
    flat = torch.cat([got[k].reshape(-1) for k in keys])
    assert torch.allclose(flat, theta, atol=1e-6)
    assert np.allclose(learner.training_curve(ep)[:6], curve, atol=1e-6)
    assert learner.training_curve(ep, steps=2).shape == (3,)


def test_spec_and_size_refusals():
    with pytest.raises(ValidationError, match="must divide steps"):
        LSTMOptimizerJobSpec(steps=100, unroll=30)
    with pytest.raises(ValidationError):
        registry.get("lstm-optimizer").spec(optimizer={"hidden_size": 0})
    learner = LSTMOptimizerLearner(SPEC, LSTMOptimizerJobSpec(steps=2, unroll=1, max_coordinates=100))
    before = {k: v.clone() for k, v in learner.state_dict().params.items()}
    with pytest.raises(ValueError, match="max_coordinates"):
        learner.learn([_episodes(np.random.default_rng(3))])
    after = learner.state_dict().params
    assert all(torch.equal(before[k], after[k]) for k in before) and learner.iteration == 0


def test_theta_is_not_meta_learned():
    learner = LSTMOptimizerLearner(SPEC, LSTMOptimizerJobSpec(steps=4, unroll=2), seed=4)
    theta = learner.params
    phi = {k: v.detach().clone() for k, v in learner.optimizer_net.named_parameters()}
    metrics = learner.learn([_episodes(np.random.default_rng(4))]).values
    assert all(torch.equal(theta[k], v) for k, v in learner.params.items())
    assert any(not torch.equal(phi[k], v) for k, v in learner.optimizer_net.named_parameters())
    assert {"loss/meta", "loss/support_final", "meta/accuracy", "meta/accuracy_pre"} <= metrics.keys()


def test_meta_training_improves_the_optimizer_on_held_out_problems():
    """20 meta-iterations (T = 20, truncations of 10) on blob classification: the optimizer's mean
    final support loss on 32 held-out problems falls well below the untrained optimizer's."""
    rng = np.random.default_rng(5)
    means = rng.normal(scale=2.0, size=(20, 4))
    cfg = LSTMOptimizerJobSpec(steps=20, unroll=10, test_steps=20, meta_lr=3e-3)
    learner = LSTMOptimizerLearner(SPEC, cfg, seed=0)
    held_out = _episodes(np.random.default_rng(99), tasks=32, shots=5, means=-means)

    def final_loss() -> float:
        return float(np.mean([learner.training_curve(e)[-1] for e in held_out]))

    untrained = final_loss()
    for _ in range(20):
        learner.learn([_episodes(rng, tasks=8, shots=5, means=means)])
    trained = final_loss()
    assert trained < 0.5 * untrained, (untrained, trained)
