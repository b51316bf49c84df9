"""The job spec: one typed, frozen model that is the REST body, the driver's input and the
MLflow params (``model_dump()``).  Unknown fields are rejected and every number is bounded, so a
bad spec is refused before anything touches the cluster.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from algorithms.batch import AdvantageConfig
from algorithms.maml import MAMLConfig, PPOConfig, TRPOConfig, VanillaPGConfig
from algorithms.multitask import MultiTaskPGConfig
from algorithms.policies import PolicySpec
from algorithms.reptile import ReptileConfig

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TRPOSpec(_Model):
    name: Literal["trpo"] = "trpo"
    max_kl: float = Field(0.01, gt=0, le=1.0, description="KL trust region (MAML paper: 0.01)")
    cg_iters: int = Field(10, ge=1, le=100)
    cg_damping: float = Field(1e-5, ge=0, le=10.0)
    backtrack_ratio: float = Field(0.8, gt=0, lt=1)
    max_backtracks: int = Field(15, ge=1, le=50)
    curvature: Literal["fisher", "exact"] = "fisher"
    curvature_subsample: float = Field(0.25, gt=0, le=1.0)


class PPOSpec(_Model):
    name: Literal["ppo"]
    lr: float = Field(3e-4, gt=0, le=1.0)
    clip: float = Field(0.2, gt=0, lt=1)
    epochs: int = Field(5, ge=1, le=100)
    max_grad_norm: float = Field(1.0, gt=0, le=1e3)
    target_kl: float | None = Field(0.05, gt=0, le=10.0)


class VanillaSpec(_Model):
    name: Literal["vanilla"]
    lr: float = Field(1e-3, gt=0, le=1.0)
    max_grad_norm: float = Field(1.0, gt=0, le=1e3)


OuterSpec = Annotated[TRPOSpec | PPOSpec | VanillaSpec, Field(discriminator="name")]


class MAMLSpec(_Model):
    name: Literal["maml"]
    inner_lr: float = Field(0.1, gt=0, le=10.0)
    inner_steps: int = Field(1, ge=1, le=10)
    first_order: bool = False
    outer: OuterSpec = Field(default_factory=TRPOSpec)


class ReptileSpec(_Model):
    name: Literal["reptile"]
    inner_lr: float = Field(0.1, gt=0, le=10.0)
    inner_steps: int = Field(3, ge=1, le=50)
    outer_lr: float = Field(0.5, gt=0, le=1.0, description="ε of θ ← θ + ε·mean(φᵢ − θ)")


class MultiTaskPGSpec(_Model):
    name: Literal["multitask-pg"]
    inner_lr: float = Field(0.1, gt=0, le=10.0, description="fine-tuning step used to adapt")
    lr: float = Field(3e-4, gt=0, le=1.0)
    clip: float = Field(0.2, gt=0, lt=1)
    epochs: int = Field(10, ge=1, le=100)
    minibatches: int = Field(4, ge=1, le=1024)
    entropy_coef: float = Field(0.0, ge=0, le=1.0)
    max_grad_norm: float = Field(0.5, gt=0, le=1e3)

    @property
    def inner_steps(self) -> int:
        return 1


AlgorithmSpec = Annotated[MAMLSpec | ReptileSpec | MultiTaskPGSpec, Field(discriminator="name")]


class TaskFamilySpec(_Model):
    name: str = Field(description="a registered task family, e.g. navigation2d, metaworld-ml1")
    env_name: str | None = Field(None, description="Meta-World env name (metaworld-ml1 only), e.g. reach-v3")
    max_episode_steps: int | None = Field(None, ge=1, le=10_000, description="horizon; the family's default if omitted")
    params: dict[str, bool | int | float] = Field(
        default_factory=dict, description="other family parameters, e.g. velocity_high, observe_position, frame_skip, clip_actions"
    )

    @model_validator(mode="after")
    def _known(self) -> TaskFamilySpec:
        from workers.envs import family_names, family_parameters

        if self.name not in family_names():
            raise ValueError(f"unknown task family {self.name!r}; valid: {family_names()}")
        accepted = family_parameters(self.name)
        if self.env_name is not None and "env_name" not in accepted:
            raise ValueError(f"task family {self.name!r} takes no env_name")
        if "env_name" in accepted and accepted["env_name"] is inspect.Parameter.empty and self.env_name is None:
            raise ValueError(f"task family {self.name!r} needs env_name")
        if self.env_name is not None:
            from workers.envs.metaworld import v3_env_names

            if self.env_name not in v3_env_names():
                raise ValueError(f"unknown Meta-World env_name {self.env_name!r}; valid: {v3_env_names()}")
        if self.name.startswith("metaworld") and (self.max_episode_steps or 0) > 500:
            raise ValueError("Meta-World episodes are at most 500 steps (max_episode_steps <= 500)")
        bad = sorted(set(self.params) - (set(accepted) - {"env_name", "max_episode_steps"}))
        if bad:
            valid = sorted(set(accepted) - {"env_name", "max_episode_steps"})
            raise ValueError(f"unknown parameter(s) {bad} for task family {self.name!r}; valid: {valid}")
        if not self.name.startswith("metaworld"):  # cheap to build: check the values too
            from workers.envs import TaskFamilyError, make_family

            try:
                make_family(self.name, **self.family_kwargs())
            except TaskFamilyError as exc:
                raise ValueError(str(exc)) from None
        return self

    def family_kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.params)
        if self.env_name is not None:
            out["env_name"] = self.env_name
        if self.max_episode_steps is not None:
            out["max_episode_steps"] = self.max_episode_steps
        return out


class PolicySpecModel(_Model):
    hidden_sizes: tuple[int, ...] = Field((100, 100), min_length=1, max_length=8)
    activation: Literal["tanh", "relu"] = "relu"
    init_std: float = Field(1.0, gt=0, le=10.0)
    #: Xavier gain of the output layer (0.01: a near-constant initial mean; 1.0: rllab's and the
    #: MAML reference code's plain Xavier initialisation)
    output_gain: float = Field(0.01, gt=0, le=10.0)

    @field_validator("hidden_sizes")
    @classmethod
    def _sizes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(h < 1 or h > 4096 for h in v):
            raise ValueError("every hidden size must be between 1 and 4096")
        return v


class AdvantageSpec(_Model):
    gamma: float = Field(0.99, ge=0, le=1)
    gae_lambda: float = Field(1.0, ge=0, le=1)
    normalize: bool = True


class ResourcesSpec(_Model):
    rollout_workers: int = Field(2, ge=1, le=512)
    envs_per_worker: int = Field(10, ge=1, le=4096)
    learner_gpus: float = Field(0, ge=0, le=8)


class JobSpec(_Model):
    """A meta-training job."""

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '.', '_', '-'; at most 100")
    algorithm: AlgorithmSpec
    task_family: TaskFamilySpec
    policy: PolicySpecModel = Field(default_factory=PolicySpecModel)
    advantage: AdvantageSpec = Field(default_factory=AdvantageSpec)
    meta_batch_size: int = Field(20, ge=1, le=1000)
    episodes_per_task: int = Field(10, ge=1, le=1000)
    iterations: int = Field(100, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    checkpoint_every: int = Field(10, ge=1, le=100_000)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    register_as: str | None = Field(None, pattern=NAME_PATTERN, description="registered model name")

    @model_validator(mode="after")
    def _sizes(self) -> JobSpec:
        episodes = self.meta_batch_size * self.episodes_per_task
        if episodes > 200_000:
            raise ValueError(f"meta_batch_size x episodes_per_task = {episodes} episodes per phase; at most 200000")
        return self

    @property
    def inner_steps(self) -> int:
        return self.algorithm.inner_steps

    def advantage_config(self) -> AdvantageConfig:
        a = self.advantage
        return AdvantageConfig(gamma=a.gamma, gae_lambda=a.gae_lambda, normalize=a.normalize)

    def learner_config(self) -> MAMLConfig | ReptileConfig | MultiTaskPGConfig:
        """The algorithm's own config dataclass."""
        a, adv = self.algorithm, self.advantage_config()
        if isinstance(a, MAMLSpec):
            o = a.outer
            outer: TRPOConfig | PPOConfig | VanillaPGConfig
            if isinstance(o, TRPOSpec):
                outer = TRPOConfig(**o.model_dump())
            elif isinstance(o, PPOSpec):
                outer = PPOConfig(**o.model_dump())
            else:
                outer = VanillaPGConfig(**o.model_dump())
            return MAMLConfig(inner_lr=a.inner_lr, inner_steps=a.inner_steps, first_order=a.first_order, outer=outer, advantage=adv)
        if isinstance(a, ReptileSpec):
            return ReptileConfig(inner_lr=a.inner_lr, inner_steps=a.inner_steps, outer_lr=a.outer_lr, advantage=adv)
        return MultiTaskPGConfig(
            inner_lr=a.inner_lr, lr=a.lr, clip=a.clip, epochs=a.epochs, minibatches=a.minibatches,
            entropy_coef=a.entropy_coef, max_grad_norm=a.max_grad_norm, advantage=adv,
        )

    def policy_spec(self, *, obs_dim: int, act_dim: int, discrete: bool) -> PolicySpec:
        p = self.policy
        return PolicySpec(obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=tuple(p.hidden_sizes),
                          activation=p.activation, discrete=discrete, init_std=p.init_std,
                          output_gain=p.output_gain)

    def flat_params(self) -> dict[str, str]:
        """The spec flattened to ``a.b.c -> value`` strings (MLflow params)."""
        out: dict[str, str] = {}

        def walk(prefix: str, v: Any) -> None:
            if isinstance(v, dict):
                for k, x in v.items():
                    walk(f"{prefix}.{k}" if prefix else k, x)
            else:
                out[prefix] = str(v)

        walk("", self.model_dump(mode="json"))
        return out
