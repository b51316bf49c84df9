"""A batched vector env for the half-cheetah task families: one step of all sub-envs is a tight
loop of ``mujoco.mj_step`` calls, with observations, velocities and task rewards computed once
for the whole batch.

gymnasium's ``HalfCheetahEnv.step`` spends about as much time in Python around the simulator as
in the simulator itself (measured here: 41.6 µs a step, of which ``mj_step`` with 5 substeps is
22.8 µs): a shape check, the info dict, the control cost, the observation concatenation, the
``dt`` property and ``mj_rnePostConstraint``, which fills ``cacc``/``cfrc_int``/``cfrc_ext``
that the half-cheetah (no sensors, no contact cost) never reads.  :class:`CheetahVectorEnv`
keeps gymnasium's envs for everything but the step (construction, seeding, ``reset`` and its
noise, task switching through the package's :class:`~workers.envs.mujoco_env.MujocoTaskEnv`), and
steps their ``MjData`` directly:

* actions are clipped to the action space in float64, as :class:`MujocoTaskEnv` does (not
  clipped when the family's ``clip_actions`` is off);
* ``data.ctrl[:] = a`` and ``mujoco.mj_step(model, data, nstep=frame_skip)``, exactly
  gymnasium's ``MujocoEnv._step_mujoco_simulation`` without ``mj_rnePostConstraint`` (its outputs
  are not inputs of the dynamics);
* ``x_velocity = (x_after - x_before) / dt`` and the control cost ``w * sum(a**2)`` as
  ``HalfCheetahEnv.step`` computes them, then the family's task reward on the batch;
* the observation ``(qpos[1:], qvel)`` (``(qpos, qvel)`` with ``observe_position``) cast to
  float32, as ``MujocoTaskEnv`` returns it.

The result is bit for bit the single env's (``tests/workers/test_envs.py`` steps both side by
side), including the episode semantics of :class:`~workers.envs.vector.LeanVectorEnv`: an episode
is truncated after ``max_episode_steps``, and a finished sub-env holds (not stepped, reward 0)
until it is reset.  Between resets the vector env owns its sub-envs' episode bookkeeping: their
own ``step`` is not called, so their ``elapsed_steps`` stays at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import mujoco
import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from workers.envs.mujoco_env import MujocoTaskEnv
from workers.envs.vector import LeanVectorEnv

#: ``(x_velocity [n], ctrl_reward [n], task values [n]) -> task reward [n]``
BatchReward = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class CheetahVectorEnv(LeanVectorEnv):
    """Sub-envs are :class:`~workers.envs.mujoco_env.MujocoTaskEnv` over gymnasium's
    ``HalfCheetahEnv``; steps go straight to their simulators.

    Args:
        env_fns: one callable per sub-env returning a ``MujocoTaskEnv`` of a half-cheetah family.
        batch_reward: the family's task reward of a batch of steps.
        copy: as :class:`LeanVectorEnv`.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], Any]],
        *,
        batch_reward: BatchReward,
        copy: bool = True,
    ) -> None:
        super().__init__(env_fns, info_keys=(), copy=copy)
        self._batch_reward = batch_reward
        self._task_envs = [cast(MujocoTaskEnv, env) for env in self.envs]
        inner = [cast(HalfCheetahEnv, env.env) for env in self._task_envs]
        first = inner[0]
        self._models = [e.model for e in inner]
        self._datas = [e.data for e in inner]
        self._frame_skip = int(first.frame_skip)
        self._dt = float(first.dt)
        self._ctrl_weight = float(first._ctrl_cost_weight)
        self._horizon = int(self._task_envs[0].max_episode_steps)
        self._low, self._high = self._task_envs[0].action_bounds  # ±inf when the family does not clip
        n = self.num_envs
        self._nq = int(first.model.nq)
        #: the first observed qpos entry: 1 (root x left out, gymnasium's default) or 0
        self._qpos_from = 1 if first._exclude_current_positions_from_observation else 0
        self._qpos = np.zeros((n, self._nq), np.float64)
        self._qvel = np.zeros((n, int(first.model.nv)), np.float64)
        self._values = np.zeros(n, np.float64)

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """As :meth:`LeanVectorEnv.reset` (through each sub-env's own ``reset``), then read the
        reset simulators' positions and the sub-envs' (possibly new) task values."""
        out = super().reset(seed=seed, options=options)
        for i in self._reset_indices(options):
            self._qpos[i] = self._datas[i].qpos
            self._values[i] = self._task_envs[i].task_value
        return out

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every running sub-env's simulator with its row of ``actions``."""
        self._check_step(actions)
        a = np.minimum(np.maximum(np.asarray(actions, dtype=np.float64), self._low), self._high)
        self._rewards.fill(0.0)
        which, sel = self._running_indices()
        if which:
            qpos, qvel, models, datas, nstep = self._qpos, self._qvel, self._models, self._datas, self._frame_skip
            x_before = qpos[sel, 0].copy()  # the last step's (or the reset's) root x
            step = mujoco.mj_step
            for i in which:
                d = datas[i]
                d.ctrl[:] = a[i]
                step(models[i], d, nstep=nstep)
                qpos[i] = d.qpos
                qvel[i] = d.qvel
            x_velocity = (qpos[sel, 0] - x_before) / self._dt
            ctrl_reward = -(self._ctrl_weight * np.sum(np.square(a[sel]), axis=-1))
            self._rewards[sel] = self._batch_reward(x_velocity, ctrl_reward, self._values[sel])
            obs = self._obs
            k = self._nq - self._qpos_from
            obs[sel, :k] = qpos[sel, self._qpos_from :]
            obs[sel, k:] = qvel[sel]
            self._advance(which, sel, self._horizon)
        return self._step_results({})
