"""Side-effect-free pieces of policy-gradient meta-learning over explicit parameter dicts.

Everything is batched over tasks ("stacked"): parameters carry a leading task dimension and
each task's loss only sees its own slice, so the gradient of the *sum* of per-task losses with
respect to stacked parameters is every task's own gradient, in one backward pass.  On CPU this
measured faster than both a per-task Python loop and ``torch.func.vmap`` (see
``benchmarks/maml_update.py``); the vmap form is kept (:func:`adapt_vmap`) and checked against
the same reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from algorithms.batch import TaskBatch
from algorithms.policies import DistParams, Params, Policy, expand_params


def masked_task_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over each task's valid steps: ``[n, N] -> [n]``."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def inner_loss(policy: Policy, params: Params, batch: TaskBatch) -> Tensor:
    """Per-task vanilla policy-gradient loss ``-E[log pi(a|s) A]`` (MAML's inner objective), ``[n]``."""
    dist = policy.forward_stacked(params, batch.obs)
    return -masked_task_mean(policy.log_prob(dist, batch.actions) * batch.advantages, batch.mask)


def adapt(
    policy: Policy,
    params: Params,
    batches: Sequence[TaskBatch],
    *,
    inner_lr: float,
    first_order: bool = False,
    create_graph: bool = True,
) -> Params:
    """Adapted parameters of every task after one inner step per batch (Finn et al. 2017, eq. 1).

    ``phi_i <- phi_i - inner_lr * grad L_i(phi_i)`` starting from ``params`` (unstacked θ, shared
    by all tasks, or already stacked per task).  With ``create_graph`` and not ``first_order``
    the result is differentiable through the inner steps (second-order MAML); first-order MAML
    treats the inner gradients as constants.
    """
    n = batches[0].n_tasks
    first = next(iter(params.values()))
    ref = policy.get_parameter(next(iter(params)))
    phi = params if first.dim() == ref.dim() + 1 else expand_params(params, n)
    if not create_graph:
        phi = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
    keep_graph = create_graph and not first_order
    for batch in batches:
        with torch.enable_grad():
            loss = inner_loss(policy, phi, batch).sum()
            grads = torch.autograd.grad(loss, list(phi.values()), create_graph=keep_graph)
        if not keep_graph:
            grads = tuple(g.detach() for g in grads)
        phi = {k: v - inner_lr * g for (k, v), g in zip(phi.items(), grads, strict=True)}
    if not create_graph:
        phi = {k: v.detach() for k, v in phi.items()}
    return phi


def adapt_vmap(
    policy: Policy,
    params: Params,
    batches: Sequence[TaskBatch],
    *,
    inner_lr: float,
    first_order: bool = False,
) -> Params:
    """The same as :func:`adapt`, written as ``torch.func.vmap`` over tasks of a per-task
    ``torch.func.grad`` (the functorch MAML form).  Differentiable by ordinary autograd."""

    def task_loss(p: Params, obs: Tensor, actions: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
        dist = functional_call(policy, p, (obs,))
        logp = policy.log_prob(dist, actions)
        return -(logp * adv * mask).sum() / mask.sum().clamp_min(1.0)

    def step(p: Params, obs: Tensor, actions: Tensor, adv: Tensor, mask: Tensor) -> Params:
        g = grad(task_loss)(p, obs, actions, adv, mask)
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        return {k: p[k] - inner_lr * g[k] for k in p}

    n = batches[0].n_tasks
    phi = expand_params(params, n)
    for b in batches:
        phi = vmap(step)(phi, b.obs, b.actions, b.advantages, b.mask)
    return phi


def surrogate_loss(policy: Policy, dist: DistParams, batch: TaskBatch, old_log_probs: Tensor) -> Tensor:
    """Per-task importance-sampled surrogate ``-E[pi/pi_old A]`` (TRPO's L), ``[n]``."""
    ratio = torch.exp(policy.log_prob(dist, batch.actions) - old_log_probs)
    return -masked_task_mean(ratio * batch.advantages, batch.mask)


def clipped_surrogate_loss(
    policy: Policy, dist: DistParams, batch: TaskBatch, old_log_probs: Tensor, *, clip: float
) -> Tensor:
    """Per-task PPO-clip loss (Schulman et al. 2017, eq. 7), ``[n]``."""
    ratio = torch.exp(policy.log_prob(dist, batch.actions) - old_log_probs)
    adv = batch.advantages
    obj = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    return -masked_task_mean(obj, batch.mask)


def mean_kl(policy: Policy, old: DistParams, new: DistParams, batch: TaskBatch) -> Tensor:
    """Per-task mean KL(old || new) over valid steps, ``[n]``."""
    return masked_task_mean(policy.kl(old, new), batch.mask)


def detach_dist(dist: DistParams) -> DistParams:
    return tuple(d.detach() for d in dist)


def flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        out.append(vector[i : i + t.numel()].view_as(t))
        i += t.numel()
    return out
