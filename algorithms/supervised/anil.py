"""ANIL, "almost no inner loop" (Raghu et al. 2020): MAML whose inner loop adapts only the
linear head; the encoder is meta-learned by the outer step alone.  Spec and registration; the
learner is :class:`algorithms.supervised.maml_learner.ANIL` (torch)."""

from __future__ import annotations

from typing import Literal

from algorithms.plans import single_phase_plan
from algorithms.registry import Algorithm, lazy_names, register
from algorithms.supervised.specs import SUPERVISED_METRICS, InnerLoopSpec, episode_plan


class ANILSpec(InnerLoopSpec):
    """ANIL: MAML's settings, the inner SGD steps on the head's parameters only (Raghu et al. 2020,
    sec. 4: the same hyperparameters as MAML)."""

    name: Literal["anil"] = "anil"


ANIL_ALGORITHM = register(Algorithm(
    name="anil",
    spec=ANILSpec,
    learner="algorithms.supervised.maml_learner:ANIL",
    plan=lambda spec: single_phase_plan(),
    adaptation=lambda spec, steps: episode_plan(),
    metrics=SUPERVISED_METRICS,
    kind="supervised",
    summary="ANIL (Raghu et al. 2020): MAML adapting only the head in the inner loop",
))

__all__ = ["ANILSpec", "ANIL_ALGORITHM"]

#: the learner's names, imported on first use
__getattr__ = lazy_names("algorithms.supervised.maml_learner")
