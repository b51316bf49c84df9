"""MAML for supervised few-shot learning (Finn et al. 2017, Algorithm 2), registered as
``"sl-maml"`` (the RL MAML owns ``"maml"``): its spec and registration; the learner is
:class:`algorithms.supervised.maml_learner.SLMAML` (torch), imported where it runs."""

from __future__ import annotations

from typing import Literal

from algorithms.plans import single_phase_plan
from algorithms.registry import Algorithm, lazy_names, register
from algorithms.supervised.specs import SUPERVISED_METRICS, InnerLoopSpec, episode_plan


class SLMAMLSpec(InnerLoopSpec):
    """MAML: ``inner_steps`` SGD steps of size ``inner_lr`` on each task's support set from θ, an
    Adam step on the mean query loss after them, back-propagated through the inner steps (second
    order unless ``first_order``)."""

    name: Literal["sl-maml"] = "sl-maml"


SL_MAML_ALGORITHM = register(Algorithm(
    name="sl-maml",
    spec=SLMAMLSpec,
    learner="algorithms.supervised.maml_learner:SLMAML",
    plan=lambda spec: single_phase_plan(),
    adaptation=lambda spec, steps: episode_plan(),
    metrics=SUPERVISED_METRICS,
    kind="supervised",
    summary="MAML for few-shot classification/regression (Finn et al. 2017): SGD inner loop, Adam outer step",
))

__all__ = ["SLMAMLSpec", "SL_MAML_ALGORITHM"]

#: the learner's names (``from algorithms.supervised.sl_maml import SLMAML``), imported on first use
__getattr__ = lazy_names("algorithms.supervised.maml_learner")
