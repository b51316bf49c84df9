"""Multi-task policy gradient, the non-meta baseline: PPO over the union of a meta-batch's tasks.
Its spec (its configuration) and its registration; the learner is
:mod:`algorithms.multitask.learner`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from algorithms.plans import adaptation_plan, single_phase_plan
from algorithms.registry import Algorithm, AlgorithmSpec, Metric, lazy_names, register


class MultiTaskPGSpec(AlgorithmSpec):
    """One policy trained by PPO-clip on all tasks' episodes; it adapts at meta-test by
    fine-tuning with ``inner_lr`` (the inner step MAML takes), so post-adaptation returns compare."""

    name: Literal["multitask-pg"] = "multitask-pg"
    inner_lr: float = Field(0.1, gt=0, le=10.0, description="fine-tuning step used to adapt")
    lr: float = Field(3e-4, gt=0, le=1.0)
    clip: float = Field(0.2, gt=0, lt=1)
    epochs: int = Field(10, ge=1, le=100)
    minibatches: int = Field(4, ge=1, le=1024)
    entropy_coef: float = Field(0.0, ge=0, le=1.0)
    max_grad_norm: float = Field(0.5, gt=0, le=1e3)


MULTITASK_ALGORITHM = register(Algorithm(
    name="multitask-pg",
    spec=MultiTaskPGSpec,
    learner="algorithms.multitask.learner:MultiTaskPG",
    # trained on θ's episodes only: no inner step, no post-adaptation phase during training
    plan=lambda spec: single_phase_plan(),
    adaptation=lambda spec, steps: adaptation_plan(steps),
    metrics=(Metric("meta/return_pre", "return", ".1f"), Metric("meta/success_pre", "success", ".2f")),
    summary="multi-task PPO, the non-meta baseline (adapts by fine-tuning)",
))


#: the learner's names (``from algorithms.multitask import ...``), imported on first use
__getattr__ = lazy_names("algorithms.multitask.learner")
