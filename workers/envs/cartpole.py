"""``cartpole-physics``: CartPole-v1 with a varied pole (half-)length and pole mass.

A task is a pole half-length ``length`` uniform in ``[0.25, 1.0]`` (CartPole's default is 0.5)
and a pole mass ``masspole`` uniform in ``[0.05, 0.5]`` (default 0.1).  The task is applied to
the unwrapped ``CartPoleEnv`` together with the quantities its dynamics derive from them
(``total_mass = masspole + masscart``, ``polemass_length = masspole * length``), as in Barto,
Sutton & Anderson (1983) and gymnasium's implementation of it.  Actions are ``Discrete(2)``,
the reward 1 per step, and episodes are truncated at ``max_episode_steps`` (default 200).

No published split exists: the test split draws from the same distribution.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from workers.envs.base import Split, Task, TaskFamily, TaskFamilyError
from workers.envs.common import EpisodicTaskEnv, check_int, check_interval, task_param

NAME = "cartpole-physics"

#: The envs' spaces (CartPole-v1's).
_PROTOTYPE = CartPoleEnv()
OBSERVATION_SPACE: gym.spaces.Box = _PROTOTYPE.observation_space  # type: ignore[assignment]
ACTION_SPACE: gym.spaces.Discrete = _PROTOTYPE.action_space  # type: ignore[assignment]
del _PROTOTYPE


def _physics_of(task: Task) -> tuple[float, float]:
    if task.family != NAME:
        raise TaskFamilyError(
            f"{NAME}: got a task of family {task.family!r}; sample tasks from the {NAME!r} family"
        )
    length = task_param(task, "length", NAME)
    masspole = task_param(task, "masspole", NAME)
    if length <= 0 or masspole <= 0:
        raise TaskFamilyError(
            f"{NAME}: task length and masspole must be > 0, got {length} and {masspole}"
        )
    return length, masspole


class CartPoleTaskEnv(EpisodicTaskEnv):
    """CartPole-v1 dynamics with the task's pole; the inner env is never stepped after the end
    of an episode (so CartPole's "step after terminated" warning does not occur)."""

    family_name = NAME

    def __init__(self, task: Task, *, max_episode_steps: int = 200) -> None:
        super().__init__(task, max_episode_steps=max_episode_steps)
        self.env = CartPoleEnv()
        self.observation_space = copy.deepcopy(OBSERVATION_SPACE)
        self.action_space = copy.deepcopy(ACTION_SPACE)
        self._apply_task(task)

    def _check_task(self, task: Task) -> None:
        _physics_of(task)

    def _apply_task(self, task: Task) -> None:
        length, masspole = _physics_of(task)
        env = self.env.unwrapped
        env.length = length  # type: ignore[attr-defined]
        env.masspole = masspole  # type: ignore[attr-defined]
        env.total_mass = masspole + env.masscart  # type: ignore[attr-defined]
        env.polemass_length = masspole * length  # type: ignore[attr-defined]

    def _reset_inner(
        self, *, seed: int | None, options: dict[str, Any] | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        return self.env.reset(seed=seed, options=options)

    def _step_inner(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(int(action))
        return obs, float(reward), bool(terminated), bool(truncated), info

    def render(self) -> Any:
        """The inner CartPole's render (None unless it was built with a render mode)."""
        return self.env.render()

    def close(self) -> None:
        """Close the inner env."""
        self.env.close()
        super().close()


class CartPolePhysicsFamily(TaskFamily):
    """CartPole with ``{"length": .., "masspole": ..}`` uniform in the given ranges."""

    name = NAME

    def __init__(
        self,
        *,
        max_episode_steps: int = 200,
        length_low: float = 0.25,
        length_high: float = 1.0,
        masspole_low: float = 0.05,
        masspole_high: float = 0.5,
    ) -> None:
        super().__init__(max_episode_steps=check_int(NAME, "max_episode_steps", max_episode_steps))
        self.length_low, self.length_high = check_interval(
            NAME, ("length_low", "length_high"), length_low, length_high, min_low=1e-3
        )
        self.masspole_low, self.masspole_high = check_interval(
            NAME, ("masspole_low", "masspole_high"), masspole_low, masspole_high, min_low=1e-3
        )

    @property
    def observation_space(self) -> gym.spaces.Box:
        return OBSERVATION_SPACE

    @property
    def action_space(self) -> gym.spaces.Discrete:
        return ACTION_SPACE

    def sample_tasks(
        self, n: int, rng: np.random.Generator, *, split: Split = "train"
    ) -> list[Task]:
        split = self._check_split(split)
        n = self._check_n(n)
        lengths = rng.uniform(self.length_low, self.length_high, size=n)
        masses = rng.uniform(self.masspole_low, self.masspole_high, size=n)
        return [
            Task(NAME, split, i, {"length": float(length), "masspole": float(mass)})
            for i, (length, mass) in enumerate(zip(lengths, masses, strict=True))
        ]

    def make_env(self, task: Task) -> CartPoleTaskEnv:
        return CartPoleTaskEnv(task, max_episode_steps=self.max_episode_steps)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "length_low": self.length_low,
            "length_high": self.length_high,
            "masspole_low": self.masspole_low,
            "masspole_high": self.masspole_high,
        }
