"""The single-task env of the Meta-World families (:mod:`workers.envs.metaworld`), which their
vector env (:mod:`workers.envs.metaworld_vector`) steps in batches.

A :class:`~workers.envs.base.Task` of a Meta-World family carries ``params={"env_name": ...}``
and, as ``data``, the pickled Meta-World task (:func:`decode_task`).  Its env is an instance of
the task's Meta-World class with the task set; :class:`MetaWorldTaskEnv` keeps one instance per
class (created on first use) and switches between them when ``set_task`` is handed a task of
another class (ML10/ML45).

Meta-World 3.1.1 behaviour this module relies on (``metaworld/sawyer_xyz_env.py``):

* ``reset(seed=...)`` ignores the seed; with a task set, the initial state is fixed by the task
  (its ``rand_vec``), so resets are deterministic.
* ``step`` raises ``ValueError`` once ``max_path_length`` (500) steps were taken without a
  reset; it returns ``truncated=True`` on step 500 and never ``terminated=True``.  The horizon
  here may therefore not exceed 500, and the done guard of
  :class:`~workers.envs.common.EpisodicTaskEnv` never steps an env past its episode's end.
* ``info["success"]`` is 0.0/1.0 (a bool after a simulator instability); it is returned as a
  float.  Observations are ``Box(39,)`` float64 with the goal zeroed (partially observable);
  they are cast to float32.
"""

from __future__ import annotations

import copy
import functools
import pickle
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from workers.envs.base import Task, TaskFamilyError
from workers.envs.common import EpisodicTaskEnv, float32_box

#: Meta-World's episode length (``SawyerXYZEnv.max_path_length``); stepping past it raises.
MAX_PATH_LENGTH = 500


@functools.cache
def _spaces() -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """(float32 observation space, action space) of the Meta-World v3 envs in the ML setting
    (goal hidden: its three coordinates are bounded to 0), read once from a prototype env."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    env = ALL_V3_ENVIRONMENTS["reach-v3"]()
    try:
        if not env._partially_observable:
            raise RuntimeError("Meta-World envs are expected to hide the goal by default")
        return float32_box(env.observation_space), env.action_space  # type: ignore[return-value]
    finally:
        env.close()


def decode_task(task: Task) -> Any:
    """The Meta-World task (``metaworld.types.Task``) a :class:`Task` carries."""
    try:
        mw_task = pickle.loads(task.data)
    except Exception as exc:
        raise TaskFamilyError(
            f"{task.family}: task {task.describe()} does not carry a pickled Meta-World task "
            f"({type(exc).__name__}: {exc}); sample tasks with the family's sample_tasks"
        ) from exc
    if not (hasattr(mw_task, "env_name") and hasattr(mw_task, "data")):
        raise TaskFamilyError(
            f"{task.family}: task {task.describe()} does not carry a Meta-World task; "
            "sample tasks with the family's sample_tasks"
        )
    return mw_task


class MetaWorldTaskEnv(EpisodicTaskEnv):
    """One Meta-World env per class, created on first use; the active one is the current
    task's.  ``info["success"]`` is a float 0/1."""

    def __init__(
        self,
        task: Task,
        *,
        family_name: str,
        classes: Mapping[str, type],
        max_episode_steps: int = MAX_PATH_LENGTH,
    ) -> None:
        self.family_name = family_name
        self._classes = dict(classes)
        self._mw_pending: Any = None
        if max_episode_steps > MAX_PATH_LENGTH:
            raise TaskFamilyError(
                f"{family_name}: max_episode_steps must be <= {MAX_PATH_LENGTH} (Meta-World's "
                f"episode length), got {max_episode_steps}"
            )
        super().__init__(task, max_episode_steps=max_episode_steps)
        obs_space, action_space = _spaces()
        self.observation_space = copy.deepcopy(obs_space)
        self.action_space = copy.deepcopy(action_space)
        self._instances: dict[str, Any] = {}
        self._active: Any = None

    @property
    def active_env(self) -> Any:
        """The Meta-World env of the running episode (None before the first reset)."""
        return self._active

    def _check_task(self, task: Task) -> None:
        mw_task = decode_task(task)
        if mw_task.env_name not in self._classes:
            raise TaskFamilyError(
                f"{self.family_name}: env {mw_task.env_name!r} is not part of this benchmark; "
                f"valid envs: {sorted(self._classes)}"
            )
        if task.env_name is not None and task.env_name != mw_task.env_name:
            raise TaskFamilyError(
                f"{self.family_name}: task params say env_name={task.env_name!r} but its data "
                f"is a {mw_task.env_name!r} task"
            )
        self._mw_pending = mw_task

    def _apply_task(self, task: Task) -> None:
        mw_task = self._mw_pending
        env = self._instances.get(mw_task.env_name)
        if env is None:
            env = self._classes[mw_task.env_name]()
            self._instances[mw_task.env_name] = env
        env.set_task(mw_task)
        self._active = env

    def _reset_inner(
        self, *, seed: int | None, options: dict[str, Any] | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self._active.reset()
        return obs.astype(np.float32), dict(info)

    def _step_inner(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self._active.step(action)
        info["success"] = float(info.get("success", 0.0))
        return obs.astype(np.float32), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> Any:
        """The active Meta-World env's render (None unless built with a render mode)."""
        return None if self._active is None else self._active.render()

    def close(self) -> None:
        """Close every Meta-World env this wrapper created."""
        for env in self._instances.values():
            env.close()
        self._instances.clear()
        self._active = None
        super().close()
