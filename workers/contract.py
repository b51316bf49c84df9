"""The job contract: one typed, frozen model that is the REST body, the driver's input and the
MLflow params (``model_dump()``).  Unknown fields are rejected and every number is bounded, so a
bad spec is refused (a 422 naming the field) before anything touches the cluster.

Light by design: pydantic, the algorithm registry (:mod:`algorithms.registry`) and the task
catalog (:mod:`workers.catalog`), nothing that imports torch, gymnasium, MuJoCo or Meta-World.
The API process imports this and no engine code.

The ``algorithm`` field is the union of the registered algorithms' specs (discriminated by
``name``); a registration made after import (a plugin, a test) rebuilds it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo

from algorithms import registry
from algorithms.registry import AdvantageSpec, AlgorithmSpec, Spec
from workers.catalog import family_info

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"

# ---- MLflow names the driver writes and the service reads ------------------------------------
#: The experiment of training runs, and the tags a run carries.
EXPERIMENT = "metarl"
DESIRED_WORKERS_TAG = "metarl.desired_rollout_workers"
JOB_ID_TAG = "metarl.job_id"
STATUS_TAG = "metarl.status"
OWNER_TAG = "metarl.owner"
ATTEMPT_JOB_TAG = "metarl.attempt_job_id"
FAILURE_TAG = "metarl.failure"
#: The algorithm's declared headline metrics (JSON list of {key, label, fmt}), a run tag.
METRICS_TAG = "metarl.metrics"
CHECKPOINT_DIR = "checkpoints"
#: Meta-test evaluations: their experiment, tags and report artifact.
EVALUATION_EXPERIMENT = "metarl-evaluations"
EVALUATION_ID_TAG = "metarl.evaluation_id"
MODEL_URI_TAG = "metarl.model_uri"
MODEL_NAME_TAG = "metarl.model_name"
MODEL_VERSION_TAG = "metarl.model_version"
EVALUATION_REPORT = "evaluation.json"
#: Episodes per phase above this are refused (meta_batch_size x episodes_per_task).
MAX_EPISODES_PER_PHASE = 200_000


class TaskFamilySpec(Spec):
    name: str = Field(description="a registered task family, e.g. navigation2d, metaworld-ml1")
    env_name: str | None = Field(None, description="Meta-World env name (metaworld-ml1 only), e.g. reach-v3")
    max_episode_steps: int | None = Field(None, ge=1, le=10_000, description="horizon; the family's default if omitted")
    params: dict[str, bool | int | float] = Field(
        default_factory=dict,
        description="other family parameters, e.g. velocity_high, observe_position, frame_skip, clip_actions",
    )

    @model_validator(mode="after")
    def _known(self) -> TaskFamilySpec:
        try:
            info = family_info(self.name)
        except LookupError as exc:
            raise ValueError(str(exc.args[0])) from None
        named = {"env_name", "max_episode_steps"}
        bad = sorted(set(self.params) & named)
        if bad:
            raise ValueError(f"give {bad} as their own fields of task_family, not in params")
        info.validate(self.family_kwargs())
        return self

    def family_kwargs(self) -> dict[str, Any]:
        """The family's parameters as given (its defaults fill the rest where it is built)."""
        out: dict[str, Any] = dict(self.params)
        if self.env_name is not None:
            out["env_name"] = self.env_name
        if self.max_episode_steps is not None:
            out["max_episode_steps"] = self.max_episode_steps
        return out


class PolicySpecModel(Spec):
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


class ResourcesSpec(Spec):
    rollout_workers: int = Field(2, ge=1, le=512)
    envs_per_worker: int = Field(10, ge=1, le=4096)
    learner_gpus: float = Field(0, ge=0, le=8)


class JobSpec(Spec):
    """A meta-training job."""

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '.', '_', '-'; at most 100")
    algorithm: AlgorithmSpec  # the registered algorithms' union: set by _rebuild() below
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

    @model_validator(mode="before")
    @classmethod
    def _supervised_defaults(cls, data: Any) -> Any:
        """A supervised task gives one episode (support and query sets) per iteration: that is
        the default of ``episodes_per_task`` for a supervised distribution."""
        if isinstance(data, dict) and "episodes_per_task" not in data:
            tf = data.get("task_family")
            name = tf.get("name") if isinstance(tf, dict) else getattr(tf, "name", None)
            try:
                supervised = isinstance(name, str) and family_info(name).kind == "supervised"
            except LookupError:
                supervised = False  # the task_family field's own validation says so
            if supervised:
                data = {**data, "episodes_per_task": 1}
        return data

    @model_validator(mode="after")
    def _fits(self) -> JobSpec:
        episodes = self.meta_batch_size * self.episodes_per_task
        if episodes > MAX_EPISODES_PER_PHASE:
            raise ValueError(f"meta_batch_size x episodes_per_task = {episodes} episodes per phase; "
                             f"at most {MAX_EPISODES_PER_PHASE}")
        alg, fam = registry.get(self.algorithm.name), family_info(self.task_family.name)
        if alg.kind != fam.kind:
            raise ValueError(f"algorithm {alg.name!r} trains on {alg.kind} task distributions; "
                             f"task family {fam.name!r} is {fam.kind}")
        if fam.kind == "supervised" and self.episodes_per_task != 1:
            raise ValueError(f"episodes_per_task: a supervised task gives one episode (its support and query sets) "
                             f"per iteration, got {self.episodes_per_task}; set meta_batch_size for more tasks")
        if alg.check_job is not None:
            alg.check_job(self)
        return self

    def policy_spec(self, *, obs_dim: int, act_dim: int, discrete: bool) -> Any:
        """The spec of the policy this job trains on a family with these dimensions: the
        :class:`algorithms.policies.PolicySpec` of its ``policy`` section, or what the algorithm
        makes of it (RL²'s recurrent policy).  Imports torch: call it where the policy is built."""
        from algorithms.policies import PolicySpec

        p = self.policy
        base = PolicySpec(obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=tuple(p.hidden_sizes),
                          activation=p.activation, discrete=discrete, init_std=p.init_std,
                          output_gain=p.output_gain)
        return registry.get(self.algorithm.name).policy_spec(base, self.algorithm)

    def model_spec(self, family: Any) -> Any:
        """The spec of the network this job trains on ``family`` (a built task distribution): for
        an RL family the policy of :meth:`policy_spec` on its dimensions; for a supervised one the
        network (:class:`algorithms.supervised.nets.NetSpec`) on its inputs and outputs, sized by the
        ``policy`` section (hidden sizes and activation of an MLP; a 4-block conv encoder for image
        inputs), as the algorithm makes of it."""
        if getattr(family, "kind", "rl") != "supervised":
            obs_dim, act_dim, discrete = family.policy_dims()
            return self.policy_spec(obs_dim=obs_dim, act_dim=act_dim, discrete=discrete)
        from algorithms.supervised.nets import NetSpec

        p = self.policy
        shape = tuple(int(d) for d in family.input_shape)
        base = NetSpec(input_shape=shape, output_dim=int(family.output_dim),
                       kind="conv4" if len(shape) == 3 else "mlp", hidden_sizes=tuple(p.hidden_sizes),
                       activation=p.activation)
        return registry.get(self.algorithm.name).policy_spec(base, self.algorithm)

    @property
    def inner_steps(self) -> int:
        """Inner steps of one meta-iteration (its plan's)."""
        return registry.get(self.algorithm.name).plan(self.algorithm).inner_steps

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


def _rebuild() -> None:
    """Point ``JobSpec.algorithm`` at the union of every registered spec."""
    specs = registry.specs()
    union: Any = Annotated[Union[specs], Field(discriminator="name")] if len(specs) > 1 else specs[0]  # noqa: UP007
    JobSpec.model_fields["algorithm"] = FieldInfo.from_annotation(union)
    JobSpec.model_rebuild(force=True)


registry.on_register(_rebuild)
_rebuild()

def declared_metrics(algorithm: str) -> list[dict[str, str]]:
    """The headline metrics ``algorithm`` declares, as JSON-ready ``{key, label, fmt}``."""
    return [{"key": m.key, "label": m.label, "fmt": m.fmt} for m in registry.get(algorithm).metrics]
