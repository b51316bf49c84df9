"""Locomotion task families on gymnasium's MuJoCo v5 envs (Finn et al. 2017, MAML, sec. 5.3).

* ``halfcheetah-vel``: a goal velocity ``v`` uniform in ``[0, 2]``;
  reward ``-|x_velocity - v| - 0.05 * ||a||^2``.
* ``halfcheetah-dir``: a direction ``d`` in ``{-1, +1}``; reward ``d * x_velocity - 0.05 * ||a||^2``.
* ``ant-dir``: a direction ``d`` in ``{-1, +1}`` on Ant-v5; reward
  ``d * x_velocity + healthy_reward - ctrl_cost - contact_cost``.

The 0.05 control-cost weight of the cheetah follows the rllab environments the MAML paper used
(HalfCheetah-v5 is built with ``ctrl_cost_weight=0.05``); the ant keeps Ant-v5's defaults.  The
task reward is recomputed from the info fields the v5 envs report (``x_velocity``,
``reward_ctrl``, ``reward_survive``, ``reward_contact``), so it always matches the simulator step.

Actions are clipped to the action space (``[-1, 1]``) before they reach the simulator, so the
control cost is that of the applied action, as in rllab's normalized envs.  Observations are
cast to float32.  Episodes are truncated at ``max_episode_steps`` (H = 200 in the paper).

Two parameters bring the envs closer to the paper's rllab envs (``rllab/envs/mujoco`` in the
MAML code): ``observe_position`` puts the root's x position in the observation (rllab's
cheetah observes the torso's position; gymnasium's v5 envs leave it out), and ``frame_skip``
sets the simulator steps of 0.01 s per env step (rllab's cheetah: 1, so an episode of 200 steps
is 2 s; gymnasium's: 5).  Both default to gymnasium's behaviour.  ``clip_actions=False`` leaves
actions unclipped (MuJoCo clamps the controls to ``[-1, 1]``; the control cost is that of the
unclipped action), as pytorch-maml-rl's cheetah envs do.

The paper gives no train/test split: ``halfcheetah-vel``'s test split draws from the same
distribution, and the direction families draw directions uniformly from ``{-1, +1}`` in both
splits (there are only two tasks).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from workers.envs.base import Split, Task, TaskFamily, TaskFamilyError, env_thunks
from workers.envs.common import (
    check_bool,
    check_float,
    check_int,
    check_interval,
    task_param,
)
from workers.envs.mujoco_env import (
    CHEETAH_CTRL_COST_WEIGHT,
    DEFAULT_FRAME_SKIP,
    DEFAULT_HORIZON,
    MujocoTaskEnv,
    Values,
    _spaces,
    ant_direction_reward,
    direction_reward,
    velocity_reward,
)
from workers.envs.mujoco_vector import CheetahVectorEnv

__all__ = [
    "CHEETAH_CTRL_COST_WEIGHT",
    "DEFAULT_FRAME_SKIP",
    "DEFAULT_HORIZON",
    "AntDirFamily",
    "HalfCheetahDirFamily",
    "HalfCheetahVelFamily",
    "MujocoFamily",
    "MujocoTaskEnv",
    "Values",
    "ant_direction_reward",
    "direction_reward",
    "velocity_reward",
]


class MujocoFamily(TaskFamily):
    """A MuJoCo task family: one robot, one scalar task parameter (``param``)."""

    #: key into :mod:`workers.envs.mujoco_env`'s ``_ROBOTS``.
    robot: str = ""
    #: the task parameter's name in ``Task.params``.
    param: str = ""

    def __init__(
        self,
        *,
        max_episode_steps: int = DEFAULT_HORIZON,
        observe_position: bool = False,
        frame_skip: int = DEFAULT_FRAME_SKIP,
        clip_actions: bool = True,
    ) -> None:
        super().__init__(
            max_episode_steps=check_int(self.name, "max_episode_steps", max_episode_steps)
        )
        #: clip actions to ``[-1, 1]`` before the simulator and the control cost (rllab's
        #: ``normalize``); unclipped, MuJoCo clamps the controls and the control cost is that of
        #: the policy's action, as in pytorch-maml-rl's envs
        self.clips_actions = check_bool(self.name, "clip_actions", clip_actions)
        #: the root's horizontal position in the observation (gymnasium's v5 envs leave it out)
        self.observe_position = check_bool(self.name, "observe_position", observe_position)
        #: simulator steps (of 0.01 s) per env step
        self.frame_skip = check_int(self.name, "frame_skip", frame_skip, low=1, high=50)

    @property
    def observation_space(self) -> gym.spaces.Box:
        return _spaces(self.robot, self.observe_position)[0]

    @property
    def action_space(self) -> gym.spaces.Box:
        return _spaces(self.robot, self.observe_position)[1]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "observe_position": self.observe_position,
            "frame_skip": self.frame_skip,
            "clip_actions": self.clips_actions,
        }

    def sample_tasks(
        self, n: int, rng: np.random.Generator, *, split: Split = "train"
    ) -> list[Task]:
        split = self._check_split(split)
        n = self._check_n(n)
        values = self._sample_values(n, rng)
        return [Task(self.name, split, i, {self.param: float(v)}) for i, v in enumerate(values)]

    def make_env(self, task: Task) -> MujocoTaskEnv:
        return MujocoTaskEnv(self, task)

    def task_value(self, task: Task) -> float:
        """The task's parameter, checked."""
        if task.family != self.name:
            raise TaskFamilyError(
                f"{self.name}: got a task of family {task.family!r}; "
                f"sample tasks from the {self.name!r} family"
            )
        value = task_param(task, self.param, self.name)
        self._check_value(value)
        return value

    @abc.abstractmethod
    def _sample_values(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    @abc.abstractmethod
    def _check_value(self, value: float) -> None: ...

    @abc.abstractmethod
    def task_reward(self, info: dict[str, Any], value: float) -> float:
        """The task reward of one step from the inner env's ``info``."""


class _CheetahFamily(MujocoFamily):
    """The half-cheetah families: their vector env steps the simulators directly
    (:class:`~workers.envs.mujoco_vector.CheetahVectorEnv`, the single env's results bit for bit)."""

    robot = "half_cheetah"

    @abc.abstractmethod
    def step_reward(self, x_velocity: Values, ctrl_reward: Values, value: Values) -> Values:
        """The task reward from the x-velocity and the control reward, of one step (the single
        env) or of a batch of steps (the vector env; ``value``: each sub-env's task parameter)."""

    def task_reward(self, info: dict[str, Any], value: float) -> float:
        return float(self.step_reward(float(info["x_velocity"]), float(info["reward_ctrl"]), value))

    def make_vector_env(self, tasks: Sequence[Task], envs_per_task: int) -> gym.vector.VectorEnv:
        return CheetahVectorEnv(env_thunks(self, tasks, envs_per_task), batch_reward=self.step_reward)


class HalfCheetahVelFamily(_CheetahFamily):
    """HalfCheetah-v5 running at a goal velocity uniform in ``[velocity_low, velocity_high]``.

    Task params ``{"velocity": v}``; the test split draws from the same distribution.
    """

    name = "halfcheetah-vel"
    param = "velocity"

    def __init__(self, *, velocity_low: float = 0.0, velocity_high: float = 2.0, **kwargs: Any) -> None:
        """``kwargs``: :class:`MujocoFamily`'s parameters."""
        super().__init__(**kwargs)
        self.velocity_low, self.velocity_high = check_interval(
            self.name, ("velocity_low", "velocity_high"), velocity_low, velocity_high
        )

    def _sample_values(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.velocity_low, self.velocity_high, size=n)

    def _check_value(self, value: float) -> None:
        check_float(self.name, "velocity", value)

    def step_reward(self, x_velocity: Values, ctrl_reward: Values, value: Values) -> Values:
        return velocity_reward(x_velocity, ctrl_reward, value)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "velocity_low": self.velocity_low,
            "velocity_high": self.velocity_high,
        }


class _DirectionFamily(MujocoFamily):
    """Forward/backward running: ``{"direction": d}`` with ``d`` uniform in ``{-1, +1}``."""

    param = "direction"

    def _sample_values(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(np.array([-1.0, 1.0]), size=n)

    def _check_value(self, value: float) -> None:
        if value not in (-1.0, 1.0):
            raise TaskFamilyError(f"{self.name}: direction must be -1.0 or 1.0, got {value}")


class HalfCheetahDirFamily(_DirectionFamily, _CheetahFamily):
    """HalfCheetah-v5 running forward (``direction=1``) or backward (``-1``)."""

    name = "halfcheetah-dir"

    def step_reward(self, x_velocity: Values, ctrl_reward: Values, value: Values) -> Values:
        return direction_reward(x_velocity, ctrl_reward, value)


class AntDirFamily(_DirectionFamily):
    """Ant-v5 running forward (``direction=1``) or backward (``-1``) along x."""

    name = "ant-dir"
    robot = "ant"

    def task_reward(self, info: dict[str, Any], value: float) -> float:
        return ant_direction_reward(info, value)
