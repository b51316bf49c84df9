"""Configuration of a learned optimizer and of its meta-training (light: pydantic only, no torch).

Andrychowicz, Denil, Gómez Colmenarejo, Hoffman, Pfau, Schaul, Shillingford & de Freitas 2016,
"Learning to learn by gradient descent by gradient descent" (NeurIPS), the settings this package
follows by default:

* the optimizer m is a coordinatewise two-layer LSTM with 20 hidden units per layer (sec. 2.1 and
  sec. 3: "two-layer LSTMs with 20 hidden units in each layer"), its parameters φ shared by every
  coordinate of the optimizee;
* the gradient preprocessing of Appendix A with p = 10, and the LSTM's output multiplied by 0.1
  (sec. 3.2, the MNIST experiments: "we used input preprocessing described in Appendix A and
  rescaled the outputs of the LSTM by the factor 0.1"; for the quadratics of sec. 3.1 the paper
  used neither: ``preprocess=False, output_scale=1.0``);
* optimizees run for T = 100 steps and the optimizer is trained by truncated back-propagation
  through time over 20 steps (sec. 3.1 and 3.2), on the meta-loss of eq. 3 with every ``w_t = 1``,
  by Adam (whose step size the paper chose by random search; 1e-3 here by default).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from algorithms.registry import Spec


class LSTMOptimizerSpec(Spec):
    """The architecture of the coordinatewise LSTM optimizer m(∇; φ) (see the module docstring)."""

    hidden_size: int = Field(20, ge=1, le=1024, description="hidden units per LSTM layer (paper: 20)")
    num_layers: int = Field(2, ge=1, le=8, description="stacked LSTM layers (paper: 2)")
    preprocess: bool = Field(
        True, description="feed (log|∇|/p, sgn ∇) or (−1, e^p ∇) instead of ∇ (paper, Appendix A)"
    )
    preprocess_p: float = Field(10.0, gt=0, le=80.0, description="p of the preprocessing (paper: 10)")
    output_scale: float = Field(0.1, gt=0, le=1e3, description="the LSTM's output multiplier (paper, sec. 3.2: 0.1)")


class MetaTrainSpec(Spec):
    """Meta-training by truncated BPTT (Andrychowicz et al. 2016, sec. 2 and 3).

    An *episode* draws ``problems_per_episode`` fresh training problems and optimizes them for
    ``steps`` steps from their θ0; every ``unroll`` steps the meta-loss of that truncation,
    ``Σ_t w_t f(θ_t)`` with ``w_t = 1`` (averaged over the episode's problems), is back-propagated
    into φ and Adam takes one step: ``steps / unroll`` updates of φ per episode."""

    episodes: int = Field(100, ge=1, le=10_000_000, description="episodes (fresh problem batches)")
    problems_per_episode: int = Field(16, ge=1, le=100_000, description="optimizees per episode")
    steps: int = Field(100, ge=1, le=100_000, description="T, the optimizee steps of an episode (paper: 100)")
    unroll: int = Field(20, ge=1, le=100_000, description="the truncation length of BPTT (paper: 20)")
    meta_lr: float = Field(1e-3, gt=0, le=1.0, description="Adam's step size on φ")
    max_grad_norm: float | None = Field(
        None, gt=0, le=1e9, description="clip the meta-gradient's norm to this; None: no clipping"
    )
    first_problem: int = Field(0, ge=0, description="episode e optimizes the training problems first_problem + e·B "
                                                    "to first_problem + e·B + B − 1 (B = problems_per_episode)")

    @model_validator(mode="after")
    def _unroll_divides_steps(self) -> MetaTrainSpec:
        check_truncation(self.steps, self.unroll)
        return self


def check_truncation(steps: int, unroll: int) -> None:
    """``ValueError`` unless the truncation ``unroll`` divides ``steps`` (every truncation of BPTT
    has the same length)."""
    if steps % unroll:
        raise ValueError(f"unroll ({unroll}) must divide steps ({steps}): every truncation has the same length")


__all__ = ["LSTMOptimizerSpec", "MetaTrainSpec", "check_truncation"]
