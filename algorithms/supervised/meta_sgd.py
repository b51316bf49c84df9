"""Meta-SGD (Li et al. 2017): one inner step ``φ = θ − α ⊙ ∇L_support(θ)`` with a learnable
step size α of θ's shapes, meta-learned with θ.  Spec and registration; the learner is
:class:`algorithms.supervised.maml_learner.MetaSGD` (torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from algorithms.plans import single_phase_plan
from algorithms.registry import Algorithm, AlgorithmSpec, lazy_names, register
from algorithms.supervised.specs import SUPERVISED_METRICS, episode_plan


class MetaSGDSpec(AlgorithmSpec):
    """Meta-SGD: a single inner step with the per-parameter step sizes α (initialised to
    ``inner_lr`` everywhere; Li et al. draw them from [0.005, 0.1]), θ and α updated together by
    Adam on the query loss after the step."""

    name: Literal["meta-sgd"] = "meta-sgd"
    inner_lr: float = Field(0.01, gt=0, le=10.0, description="initial value of every entry of α")
    first_order: bool = Field(False, description="treat the inner gradient as a constant of θ (α still learns)")
    outer_lr: float = Field(1e-3, gt=0, le=1.0, description="Adam's step size on θ and α")
    max_grad_norm: float | None = Field(
        None, gt=0, le=1e6, description="clip the outer gradient's norm to this; None: no clipping"
    )
    task_batching: Literal["auto", "loop", "vmap"] = Field(
        "auto", description="the meta-batch's tasks one by one ('loop') or through torch.func.vmap ('vmap'); "
                            "'auto': vmap on a GPU and for MLPs, the loop for conv4 on a CPU"
    )


META_SGD_ALGORITHM = register(Algorithm(
    name="meta-sgd",
    spec=MetaSGDSpec,
    learner="algorithms.supervised.maml_learner:MetaSGD",
    plan=lambda spec: single_phase_plan(),
    adaptation=lambda spec, steps: episode_plan(),
    metrics=SUPERVISED_METRICS,
    kind="supervised",
    summary="Meta-SGD (Li et al. 2017): one inner step with meta-learned per-parameter step sizes",
))

__all__ = ["META_SGD_ALGORITHM", "MetaSGDSpec"]

#: the learner's names, imported on first use
__getattr__ = lazy_names("algorithms.supervised.maml_learner")
