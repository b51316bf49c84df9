"""Reptile for supervised few-shot learning (Nichol, Achiam & Schulman 2018, Algorithm 2).

Each task's inner loop is ``inner_steps`` full-batch steps of SGD or Adam on the task's support
and query examples together, from θ; the outer update moves θ towards the adapted parameters,
``θ ← θ + ε · mean_i(φ_i − θ)`` (the paper's batched version, eq. in sec. 3; ε constant here,
where the paper anneals it).  The inner Adam is the paper's: β₁ = 0, β₂ = 0.999, a fresh state per
task.  No second derivatives: the tasks' inner loops run side by side as
``torch.func.vmap(torch.func.grad(loss))`` over parameters stacked per task.

The metrics are held out: ``meta/accuracy`` (``meta/mse``) and ``loss/query`` are of the query set
after the same number of steps on the support set alone (a second, support-only inner loop: what
meta-test does), ``meta/accuracy_pre`` of θ itself; ``meta/grad_norm`` is the norm of Reptile's
"gradient" ``mean_i(θ − φ_i)`` (Nichol et al., sec. 5).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad, vmap

from algorithms.errors import NonFiniteError
from algorithms.registry import AdvantageSpec
from algorithms.supervised.data import SupportQuery
from algorithms.supervised.learner import EpisodeBatch, SupervisedLearner, query_metrics, task_loss
from algorithms.supervised.nets import NetSpec, Params
from algorithms.supervised.sl_reptile import SLReptileSpec

#: the inner Adam's β₁, β₂ and ε (Nichol et al. 2018, appendix A: β₁ = 0)
ADAM_BETAS = (0.0, 0.999)
ADAM_EPS = 1e-8


def reptile_update(theta: Params, adapted: Params, *, outer_lr: float) -> Params:
    """``θ + ε · mean_i(φ_i − θ)`` with ``adapted`` stacked over tasks (leading dimension)."""
    return {k: theta[k] + outer_lr * (adapted[k] - theta[k].unsqueeze(0)).mean(0) for k in theta}


class SLReptile(SupervisedLearner):
    """Reptile (see the module docstring); no optimizer state (the outer step is an interpolation)."""

    name = "sl-reptile"
    config: SLReptileSpec

    def __init__(self, policy_spec: NetSpec, spec: SLReptileSpec | None = None, *,
                 advantage: AdvantageSpec | None = None, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(policy_spec, spec or SLReptileSpec(), advantage=advantage, seed=seed, device=device)

    def inner_loop(self, theta: Params, x: Tensor, y: Tensor, *, steps: int, classification: bool) -> Params:
        """Each task's parameters after ``steps`` full-batch steps of the inner optimizer on its
        examples ``x`` ``[T, N, ...]``, ``y`` from ``theta``: stacked ``[T, ...]``, no graph."""
        cfg = self.config
        n = x.shape[0]
        phi = {k: v.detach().unsqueeze(0).expand(n, *v.shape).clone() for k, v in theta.items()}

        def loss(p: Params, xi: Tensor, yi: Tensor) -> Tensor:
            return task_loss(self.net(p, xi), yi, classification=classification)

        grads = vmap(grad(loss))
        m = {k: torch.zeros_like(v) for k, v in phi.items()}
        v2 = {k: torch.zeros_like(v) for k, v in phi.items()}
        b1, b2 = ADAM_BETAS
        with torch.no_grad():
            for t in range(1, steps + 1):
                g = grads(phi, x, y)
                if cfg.inner_optimizer == "sgd":
                    phi = {k: p - cfg.inner_lr * g[k] for k, p in phi.items()}
                    continue
                for k in phi:  # Adam (Kingma & Ba 2015, Algorithm 1)
                    m[k] = b1 * m[k] + (1 - b1) * g[k]
                    v2[k] = b2 * v2[k] + (1 - b2) * g[k].pow(2)
                    m_hat, v_hat = m[k] / (1 - b1**t), v2[k] / (1 - b2**t)
                    phi[k] = phi[k] - cfg.inner_lr * m_hat / (v_hat.sqrt() + ADAM_EPS)
        return phi

    def _update(self, batch: EpisodeBatch) -> dict[str, float]:
        cfg, c = self.config, batch.classification
        theta = self.params
        x = torch.cat([batch.x_support, batch.x_query], dim=1)
        y = torch.cat([batch.y_support, batch.y_query], dim=1)
        phi = self.inner_loop(theta, x, y, steps=cfg.inner_steps, classification=c)
        if not all(torch.isfinite(v).all() for v in phi.values()):
            raise NonFiniteError("Reptile's adapted parameters are not finite (NaN or inf); the update was rejected")
        new = reptile_update(theta, phi, outer_lr=cfg.outer_lr)
        direction = torch.cat([(theta[k] - phi[k]).mean(0).reshape(-1) for k in theta])
        # held out: the support-only adaptation meta-test does, scored on the query set
        held = self.inner_loop(theta, batch.x_support, batch.y_support, steps=cfg.inner_steps, classification=c)
        with torch.no_grad():
            post = vmap(self.net)(held, batch.x_query)
            pre = self.net(theta, batch.x_query)
            post_loss = task_loss(post, batch.y_query, classification=c).mean()
            pre_loss = task_loss(pre, batch.y_query, classification=c).mean()
        if not torch.isfinite(direction).all() or not all(torch.isfinite(v).all() for v in new.values()):
            raise NonFiniteError("Reptile's update is not finite (NaN or inf); the update was rejected")
        self._set_params(new)
        metrics = {"loss/query": float(post_loss), "loss/query_pre": float(pre_loss),
                   "meta/grad_norm": float(direction.norm()),
                   "outer/step_norm": float(cfg.outer_lr * direction.norm())}
        metrics.update(query_metrics(post, batch.y_query, classification=c))
        metrics.update(query_metrics(pre, batch.y_query, classification=c, suffix="_pre"))
        return metrics

    def adapt_task(self, params: Params, episode: SupportQuery, *, steps: int | None = None) -> Params:
        """θ after ``steps`` (default ``test_inner_steps``) inner-optimizer steps on the support set."""
        batch = self.batch([episode])
        theta = {k: v.detach().to(self.device) for k, v in params.items()}
        phi = self.inner_loop(theta, batch.x_support, batch.y_support,
                              steps=self.config.test_inner_steps if steps is None else steps,
                              classification=batch.classification)
        return {k: v[0] for k, v in phi.items()}


__all__ = ["ADAM_BETAS", "SLReptile", "reptile_update"]
