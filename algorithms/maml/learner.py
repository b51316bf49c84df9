"""MAML for reinforcement learning (Finn et al. 2017, Algorithm 3) with TRPO, PPO-clip or
vanilla policy-gradient outer steps, second or first order.

The outer objective is the post-adaptation surrogate averaged over the meta-batch,
``L(θ) = 1/n Σ_i L_i^valid(φ_i(θ))`` with ``φ_i(θ) = θ - α ∇L_i^train(θ)``.

TRPO's curvature (the Hessian of the mean KL between the adapted policies before and after the
step) is computed, by default, in Gauss-Newton/Fisher form: at θ_old the KL's gradient w.r.t.
the adapted parameters is zero, so its Hessian w.r.t. θ is exactly ``1/n Σ_i J_iᵀ F_i J_i`` with
``J_i = ∂φ_i/∂θ`` and ``F_i`` the Fisher matrix of the adapted policy on its validation states.
This needs no third derivatives of the inner loss (the double-backward "exact" form, kept for
reference, does), and it is evaluated on a subsample of the episodes, as TRPO's reference
implementations do for the Fisher (``curvature_subsample``); the gradient and the line search
always use the full batch, so the step's KL constraint and improvement are checked exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from algorithms import functional as F
from algorithms.base import (
    MetaBatch,
    NonFiniteError,
    PolicyGradientLearner,
    Stopwatch,
    UpdateMetrics,
    check_finite,
)
from algorithms.batch import TaskBatch
from algorithms.maml import MAMLSpec, PPOSpec, TRPOSpec, VanillaSpec
from algorithms.policies import (
    DistParams,
    GaussianMLPPolicy,
    Params,
    Policy,
    PolicySpec,
    expand_params,
)
from algorithms.registry import AdvantageSpec
from algorithms.trpo import backtracking_line_search, conjugate_gradient


@dataclass
class OuterObjective:
    loss: Tensor
    phi: Params
    old_dist: DistParams
    old_log_probs: Tensor


class MAML(PolicyGradientLearner):
    """The MAML meta-learner; implements :class:`algorithms.base.MetaLearner`.

    >>> from algorithms.policies import PolicySpec
    >>> learner = MAML(PolicySpec(obs_dim=2, act_dim=2, hidden_sizes=(8,)), MAMLSpec(), seed=0)
    >>> sorted(learner.params)[:2]
    ['body.0.bias', 'body.0.weight']
    """

    name = "maml"
    config: MAMLSpec

    def __init__(
        self, policy_spec: PolicySpec, spec: MAMLSpec | None = None, *, advantage: AdvantageSpec | None = None,
        seed: int = 0, device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(policy_spec, spec or MAMLSpec(), advantage=advantage, seed=seed, device=device)
        if isinstance(self.config.outer, PPOSpec | VanillaSpec):
            self._optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.outer.lr)

    def adapted(self, train: Sequence[TaskBatch], *, theta: Params | None = None, create_graph: bool = True) -> Params:
        """φ_i(θ) for all tasks (stacked), differentiable unless ``create_graph`` is False."""
        theta = self.params if theta is None else theta
        cfg = self.config
        if cfg.task_batching == "vmap" and create_graph:
            return F.adapt_vmap(self.policy, theta, train, inner_lr=cfg.inner_lr, first_order=cfg.first_order)
        return F.adapt(
            self.policy, theta, train, inner_lr=cfg.inner_lr, first_order=cfg.first_order, create_graph=create_graph
        )

    # ---- outer loop --------------------------------------------------------------------
    def step(self, batch: MetaBatch) -> UpdateMetrics:
        if batch.valid is None:
            raise ValueError("MAML learns from the post-adaptation (valid) phase; the batch has none")
        watch = Stopwatch(self.device)
        with watch.section("outer_batch"):  # episodes to tensors: baselines, advantages
            train = [self.batch(step) for step in batch.train]
            valid = self.batch(batch.valid)
        outer = self.config.outer
        if isinstance(outer, TRPOSpec):
            metrics = self.trpo_step(train, valid, watch=watch)
        else:
            with watch.section("outer_update"):
                metrics = self.gradient_step(train, valid)
        metrics.values.update(watch.metrics())
        return self._finish(metrics, batch)

    def outer_objective(self, train: Sequence[TaskBatch], valid: TaskBatch, *, theta: Params) -> OuterObjective:
        """The post-adaptation surrogate ``1/n Σ_i L_i^valid(φ_i(θ))`` at ``theta`` (with graph),
        the importance weights taken against the adapted policies at ``theta`` itself."""
        phi = self.adapted(train, theta=theta)
        with torch.no_grad():
            old_dist = F.detach_dist(self.policy.forward_stacked(phi, valid.obs))
            old_logp = self.policy.log_prob(old_dist, valid.actions)
        dist = self.policy.forward_stacked(phi, valid.obs)
        loss = F.surrogate_loss(self.policy, dist, valid, old_logp).mean()
        return OuterObjective(loss=loss, phi=phi, old_dist=old_dist, old_log_probs=old_logp)

    def trpo_step(self, train: Sequence[TaskBatch], valid: TaskBatch, *, watch: Stopwatch | None = None
                  ) -> UpdateMetrics:
        """One TRPO outer step (Schulman et al. 2015) through the inner adaptation; ``watch``
        times its parts (``outer_gradient``: the adapted objective and its gradient;
        ``outer_curvature``: the curvature operator and conjugate gradient; ``outer_line_search``)."""
        cfg = self.config.outer
        assert isinstance(cfg, TRPOSpec)
        watch = watch or Stopwatch(self.device)
        theta0 = {k: v.detach().clone().requires_grad_(True) for k, v in self.params.items()}
        names = list(theta0)
        with watch.section("outer_gradient"):
            obj = self.outer_objective(train, valid, theta=theta0)
            loss, phi, old_dist, old_logp = obj.loss, obj.phi, obj.old_dist, obj.old_log_probs
            check_finite("outer loss", loss)
            grads = torch.autograd.grad(loss, list(theta0.values()), retain_graph=cfg.curvature == "exact")
            g = F.flat(grads)
            check_finite("outer gradient", g)

        with watch.section("outer_curvature"):
            if cfg.curvature == "exact":
                cvp = exact_kl_hvp(self.policy, theta0, phi, valid, old_dist, damping=cfg.cg_damping)
            else:
                cvp = self.fisher_operator(theta0, train, valid, damping=cfg.cg_damping,
                                           subsample=cfg.curvature_subsample)
            cg = conjugate_gradient(cvp, g, iters=cfg.cg_iters)
            shs = 0.5 * torch.dot(cg.x, cvp(cg.x))
            check_finite("TRPO curvature", shs)
        if shs.item() <= 0:
            raise NonFiniteError(f"TRPO curvature is not positive (x^T H x = {2 * shs.item():.3g}); update rejected")
        fullstep = cg.x / torch.sqrt(shs / cfg.max_kl)
        x0 = F.flat([v.detach() for v in theta0.values()])

        def evaluate(x: Tensor) -> tuple[float, float]:
            theta = dict(zip(names, F.unflat(x, list(theta0.values())), strict=True))
            phi_x = self.adapted(train, theta=theta, create_graph=False)
            with torch.no_grad():
                d = self.policy.forward_stacked(phi_x, valid.obs)
                new_loss = F.surrogate_loss(self.policy, d, valid, old_logp).mean()
                kl = F.mean_kl(self.policy, old_dist, d, valid).mean()
            return float(new_loss), float(kl)

        with watch.section("outer_line_search"):
            x, ls = backtracking_line_search(
                evaluate,
                x0,
                fullstep,
                loss_before=float(loss.detach()),
                max_kl=cfg.max_kl,
                backtrack_ratio=cfg.backtrack_ratio,
                max_backtracks=cfg.max_backtracks,
            )
        self._set_params(dict(zip(names, F.unflat(x, list(theta0.values())), strict=True)))
        return UpdateMetrics(
            values={
                "loss/outer": float(loss.detach()),
                "loss/outer_after": ls.loss if ls.accepted else float(loss.detach()),
                "meta/kl": ls.kl if ls.accepted else 0.0,
                "trpo/step_fraction": ls.step_fraction,
                "trpo/backtracks": float(ls.backtracks),
                "trpo/accepted": float(ls.accepted),
                "trpo/cg_residual": cg.residual,
                "grad/outer_norm": float(g.norm()),
            },
            accepted=ls.accepted,
        )

    def fisher_operator(
        self,
        theta: Params,
        train: Sequence[TaskBatch],
        valid: TaskBatch,
        *,
        damping: float,
        subsample: float = 1.0,
    ) -> Callable[[Tensor], Tensor]:
        """``v -> (1/n Σ_i J_iᵀ F_i J_i + damping) v`` on a subsample of each task's episodes.

        ``J_iᵀ w`` is one backward pass through the adaptation graph (built once, reused by every
        CG iteration).  With one inner step ``J_i = I - α H_i`` is symmetric, so ``J_i v`` is the
        same backward taken per task (w.r.t. the per-task copies of θ); with several steps it
        uses the double-vjp identity: ``s(u) = Jᵀu`` is linear in a dummy ``u``, so
        ``J v = ∂(s(u)·v)/∂u``.
        """
        if subsample < 1.0:
            train, valid = self._subsample(train, valid, subsample)
        n = valid.n_tasks
        th = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
        th_vals = list(th.values())
        th_e = expand_params(th, n)
        th_e_vals = list(th_e.values())
        phi = self.adapted(train, theta=th_e)
        phi_vals = list(phi.values())
        jv: Callable[[list[Tensor]], list[Tensor]]
        if self.config.first_order:

            def jv(v: list[Tensor]) -> list[Tensor]:
                return [x.unsqueeze(0).expand(n, *x.shape) for x in v]

            def jtw(w: Sequence[Tensor]) -> list[Tensor]:
                return [x.sum(0) for x in w]
        else:
            if len(train) == 1:

                def jv(v: list[Tensor]) -> list[Tensor]:
                    v_e = [x.unsqueeze(0).expand(n, *x.shape) for x in v]
                    return list(torch.autograd.grad(phi_vals, th_e_vals, grad_outputs=v_e, retain_graph=True))
            else:
                u = [torch.zeros_like(p, requires_grad=True) for p in phi_vals]
                s = torch.autograd.grad(phi_vals, th_vals, grad_outputs=u, create_graph=True)

                def jv(v: list[Tensor]) -> list[Tensor]:
                    return list(torch.autograd.grad(s, u, grad_outputs=v, retain_graph=True))

            def jtw(w: Sequence[Tensor]) -> list[Tensor]:
                return list(torch.autograd.grad(phi_vals, th_vals, grad_outputs=list(w), retain_graph=True))

        fvp = fisher_vector_product(self.policy, {k: v.detach() for k, v in phi.items()}, valid)

        def cvp(v: Tensor) -> Tensor:
            jvs = jv(F.unflat(v, th_vals))
            out = jtw(fvp(jvs))
            return F.flat(out) / n + damping * v

        return cvp

    def _subsample(
        self, train: Sequence[TaskBatch], valid: TaskBatch, fraction: float
    ) -> tuple[list[TaskBatch], TaskBatch]:
        def cols(b: TaskBatch) -> Tensor:
            k = max(1, math.ceil(fraction * b.episodes))
            idx = np.sort(self._rng.choice(b.episodes, size=k, replace=False))
            return torch.as_tensor(idx, device=b.obs.device)

        return [b.columns(cols(b)) for b in train], valid.columns(cols(valid))

    def gradient_step(self, train: Sequence[TaskBatch], valid: TaskBatch) -> UpdateMetrics:
        """PPO-clip (several epochs) or vanilla PG (one step) with Adam on θ."""
        cfg = self.config.outer
        assert self._optimizer is not None and not isinstance(cfg, TRPOSpec)
        backup = {k: v.clone() for k, v in self.params.items()}
        theta: Params = dict(self.policy.named_parameters())
        with torch.no_grad():
            phi0 = self.adapted(train, theta=self.params, create_graph=False)
            old_dist = F.detach_dist(self.policy.forward_stacked(phi0, valid.obs))
            old_logp = self.policy.log_prob(old_dist, valid.actions)
        epochs = cfg.epochs if isinstance(cfg, PPOSpec) else 1
        first_loss = last_kl = 0.0
        done = 0
        for epoch in range(epochs):
            phi = self.adapted(train, theta=theta)
            dist = self.policy.forward_stacked(phi, valid.obs)
            if isinstance(cfg, PPOSpec):
                loss = F.clipped_surrogate_loss(self.policy, dist, valid, old_logp, clip=cfg.clip).mean()
            else:
                loss = F.surrogate_loss(self.policy, dist, valid, old_logp).mean()
            with torch.no_grad():
                last_kl = float(F.mean_kl(self.policy, old_dist, F.detach_dist(dist), valid).mean())
            if isinstance(cfg, PPOSpec) and cfg.target_kl is not None and epoch > 0 and last_kl > cfg.target_kl:
                break
            try:
                check_finite("outer loss", loss)
            except NonFiniteError:
                self._set_params(backup)
                raise
            if epoch == 0:
                first_loss = float(loss)
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
            gnorm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            if not torch.isfinite(gnorm) or not all(torch.isfinite(x).all() for x in grads):
                self._set_params(backup)
                raise NonFiniteError("outer gradient is not finite (NaN or inf); the update was rejected")
            self._optimizer.step()
            done += 1
        check_finite("meta-parameters", *self.params.values())
        return UpdateMetrics(
            values={"loss/outer": first_loss, "meta/kl": last_kl, "outer/epochs": float(done)}
        )


def fisher_vector_product(policy: Policy, phi: Params, valid: TaskBatch) -> Callable[[Sequence[Tensor]], list[Tensor]]:
    """``w -> [F_i w_i]``: Fisher matrices of the (stacked) policies ``phi`` on ``valid``'s states.

    The Fisher of a policy is the Hessian of ``KL(pi_phi_fixed || pi_phi)`` at equality.  For the
    Gaussian policy it is applied in closed form, ``F w = J_μᵀ Σ⁻¹ J_μ w + 2 w_logstd`` (per
    valid step, averaged), with ``J_μ w`` by the double-vjp identity on the mean's graph; for
    other policies by a double backward of the KL.  Either graph is built once.
    """
    leaf = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
    names = list(leaf)
    if isinstance(policy, GaussianMLPPolicy):
        mean, log_std = policy.forward_stacked(leaf, valid.obs)
        body = [k for k in names if k != "log_std"]
        body_leaves = [leaf[k] for k in body]
        weight = (valid.mask / valid.mask.sum(-1, keepdim=True).clamp_min(1.0)).unsqueeze(-1) * torch.exp(
            -2.0 * log_std.detach()
        )
        u = torch.zeros_like(mean, requires_grad=True)
        s = torch.autograd.grad(mean, body_leaves, u, create_graph=True)

        def gaussian_fvp(w: Sequence[Tensor]) -> list[Tensor]:
            wd = dict(zip(names, w, strict=True))
            (jw,) = torch.autograd.grad(s, u, [wd[k] for k in body], retain_graph=True)
            out = dict(zip(body, torch.autograd.grad(mean, body_leaves, jw * weight, retain_graph=True), strict=True))
            out["log_std"] = 2.0 * wd["log_std"]
            return [out[k] for k in names]

        return gaussian_fvp

    leaves = list(leaf.values())
    dist = policy.forward_stacked(leaf, valid.obs)
    kl = F.mean_kl(policy, F.detach_dist(dist), dist, valid).sum()
    gkl = torch.autograd.grad(kl, leaves, create_graph=True)

    def fvp(w: Sequence[Tensor]) -> list[Tensor]:
        return list(torch.autograd.grad(gkl, leaves, grad_outputs=list(w), retain_graph=True))

    return fvp


def exact_kl_hvp(
    policy: Policy, theta: Params, phi: Params, valid: TaskBatch, old_dist, *, damping: float  # noqa: ANN001
) -> Callable[[Tensor], Tensor]:
    """``v -> (∇²_θ KL + damping) v`` by double backward through the inner step (the public ports' way)."""
    th_vals = list(theta.values())
    dist = policy.forward_stacked(phi, valid.obs)
    kl = F.mean_kl(policy, old_dist, dist, valid).mean()
    gkl = torch.autograd.grad(kl, th_vals, create_graph=True)
    flat_g = F.flat(gkl)

    def hvp(v: Tensor) -> Tensor:
        hv = torch.autograd.grad(torch.dot(flat_g, v), th_vals, retain_graph=True)
        return F.flat(hv) + damping * v

    return hvp


