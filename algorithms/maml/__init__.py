"""MAML for reinforcement learning (Finn et al. 2017, Algorithm 3): its spec, which is its
configuration, and its registration.  The learner is :mod:`algorithms.maml.learner` (torch),
imported where it runs; ``from algorithms.maml import MAML`` still works (loaded on first use).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from algorithms.plans import adaptation_plan, inner_loop_plan
from algorithms.registry import Algorithm, AlgorithmSpec, Metric, Spec, lazy_names, register


class TRPOSpec(Spec):
    """TRPO outer step; defaults of the MAML paper's code (max_kl 0.01, 10 CG iterations)."""

    name: Literal["trpo"] = "trpo"
    max_kl: float = Field(0.01, gt=0, le=1.0, description="KL trust region (MAML paper: 0.01)")
    cg_iters: int = Field(10, ge=1, le=100)
    cg_damping: float = Field(1e-5, ge=0, le=10.0)
    backtrack_ratio: float = Field(0.8, gt=0, lt=1)
    max_backtracks: int = Field(15, ge=1, le=50)
    #: "fisher": Gauss-Newton/Fisher-vector products; "exact": double backward of the KL.
    curvature: Literal["fisher", "exact"] = "fisher"
    #: fraction of each task's episodes the curvature is evaluated on (1.0 = all).
    curvature_subsample: float = Field(0.25, gt=0, le=1.0)


class PPOSpec(Spec):
    """PPO-clip outer step (Adam on θ, several epochs over the meta-batch)."""

    name: Literal["ppo"] = "ppo"
    lr: float = Field(3e-4, gt=0, le=1.0)
    clip: float = Field(0.2, gt=0, lt=1)
    epochs: int = Field(5, ge=1, le=100)
    max_grad_norm: float = Field(1.0, gt=0, le=1e3)
    target_kl: float | None = Field(0.05, gt=0, le=10.0)


class VanillaSpec(Spec):
    """A single Adam step on the post-adaptation policy-gradient loss."""

    name: Literal["vanilla"] = "vanilla"
    lr: float = Field(1e-3, gt=0, le=1.0)
    max_grad_norm: float = Field(1.0, gt=0, le=1e3)


OuterSpec = Annotated[TRPOSpec | PPOSpec | VanillaSpec, Field(discriminator="name")]


class MAMLSpec(AlgorithmSpec):
    """MAML: ``inner_steps`` policy-gradient steps of size ``inner_lr`` per task, an outer step
    through them (second order, or first order)."""

    name: Literal["maml"] = "maml"
    inner_lr: float = Field(0.1, gt=0, le=10.0)
    inner_steps: int = Field(1, ge=1, le=10)
    first_order: bool = False
    outer: OuterSpec = Field(default_factory=TRPOSpec)
    #: how the per-task computations are batched: "stacked" (one batched graph) or "vmap".
    task_batching: Literal["stacked", "vmap"] = "stacked"


#: What the gradient-based RL learners report.
RL_METRICS = (
    Metric("meta/return_pre", "return before adaptation", ".1f"),
    Metric("meta/return_post", "return after adaptation", ".1f"),
    Metric("meta/success_post", "success after adaptation", ".2f"),
)

MAML_ALGORITHM = register(Algorithm(
    name="maml",
    spec=MAMLSpec,
    learner="algorithms.maml.learner:MAML",
    plan=lambda spec: inner_loop_plan(spec.inner_steps),
    adaptation=lambda spec, steps: adaptation_plan(steps),
    metrics=RL_METRICS,
    summary="MAML (Finn et al. 2017): TRPO / PPO-clip / vanilla outer step, second or first order",
))


#: the learner's names (``from algorithms.maml import ...``), imported on first use
__getattr__ = lazy_names("algorithms.maml.learner")
