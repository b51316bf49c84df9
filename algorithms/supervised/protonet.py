"""Prototypical Networks (Snell, Swersky & Zemel 2017): spec and registration; the learner is
:class:`algorithms.supervised.protonet_learner.ProtoNet` (torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from algorithms.plans import single_phase_plan
from algorithms.registry import Algorithm, AlgorithmSpec, lazy_names, register
from algorithms.supervised.specs import SUPERVISED_METRICS, episode_plan


class ProtoNetSpec(AlgorithmSpec):
    """ProtoNets: each class's prototype is the mean embedding of its support examples; a query's
    logits are minus its squared Euclidean distances to the prototypes (Snell et al. 2017, eq. 1-2);
    Adam on the query cross-entropy (the paper: step 1e-3).  Classification only."""

    name: Literal["protonet"] = "protonet"
    lr: float = Field(1e-3, gt=0, le=1.0, description="Adam's step size")
    max_grad_norm: float | None = Field(
        None, gt=0, le=1e6, description="clip the gradient's norm to this; None: no clipping"
    )


PROTONET_ALGORITHM = register(Algorithm(
    name="protonet",
    spec=ProtoNetSpec,
    learner="algorithms.supervised.protonet_learner:ProtoNet",
    plan=lambda spec: single_phase_plan(),
    adaptation=lambda spec, steps: episode_plan(),
    metrics=SUPERVISED_METRICS,
    kind="supervised",
    summary="Prototypical Networks (Snell et al. 2017): nearest class mean in a learned embedding",
))

__all__ = ["PROTONET_ALGORITHM", "ProtoNetSpec"]

#: the learner's names, imported on first use
__getattr__ = lazy_names("algorithms.supervised.protonet_learner")
