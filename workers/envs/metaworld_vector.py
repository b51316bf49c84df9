"""A batched vector env for the Meta-World families: the sub-envs' simulators are stepped in one
tight loop, and the parts of Meta-World's ``step`` that are the same for every env (the mocap
move, the observation, its clipping) are computed once for the batch.

Meta-World 3's ``SawyerXYZEnv.step`` costs about 270 µs here, of which ``mj_step`` (5 substeps)
is about 65 µs and ``mj_forward`` 12 µs: the rest is Python around the simulator, above all the
observation (about 110 µs, half of it one ``scipy`` ``Rotation.from_matrix(...).as_quat()`` per
step for the object's orientation) and the reward.  :class:`MetaWorldVectorEnv` keeps Meta-World's envs for everything
but the step (construction, tasks, ``reset``), and for every running sub-env does what
``step`` does, in the same order and with the same floating-point operations:

1. the mocap move: ``clip(a[:3], -1, 1) * action_scale`` added to the mocap position, the
   first mocap clipped to ``[mocap_low, mocap_high]``, the mocap orientation reset;
2. the gripper: ``ctrl = (a[3], -a[3])``, ``mujoco.mj_step(model, data, nstep=frame_skip)``
   (gymnasium's ``MujocoEnv.do_simulation`` without ``mj_rnePostConstraint``, whose outputs
   ``cacc``/``cfrc_int``/``cfrc_ext`` no Meta-World env reads), then ``mj_forward`` (which
   Meta-World calls; it is not only a read-out: skipping it changes the next step's dynamics);
3. the observation: hand position, gripper opening ``clip(|right - left| / 0.1, 0, 1)``, the
   objects' positions and orientations padded to 14, the previous step's 18 values, the goal
   (zeros when partially observable), clipped to ``sawyer_observation_space``;
4. the reward and ``success`` from the env's own ``evaluate_state``, except for the classes
   with a batched kernel (``reach-v3``), whose object pose and reward are computed for the
   batch (one ``Rotation.from_matrix`` for the batch, ``_reach_reward``: the same formulas,
   the same operations).

The sites Meta-World re-positions after the simulation are left alone: ``mj_forward``
recomputes every site's position right after, overwriting them.  Norms are taken with
``np.vecdot`` (the same dot product ``np.linalg.norm`` takes of a single vector; a sum of
squares can differ in the last bit), and the reach reward's square with ``math.pow`` (libm's
``pow``, which numpy uses for a scalar's ``** 2``; an array's ``** 2`` is a multiplication).
The Meta-World envs' own episode state (``curr_path_length``, ``_prev_obs``) is kept up to date,
so a later ``reset`` or single ``step`` sees what Meta-World's own ``step`` would have left (but
for ``_last_stable_obs``, which Meta-World only reads after a simulator exception, and its v3
envs never record one).

The result is bit for bit the single envs' (``tests/workers/test_envs.py`` steps both side by
side, on ML1 reach and on ML10, whose classes take the generic path), including the episode
semantics of :class:`~workers.envs.vector.LeanVectorEnv`: an episode is truncated after
``max_episode_steps`` (or Meta-World's 500), and a finished sub-env holds (not stepped, reward
0) until it is reset.  Between resets the vector env owns the wrappers' episode bookkeeping: the
wrappers' own ``step`` is not called, so their ``elapsed_steps`` stays at 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import mujoco
import numpy as np

from workers.envs.metaworld_env import MetaWorldTaskEnv
from workers.envs.vector import LeanVectorEnv

#: the mocap orientation ``set_xyz_action`` writes on every step
_MOCAP_QUAT = np.array([1.0, 0.0, 1.0, 0.0])
#: values per step in Meta-World's observation: hand 3, gripper 1, objects padded to 14
_CURR = 18
_OBJ_MAX = 14
#: the reach reward's target radius and its ``long_tail`` sigmoid's value at the margin
_REACH_RADIUS = 0.05
_VALUE_AT_MARGIN = 0.1


def _norms(v: np.ndarray) -> np.ndarray:
    """Row norms equal to ``np.linalg.norm`` of each row, bit for bit."""
    return np.sqrt(np.vecdot(v, v))


@functools.cache
def _reach_class() -> Any:
    """Meta-World's reach-v3 env class.  Meta-World and scipy are imported on first use, not with
    this module: the family module imports it, and importing them takes about half a second."""
    from metaworld.envs.sawyer_reach_v3 import SawyerReachEnvV3

    return SawyerReachEnvV3


@functools.cache
def _rotation() -> Any:
    """scipy's ``Rotation`` (imported on first use, see :func:`_reach_class`)."""
    from scipy.spatial.transform import Rotation

    return Rotation


def _is_reach(env: Any) -> bool:
    return type(env) is _reach_class() and env.reward_function_version == "v2"


class _Slot:
    """One sub-env's active Meta-World env and the views of its ``MjData`` a step touches
    (refreshed when the sub-env is reset: a reset may switch its Meta-World class)."""

    __slots__ = ("bodies", "ctrl", "data", "frame_skip", "geom", "mocap_pos", "mocap_quat", "model", "mw",
                 "reach", "sites", "xmat", "xpos", "site_xpos")

    def __init__(self, mw: Any) -> None:
        model, data = mw.model, mw.data
        if int(model.nmocap) != 1:
            raise ValueError(f"{type(mw).__name__}: expected one mocap body, the model has {model.nmocap}")
        self.mw, self.model, self.data = mw, model, data
        self.frame_skip = int(mw.frame_skip)
        self.reach = _is_reach(mw)
        self.mocap_pos, self.mocap_quat, self.ctrl = data.mocap_pos[0], data.mocap_quat[0], data.ctrl
        self.xpos, self.xmat, self.site_xpos = data.xpos, data.geom_xmat, data.site_xpos
        names = ["hand", "rightclaw", "leftclaw"] + (["obj"] if self.reach else [])
        self.bodies = np.array([model.body(name).id for name in names])
        self.geom = model.geom("objGeom").id if self.reach else -1
        self.sites = (
            np.array([model.site("rightEndEffector").id, model.site("leftEndEffector").id]) if self.reach else None
        )


class MetaWorldVectorEnv(LeanVectorEnv):
    """Sub-envs are :class:`~workers.envs.metaworld_env.MetaWorldTaskEnv`; steps go straight to
    their active Meta-World env's simulator.

    Args:
        env_fns: one callable per sub-env returning a ``MetaWorldTaskEnv``.
        copy: as :class:`LeanVectorEnv`.
    """

    def __init__(self, env_fns: Sequence[Callable[[], Any]], *, copy: bool = True) -> None:
        super().__init__(env_fns, info_keys=("success",), copy=copy)
        n = self.num_envs
        self._task_envs = [cast(MetaWorldTaskEnv, env) for env in self.envs]
        self._horizon = int(self._task_envs[0].max_episode_steps)
        self._slots: list[_Slot | None] = [None] * n
        self._scale = np.zeros(n)
        self._mocap = np.zeros((n, 3))  # the mocap body's position (Meta-World's arm has one)
        self._mocap_low = np.zeros((n, 3))
        self._mocap_high = np.zeros((n, 3))
        self._obs_low = np.zeros((n, 2 * _CURR + 3))
        self._obs_high = np.zeros((n, 2 * _CURR + 3))
        self._prev = np.zeros((n, _CURR))
        self._goal = np.zeros((n, 3))  # the observed goal: zeros when partially observable
        self._target = np.zeros((n, 3))
        self._margin = np.zeros(n)  # reach: |hand_init_pos - target|
        self._reach = np.zeros(n, np.bool_)
        # the step that ends an episode: the horizon, or Meta-World's own (500) if that is sooner
        self._limit = np.zeros(n, np.int64)
        # per-step work buffers
        self._obs64 = np.zeros((n, 2 * _CURR + 3))
        self._bodies = np.zeros((n, 4, 3))
        self._ee = np.zeros((n, 2, 3))
        self._xmat = np.zeros((n, 9))
        self._success = self._info_values["success"]
        self._success_present = self._info_present["success"]

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """As :meth:`LeanVectorEnv.reset` (through each sub-env's own ``reset``), then read each
        reset sub-env's active Meta-World env: its constants, goal and last observation."""
        out = super().reset(seed=seed, options=options)
        for i in self._reset_indices(options):
            mw = self._task_envs[i].active_env
            slot = self._slots[i]
            if slot is None or slot.mw is not mw:
                slot = self._slots[i] = _Slot(mw)
            self._reach[i] = slot.reach
            self._mocap[i] = mw.data.mocap_pos[0]
            self._scale[i] = mw.action_scale
            self._mocap_low[i] = mw.mocap_low
            self._mocap_high[i] = mw.mocap_high
            space = mw.sawyer_observation_space
            self._obs_low[i] = space.low
            self._obs_high[i] = space.high
            self._limit[i] = min(self._horizon, int(mw.max_path_length))
            self._prev[i] = mw._prev_obs
            target = mw._get_pos_goal()
            self._target[i] = target
            self._goal[i] = np.zeros_like(target) if mw._partially_observable else target
            if slot.reach:
                self._margin[i] = float(np.linalg.norm(mw.hand_init_pos - target))
        return out

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every running sub-env with its row of ``actions``; finished sub-envs hold.

        Deliberately one function (the hot loop of Meta-World sampling): the batched mocap move,
        the simulator steps and the batched observation run in sequence over the same arrays,
        and splitting them would add calls and temporaries on every env step."""
        self._check_step(actions)
        actions = np.asarray(actions)
        self._rewards.fill(0.0)
        which, sel = self._running_indices()
        if not which:
            return self._step_results(self._infos())
        m = len(which)
        a = actions[sel]
        # 1. the mocap move (set_xyz_action), in the actions' own dtype as Meta-World computes it
        clipped = np.clip(a[:, :3], -1, 1)
        scales = self._scale[sel]
        if (scales == scales[0]).all():
            delta = clipped * float(scales[0])
        else:
            delta = np.stack([row * float(s) for row, s in zip(clipped, scales, strict=True)])
        mocap = np.clip(self._mocap[sel] + delta, self._mocap_low[sel], self._mocap_high[sel])
        self._mocap[sel] = mocap
        ctrl = np.empty((m, 2))
        ctrl[:, 0] = a[:, 3]
        ctrl[:, 1] = -a[:, 3]
        # 2. the simulators, and the positions the observation and the reward read
        bodies, ee, xmat = self._bodies, self._ee, self._xmat
        step, forward = mujoco.mj_step, mujoco.mj_forward
        for j, i in enumerate(which):
            slot = cast(_Slot, self._slots[i])
            mw, model, data = slot.mw, slot.model, slot.data
            slot.mocap_pos[:] = mocap[j]
            slot.mocap_quat[:] = _MOCAP_QUAT
            if mw.curr_path_length >= mw.max_path_length:
                raise ValueError("You must reset the env manually once truncate==True")
            slot.ctrl[:] = ctrl[j]
            step(model, data, nstep=slot.frame_skip)
            mw.curr_path_length += 1
            forward(model, data)
            if slot.reach:
                bodies[j] = slot.xpos[slot.bodies]
                ee[j] = slot.site_xpos[slot.sites]
                xmat[j] = slot.xmat[slot.geom]
            else:
                bodies[j, :3] = slot.xpos[slot.bodies]
        reach = self._reach[sel]
        generic = np.flatnonzero(~reach).tolist()
        # the reach rows, within the batch (r) and within the vector env (rows): slices when all
        r: Any = slice(None) if not generic else np.flatnonzero(reach)
        rows: Any = sel if not generic else np.asarray(which)[r]
        nr = m - len(generic)
        # 3. the observation, for the batch
        obs = self._obs64[:m]
        obs[:, :3] = bodies[:m, 0]
        diff = bodies[:m, 1] - bodies[:m, 2]
        obs[:, 3] = np.clip(_norms(diff) / 0.1, 0.0, 1.0)
        objs = obs[:, 4:_CURR]
        objs[:] = 0.0
        if nr:
            objs[r, :3] = bodies[:m, 3][r]
            objs[r, 3:7] = _rotation().from_matrix(xmat[:m][r].reshape(nr, 3, 3)).as_quat()
        for j in generic:
            objs[j] = self._objects(cast(_Slot, self._slots[which[j]]).mw)
        obs[:, _CURR : 2 * _CURR] = self._prev[sel]
        obs[:, 2 * _CURR :] = self._goal[sel]
        np.clip(obs, self._obs_low[sel], self._obs_high[sel], out=obs)
        curr = obs[:, :_CURR].copy()
        self._prev[sel] = curr
        for j, i in enumerate(which):
            cast(_Slot, self._slots[i]).mw._prev_obs = curr[j]
        # 4. reward and success
        rewards = self._rewards
        if nr:
            tcp = (ee[:m, 0][r] + ee[:m, 1][r]) / 2.0
            rewards[rows], self._success[rows] = _reach_reward(tcp, self._target[rows], self._margin[rows])
        for j in generic:
            i = which[j]
            reward, info = cast(_Slot, self._slots[i]).mw.evaluate_state(obs[j].copy(), actions[i])
            rewards[i] = float(reward)
            self._success[i] = float(info.get("success", 0.0))
        self._success_present[sel] = True
        self._obs[sel] = obs
        self._advance(which, sel, self._limit[sel])
        return self._step_results(self._infos())

    @staticmethod
    def _objects(mw: Any) -> np.ndarray:
        """The 14 padded object values of ``_get_curr_obs_combined_no_goal`` from the env's own
        ``_get_pos_objects`` / ``_get_quat_objects``: ``(pos, quat)`` per object."""
        pos = np.asarray(mw._get_pos_objects())
        quat = np.asarray(mw._get_quat_objects())
        k = len(pos) // 3
        if len(pos) != 3 * k or len(quat) != 4 * k:
            raise ValueError(f"{type(mw).__name__}: {len(pos)} object positions and {len(quat)} quaternion values")
        out = np.zeros(_OBJ_MAX)
        rows = out[: 7 * k].reshape(k, 7)
        rows[:, :3] = pos.reshape(k, 3)
        rows[:, 3:] = quat.reshape(k, 4)
        return out


def _reach_reward(tcp: np.ndarray, target: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """reach-v3's reward (``reward_function_version="v2"``) and success for a batch: the
    ``long_tail`` tolerance of the gripper centre's distance to the target (Tassa et al. 2018's
    ``rewards.tolerance``, as Meta-World uses it) within the target radius, scaled by 10."""
    dist = _norms(tcp - target)
    in_bounds = np.logical_and(0.0 <= dist, dist <= _REACH_RADIUS)
    scale = np.sqrt(1 / _VALUE_AT_MARGIN - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(dist < 0.0, 0.0 - dist, dist - _REACH_RADIUS) / margin
    # Meta-World squares a numpy scalar, which goes through libm's pow: ``x ** 2`` of an array
    # (a multiplication) differs from it in the last bit about once in 1,300 values
    tail = np.array([1 / (math.pow(x, 2) + 1) for x in (d * scale).tolist()])
    value = np.where(in_bounds, 1.0, np.where(margin == 0, 0.0, tail))
    return 10 * value, (dist <= _REACH_RADIUS).astype(np.float64)
