"""RL²'s configuration (light: pydantic only, no torch), the ``algorithm`` section of a job spec."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from algorithms.registry import AlgorithmSpec

#: Settings of the gradient-based algorithms that mean nothing to RL² (it adapts in its hidden
#: state, not by inner steps); a spec that gives one is refused with a message that says so.
GRADIENT_SETTINGS = ("inner_lr", "inner_steps", "first_order", "outer", "task_batching", "later_lr")


class RL2Spec(AlgorithmSpec):
    """RL² (Duan et al. 2016; Wang et al. 2016): a GRU policy trained by recurrent PPO (Schulman
    et al. 2017) over whole trials of ``episodes_per_trial`` episodes of one task; advantages by
    GAE (Schulman et al. 2016) across the episodes of a trial.

    A job's ``episodes_per_task`` episodes of each task per iteration are
    ``episodes_per_task / episodes_per_trial`` trials (it must be a multiple).
    """

    name: Literal["rl2"] = "rl2"
    episodes_per_trial: int = Field(2, ge=1, le=100, description="episodes of one task per trial (the paper's N)")
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
    reward_scale: float = Field(
        1.0, gt=0, le=1e3,
        description="rewards are multiplied by this for the value targets and advantages (the value head shares "
                    "the GRU with the policy: returns in the thousands, as on Meta-World, make the value loss's "
                    "gradient swamp the policy's under gradient-norm clipping); the logged returns are the env's",
    )
    bptt_chunk: int | None = Field(
        None, ge=1, le=1_000_000,
        description="back-propagate through chunks of this many steps, each starting from the state the current "
                    "policy reaches there (recomputed every epoch); None: through whole trials",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inner_steps(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in GRADIENT_SETTINGS if k in data]
            if given:
                raise ValueError(
                    f"{given[0]}: RL² adapts in its recurrent policy's hidden state across the episodes of a "
                    f"trial and has no inner steps; remove {', '.join(given)} (set episodes_per_trial instead)"
                )
        return data


def check_job(job: Any) -> None:
    """A job's ``episodes_per_task`` must be whole trials."""
    n, per = job.episodes_per_task, job.algorithm.episodes_per_trial
    if n % per:
        raise ValueError(
            f"episodes_per_task: {n} episodes per task is not a whole number of RL² trials of "
            f"algorithm.episodes_per_trial={per} episodes; use a multiple of {per}"
        )


__all__ = ["GRADIENT_SETTINGS", "RL2Spec", "check_job"]
