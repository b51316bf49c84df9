"""The coordinatewise LSTM optimizer as a job algorithm, ``lstm-optimizer`` (Andrychowicz et al.
2016, "Learning to learn by gradient descent by gradient descent"): spec and registration; the
learner is :class:`algorithms.learned_opt.learner.LSTMOptimizerLearner` (torch).

The tasks of a supervised task distribution are the optimizee problems: task ``b``'s problem is the
job's network (by default the ``policy`` section's MLP on the distribution's inputs, images
flattened -- the paper's optimizees are MLPs; ``network: "auto"`` takes conv4 for images) trained on
the task's **support set** from a fresh random initialisation, ``f_b(θ) =`` the support loss (mean
cross-entropy, or mean squared error for regression). One meta-iteration optimizes the meta-batch's
problems for ``steps`` steps with the LSTM, cut into truncations of ``unroll`` steps, each followed
by one Adam step on φ (:func:`algorithms.learned_opt.meta_train.unroll_meta_loss`: the meta-loss
``Σ_t f(θ_t)``, the optimizee's gradients as constants). The query set scores the optimizee where
the LSTM leaves it: ``meta/accuracy`` (``meta/mse``) after ``steps`` steps, ``_pre`` at the random
initialisation.

Meta-test and ``adapt``: ``test_steps`` steps of the learned optimizer on a support set from the
model's stored θ -- one fixed draw of the network's default initialisation (θ is not meta-learned:
the optimizer's parameters φ are the only meta-parameters).

A trained model loads as a ``torch.optim.Optimizer`` for any training loop:
``workers.model.LearnedOptimizer.load("models:/NAME@ALIAS", model.parameters())``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import Field, model_validator

from algorithms.learned_opt.specs import LSTMOptimizerSpec, check_truncation
from algorithms.plans import single_phase_plan
from algorithms.registry import Algorithm, AlgorithmSpec, Metric, lazy_names, register
from algorithms.supervised.specs import SUPERVISED_METRICS, episode_plan


class LSTMOptimizerJobSpec(AlgorithmSpec):
    """Meta-training a coordinatewise LSTM optimizer on a task distribution's problems.  Defaults:
    the paper's 2 × 20 LSTM with the Appendix A preprocessing and outputs × 0.1 (its MNIST setting),
    T = 100 optimizee steps unrolled 20 at a time, Adam on φ."""

    name: Literal["lstm-optimizer"] = "lstm-optimizer"
    optimizer: LSTMOptimizerSpec = Field(default_factory=LSTMOptimizerSpec,
                                         description="the LSTM's architecture and preprocessing")
    steps: int = Field(100, ge=1, le=10_000, description="T: optimizee steps per problem in meta-training (paper: 100)")
    unroll: int = Field(20, ge=1, le=10_000, description="the truncation of BPTT: one Adam step on φ every "
                                                         "this many optimizee steps (paper: 20)")
    test_steps: int = Field(100, ge=1, le=10_000, description="optimizee steps when adapting at meta-test")
    meta_lr: float = Field(1e-3, gt=0, le=1.0, description="Adam's step size on φ")
    max_grad_norm: float | None = Field(None, gt=0, le=1e9, description="clip the meta-gradient's norm; None: no clip")
    network: Literal["mlp", "auto"] = Field(
        "mlp", description="the optimizee: 'mlp' (the policy section's MLP, image inputs flattened; the paper's "
                           "optimizees) or 'auto' (the supervised default: conv4 for images)")
    max_coordinates: int = Field(
        100_000, ge=1, le=100_000_000,
        description="the most optimizee coordinates of a meta-batch (tasks × network parameters): each keeps the "
                    "LSTM's activations for every step of a truncation (about 1.2 KB per coordinate and step for "
                    "the 2 × 20 LSTM in float32); more is refused with a clear error")

    @model_validator(mode="after")
    def _unroll_divides_steps(self) -> LSTMOptimizerJobSpec:
        check_truncation(self.steps, self.unroll)
        return self


def optimizee_spec(base: Any, spec: LSTMOptimizerJobSpec) -> Any:
    """The network the job trains its optimizer on: the supervised default ``base`` (a NetSpec),
    or with ``network: "mlp"`` the MLP of ``base``'s hidden sizes on flattened inputs."""
    return base if spec.network == "auto" else dataclasses.replace(base, kind="mlp")


LSTM_OPTIMIZER_METRICS = (*SUPERVISED_METRICS,
                          Metric("loss/support_final", "support loss after T steps (the optimizee's f)", ".3f"),
                          Metric("loss/meta", "meta-loss per step (mean of f over a truncation)", ".3f"))

LSTM_OPTIMIZER_ALGORITHM = register(Algorithm(
    name="lstm-optimizer",
    spec=LSTMOptimizerJobSpec,
    learner="algorithms.learned_opt.learner:LSTMOptimizerLearner",
    plan=lambda spec: single_phase_plan(),
    adaptation=lambda spec, steps: episode_plan(),
    metrics=LSTM_OPTIMIZER_METRICS,
    kind="supervised",
    policy="algorithms.learned_opt.lstm_optimizer_job:optimizee_spec",
    summary="learned coordinatewise LSTM optimizer (Andrychowicz et al. 2016), trained on the tasks' problems",
))

__all__ = ["LSTM_OPTIMIZER_ALGORITHM", "LSTMOptimizerJobSpec"]

#: the learner's names, imported on first use
__getattr__ = lazy_names("algorithms.learned_opt.learner")
