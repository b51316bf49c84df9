"""Multi-task policy gradient: PPO over the union of a meta-batch's tasks (the non-meta baseline).

One policy is trained on all tasks' episodes at once (Schulman et al. 2017's clipped objective,
advantages from a per-task linear baseline); it adapts to a task by fine-tuning, i.e. the same
inner policy-gradient step MAML takes, so its post-adaptation return is directly comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from algorithms.base import (
    MetaBatch,
    NonFiniteError,
    PolicyGradientLearner,
    UpdateMetrics,
    check_finite,
)
from algorithms.episodes import Episodes
from algorithms.multitask import MultiTaskPGSpec
from algorithms.policies import PolicySpec
from algorithms.registry import AdvantageSpec


class MultiTaskPG(PolicyGradientLearner):
    name = "multitask-pg"
    config: MultiTaskPGSpec

    def __init__(
        self, policy_spec: PolicySpec, spec: MultiTaskPGSpec | None = None, *, advantage: AdvantageSpec | None = None,
        seed: int = 0, device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(policy_spec, spec or MultiTaskPGSpec(), advantage=advantage, seed=seed, device=device)
        self._optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.lr, eps=1e-5)
        self._gen = torch.Generator().manual_seed(seed)

    def learn(self, phases: Sequence[Sequence[Episodes]]) -> UpdateMetrics:
        """The update from the one phase of its plan (θ's episodes; no post-adaptation phase)."""
        return self.step(MetaBatch(train=[list(phases[0])], valid=None))

    def step(self, batch: MetaBatch) -> UpdateMetrics:
        cfg = self.config
        tb = self.batch(batch.train[0])  # episodes sampled with θ itself
        valid = tb.mask.reshape(-1) > 0
        obs = tb.obs.reshape(-1, tb.obs.shape[-1])[valid]
        actions = tb.actions.reshape(-1, *tb.actions.shape[2:])[valid]
        adv = tb.advantages.reshape(-1)[valid]
        with torch.no_grad():
            old_logp = self.policy.log_prob(self.policy(obs), actions)
        backup = {k: v.clone() for k, v in self.params.items()}
        n = obs.shape[0]
        size = max(1, n // cfg.minibatches)
        losses, kls = [], []
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=self._gen).to(self.device)
            for start in range(0, n, size):
                idx = perm[start : start + size]
                dist = self.policy(obs[idx])
                ratio = torch.exp(self.policy.log_prob(dist, actions[idx]) - old_logp[idx])
                a = adv[idx]
                obj = torch.minimum(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a).mean()
                loss = -obj - cfg.entropy_coef * self.policy.entropy(dist).mean()
                if not torch.isfinite(loss):
                    self._set_params(backup)
                    raise NonFiniteError("multi-task PPO loss is not finite (NaN or inf); the update was rejected")
                optimizer = self._optimizer
                assert optimizer is not None
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
                losses.append(float(loss))
            with torch.no_grad():
                kls.append(float((old_logp - self.policy.log_prob(self.policy(obs), actions)).mean()))
        check_finite("meta-parameters", *self.params.values())
        metrics = UpdateMetrics(values={"loss/outer": losses[0], "meta/kl": kls[-1]})
        return self._finish(metrics, batch)


__all__ = ["MultiTaskPG"]
