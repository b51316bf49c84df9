"""RL²'s configuration (light: pydantic only, no torch), the ``algorithm`` section of a job spec
once RL² is registered."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from algorithms.registry import AlgorithmSpec


class RL2Spec(AlgorithmSpec):
    """RL² (Duan et al. 2016; Wang et al. 2016): a GRU policy trained by recurrent PPO (Schulman
    et al. 2017) over whole trials of ``episodes_per_trial`` episodes of one task; advantages by
    GAE (Schulman et al. 2016) across the episodes of a trial."""

    name: Literal["rl2"] = "rl2"
    episodes_per_trial: int = Field(2, ge=1, le=100, description="episodes of one task per trial (the paper's N)")
    trials_per_task: int = Field(1, ge=1, le=1000, description="trials sampled per task and iteration")
    hidden_size: int = Field(128, ge=1, le=4096, description="size of the GRU state")
    encoder_sizes: tuple[Annotated[int, Field(ge=1, le=4096)], ...] = Field(
        (64,), max_length=8, description="widths of the MLP between the step's input and the GRU"
    )
    lr: float = Field(3e-4, gt=0, le=1.0)
    clip: float = Field(0.2, gt=0, lt=1, description="PPO's clipping range ε")
    epochs: int = Field(5, ge=1, le=100)
    minibatches: int = Field(4, ge=1, le=1024, description="minibatches of whole trials per epoch")
    value_coef: float = Field(0.5, ge=0, le=100.0)
    entropy_coef: float = Field(0.0, ge=0, le=1.0)
    max_grad_norm: float = Field(0.5, gt=0, le=1e3)
    gamma: float = Field(0.99, ge=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)


__all__ = ["RL2Spec"]
