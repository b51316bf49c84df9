"""The meta-policy as a user holds it: load it (a registry URI, a run, a directory), act,
adapt it to a new task, save it.

Three lines take a registered model to a policy adapted to a new task::

    p = MetaPolicy.load("models:/nav@latest")
    q = p.adapt(task, episodes=20, steps=1)   # a workers.envs.Task or a gymnasium env
    q.act(obs)

Adaptation is the algorithm's meta-test plan (:mod:`algorithms.plans`) run by the phase runner
(:mod:`workers.runner`), the same loop that trains and evaluates.  Registry URIs are resolved
against :func:`workers.tracking.tracking_uri` (``MLFLOW_TRACKING_URI``, else the SQLite store
under ``METARL_HOME``), the store the driver registers models in.

A model is one of several *kinds* (the card's ``policy_kind``): :class:`MetaPolicy`, the MLP
policy the gradient-based algorithms adapt by inner policy-gradient steps (``"mlp"``, also every
card written before kinds were stored),
:class:`~workers.model.recurrent.RecurrentMetaPolicy`, RL²'s recurrent policy that adapts in its
hidden state within a trial (``"recurrent"``), and
:class:`~workers.model.supervised.SupervisedMetaModel`, a supervised few-shot learner that adapts
on a support set and predicts (``"supervised"``: ``m.adapt(support_x, support_y).predict(query_x)``).
All share :class:`BaseMetaPolicy`, and its loaders -- ``MetaPolicy.load`` included -- return the
kind the files (or the learner state) hold, so the three lines above work for any.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, cast

import gymnasium as gym
import numpy as np
import torch
from torch.func import functional_call
from typing_extensions import TypeVar

from algorithms import functional as F
from algorithms import registry
from algorithms.base import check_finite
from algorithms.batch import make_task_batch
from algorithms.episodes import Episodes
from algorithms.plans import IterationPlan
from algorithms.policies import (
    Params,
    Policy,
    PolicySpec,
    make_policy,
    stack_params,
    unstack_params,
)
from algorithms.registry import AdvantageSpec
from workers.contract import JobSpec
from workers.distributions import build_distribution
from workers.envs import Task, TaskFamily, TaskFamilyError
from workers.model import env_rollout, uris
from workers.model.uris import ModelNotFoundError
from workers.runner import Collected, SamplerSource, collect
from workers.sampler import Sampler
from workers.tasks import TaskDistribution

#: Version of the ``policy.json`` layout; bumped on incompatible changes.
FORMAT_VERSION = 1
PARAMS_FILE = "params.pt"
CARD_FILE = "policy.json"
#: The kind of a card that names none (every card written before kinds were stored).
DEFAULT_KIND = "mlp"

#: The task distribution a kind of model adapts to: an RL task family (the default, for the MLP
#: and recurrent policies) or a supervised task distribution.
D = TypeVar("D", bound=TaskDistribution, default=TaskFamily)


class ModelFormatError(ValueError):
    """The files found are not a meta-policy written by :func:`workers.model.log_meta_policy`."""


@dataclass(frozen=True)
class TaskAdaptation:
    """The result of adapting to several tasks at once (:meth:`MetaPolicy.adapt_tasks`).

    Attributes:
        params: each task's adapted parameters.
        episodes: ``episodes[k][i]``: task ``i``'s episodes sampled before inner step ``k``
            (``episodes[0]`` were sampled with the meta-parameters: the pre-adaptation episodes).
    """

    params: list[Params]
    episodes: list[list[Episodes]]


# ---- what every kind shares -------------------------------------------------------------------


class BaseMetaPolicy(Generic[D]):
    """What every kind of trained meta-policy shares: the job spec that trained it, its policy
    spec and parameters, the task family, the action bounds, the checks of a task or an env it is
    given, and loading and saving.

    A subclass sets ``kind`` (the card's ``policy_kind``; setting it registers the class, so the
    loaders find it) and ``policy_spec_type`` (the policy spec of the learner states it holds),
    and implements :meth:`_make_module`, :meth:`_from_card`, :meth:`_from_state`,
    :meth:`_card_fields`, ``act``, ``adapt`` and ``mean_return``; where its parameters are not
    just its module's (a supervised model's meta-parameters beside θ, its adapted head), it
    overrides :meth:`_new_module` and :meth:`_checked_params`.  ``D`` is the kind of task
    distribution it adapts to (:attr:`family`): an RL task family unless the kind says otherwise.

    The loaders (:meth:`load`, :meth:`from_directory`, :meth:`from_files`,
    :meth:`from_learner_state`, :meth:`initial`) return the kind the files or the state hold,
    whichever class they are called on: ``MetaPolicy.load`` of an RL² model is a
    :class:`~workers.model.recurrent.RecurrentMetaPolicy`.
    """

    #: the card's ``policy_kind`` of this class ("" for an abstract class)
    kind: ClassVar[str] = ""
    #: the type of the learner-state policy spec this kind holds
    policy_spec_type: ClassVar[type]
    _kinds: ClassVar[dict[str, type[BaseMetaPolicy[Any]]]] = {}

    _policy: torch.nn.Module

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            BaseMetaPolicy._kinds[cls.kind] = cls

    def __init__(
        self,
        *,
        spec: JobSpec,
        policy_spec: Any,
        params: Params,
        algorithm: str,
        iteration: int = 0,
        source: str = "",
        training_run_id: str | None = None,
        action_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        self._spec = spec
        self._policy_spec = policy_spec
        self._policy = self._new_module(policy_spec)
        self._policy.requires_grad_(False)
        self._params: Params = self._checked_params(params)
        self.algorithm = algorithm
        self.iteration = int(iteration)
        self.source = source
        self.training_run_id = training_run_id
        self._family: D | None = None
        self._bounds: tuple[np.ndarray, np.ndarray] | None = None
        if action_bounds is not None:
            self._bounds = (np.asarray(action_bounds[0], np.float32), np.asarray(action_bounds[1], np.float32))
        self._gen = torch.Generator().manual_seed(0)

    # ---- what a kind provides ----
    @classmethod
    def _make_module(cls, policy_spec: Any) -> torch.nn.Module:
        """The policy module ``policy_spec`` describes (its parameters are replaced by the model's)."""
        raise NotImplementedError

    @classmethod
    def _from_card(cls, card: dict[str, Any], params: Params, *, source: str) -> BaseMetaPolicy[Any]:
        """The policy a ``policy.json`` of this kind and its parameters describe."""
        raise NotImplementedError

    @classmethod
    def _from_state(cls, spec: JobSpec, state: Any, *, source: str) -> BaseMetaPolicy[Any]:
        """The policy a learner's ``state_dict()`` holds."""
        raise NotImplementedError

    def _card_fields(self) -> dict[str, Any]:
        """This kind's own entries of ``policy.json`` (besides the ones every kind writes)."""
        raise NotImplementedError

    def _new_module(self, policy_spec: Any) -> torch.nn.Module:
        """The module the model runs (its :meth:`_make_module` by default)."""
        return self._make_module(policy_spec)

    def _checked_params(self, params: Params) -> Params:
        """``params`` checked against the module's parameters (names and shapes), as float32 CPU
        copies in the module's order (so stacking and functional calls see the same keys).

        Raises:
            ModelFormatError: a missing or unknown parameter, or one of the wrong shape.
        """
        expected = dict(self._policy.named_parameters())
        if set(params) != set(expected):
            raise ModelFormatError(
                f"parameters {sorted(params)} do not match the policy spec's {sorted(expected)}"
            )
        for k, v in params.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise ModelFormatError(
                    f"parameter {k!r} has shape {tuple(v.shape)}, the policy spec needs {tuple(expected[k].shape)}"
                )
        return {k: params[k].detach().to("cpu", torch.float32).clone() for k in expected}

    def act(self, obs: np.ndarray | Sequence[float], deterministic: bool = True, *, clip: bool = True) -> np.ndarray:
        raise NotImplementedError

    def adapt(self, *args: Any, **kwargs: Any) -> BaseMetaPolicy[D]:
        """A new model adapted to a task; each kind takes what it adapts on (an RL policy: a task
        or an env, ``episodes``, ``steps``, ``seed``; a supervised model: a support set)."""
        raise NotImplementedError

    def mean_return(self, task_or_env: Task | gym.Env, *, episodes: int = 10, seed: int = 1) -> float:
        raise NotImplementedError

    # ---- what it is ----
    @property
    def spec(self) -> JobSpec:
        """The job spec that trained the meta-policy."""
        return self._spec

    @property
    def policy_spec(self) -> Any:
        return self._policy_spec

    @property
    def params(self) -> Params:
        """A copy of the parameters."""
        return {k: v.clone() for k, v in self._params.items()}

    @property
    def family(self) -> D:
        """The task distribution of the spec (an RL task family; a supervised model's supervised
        distribution), built on first use (Meta-World's take seconds) and shared with the models
        :meth:`adapt` returns."""
        if self._family is None:
            tf = self._spec.task_family
            # the spec's family is of the kind this model adapts to: the job contract pairs an
            # algorithm with a family of its kind
            self._family = cast(D, build_distribution(tf.name, seed=self._spec.seed, **tf.family_kwargs()))
        return self._family

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(low, high)`` of the family's continuous action space (None for a discrete one):
        stored with the model, or read from the family on first use."""
        if self._bounds is None and not self._policy_spec.discrete:
            family = self.family
            space = family.action_space if isinstance(family, TaskFamily) else None
            if isinstance(space, gym.spaces.Box):
                self._bounds = (np.asarray(space.low, np.float32), np.asarray(space.high, np.float32))
        return self._bounds

    # ---- loading and saving ----
    @classmethod
    def load(cls, uri: str) -> BaseMetaPolicy[Any]:
        """Load a meta-policy from ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
        ``models:/NAME/latest``, ``models:/m-...``, ``runs:/RUN_ID/meta_policy`` or a local
        directory (a downloaded model, or the directory :meth:`save` wrote).  Returns the kind
        the model is (a :class:`MetaPolicy`, RL²'s
        :class:`~workers.model.recurrent.RecurrentMetaPolicy`, or a supervised learner's
        :class:`~workers.model.supervised.SupervisedMetaModel`).

        Raises:
            ModelNotFoundError: nothing at ``uri``; the message names the store searched.
            ModelFormatError: what is there is not a meta-policy.
        """
        if not uris.is_remote(uri):
            return cls.from_directory(Path(uri).expanduser(), source=uri)
        with tempfile.TemporaryDirectory(prefix="metarl-model-") as tmp:
            return cls.from_directory(Path(uris.download(uri, tmp)), source=uri)

    @classmethod
    def from_directory(cls, path: Path, *, source: str | None = None) -> BaseMetaPolicy[Any]:
        """Load from a directory: a downloaded MLflow model (with ``artifacts/``) or the files
        :meth:`save` wrote."""
        if not path.is_dir():
            raise ModelNotFoundError(
                f"no model directory at {str(path)!r}; pass a models:/ or runs:/ URI, "
                "or the directory of a downloaded model"
            )
        for base in (path, path / "artifacts"):
            if (base / CARD_FILE).is_file() and (base / PARAMS_FILE).is_file():
                return cls.from_files(
                    params_file=base / PARAMS_FILE, card_file=base / CARD_FILE, source=source or str(path)
                )
        raise ModelFormatError(
            f"{str(path)!r} holds no meta-policy ({CARD_FILE} and {PARAMS_FILE}, directly or under artifacts/); "
            "was it logged with workers.model.log_meta_policy?"
        )

    @classmethod
    def from_files(cls, *, params_file: Path, card_file: Path, source: str) -> BaseMetaPolicy[Any]:
        """Load from a ``params.pt`` and its ``policy.json`` (the card's ``policy_kind`` says
        which kind; a card without one is an MLP policy's)."""
        try:
            card = json.loads(card_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"cannot read {card_file}: {exc}") from exc
        version = card.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelFormatError(
                f"{card_file} has format_version {version!r}; this code reads version {FORMAT_VERSION}"
            )
        kind = card.get("policy_kind", DEFAULT_KIND)
        if kind not in BaseMetaPolicy._kinds:
            raise ModelFormatError(
                f"{card_file} holds a policy of kind {kind!r}; this code reads {sorted(BaseMetaPolicy._kinds)}"
            )
        params = torch.load(params_file, map_location="cpu", weights_only=True)
        if not isinstance(params, dict) or not all(isinstance(v, torch.Tensor) for v in params.values()):
            raise ModelFormatError(f"{params_file} is not a dict of parameter tensors")
        return BaseMetaPolicy._kinds[kind]._from_card(card, params, source=source)

    @classmethod
    def initial(cls, spec: JobSpec) -> BaseMetaPolicy[Any]:
        """The untrained meta-policy a job with ``spec`` starts from: the learner's initial
        parameters (its policy built with seed ``spec.seed``), before any meta-iteration.

        This is the "randomly initialised policy" baseline of Finn et al. (2017, sec. 5.3) and
        Yu et al. (2019): fine-tuned with the same adaptation budget, it shows what adaptation
        alone achieves without meta-training.  ``save`` it to a directory to evaluate it with
        :func:`workers.evaluate.evaluate`.
        """
        tf = spec.task_family
        family = build_distribution(tf.name, seed=spec.seed, **tf.family_kwargs())
        policy_spec = spec.model_spec(family)  # an RL policy's, or a supervised network's
        learner = registry.make_learner(spec.algorithm, policy_spec, advantage=spec.advantage, seed=spec.seed)
        state = learner.state_dict()
        out = cls.from_learner_state(spec, state, source=f"initial:{spec.name}:seed{spec.seed}")
        out._family = family
        return out

    @classmethod
    def from_learner_state(cls, spec: JobSpec, state: Any, *, source: str) -> BaseMetaPolicy[Any]:
        """The meta-policy held by a learner's ``state_dict()``, trained with ``spec``: the kind
        whose policy spec the state's is (an MLP :class:`MetaPolicy` with its inner step and
        advantage settings, RL²'s recurrent policy, or a supervised learner's model, whose spec is
        a :class:`~algorithms.supervised.nets.NetSpec`)."""
        for kind_cls in BaseMetaPolicy._kinds.values():
            if isinstance(state.policy_spec, kind_cls.policy_spec_type):
                return kind_cls._from_state(spec, state, source=source)
        raise ModelFormatError(
            f"no kind of meta-policy holds a {type(state.policy_spec).__name__} (algorithm {state.algorithm!r}); "
            f"known kinds: {sorted(BaseMetaPolicy._kinds)}"
        )

    def save(self, directory: Path, *, run_id: str | None = None) -> tuple[Path, Path]:
        """Write ``params.pt`` and ``policy.json`` into ``directory``; returns their paths."""
        directory.mkdir(parents=True, exist_ok=True)
        params_file, card_file = directory / PARAMS_FILE, directory / CARD_FILE
        torch.save({k: v.detach().cpu().clone() for k, v in self._params.items()}, params_file)
        card = {
            "format_version": FORMAT_VERSION,
            "policy_kind": self.kind,
            "algorithm": self.algorithm,
            **self._card_fields(),
            "policy_spec": dataclasses.asdict(self._policy_spec),
            "job_spec": json.loads(self._spec.model_dump_json()),
            "iteration": self.iteration,
            "run_id": run_id or self.training_run_id,
        }
        bounds = self.action_bounds
        if bounds is not None:
            card["action_bounds"] = [bounds[0].tolist(), bounds[1].tolist()]
        card_file.write_text(json.dumps(card, indent=2))
        return params_file, card_file

    # ---- checks of what it is given ----
    def _check_tasks(self, tasks: Sequence[Task]) -> None:
        family = self._spec.task_family.name
        for t in tasks:
            if t.family != family:
                raise TaskFamilyError(
                    f"this model was trained on {family!r} tasks, got a {t.family!r} task; "
                    "draw tasks from MetaPolicy.family"
                )

    def _check_env(self, env: gym.Env) -> None:
        ps = self._policy_spec
        obs_shape = getattr(env.observation_space, "shape", None)
        if obs_shape != (ps.obs_dim,):
            raise ValueError(f"env observations have shape {obs_shape}, the policy takes ({ps.obs_dim},)")
        space = env.action_space
        if ps.discrete:
            if not isinstance(space, gym.spaces.Discrete) or int(space.n) != ps.act_dim:
                raise ValueError(f"env action space {space} does not fit the policy's Discrete({ps.act_dim})")
        elif not isinstance(space, gym.spaces.Box) or space.shape != (ps.act_dim,):
            raise ValueError(f"env action space {space} does not fit the policy's Box(({ps.act_dim},))")

    def _check_obs(self, obs: np.ndarray | Sequence[float]) -> np.ndarray:
        """``obs`` as float32 ``[obs_dim]`` or ``[N, obs_dim]``."""
        x = np.asarray(obs, dtype=np.float32)
        d = self._policy_spec.obs_dim
        if x.ndim not in (1, 2) or x.shape[-1] != d:
            raise ValueError(f"obs must have shape [{d}] or [N, {d}], got {list(x.shape)}")
        return x

    def _clip(self, actions: np.ndarray) -> np.ndarray:
        """Continuous ``actions`` clipped to the action space (discrete ones as they are)."""
        if self._policy_spec.discrete:
            return actions
        bounds = self.action_bounds
        return actions if bounds is None else np.clip(actions, bounds[0], bounds[1])


# ---- the MLP policy ------------------------------------------------------------------------------


class MetaPolicy(BaseMetaPolicy):
    """A meta-policy with everything needed to act and to adapt to a new task.

    Load one with :meth:`load`; :meth:`adapt` returns a new, adapted ``MetaPolicy`` and leaves
    this one unchanged.  (The loaders return the kind the model is: an RL² model loads as a
    :class:`~workers.model.recurrent.RecurrentMetaPolicy`, with the same ``adapt``, ``act`` and
    ``mean_return``.)

    >>> p = MetaPolicy.load("models:/nav@latest")  # doctest: +SKIP
    >>> q = p.adapt(task, episodes=20, steps=1)  # doctest: +SKIP
    >>> q.act(obs)  # doctest: +SKIP
    """

    kind = "mlp"
    policy_spec_type = PolicySpec
    _policy: Policy
    _policy_spec: PolicySpec

    def __init__(
        self,
        *,
        spec: JobSpec,
        policy_spec: PolicySpec,
        params: Params,
        algorithm: str,
        inner_lr: float,
        advantage: AdvantageSpec,
        iteration: int = 0,
        source: str = "",
        adapted_steps: int = 0,
        training_run_id: str | None = None,
        action_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        super().__init__(spec=spec, policy_spec=policy_spec, params=params, algorithm=algorithm, iteration=iteration,
                         source=source, training_run_id=training_run_id, action_bounds=action_bounds)
        self.inner_lr = float(inner_lr)
        self.advantage = advantage
        self.adapted_steps = int(adapted_steps)

    def __repr__(self) -> str:
        return (
            f"MetaPolicy({self.algorithm} on {self._spec.task_family.name}, source={self.source!r}, "
            f"adapted_steps={self.adapted_steps})"
        )

    @property
    def policy_spec(self) -> PolicySpec:
        return self._policy_spec

    @property
    def params(self) -> Params:
        """A copy of the parameters (θ, or the adapted φ after :meth:`adapt`)."""
        return {k: v.clone() for k, v in self._params.items()}

    # ---- its kind ----
    @classmethod
    def _make_module(cls, policy_spec: Any) -> torch.nn.Module:
        return make_policy(policy_spec)

    @classmethod
    def _from_card(cls, card: dict[str, Any], params: Params, *, source: str) -> MetaPolicy:
        ps = dict(card["policy_spec"])
        ps["hidden_sizes"] = tuple(ps["hidden_sizes"])
        return cls(
            spec=JobSpec.model_validate(card["job_spec"]),
            policy_spec=PolicySpec(**ps),
            params=params,
            algorithm=card["algorithm"],
            inner_lr=card["inner_lr"],
            advantage=AdvantageSpec.model_validate(card["advantage"]),
            iteration=card.get("iteration", 0),
            source=source,
            adapted_steps=card.get("adapted_steps", 0),
            training_run_id=card.get("run_id"),
            action_bounds=card.get("action_bounds"),  # absent in cards written before it was stored
        )

    @classmethod
    def _from_state(cls, spec: JobSpec, state: Any, *, source: str) -> MetaPolicy:
        return cls(
            spec=spec,
            policy_spec=state.policy_spec,
            params=state.params,
            algorithm=state.algorithm,
            inner_lr=float(state.config.inner_lr),
            advantage=state.advantage,
            iteration=state.iteration,
            source=source,
        )

    def _card_fields(self) -> dict[str, Any]:
        return {
            "inner_lr": self.inner_lr,
            "advantage": self.advantage.model_dump(mode="json"),
            "adapted_steps": self.adapted_steps,
        }

    # ---- acting ----
    def act(self, obs: np.ndarray | Sequence[float], deterministic: bool = True, *, clip: bool = True) -> np.ndarray:
        """Actions for one observation ``[obs_dim]`` or a batch ``[N, obs_dim]``.

        Returns ``[act_dim]`` / ``[N, act_dim]`` float32 for a Gaussian policy (its mean when
        ``deterministic``, else a sample), clipped to the action space -- what the env applies --
        unless ``clip`` is False (then the raw Gaussian mean or sample, which can lie outside
        it); or a scalar / ``[N]`` int64 action for a discrete one (argmax when
        ``deterministic``).
        """
        x = self._check_obs(obs)
        single = x.ndim == 1
        batch = torch.from_numpy(np.ascontiguousarray(x[None] if single else x))
        with torch.inference_mode():
            dist = functional_call(self._policy, self._params, (batch,))
            a = self._policy.mode(dist) if deterministic else self._policy.sample(dist, self._gen)
        out = a.numpy()
        if clip:
            out = self._clip(out)
        return out[0] if single else out

    def mean_return(self, task_or_env: Task | gym.Env, *, episodes: int = 10, seed: int = 1) -> float:
        """The mean undiscounted return of ``episodes`` episodes on ``task_or_env`` with these
        parameters (actions sampled, as in training and in the papers' meta-test).

        ``seed`` seeds the env resets and the action noise; its default differs from
        :meth:`adapt`'s so that the episodes measured are not the adaptation episodes.
        """
        _check_positive(episodes=episodes)
        if isinstance(task_or_env, Task):
            self._check_tasks([task_or_env])
            sampler = Sampler(self.family, self._policy_spec, envs_per_task=episodes, seed=seed)
            try:
                eps = sampler.sample([task_or_env], self._params, episodes_per_task=episodes)[0]
            finally:
                sampler.close()
        elif isinstance(task_or_env, gym.Env):
            self._check_env(task_or_env)
            gen = torch.Generator().manual_seed(seed)
            eps = self._rollout(task_or_env, self._params, episodes=episodes, seed=seed * 100_003, gen=gen)
        else:
            raise TypeError(
                f"mean_return takes a workers.envs.Task or a gymnasium.Env, got {type(task_or_env).__name__}"
            )
        return float(eps.returns.mean())

    # ---- adapting ----
    def adapt(
        self, task_or_env: Task | gym.Env, *, episodes: int = 10, steps: int = 1, seed: int = 0,
        later_lr: float | None = None,
    ) -> MetaPolicy:
        """A new policy whose parameters took ``steps`` inner policy-gradient steps (step size
        ``inner_lr``, the learner's inner step, Finn et al. 2017 eq. 1) on ``task_or_env``,
        sampling ``episodes`` episodes with the current parameters before each step.

        Args:
            task_or_env: a task of the model's family (``self.family.sample_tasks(...)``), sampled
                with :class:`~workers.sampler.Sampler`, or a gymnasium env with the model's
                observation and action spaces, rolled out one episode at a time.
            episodes: episodes per inner step.
            steps: inner steps.
            seed: seeds the env resets and the action noise.
            later_lr: step size of the second and later steps (default ``inner_lr``); the MAML
                paper's meta-test takes its first step with α = 0.1 and later ones with 0.05.
        """
        _check_positive(episodes=episodes, steps=steps)
        _check_lr(later_lr)
        if isinstance(task_or_env, Task):
            sampler = Sampler(self.family, self._policy_spec, envs_per_task=episodes, seed=seed)
            try:
                adapted = self.adapt_tasks(
                    [task_or_env], sampler=sampler, episodes=episodes, steps=steps, later_lr=later_lr
                )
            finally:
                sampler.close()
            params = adapted.params[0]
        elif isinstance(task_or_env, gym.Env):
            self._check_env(task_or_env)
            source = _EnvSource(self, task_or_env, episodes=episodes, seed=seed)
            env_task = Task(family=self._spec.task_family.name, split="test", index=0)  # the env is the task
            params = self.meta_test([env_task], source=source, steps=steps, later_lr=later_lr,
                                    evaluate=False).params[0]
        else:
            raise TypeError(
                f"adapt takes a workers.envs.Task or a gymnasium.Env, got {type(task_or_env).__name__}"
            )
        return self._derived(params, steps=steps)

    def adapt_tasks(
        self, tasks: Sequence[Task], *, sampler: Sampler, episodes: int, steps: int, later_lr: float | None = None
    ) -> TaskAdaptation:
        """Adapt to several tasks at once (batched in one ``sampler``): ``steps`` times, sample
        ``episodes`` episodes per task with each task's current parameters, then take one inner
        step per task (step size :meth:`step_lr`).  The episodes are returned too (for
        evaluation: ``episodes[k]`` were sampled after ``k`` steps)."""
        _check_positive(episodes=episodes, steps=steps)
        collected = self.meta_test(tasks, source=SamplerSource(sampler, episodes), steps=steps, later_lr=later_lr,
                                   evaluate=False)
        return TaskAdaptation(params=collected.params, episodes=collected.phases)

    def adaptation_plan(self, steps: int, *, evaluate: bool = True) -> IterationPlan:
        """The algorithm's meta-test plan: ``steps`` rounds of episodes and inner step, then (with
        ``evaluate``) the evaluation phase."""
        plan = registry.get(self.algorithm).adaptation(self._spec.algorithm, steps)
        return plan if evaluate else IterationPlan(tuple(p for p in plan.phases if not p.evaluation))

    def meta_test(self, tasks: Sequence[Task], *, source: Any, steps: int, later_lr: float | None = None,
                  evaluate: bool = True) -> Collected:
        """Run the meta-test plan on ``tasks`` with episodes from ``source`` (the phase runner):
        ``phases[k]`` were collected after ``k`` inner steps, the last one (with ``evaluate``) is
        the evaluation phase; ``params`` are the adapted parameters."""
        _check_lr(later_lr)
        if not tasks:
            raise ValueError("meta_test needs at least one task")
        self._check_tasks(tasks)
        port = _InnerSteps(self, n_tasks=len(tasks), later_lr=later_lr)
        return collect(self.adaptation_plan(steps, evaluate=evaluate), tasks, source=source, learner=port)

    def step_lr(self, k: int, *, later_lr: float | None = None) -> float:
        """The step size of inner step ``k`` (0-based): ``inner_lr`` for the first, ``later_lr``
        (default ``inner_lr``) for the others.  Finn et al. (2017) meta-test the 2D-navigation
        and locomotion policies with α = 0.1 for the first gradient step and 0.05 after it."""
        return self.inner_lr if k == 0 or later_lr is None else float(later_lr)

    def with_params(self, params: Params) -> MetaPolicy:
        """The same model with other parameters (e.g. adapted ones from :meth:`adapt_tasks`)."""
        return self._derived(params, steps=0)

    def _derived(self, params: Params, *, steps: int) -> MetaPolicy:
        out = MetaPolicy(
            spec=self._spec,
            policy_spec=self._policy_spec,
            params=params,
            algorithm=self.algorithm,
            inner_lr=self.inner_lr,
            advantage=self.advantage,
            iteration=self.iteration,
            source=self.source,
            adapted_steps=self.adapted_steps + steps,
            training_run_id=self.training_run_id,
        )
        out._family, out._bounds = self._family, self._bounds
        return out

    def _inner_step(self, params: Sequence[Params], episodes: Sequence[Episodes], *, inner_lr: float) -> list[Params]:
        """One inner policy-gradient step per task (no graph): the learners' ``adapt``."""
        batch = make_task_batch(episodes, advantage=self.advantage)
        phi = F.adapt(self._policy, stack_params(list(params)), [batch], inner_lr=inner_lr, create_graph=False)
        check_finite("adapted parameters", *phi.values())
        return unstack_params(phi)

    def _rollout(self, env: gym.Env, params: Params, *, episodes: int, seed: int, gen: torch.Generator) -> Episodes:
        max_steps = env_rollout.horizon(env, self._spec.task_family.max_episode_steps)
        return env_rollout.rollout(
            self._policy, params, env, episodes=episodes, seed=seed, gen=gen, max_steps=max_steps
        )


@dataclass
class _EnvSource:
    """Episodes of a plain gymnasium env, one after another, for :meth:`MetaPolicy.adapt`: round
    ``k`` resets with seeds ``seed * 100003 + k * episodes + e``, actions drawn from one
    generator seeded with ``seed``."""

    policy: MetaPolicy
    env: gym.Env
    episodes: int
    seed: int
    rounds: int = 0
    gen: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.gen = torch.Generator().manual_seed(self.seed)

    def sample(self, phase: Any, tasks: Sequence[Task], params: list[Params]) -> list[Episodes]:
        first = self.seed * 100_003 + self.rounds * self.episodes
        self.rounds += 1
        return [self.policy._rollout(self.env, params[0], episodes=self.episodes, seed=first, gen=self.gen)]


@dataclass
class _InnerSteps:
    """A meta-policy as the phase runner's learner port at meta-test: θ for every task, and the
    model's own inner step (step size :meth:`MetaPolicy.step_lr` of round ``k``)."""

    policy: MetaPolicy
    n_tasks: int
    later_lr: float | None

    def meta_params(self) -> list[Params]:
        return [self.policy._params] * self.n_tasks

    def adapt(self, params: list[Params], data: list[Episodes], *, k: int) -> list[Params]:
        return self.policy._inner_step(params, data, inner_lr=self.policy.step_lr(k, later_lr=self.later_lr))

    def learn(self, phases: list[Any]) -> dict[str, float]:
        raise TypeError("a meta-test adapts; it does not learn")


def _check_lr(later_lr: float | None) -> None:
    if later_lr is not None and not (isinstance(later_lr, int | float) and math.isfinite(later_lr) and later_lr > 0):
        raise ValueError(f"later_lr must be a positive finite number, got {later_lr!r}")


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
