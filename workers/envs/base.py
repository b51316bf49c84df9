"""The task-family interface every family implements.

A *task family* is a distribution over MDPs (tasks) that share observation and action spaces
(Finn et al. 2017, section 3.1).  It samples tasks with a caller-supplied
``numpy.random.Generator`` (so the same seed always gives the same tasks), builds a gymnasium
env for one task, and re-targets an existing env at another task without rebuilding it
(``TaskEnv.set_task``), which is what lets rollout workers keep their envs across
meta-iterations.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


class TaskFamilyError(ValueError):
    """A family name, parameter or task that does not exist; the message lists what does."""


@dataclass(frozen=True)
class Task:
    """One task of a family: plain, picklable data (it crosses process boundaries).

    Attributes:
        family: the family's registered name, e.g. ``"halfcheetah-vel"``.
        split: ``"train"`` or ``"test"``.
        index: position of the task in its family's task list where the family has a finite
            list (Meta-World), else a running index of the draw.
        params: the task's physical parameters, e.g. ``{"goal_x": .1, "goal_y": -.3}``,
            ``{"velocity": 1.3}`` or ``{"direction": -1.0}``; Meta-World tasks carry
            ``{"env_name": "reach-v3"}`` plus the opaque task ``data``.
        data: an opaque payload the family needs to rebuild the task (Meta-World's
            pickled goal/state data); ``b""`` where none.
    """

    family: str
    split: Split
    index: int
    params: Mapping[str, float | str] = field(default_factory=dict)
    data: bytes = b""

    @property
    def env_name(self) -> str | None:
        name = self.params.get("env_name")
        return str(name) if name is not None else None

    def describe(self) -> str:
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.params.items()}
        return f"{self.family}[{self.split}#{self.index}]{shown}"


class TaskEnv(gym.Env):
    """Marker for envs that can be re-targeted at another task of their family in place."""

    @abc.abstractmethod
    def set_task(self, task: Task) -> None:
        """Switch this env to ``task``; takes effect at the next ``reset``."""


class TaskFamily(abc.ABC):
    """A distribution over tasks sharing observation and action spaces.

    Subclasses set ``name`` and implement the abstract methods.  ``max_episode_steps`` is the
    horizon every episode of the family is cut at (the papers' H).
    """

    name: str = ""
    #: True where episodes report ``info["success"]`` (Meta-World).
    has_success: bool = False
    #: whether samplers clip continuous actions to ``action_space`` before stepping
    clips_actions: bool = True
    #: meta-test protocol: episodes of the evaluation phase after adaptation (None: as many as
    #: each adaptation round) and whether they act deterministically (Meta-World: 3, yes)
    eval_episodes: int | None = None
    deterministic_eval: bool = False

    def __init__(self, *, max_episode_steps: int) -> None:
        if max_episode_steps < 1:
            raise TaskFamilyError(f"{self.name}: max_episode_steps must be >= 1, got {max_episode_steps}")
        self.max_episode_steps = int(max_episode_steps)

    # --- spaces -------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def observation_space(self) -> gym.spaces.Box: ...

    @property
    @abc.abstractmethod
    def action_space(self) -> gym.spaces.Space: ...

    # --- tasks --------------------------------------------------------------------------
    def policy_dims(self) -> tuple[int, int, bool]:
        """``(obs_dim, act_dim, discrete)``: what a policy for this family takes and outputs."""
        obs_dim = int(self.observation_space.shape[0])
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return obs_dim, int(space.n), True
        if isinstance(space, gym.spaces.Box):
            return obs_dim, int(space.shape[0]), False
        raise TypeError(f"task family {self.name!r} has action space {space}; policies take Box or Discrete")

    @abc.abstractmethod
    def sample_tasks(self, n: int, rng: np.random.Generator, *, split: Split = "train") -> list[Task]:
        """Draw ``n`` tasks of ``split``; deterministic given ``rng``'s state."""

    def num_tasks(self, split: Split = "train") -> int | None:
        """Size of a finite task list (Meta-World), or None for a continuous family."""
        return None

    # --- envs ---------------------------------------------------------------------------
    @abc.abstractmethod
    def make_env(self, task: Task) -> gym.Env:
        """A fresh gymnasium env set to ``task``, truncated at ``max_episode_steps``.

        The returned env (possibly wrapped) exposes ``set_task`` through
        ``env.get_wrapper_attr("set_task")``.
        """

    def make_vector_env(self, tasks: Sequence[Task], envs_per_task: int) -> gym.vector.VectorEnv:
        """A vector env with ``envs_per_task`` sub-envs per task, grouped by task in order.

        The default builds a :class:`~workers.envs.vector.LeanVectorEnv`: the sub-envs are
        stepped in a loop into preallocated arrays, only ``info["success"]`` is carried (for
        families with ``has_success``), and a
        sub-env whose episode ended holds (is not stepped, reward 0) until the next reset -- the
        sampler resets all sub-envs at the start of each round of episodes and masks whatever
        a sub-env reports after its episode ended.  (gymnasium's ``SyncVectorEnv`` with its
        full info merging and autoreset cost about a quarter of HalfCheetah's step time.)
        Natively batched families override.
        """
        from workers.envs.vector import LeanVectorEnv

        return LeanVectorEnv(env_thunks(self, tasks, envs_per_task), info_keys=("success",) if self.has_success else ())

    def describe(self) -> dict[str, Any]:
        """What this family is, for logs and run params."""
        return {"name": self.name, "max_episode_steps": self.max_episode_steps}

    def _check_split(self, split: str) -> Split:
        if split not in SPLITS:
            raise TaskFamilyError(f"{self.name}: unknown split {split!r}; valid splits: {list(SPLITS)}")
        return split  # type: ignore[return-value]

    def _check_n(self, n: int) -> int:
        if not isinstance(n, int | np.integer) or n < 1:
            raise TaskFamilyError(f"{self.name}: number of tasks must be a positive integer, got {n!r}")
        return int(n)


def set_vector_tasks(vec: gym.vector.VectorEnv, tasks: Sequence[Task], envs_per_task: int) -> None:
    """Re-target the sub-envs of ``vec`` (grouped by task, ``envs_per_task`` each) at ``tasks``."""
    setter = getattr(vec, "set_tasks", None)
    if setter is not None:  # natively batched families
        setter(tasks, envs_per_task)
        return
    envs = vec.envs  # type: ignore[attr-defined]
    if len(envs) != len(tasks) * envs_per_task:
        raise ValueError(
            f"vector env has {len(envs)} sub-envs, need {len(tasks)} tasks x {envs_per_task} envs"
        )
    for i, env in enumerate(envs):
        env.get_wrapper_attr("set_task")(tasks[i // envs_per_task])


def env_thunks(family: TaskFamily, tasks: Sequence[Task], envs_per_task: int) -> list[Callable[[], gym.Env]]:
    """Picklable factories of a vector env's sub-envs: ``envs_per_task`` per task, grouped by task."""
    return [_EnvThunk(family, task) for task in tasks for _ in range(envs_per_task)]


@dataclass(frozen=True)
class _EnvThunk:
    """Picklable env factory (a lambda would capture the loop variable late)."""

    family: TaskFamily
    task: Task

    def __call__(self) -> gym.Env:
        return self.family.make_env(self.task)
