"""2D navigation: a point robot steers to a goal (Finn et al. 2017, MAML, sec. 5.2 and App. C.2).

The robot starts at the origin of the plane; a task is a goal position drawn uniformly from
``[low, high]^2`` (default ``[-0.5, 0.5]^2``).  The observation is the current position, the
action a velocity command of at most 0.1 per coordinate, the reward the negative Euclidean
distance of the *new* position to the goal, and the episode terminates when that distance is
below 0.01 or is truncated after ``max_episode_steps`` (H = 100 in the paper).

``action_bound`` is the bound ``b`` of the action the *policy* emits: the action space is
``[-b, b]^2`` and the robot moves by ``0.1 * clip(a, -b, b) / b``.  The default ``b = 0.1`` is
the env's own units (the velocity itself); ``b = 1`` is the paper's setting, where rllab's
``normalize`` wrapper lets the policy act in ``[-1, 1]`` (so a unit-variance initial policy spans
the range instead of ten times it, and an inner step of size 0.1 moves the mean by a tenth of
the range).  The reproduce suite and the presets use ``b = 1``; models trained with the default
keep their meaning because the family's parameters are stored with the model's spec.

The paper gives no train/test split: the test split draws from the same distribution.

Two envs share one step kernel (so their results match bit for bit): :class:`Navigation2DEnv`, a
single gymnasium env, and :class:`Navigation2DVectorEnv`, a natively batched vector env that
steps every sub-env with a handful of numpy operations.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from workers.envs.base import Split, Task, TaskFamily, TaskFamilyError
from workers.envs.common import EpisodicTaskEnv, check_float, check_int, check_interval, task_param

NAME = "navigation2d"
#: Per-coordinate bound of the velocity command (MAML App. C.2).
MAX_SPEED = 0.1
#: Distance to the goal under which an episode terminates.
GOAL_RADIUS = 0.01

OBSERVATION_SPACE = gym.spaces.Box(low=-np.inf, high=np.inf, shape=(2,), dtype=np.float32)
ACTION_SPACE = gym.spaces.Box(low=-MAX_SPEED, high=MAX_SPEED, shape=(2,), dtype=np.float32)


def _check_bound(bound: Any) -> float:
    bound = check_float(NAME, "action_bound", bound)
    if not 0.0 < bound <= 1000.0:
        raise TaskFamilyError(f"{NAME}: action_bound must be in (0, 1000], got {bound!r}")
    return bound


def _goal_of(task: Task) -> tuple[float, float]:
    return task_param(task, "goal_x", NAME), task_param(task, "goal_y", NAME)


def _action_space(bound: float) -> gym.spaces.Box:
    if bound == MAX_SPEED:
        return ACTION_SPACE
    return gym.spaces.Box(low=-bound, high=bound, shape=(2,), dtype=np.float32)


def _move(pos: np.ndarray, action: Any, bound: float = MAX_SPEED) -> np.ndarray:
    """The new position(s): ``pos + 0.1 * clip(action, -b, b) / b``; works on ``(2,)`` and ``(n, 2)``.

    With the default ``b = 0.1`` this is ``pos + clip(action, -0.1, 0.1)``, bit for bit.
    """
    velocity = np.clip(action, -bound, bound)
    if bound != MAX_SPEED:
        velocity = velocity * (MAX_SPEED / bound)
    return pos + velocity


def _distance(pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Euclidean distance(s) along the last axis (``hypot`` is elementwise: same bits either way)."""
    diff = pos - goal
    return np.hypot(diff[..., 0], diff[..., 1])


class Navigation2DEnv(EpisodicTaskEnv):
    """One 2D-navigation episode at a time (see the module docstring)."""

    family_name = NAME

    def __init__(self, task: Task, *, max_episode_steps: int = 100, action_bound: float = MAX_SPEED) -> None:
        super().__init__(task, max_episode_steps=max_episode_steps)
        self.action_bound = _check_bound(action_bound)
        self.observation_space = copy.deepcopy(OBSERVATION_SPACE)
        self.action_space = copy.deepcopy(_action_space(self.action_bound))
        self._goal = np.array(_goal_of(task), dtype=np.float64)
        self._pos = np.zeros(2, dtype=np.float64)

    @property
    def goal(self) -> np.ndarray:
        """The active goal (a copy)."""
        return self._goal.copy()

    def _check_task(self, task: Task) -> None:
        _goal_of(task)

    def _apply_task(self, task: Task) -> None:
        self._goal = np.array(_goal_of(task), dtype=np.float64)

    def _reset_inner(
        self, *, seed: int | None, options: dict[str, Any] | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self._pos = np.zeros(2, dtype=np.float64)
        return self._pos.astype(np.float32), {}

    def _step_inner(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action)
        if action.shape != (2,):
            raise ValueError(f"{NAME}: action must have shape (2,), got {action.shape}")
        self._pos = _move(self._pos, action, self.action_bound)
        dist = float(_distance(self._pos, self._goal))
        return self._pos.astype(np.float32), -dist, dist < GOAL_RADIUS, False, {}


class Navigation2DVectorEnv(gym.vector.VectorEnv):
    """``len(tasks) * envs_per_task`` 2D-navigation envs stepped together with numpy.

    Sub-envs are grouped by task in order (envs ``[i*k, (i+1)*k)`` run ``tasks[i]``).
    Autoreset is disabled: ``reset()`` resets every sub-env (or those in
    ``options["reset_mask"]``), and a sub-env whose episode has ended keeps its position and
    flags and returns reward 0 until the next reset.  Tasks set with :meth:`set_tasks` take
    effect at the next reset.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        envs_per_task: int,
        *,
        max_episode_steps: int = 100,
        action_bound: float = MAX_SPEED,
    ) -> None:
        super().__init__()
        envs_per_task = check_int(NAME, "envs_per_task", envs_per_task)
        self.action_bound = _check_bound(action_bound)
        if len(tasks) == 0:
            raise TaskFamilyError(f"{NAME}: a vector env needs at least one task")
        self.max_episode_steps = check_int(NAME, "max_episode_steps", max_episode_steps)
        self.num_envs = len(tasks) * envs_per_task
        self.metadata = {"autoreset_mode": AutoresetMode.DISABLED, "render_modes": []}
        self.single_observation_space = OBSERVATION_SPACE
        self.single_action_space = _action_space(self.action_bound)
        self.observation_space = batch_space(OBSERVATION_SPACE, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        n = self.num_envs
        self._pos = np.zeros((n, 2), dtype=np.float64)
        self._goal = np.zeros((n, 2), dtype=np.float64)
        self._elapsed = np.zeros(n, dtype=np.int64)
        self._terminated = np.zeros(n, dtype=np.bool_)
        self._truncated = np.zeros(n, dtype=np.bool_)
        self._started = False
        self._tasks: list[Task] = []
        self._pending_goal: np.ndarray | None = None
        self.set_tasks(tasks, envs_per_task)

    @property
    def tasks(self) -> list[Task]:
        """The tasks set last, one per group of ``envs_per_task`` sub-envs."""
        return list(self._tasks)

    @property
    def goals(self) -> np.ndarray:
        """The active goal of every sub-env, shape ``(num_envs, 2)`` (a copy)."""
        return self._goal.copy()

    def set_tasks(self, tasks: Sequence[Task], envs_per_task: int) -> None:
        """Re-target the sub-envs at ``tasks`` (``envs_per_task`` each); effective at next reset.

        Raises:
            ValueError: ``len(tasks) * envs_per_task`` is not this env's ``num_envs``.
            TaskFamilyError: a task is not a navigation2d task.
        """
        if len(tasks) * envs_per_task != self.num_envs:
            raise ValueError(
                f"{NAME}: vector env has {self.num_envs} sub-envs, got {len(tasks)} tasks x "
                f"{envs_per_task} envs; build a new vector env to change its size"
            )
        goals = []
        for task in tasks:
            if task.family != NAME:
                raise TaskFamilyError(
                    f"{NAME} vector env got a task of family {task.family!r}; "
                    f"sample tasks from the {NAME!r} family"
                )
            goals.append(_goal_of(task))
        self._pending_goal = np.repeat(np.asarray(goals, dtype=np.float64), envs_per_task, axis=0)
        self._tasks = list(tasks)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Put every sub-env (or those in ``options["reset_mask"]``) back at the origin."""
        super().reset(seed=seed if isinstance(seed, int) else None)
        if self._pending_goal is not None:
            self._goal = self._pending_goal
            self._pending_goal = None
        mask = None if options is None else options.get("reset_mask")
        if mask is None:
            self._pos[:] = 0.0
            self._elapsed[:] = 0
            self._terminated[:] = False
            self._truncated[:] = False
        else:
            mask = np.asarray(mask, dtype=np.bool_)
            if mask.shape != (self.num_envs,):
                raise ValueError(
                    f"{NAME}: options['reset_mask'] must have shape ({self.num_envs},), "
                    f"got {mask.shape}"
                )
            self._pos[mask] = 0.0
            self._elapsed[mask] = 0
            self._terminated[mask] = False
            self._truncated[mask] = False
        self._started = True
        return self._pos.astype(np.float32), {}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-env whose episode is still running; the others stay as they are."""
        if not self._started:
            raise RuntimeError(f"{NAME}: call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs, 2):
            raise ValueError(
                f"{NAME}: actions must have shape ({self.num_envs}, 2), got {actions.shape}"
            )
        active = ~(self._terminated | self._truncated)
        self._pos = np.where(active[:, None], _move(self._pos, actions, self.action_bound), self._pos)
        dist = _distance(self._pos, self._goal)
        rewards = np.where(active, -dist, 0.0)
        self._elapsed += active
        self._terminated |= active & (dist < GOAL_RADIUS)
        self._truncated |= active & (self._elapsed >= self.max_episode_steps)
        return (
            self._pos.astype(np.float32),
            rewards,
            self._terminated.copy(),
            self._truncated.copy(),
            {},
        )


class Navigation2DFamily(TaskFamily):
    """Goals uniform in ``[low, high]^2``; task params ``{"goal_x": .., "goal_y": ..}``.

    The test split draws from the same distribution as the train split (the paper has no split).
    ``action_bound`` is the bound of the policy's action (see the module docstring).
    """

    name = NAME

    def __init__(
        self,
        *,
        max_episode_steps: int = 100,
        low: float = -0.5,
        high: float = 0.5,
        action_bound: float = MAX_SPEED,
    ) -> None:
        super().__init__(max_episode_steps=check_int(NAME, "max_episode_steps", max_episode_steps))
        self.low, self.high = check_interval(NAME, ("low", "high"), low, high)
        self.action_bound = _check_bound(action_bound)
        self._action_space = _action_space(self.action_bound)

    @property
    def observation_space(self) -> gym.spaces.Box:
        return OBSERVATION_SPACE

    @property
    def action_space(self) -> gym.spaces.Box:
        return self._action_space

    def sample_tasks(
        self, n: int, rng: np.random.Generator, *, split: Split = "train"
    ) -> list[Task]:
        split = self._check_split(split)
        n = self._check_n(n)
        goals = rng.uniform(self.low, self.high, size=(n, 2))
        return [
            Task(NAME, split, i, {"goal_x": float(gx), "goal_y": float(gy)})
            for i, (gx, gy) in enumerate(goals)
        ]

    def make_env(self, task: Task) -> Navigation2DEnv:
        return Navigation2DEnv(task, max_episode_steps=self.max_episode_steps, action_bound=self.action_bound)

    def make_vector_env(self, tasks: Sequence[Task], envs_per_task: int) -> Navigation2DVectorEnv:
        return Navigation2DVectorEnv(
            tasks, envs_per_task, max_episode_steps=self.max_episode_steps, action_bound=self.action_bound
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "low": self.low, "high": self.high, "action_bound": self.action_bound}
