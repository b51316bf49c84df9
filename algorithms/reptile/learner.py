"""Reptile for reinforcement learning (Nichol, Achiam & Schulman 2018, Algorithm 2).

Each task's inner loop is ``inner_steps`` vanilla policy-gradient steps with ``inner_lr``, with
fresh episodes sampled between steps (so the loop runs where the task's envs are); the outer
update moves θ towards the adapted parameters: ``θ ← θ + ε · mean_i(φ_i − θ)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from algorithms import functional as F
from algorithms.base import MetaBatch, PolicyGradientLearner, UpdateMetrics, check_finite
from algorithms.batch import TaskBatch
from algorithms.policies import Params, PolicySpec, expand_params
from algorithms.registry import AdvantageSpec
from algorithms.reptile import ReptileSpec


def reptile_update(theta: Params, adapted: Params, *, outer_lr: float) -> Params:
    """``θ + ε · mean_i(φ_i − θ)`` with ``adapted`` stacked over tasks."""
    return {k: theta[k] + outer_lr * (adapted[k] - theta[k].unsqueeze(0)).mean(0) for k in theta}


class Reptile(PolicyGradientLearner):
    name = "reptile"
    config: ReptileSpec

    def __init__(
        self, policy_spec: PolicySpec, spec: ReptileSpec | None = None, *, advantage: AdvantageSpec | None = None,
        seed: int = 0, device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(policy_spec, spec or ReptileSpec(), advantage=advantage, seed=seed, device=device)

    def adapted(self, train: Sequence[TaskBatch]) -> Params:
        """φ_i after the inner steps on the train batches (first order, no graph)."""
        return F.adapt(self.policy, self.params, train, inner_lr=self.config.inner_lr, create_graph=False)

    def step(self, batch: MetaBatch) -> UpdateMetrics:
        train = [self.batch(step) for step in batch.train]
        theta = self.params
        phi = self.adapted(train)
        new = reptile_update(theta, phi, outer_lr=self.config.outer_lr)
        check_finite("Reptile update", *new.values())
        delta = torch.cat([(new[k] - theta[k]).reshape(-1) for k in theta])
        first = train[0]
        n = first.n_tasks
        with torch.no_grad():
            # the PG loss at θ on the first batch, and how far the update moved the policy there
            loss = F.inner_loss(self.policy, expand_params(theta, n), first).mean()
            old = self.policy.forward_stacked(expand_params(theta, n), first.obs)
            kl = F.mean_kl(
                self.policy, old, self.policy.forward_stacked(expand_params(new, n), first.obs), first
            ).mean()
        self._set_params(new)
        metrics = {"loss/outer": float(loss), "meta/kl": float(kl), "outer/step_norm": float(delta.norm())}
        return self._finish(UpdateMetrics(values=metrics), batch)
