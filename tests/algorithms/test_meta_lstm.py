"""The LSTM meta-learner (Ravi & Larochelle 2017): its preprocessing against the formula, its
update against plain gradient descent where the gates are fixed, its meta-gradient against the
chain rule written out, and that it learns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms.learned_opt.lstm_optimizer import preprocess_gradients as preprocess
from algorithms.supervised.data import SupportQuery
from algorithms.supervised.learner import task_loss
from algorithms.supervised.meta_lstm import MetaLSTMSpec
from algorithms.supervised.meta_lstm_learner import MetaLSTM
from algorithms.supervised.nets import NetSpec
from tests.algorithms.helpers import noisy_classes


def test_preprocessing_is_the_papers_formula():
    p = 10.0
    x = torch.tensor([3.0, -0.5, 1e-3, -2e-5, 1e-6, 0.0], dtype=torch.float64)
    got = preprocess(x, p)
    small = math.exp(-p)  # 4.54e-5: 2e-5 and 1e-6 and 0 fall below it
    want = [(math.log(3.0) / p, 1.0), (math.log(0.5) / p, -1.0), (math.log(1e-3) / p, 1.0),
            (-1.0, -2e-5 / small), (-1.0, 1e-6 / small), (-1.0, 0.0)]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)


def _fixed_gates(learner: MetaLSTM, lr: float) -> None:
    """f = 1, i = lr on every coordinate: the meta-learner's update is gradient descent."""
    m = learner.meta
    with torch.no_grad():
        m.w_f.zero_()
        m.w_i.zero_()
        m.b_f.fill_(40.0)  # σ(40) rounds to 1
        m.b_i.fill_(math.log(lr / (1 - lr)))


def _episode(rng: np.random.Generator, ways: int = 3, shots: int = 2, dim: int = 4) -> SupportQuery:
    def draw():
        y = np.repeat(np.arange(ways), shots)
        return (rng.normal(size=(len(y), dim)) + y[:, None]).astype(np.float32), y.astype(np.int64)

    return SupportQuery(*draw(), *draw())


def test_with_fixed_gates_the_update_is_gradient_descent():
    learner = MetaLSTM(NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(8,)), MetaLSTMSpec(test_inner_steps=5))
    _fixed_gates(learner, 0.1)
    lr = float(torch.sigmoid(learner.meta.b_i.detach()))
    ep = _episode(np.random.default_rng(0))
    got = learner.adapt_task(learner.params, ep)
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in learner.params.items()}
    xs, ys = torch.as_tensor(ep.x_support), torch.as_tensor(ep.y_support)
    for _ in range(5):
        loss = task_loss(learner.net(theta, xs), ys, classification=True)
        grads = torch.autograd.grad(loss, list(theta.values()))
        theta = {k: (v - lr * g).detach().requires_grad_(True) for (k, v), g in zip(theta.items(), grads, strict=True)}
    for k in got:
        assert torch.allclose(got[k], theta[k], atol=1e-6), k


def test_meta_gradient_is_the_chain_rule_through_the_cell_state():
    """With f = 1 and W_F = W_I = 0, θ_T = θ_0 − σ(b_I) Σ_t ∇_t with the ∇_t data, so
    ∂L_q/∂θ_0 = ∇L_q(θ_T) and ∂L_q/∂b_I = −σ'(b_I) ∇L_q(θ_T) · Σ_t ∇_t (float64)."""
    spec = NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(6,))
    learner = MetaLSTM(spec, MetaLSTMSpec(inner_steps=3))
    learner.policy.double()
    learner.meta.double()
    _fixed_gates(learner, 0.2)
    ep = _episode(np.random.default_rng(1))
    xs, ys = torch.as_tensor(ep.x_support, dtype=torch.float64), torch.as_tensor(ep.y_support)
    xq, yq = torch.as_tensor(ep.x_query, dtype=torch.float64), torch.as_tensor(ep.y_query)
    theta = dict(learner.policy.named_parameters())
    phi = learner.unroll(theta, xs, ys, classification=True, steps=3)
    lq = task_loss(learner.net(phi, xq), yq, classification=True)
    d_theta = torch.autograd.grad(lq, list(theta.values()) + [learner.meta.b_i])
    # independently: the descent path with plain autograd, then the chain rule by hand
    b = learner.meta.b_i.detach()
    lr = torch.sigmoid(b)
    point = {k: v.detach().clone() for k, v in theta.items()}
    gsum = {k: torch.zeros_like(v) for k, v in point.items()}
    for _ in range(3):
        p = {k: v.clone().requires_grad_(True) for k, v in point.items()}
        g = torch.autograd.grad(task_loss(learner.net(p, xs), ys, classification=True), list(p.values()))
        for (k, v), gk in zip(point.items(), g, strict=True):
            gsum[k] += gk
            point[k] = v - lr * gk
    p = {k: v.clone().requires_grad_(True) for k, v in point.items()}
    gq = dict(zip(p, torch.autograd.grad(task_loss(learner.net(p, xq), yq, classification=True), list(p.values())),
                  strict=True))
    for got, k in zip(d_theta[:-1], theta, strict=True):
        assert torch.allclose(got, gq[k], rtol=1e-10, atol=1e-12), k
    want_b = -(lr * (1 - lr)) * sum((gq[k] * gsum[k]).sum() for k in gq)
    assert torch.allclose(d_theta[-1], want_b.reshape(1), rtol=1e-9, atol=1e-14)


def test_the_gates_start_near_descent_with_a_small_step():
    gates = MetaLSTM(NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(8,)), seed=3).gates()
    assert gates["forget"] > 0.98 and 0.006 < gates["input"] < 0.02  # σ([4, 6]), σ([−5, −4])


def test_spec_bounds():
    with pytest.raises(ValueError):
        MetaLSTMSpec(inner_steps=0)
    with pytest.raises(ValueError):
        MetaLSTMSpec(inner_lr=0.1)  # no such setting: the gates are the step sizes


def test_meta_lstm_learns_a_synthetic_5_way_task():
    """5-way 5-shot episodes of 16-dimensional inputs (4 carry the class: a class mean plus noise
    0.5; 12 are noise of scale 3); training classes (40) and held-out classes (20) differ.  MLP
    32-32, 5 inner updates, 8 tasks per meta-batch, Adam 3e-3, 150 meta-iterations: held-out query
    accuracy after adaptation 0.21 -> 0.69 (seed 0; chance 0.2)."""
    rng = np.random.default_rng(0)
    task = noisy_classes(rng)
    held_out = task.held_out()
    torch.manual_seed(0)
    learner = MetaLSTM(NetSpec(input_shape=(task.input_dim,), output_dim=task.ways, hidden_sizes=(32, 32)),
                       MetaLSTMSpec(inner_steps=5, test_inner_steps=5, outer_lr=3e-3), seed=0)
    start = learner.evaluate(held_out)["meta/accuracy"]
    for _ in range(150):
        learner.learn([[task.episode(rng, task.train) for _ in range(8)]])
    end = learner.evaluate(held_out)["meta/accuracy"]
    assert end > start + 0.25, (start, end)
