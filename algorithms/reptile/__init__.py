"""Reptile for reinforcement learning (Nichol, Achiam & Schulman 2018, Algorithm 2): its spec
(its configuration) and its registration; the learner is :mod:`algorithms.reptile.learner`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from algorithms.maml import RL_METRICS
from algorithms.plans import adaptation_plan, inner_loop_plan
from algorithms.registry import Algorithm, AlgorithmSpec, lazy_names, register


class ReptileSpec(AlgorithmSpec):
    """Reptile: ``inner_steps`` vanilla policy-gradient steps per task (fresh episodes between
    them), then ``θ ← θ + ε · mean_i(φ_i − θ)``."""

    name: Literal["reptile"] = "reptile"
    inner_lr: float = Field(0.1, gt=0, le=10.0)
    inner_steps: int = Field(3, ge=1, le=50)
    outer_lr: float = Field(0.5, gt=0, le=1.0, description="ε of θ ← θ + ε·mean(φᵢ − θ)")


REPTILE_ALGORITHM = register(Algorithm(
    name="reptile",
    spec=ReptileSpec,
    learner="algorithms.reptile.learner:Reptile",
    # the post-adaptation phase is not learned from; it is sampled for its metrics
    plan=lambda spec: inner_loop_plan(spec.inner_steps),
    adaptation=lambda spec, steps: adaptation_plan(steps),
    metrics=RL_METRICS,
    summary="Reptile (Nichol et al. 2018): θ moves towards each task's adapted parameters",
))


#: the learner's names (``from algorithms.reptile import ...``), imported on first use
__getattr__ = lazy_names("algorithms.reptile.learner")
