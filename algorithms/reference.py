"""The exact, plain reference MAML-TRPO the fast path is checked and timed against.

Written the way the public MAML-RL ports do it: a Python loop over tasks, each task adapted
with ``torch.func.functional_call`` and ``torch.autograd.grad(create_graph=True)``, TRPO's
curvature as full-batch Hessian-vector products of the mean KL by double backward through the
inner step, with the KL's first-order graph built once and reused across CG iterations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.func import functional_call

from algorithms import functional as F
from algorithms.base import UpdateMetrics
from algorithms.batch import TaskBatch
from algorithms.maml import TRPOSpec
from algorithms.policies import DistParams, Params, Policy
from algorithms.trpo import backtracking_line_search, conjugate_gradient


def _task_loss_inner(policy: Policy, params: Params, b: TaskBatch, i: int) -> Tensor:
    dist = functional_call(policy, params, (b.obs[i],))
    logp = policy.log_prob(dist, b.actions[i])
    m = b.mask[i]
    return -(logp * b.advantages[i] * m).sum() / m.sum().clamp_min(1.0)


def adapt_task(
    policy: Policy, theta: Params, train: Sequence[TaskBatch], i: int, *, inner_lr: float, first_order: bool,
    create_graph: bool = True
) -> Params:
    """φ_i(θ) of task ``i`` by plain per-task autograd."""
    params = theta
    for b in train:
        loss = _task_loss_inner(policy, params, b, i)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph and not first_order)
        if first_order or not create_graph:
            grads = tuple(g.detach() for g in grads)
        params = {k: v - inner_lr * g for (k, v), g in zip(params.items(), grads, strict=True)}
    return params


def task_dist(policy: Policy, params: Params, b: TaskBatch, i: int) -> DistParams:
    return functional_call(policy, params, (b.obs[i],))


def _task_mean(x: Tensor, b: TaskBatch, i: int) -> Tensor:
    m = b.mask[i]
    return (x * m).sum() / m.sum().clamp_min(1.0)


def outer_loss_and_kl(
    policy: Policy,
    theta: Params,
    train: Sequence[TaskBatch],
    valid: TaskBatch,
    *,
    inner_lr: float,
    first_order: bool,
    old: list[tuple[DistParams, Tensor]] | None = None,
    create_graph: bool = True,
) -> tuple[Tensor, Tensor, list[tuple[DistParams, Tensor]]]:
    """Mean surrogate loss and mean KL over tasks; ``old`` (dist, log-probs) is made at θ if not given."""
    losses, kls, olds = [], [], []
    for i in range(valid.n_tasks):
        phi = adapt_task(policy, theta, train, i, inner_lr=inner_lr, first_order=first_order, create_graph=create_graph)
        dist = task_dist(policy, phi, valid, i)
        if old is None:
            od = F.detach_dist(dist)
            olp = policy.log_prob(od, valid.actions[i]).detach()
        else:
            od, olp = old[i]
        olds.append((od, olp))
        ratio = torch.exp(policy.log_prob(dist, valid.actions[i]) - olp)
        losses.append(-_task_mean(ratio * valid.advantages[i], valid, i))
        kls.append(_task_mean(policy.kl(od, dist), valid, i))
    return torch.stack(losses).mean(), torch.stack(kls).mean(), olds


def trpo_step(
    policy: Policy,
    theta: Params,
    train: Sequence[TaskBatch],
    valid: TaskBatch,
    *,
    inner_lr: float,
    first_order: bool,
    config: TRPOSpec,
) -> tuple[Params, UpdateMetrics]:
    """One exact MAML-TRPO outer step; returns the new θ (θ itself if the line search fails)."""
    th = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
    names, vals = list(th), list(th.values())
    loss, kl, old = outer_loss_and_kl(policy, th, train, valid, inner_lr=inner_lr, first_order=first_order)
    g = F.flat(torch.autograd.grad(loss, vals, retain_graph=True))
    gkl = F.flat(torch.autograd.grad(kl, vals, create_graph=True))

    def hvp(v: Tensor) -> Tensor:
        return F.flat(torch.autograd.grad(torch.dot(gkl, v), vals, retain_graph=True)) + config.cg_damping * v

    cg = conjugate_gradient(hvp, g, iters=config.cg_iters)
    shs = 0.5 * torch.dot(cg.x, hvp(cg.x))
    fullstep = cg.x / torch.sqrt(shs / config.max_kl)
    x0 = F.flat([v.detach() for v in vals])

    def evaluate(x: Tensor) -> tuple[float, float]:
        cand = {k: t.detach().requires_grad_(True) for k, t in zip(names, F.unflat(x, vals), strict=True)}
        new_loss, new_kl, _ = outer_loss_and_kl(
            policy, cand, train, valid, inner_lr=inner_lr, first_order=first_order, old=old, create_graph=False
        )
        return float(new_loss), float(new_kl)

    x, ls = backtracking_line_search(
        evaluate,
        x0,
        fullstep,
        loss_before=float(loss),
        max_kl=config.max_kl,
        backtrack_ratio=config.backtrack_ratio,
        max_backtracks=config.max_backtracks,
    )
    new = {k: t.detach().clone() for k, t in zip(names, F.unflat(x, vals), strict=True)}
    return new, UpdateMetrics(
        values={
            "loss/outer": float(loss), "meta/kl": ls.kl if ls.accepted else 0.0, "trpo/accepted": float(ls.accepted)
        },
        accepted=ls.accepted,
    )
