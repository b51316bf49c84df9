"""The single-task env of the locomotion families (:mod:`workers.envs.mujoco`) and what it shares
with their vector env (:mod:`workers.envs.mujoco_vector`): the robots, their spaces, the
control-cost weight and the task rewards.

The task reward is recomputed from the info fields gymnasium's v5 envs report (``x_velocity``,
``reward_ctrl``, ``reward_survive``, ``reward_contact``), so it always matches the simulator step.
Actions are clipped to the action space (``[-1, 1]``) before they reach the simulator, unless the
family's ``clip_actions`` is off; observations are cast to float32.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Protocol, TypeVar

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from workers.envs.base import Task
from workers.envs.common import EpisodicTaskEnv, float32_box

#: rllab's control-cost weight for the half-cheetah tasks (MAML sec. 5.3).
CHEETAH_CTRL_COST_WEIGHT = 0.05
DEFAULT_HORIZON = 200
#: gymnasium's v5 envs: 5 simulator steps of 0.01 s per env step (the MAML paper's rllab envs: 1)
DEFAULT_FRAME_SKIP = 5


def _make_half_cheetah(observe_position: bool, frame_skip: int) -> MujocoEnv:
    return HalfCheetahEnv(
        ctrl_cost_weight=CHEETAH_CTRL_COST_WEIGHT,
        exclude_current_positions_from_observation=not observe_position,
        frame_skip=frame_skip,
    )


def _make_ant(observe_position: bool, frame_skip: int) -> MujocoEnv:
    return AntEnv(exclude_current_positions_from_observation=not observe_position, frame_skip=frame_skip)


_ROBOTS = {"half_cheetah": _make_half_cheetah, "ant": _make_ant}


@functools.cache
def _spaces(robot: str, observe_position: bool) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """(float32 observation space, action space) of ``robot``, read once from a prototype env."""
    env = _ROBOTS[robot](observe_position, DEFAULT_FRAME_SKIP)
    try:
        return float32_box(env.observation_space), env.action_space  # type: ignore[return-value]
    finally:
        env.close()


#: one step's values (floats) or a batch of steps' (float64 arrays): the same operations either way
Values = TypeVar("Values", float, np.ndarray)


def velocity_reward(x_velocity: Values, ctrl_reward: Values, velocity: Values) -> Values:
    """``-|x_velocity - velocity| + ctrl_reward`` (``ctrl_reward`` is minus the control cost)."""
    return -abs(x_velocity - velocity) + ctrl_reward


def direction_reward(x_velocity: Values, ctrl_reward: Values, direction: Values) -> Values:
    """``direction * x_velocity + ctrl_reward``."""
    return direction * x_velocity + ctrl_reward


def ant_direction_reward(info: dict[str, Any], direction: float) -> float:
    """``direction * x_velocity + reward_survive + reward_ctrl + reward_contact`` (Ant-v5 info)."""
    return (
        direction * float(info["x_velocity"])
        + float(info["reward_survive"])
        + float(info["reward_ctrl"])
        + float(info["reward_contact"])
    )


class MujocoTaskSource(Protocol):
    """What :class:`MujocoTaskEnv` reads of its family (a :class:`~workers.envs.mujoco.MujocoFamily`)."""

    @property
    def name(self) -> str: ...

    @property
    def max_episode_steps(self) -> int: ...

    @property
    def robot(self) -> str:
        """A key of ``_ROBOTS``."""

    @property
    def observe_position(self) -> bool: ...

    @property
    def frame_skip(self) -> int: ...

    @property
    def clips_actions(self) -> bool: ...

    def task_value(self, task: Task) -> float:
        """The task's parameter, checked."""

    def task_reward(self, info: dict[str, Any], value: float) -> float:
        """The task reward of one step from the inner env's ``info``."""


class MujocoTaskEnv(EpisodicTaskEnv):
    """A gymnasium MuJoCo env whose reward is the task reward recomputed from its info.

    The simulator's own reward is kept in ``info["env_reward"]``; ``info["task_reward"]`` is the
    returned reward.
    """

    def __init__(self, family: MujocoTaskSource, task: Task) -> None:
        self.family_name = family.name
        self._family = family
        super().__init__(task, max_episode_steps=family.max_episode_steps)
        self.env: MujocoEnv = _ROBOTS[family.robot](family.observe_position, family.frame_skip)
        obs_space, action_space = _spaces(family.robot, family.observe_position)
        self.observation_space = copy.deepcopy(obs_space)
        self.action_space = copy.deepcopy(action_space)
        self.clips_actions = family.clips_actions
        low, high = action_space.low.astype(np.float64), action_space.high.astype(np.float64)
        if not family.clips_actions:  # infinite bounds: not clipped
            low, high = np.full_like(low, -np.inf), np.full_like(high, np.inf)
        #: the bounds actions are clipped to before the simulator
        self._low, self._high = low, high
        self._value = family.task_value(task)

    @property
    def task_value(self) -> float:
        """The active task's velocity or direction."""
        return self._value

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The float64 bounds actions are clipped to before the simulator (±inf when not clipped)."""
        return self._low, self._high

    def _check_task(self, task: Task) -> None:
        self._family.task_value(task)

    def _apply_task(self, task: Task) -> None:
        self._value = self._family.task_value(task)

    def _reset_inner(
        self, *, seed: int | None, options: dict[str, Any] | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        return obs.astype(np.float32), info

    def _step_inner(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        # np.minimum/np.maximum: same result as np.clip at a fraction of its call overhead
        action = np.minimum(np.maximum(np.asarray(action, dtype=np.float64), self._low), self._high)
        obs, env_reward, terminated, truncated, env_info = self.env.step(action)
        info: dict[str, Any] = dict(env_info)
        reward = self._family.task_reward(info, self._value)
        info["env_reward"] = float(env_reward)
        info["task_reward"] = reward
        return obs.astype(np.float32), reward, bool(terminated), bool(truncated), info

    def render(self) -> Any:
        """The inner MuJoCo env's render (None unless it was built with a render mode)."""
        return self.env.render()

    def close(self) -> None:
        """Close the simulator."""
        self.env.close()
        super().close()
