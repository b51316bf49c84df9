"""Reptile for supervised few-shot learning (Nichol, Achiam & Schulman 2018, Algorithm 2),
registered as ``"sl-reptile"`` (the RL Reptile owns ``"reptile"``): spec and registration; the
learner is :class:`algorithms.supervised.reptile_learner.SLReptile` (torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from algorithms.plans import single_phase_plan
from algorithms.registry import Algorithm, AlgorithmSpec, lazy_names, register
from algorithms.supervised.specs import SUPERVISED_METRICS, episode_plan


class SLReptileSpec(AlgorithmSpec):
    """Reptile: ``inner_steps`` steps of SGD or Adam on each task's support and query examples
    from θ, then ``θ ← θ + ε · mean_i(φ_i − θ)``.  Defaults: the paper's Omniglot setup (Adam
    with β₁ = 0 and step 1e-3, 5 steps in training, 50 at test; ε = 1 there, annealed to 0 --
    kept constant here, 0.1 as in its sinusoid runs)."""

    name: Literal["sl-reptile"] = "sl-reptile"
    inner_optimizer: Literal["sgd", "adam"] = Field("adam", description="the inner loop's optimizer")
    inner_lr: float = Field(1e-3, gt=0, le=10.0, description="the inner optimizer's step size")
    inner_steps: int = Field(5, ge=1, le=200, description="inner steps per task in meta-training")
    test_inner_steps: int = Field(50, ge=1, le=1000, description="inner steps on the support set at meta-test")
    outer_lr: float = Field(0.1, gt=0, le=1.0, description="ε of θ ← θ + ε · mean(φᵢ − θ)")


SL_REPTILE_ALGORITHM = register(Algorithm(
    name="sl-reptile",
    spec=SLReptileSpec,
    learner="algorithms.supervised.reptile_learner:SLReptile",
    plan=lambda spec: single_phase_plan(),
    adaptation=lambda spec, steps: episode_plan(),
    metrics=SUPERVISED_METRICS,
    kind="supervised",
    summary="Reptile (Nichol et al. 2018) for few-shot classification/regression: θ moves towards each task's φ",
))

__all__ = ["SLReptileSpec", "SL_REPTILE_ALGORITHM"]

#: the learner's names, imported on first use
__getattr__ = lazy_names("algorithms.supervised.reptile_learner")
