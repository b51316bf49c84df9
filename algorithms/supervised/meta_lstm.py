"""The LSTM meta-learner (Ravi & Larochelle 2017, "Optimization as a model for few-shot
learning"): spec and registration; the learner is
:class:`algorithms.supervised.meta_lstm_learner.MetaLSTM` (torch).

The learner's parameters θ are the cell state of an LSTM whose gates are learned: each inner step
``θ_t = f_t ⊙ θ_{t-1} − i_t ⊙ ∇_t`` with a learned forget gate ``f_t`` (shrinking θ) and input
gate ``i_t`` (a learned, per-coordinate and per-step learning rate), both computed coordinatewise
from the gradient, the loss, θ and the gates' previous values; the initial cell state θ_0 (the
learner's initialisation) is meta-learned with the gates.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from algorithms.plans import single_phase_plan
from algorithms.registry import Algorithm, AlgorithmSpec, lazy_names, register
from algorithms.supervised.specs import SUPERVISED_METRICS, episode_plan


class MetaLSTMSpec(AlgorithmSpec):
    """The LSTM meta-learner.  Defaults are the paper's 5-way 1-shot setting (sec. 4 and its
    appendix): 12 inner updates on the whole support set (5-shot: 5 updates), a first LSTM layer of
    20 units, gradient and loss preprocessing with p = 10 (Andrychowicz et al. 2016, App. A), the
    forget gate's bias initialised in [4, 6] and the input gate's in [−5, −4] (so training starts
    near plain gradient descent with a small step and no shrinkage), Adam 1e-3 with the gradient
    clipped to norm 0.25.  Like the paper, the meta-gradient treats the learner's gradients and
    losses as inputs, not as functions of the meta-parameters (its "gradient independence"
    assumption: no second derivatives)."""

    name: Literal["meta-lstm"] = "meta-lstm"
    inner_steps: int = Field(12, ge=1, le=50, description="T: inner updates per task in meta-training")
    test_inner_steps: int = Field(12, ge=1, le=200, description="inner updates when adapting at meta-test")
    hidden_size: int = Field(20, ge=1, le=256, description="units of the first (ordinary) LSTM layer")
    preprocess_p: float = Field(10.0, gt=0, le=100, description="p of the log/sign preprocessing of ∇ and L")
    forget_bias: tuple[float, float] = Field((4.0, 6.0), description="range of the forget gate's initial bias")
    input_bias: tuple[float, float] = Field((-5.0, -4.0), description="range of the input gate's initial bias")
    outer_lr: float = Field(1e-3, gt=0, le=1.0, description="Adam's step size on the meta-parameters")
    max_grad_norm: float | None = Field(0.25, gt=0, le=1e6, description="clip the outer gradient's norm to this")


META_LSTM_ALGORITHM = register(Algorithm(
    name="meta-lstm",
    spec=MetaLSTMSpec,
    learner="algorithms.supervised.meta_lstm_learner:MetaLSTM",
    plan=lambda spec: single_phase_plan(),
    adaptation=lambda spec, steps: episode_plan(),
    metrics=SUPERVISED_METRICS,
    kind="supervised",
    summary="LSTM meta-learner (Ravi & Larochelle 2017): θ is an LSTM's cell state, learned gates update it",
))

__all__ = ["META_LSTM_ALGORITHM", "MetaLSTMSpec"]

#: the learner's names, imported on first use
__getattr__ = lazy_names("algorithms.supervised.meta_lstm_learner")
