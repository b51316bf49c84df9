"""Shared pieces of the task envs: episode bookkeeping and parameter checks.

Every single-task env of this package derives from :class:`EpisodicTaskEnv`, which gives all
families the same episode semantics:

* ``set_task`` validates the task at once and takes effect at the next ``reset``;
* ``step`` before the first ``reset`` raises;
* the episode is truncated after ``max_episode_steps`` steps (``truncated=True``, also on a step
  that terminates, as gymnasium's ``TimeLimit`` does);
* stepping an env whose episode has ended is allowed and harmless: the simulator is not
  advanced, the last observation, ``terminated``/``truncated`` flags and info are returned again,
  with reward ``0.0``.  (gymnasium's ``SyncVectorEnv`` never does this: with autoreset
  disabled it refuses to step a finished sub-env, in next-step mode it resets it instead.)
"""

from __future__ import annotations

import abc
import math
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from workers.envs.base import Task, TaskEnv, TaskFamilyError


class EpisodicTaskEnv(TaskEnv):
    """A :class:`TaskEnv` with a horizon, a pending task and a done guard.

    Subclasses implement :meth:`_check_task` (raise :class:`TaskFamilyError` for a task they
    cannot run), :meth:`_apply_task`, :meth:`_reset_inner` and :meth:`_step_inner`.
    """

    #: The family name tasks of this env must carry.
    family_name: str = ""

    def __init__(self, task: Task, *, max_episode_steps: int) -> None:
        super().__init__()
        if max_episode_steps < 1:
            raise TaskFamilyError(
                f"{self.family_name}: max_episode_steps must be >= 1, got {max_episode_steps}"
            )
        self.max_episode_steps = int(max_episode_steps)
        self.metadata = {"render_modes": []}  # per instance: SyncVectorEnv writes into it
        self._check_task(task)
        self._task = task
        self._pending: Task | None = task
        self._elapsed = 0
        self._started = False
        self._done = False
        self._last_obs: Any = None
        self._last_terminated = False
        self._last_truncated = False
        self._last_info: dict[str, Any] = {}

    # --- task ------------------------------------------------------------------------------
    @property
    def task(self) -> Task:
        """The task set last (active from the next ``reset`` if set mid-episode)."""
        return self._task

    @property
    def elapsed_steps(self) -> int:
        """Steps taken in the current episode (not counting steps after it ended)."""
        return self._elapsed

    def set_task(self, task: Task) -> None:
        """Switch this env to ``task``; takes effect at the next ``reset``.

        Raises:
            TaskFamilyError: ``task`` is not a task of this env's family.
        """
        if task.family != self.family_name:
            raise TaskFamilyError(
                f"{self.family_name} env got a task of family {task.family!r}; "
                f"sample tasks from the {self.family_name!r} family"
            )
        self._check_task(task)
        self._task = task
        self._pending = task

    # --- gymnasium API ---------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start an episode of the current task (applying a task set since the last reset)."""
        super().reset(seed=seed)
        if self._pending is not None:
            self._apply_task(self._pending)
            self._pending = None
        obs, info = self._reset_inner(seed=seed, options=options)
        self._elapsed = 0
        self._started = True
        self._done = False
        self._last_obs = obs
        self._last_terminated = False
        self._last_truncated = False
        self._last_info = info
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Advance one step; after the episode ended, repeat its last result with reward 0."""
        if not self._started:
            raise RuntimeError(f"{self.family_name}: call reset() before step()")
        if self._done:
            return (
                self._last_obs,
                0.0,
                self._last_terminated,
                self._last_truncated,
                dict(self._last_info),
            )
        obs, reward, terminated, truncated, info = self._step_inner(action)
        self._elapsed += 1
        truncated = bool(truncated) or self._elapsed >= self.max_episode_steps
        terminated = bool(terminated)
        self._done = terminated or truncated
        self._last_obs = obs
        self._last_terminated = terminated
        self._last_truncated = truncated
        self._last_info = info
        return obs, reward, terminated, truncated, info

    # --- for subclasses --------------------------------------------------------------------
    @abc.abstractmethod
    def _check_task(self, task: Task) -> None:
        """Raise :class:`TaskFamilyError` if ``task`` cannot be run by this env."""

    @abc.abstractmethod
    def _apply_task(self, task: Task) -> None:
        """Make ``task`` the active task (called at reset)."""

    @abc.abstractmethod
    def _reset_inner(
        self, *, seed: int | None, options: dict[str, Any] | None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the simulator; return ``(obs, info)``."""

    @abc.abstractmethod
    def _step_inner(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step the simulator; return ``(obs, reward, terminated, truncated, info)``."""


def float32_box(space: gym.spaces.Space) -> gym.spaces.Box:
    """``space`` (a Box) with dtype float32, keeping its bounds."""
    if not isinstance(space, gym.spaces.Box):
        raise TypeError(f"expected a Box observation space, got {space}")
    return gym.spaces.Box(
        low=space.low.astype(np.float32), high=space.high.astype(np.float32), dtype=np.float32
    )


# --- parameter checks ----------------------------------------------------------------------
def check_int(family: str, name: str, value: Any, *, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, else a :class:`TaskFamilyError` naming ``name``."""
    valid = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TaskFamilyError(f"{family}: {name} must be {valid}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise TaskFamilyError(f"{family}: {name} must be {valid}, got {value!r}")
    return int(value)


def check_float(family: str, name: str, value: Any) -> float:
    """``value`` as a finite float, else a :class:`TaskFamilyError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TaskFamilyError(f"{family}: {name} must be a finite number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise TaskFamilyError(f"{family}: {name} must be a finite number, got {value!r}")
    return out


def check_bool(family: str, name: str, value: Any) -> bool:
    """``value`` as a bool (``True``/``False``, or ``1``/``0`` as a job spec's numbers carry it),
    else a :class:`TaskFamilyError` naming ``name``."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating) and value in (0, 1):
        return bool(value)
    raise TaskFamilyError(f"{family}: {name} must be true or false (or 1 / 0), got {value!r}")


def check_interval(
    family: str, names: tuple[str, str], low: Any, high: Any, *, min_low: float | None = None
) -> tuple[float, float]:
    """``(low, high)`` as finite floats with ``min_low <= low < high``."""
    lo = check_float(family, names[0], low)
    hi = check_float(family, names[1], high)
    if min_low is not None and lo < min_low:
        raise TaskFamilyError(f"{family}: {names[0]} must be >= {min_low}, got {lo}")
    if not lo < hi:
        raise TaskFamilyError(
            f"{family}: {names[0]} must be < {names[1]}, got {names[0]}={lo}, {names[1]}={hi}"
        )
    return lo, hi


def task_param(task: Task, key: str, family: str) -> float:
    """The float parameter ``key`` of ``task``, else a :class:`TaskFamilyError`."""
    if key not in task.params:
        raise TaskFamilyError(
            f"{family}: task {task.describe()} has no parameter {key!r}; "
            f"its parameters are {sorted(task.params)}"
        )
    return check_float(family, f"task parameter {key}", task.params[key])
