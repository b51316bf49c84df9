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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np

from workers.tasks import SPLITS, Split, Task, TaskDistribution, TaskFamilyError

__all__ = ["SPLITS", "Split", "Task", "TaskEnv", "TaskFamily", "TaskFamilyError", "env_thunks", "set_vector_tasks"]


class TaskEnv(gym.Env):
    """Marker for envs that can be re-targeted at another task of their family in place."""

    @abc.abstractmethod
    def set_task(self, task: Task) -> None:
        """Switch this env to ``task``; takes effect at the next ``reset``."""


class TaskFamily(TaskDistribution):
    """A distribution over tasks sharing observation and action spaces.

    Subclasses set ``name`` and implement the abstract methods.  ``max_episode_steps`` is the
    horizon every episode of the family is cut at (the papers' H).
    """

    name: str = ""
    kind: ClassVar[Literal["rl", "supervised"]] = "rl"
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
        return {**super().describe(), "max_episode_steps": self.max_episode_steps}



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
