"""Matching Networks (Vinyals et al. 2016): spec and registration; the learner is
:class:`algorithms.supervised.matching_learner.MatchingNetworks` (torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from algorithms.plans import single_phase_plan
from algorithms.registry import Algorithm, AlgorithmSpec, lazy_names, register
from algorithms.supervised.specs import SUPERVISED_METRICS, episode_plan


class MatchingSpec(AlgorithmSpec):
    """Matching Networks: a query's class distribution is the support labels mixed by a softmax
    over the support of cosine similarities of the embeddings (Vinyals et al. 2016, eq. 1-2); with
    ``fce``, full-context embeddings (a bidirectional LSTM over the support's embeddings, an
    attention LSTM of ``fce_steps`` steps over them for the query's; sec. 2.1.2, appendix A).
    Adam on the query negative log-likelihood.  Classification only."""

    name: Literal["matching"] = "matching"
    lr: float = Field(1e-3, gt=0, le=1.0, description="Adam's step size")
    fce: bool = Field(False, description="full-context embeddings (the paper's FCE)")
    fce_steps: int = Field(5, ge=1, le=50, description="processing steps K of the query's attention LSTM")
    cosine_scale: float = Field(
        1.0, gt=0, le=100.0, description="multiplies the cosine similarities before the softmax (1: the paper's)"
    )
    max_grad_norm: float | None = Field(
        None, gt=0, le=1e6, description="clip the gradient's norm to this; None: no clipping"
    )


MATCHING_ALGORITHM = register(Algorithm(
    name="matching",
    spec=MatchingSpec,
    learner="algorithms.supervised.matching_learner:MatchingNetworks",
    plan=lambda spec: single_phase_plan(),
    adaptation=lambda spec, steps: episode_plan(),
    metrics=SUPERVISED_METRICS,
    kind="supervised",
    summary="Matching Networks (Vinyals et al. 2016): cosine attention over the support set, optional FCE",
))

__all__ = ["MATCHING_ALGORITHM", "MatchingSpec"]

#: the learner's names, imported on first use
__getattr__ = lazy_names("algorithms.supervised.matching_learner")
