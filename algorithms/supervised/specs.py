"""What the supervised meta-learners' registrations share (light: pydantic only, no torch): the
settings of the gradient-based inner loop, the metrics and the meta-test plan.

The algorithms (each a light module with its spec and its :func:`~algorithms.registry.register`
call, its learner in a torch module beside it):

==============  ===============================================  ====================================
name            module (spec)                                    learner
==============  ===============================================  ====================================
``sl-maml``     :mod:`algorithms.supervised.sl_maml`             ``maml_learner:SLMAML``
``anil``        :mod:`algorithms.supervised.anil`                ``maml_learner:ANIL``
``meta-sgd``    :mod:`algorithms.supervised.meta_sgd`            ``maml_learner:MetaSGD``
``sl-reptile``  :mod:`algorithms.supervised.sl_reptile`          ``reptile_learner:SLReptile``
``protonet``    :mod:`algorithms.supervised.protonet`            ``protonet_learner:ProtoNet``
``matching``    :mod:`algorithms.supervised.matching`            ``matching_learner:MatchingNetworks``
``meta-lstm``   :mod:`algorithms.supervised.meta_lstm`           ``meta_lstm_learner:MetaLSTM``
==============  ===============================================  ====================================

Every one trains on one phase per meta-iteration (:func:`~algorithms.plans.single_phase_plan`):
one :class:`~algorithms.supervised.data.SupportQuery` episode per task of the meta-batch, the
learner adapting on each support set and scoring the query set itself.  Its meta-test is one
evaluation phase of such episodes (:func:`episode_plan`): the learner's ``evaluate`` adapts on each
episode's support set and scores its query set (``adapt``/``predict`` give the pieces).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from algorithms.plans import IterationPlan, Phase
from algorithms.registry import AlgorithmSpec, Metric

#: What the supervised learners report first (a job shows those it logged: accuracies for
#: classification, MSEs for regression).
SUPERVISED_METRICS = (
    Metric("meta/accuracy", "query accuracy after adaptation", ".3f"),
    Metric("meta/accuracy_pre", "query accuracy before adaptation", ".3f"),
    Metric("meta/mse", "query MSE after adaptation", ".3f"),
    Metric("meta/mse_pre", "query MSE before adaptation", ".3f"),
    Metric("loss/query", "query loss (the outer loss)", ".3f"),
)


def episode_plan() -> IterationPlan:
    """Meta-test of a supervised learner: one evaluation phase of support/query episodes drawn
    with θ; the learner adapts on each support set and is scored on its query set (the few-shot
    protocol of Vinyals et al. 2016 and Finn et al. 2017, sec. 5)."""
    return IterationPlan((Phase("eval", "meta", evaluation=True),))


class InnerLoopSpec(AlgorithmSpec):
    """Settings of a MAML-style inner loop of SGD on the support set and an Adam outer step on the
    query loss after it (Finn et al. 2017, Algorithm 2).  Defaults: the paper's sinusoid setup
    (α = 0.01, one step, Adam 1e-3; it meta-tests with up to 10 steps); its Omniglot runs use
    α = 0.4, mini-ImageNet α = 0.01 with 5 steps in training and 10 at test."""

    inner_lr: float = Field(0.01, gt=0, le=10.0, description="α, the inner SGD step size")
    inner_steps: int = Field(1, ge=1, le=50, description="inner SGD steps per task in meta-training")
    test_inner_steps: int = Field(10, ge=1, le=200, description="inner SGD steps when adapting at meta-test")
    first_order: bool = Field(False, description="first-order MAML: the inner gradients are constants of θ")
    outer_lr: float = Field(1e-3, gt=0, le=1.0, description="Adam's step size on the meta-parameters")
    max_grad_norm: float | None = Field(
        None, gt=0, le=1e6, description="clip the outer gradient's norm to this; None: no clipping"
    )
    task_batching: Literal["auto", "loop", "vmap"] = Field(
        "auto", description="the meta-batch's tasks one by one ('loop', the reference) or as a batch "
                            "dimension of torch.func.vmap ('vmap'); the same numbers. 'auto': vmap on a GPU "
                            "and for MLPs, the loop for conv4 on a CPU (what benchmarks/supervised.py measured "
                            "faster)"
    )


__all__ = ["SUPERVISED_METRICS", "InnerLoopSpec", "episode_plan"]
