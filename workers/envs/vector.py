"""A lean synchronous vector env for the sampler: sub-envs stepped in a loop into preallocated
arrays, carrying only the info keys asked for.

gymnasium's ``SyncVectorEnv`` merges every info key of every sub-env into batched arrays on each
step (``VectorEnv._add_info``: for MuJoCo about ten keys per sub-env) and autoresets finished
sub-envs; on HalfCheetah that bookkeeping costs about a quarter of the simulator's own time.
The sampler only reads ``info["success"]``, and it masks everything a sub-env does after its
episode ended, so :class:`LeanVectorEnv`

* steps each running sub-env once and writes observation, reward and flags straight into
  arrays allocated once;
* batches only ``info_keys`` (as ``info[key]`` plus gymnasium's ``info["_" + key]`` presence
  mask), every other info key is dropped;
* does not autoreset (``metadata["autoreset_mode"]`` is ``AutoresetMode.DISABLED``): a sub-env
  whose episode ended is not stepped again until it is reset (all of them, or those in
  ``options["reset_mask"]``); until then a step reports its last observation, flags and info
  values again, with reward ``0.0`` -- the same convention as the package's single envs
  (:class:`~workers.envs.common.EpisodicTaskEnv`) and ``Navigation2DVectorEnv``.

It is a ``gymnasium.vector.VectorEnv`` (spaces, ``envs``, ``call``/``get_attr``/``set_attr``,
``close``), so :func:`~workers.envs.base.set_vector_tasks` and other vector-env code work on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space


class LeanVectorEnv(gym.vector.VectorEnv):
    """Sub-envs built by ``env_fns`` and stepped in order in this process.

    Args:
        env_fns: one callable per sub-env returning a gymnasium env with a ``Box`` observation
            space; all sub-envs must have equal observation and action spaces.
        info_keys: info keys carried into the step's info (as float64 arrays with a ``_key``
            presence mask); a key no sub-env reported on a step is left out of that step's info.
        copy: return copies of the observation/reward/flag arrays (else the internal buffers,
            overwritten by the next step).
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        *,
        info_keys: Sequence[str] = ("success",),
        copy: bool = True,
    ) -> None:
        super().__init__()
        if len(env_fns) == 0:
            raise ValueError("LeanVectorEnv needs at least one sub-env")
        self.env_fns = list(env_fns)
        self.envs: list[gym.Env] = [fn() for fn in self.env_fns]
        self.num_envs = len(self.envs)
        self.copy = copy
        first = self.envs[0]
        self.metadata = {**dict(first.metadata), "autoreset_mode": AutoresetMode.DISABLED}
        self.render_mode = first.render_mode
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        if not isinstance(self.single_observation_space, gym.spaces.Box):
            raise TypeError(
                f"LeanVectorEnv needs Box observation spaces, got {self.single_observation_space}; "
                "use gymnasium.vector.SyncVectorEnv for other spaces"
            )
        for i, env in enumerate(self.envs):
            if env.observation_space != self.single_observation_space:
                raise ValueError(
                    f"sub-env {i} has observation space {env.observation_space}, "
                    f"sub-env 0 has {self.single_observation_space}"
                )
            if env.action_space != self.single_action_space:
                raise ValueError(
                    f"sub-env {i} has action space {env.action_space}, "
                    f"sub-env 0 has {self.single_action_space}"
                )
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        n = self.num_envs
        space = self.single_observation_space
        self._obs = np.zeros((n, *space.shape), dtype=space.dtype)
        # the observations stacked along the first axis (None for scalar observations)
        self._obs_flat = self._obs.reshape(n * space.shape[0], *space.shape[1:]) if space.shape else None
        self._rewards = np.zeros(n, dtype=np.float64)
        self._terminations = np.zeros(n, dtype=np.bool_)
        self._truncations = np.zeros(n, dtype=np.bool_)
        self._info_keys = tuple(info_keys)
        self._info_values = {k: np.zeros(n, dtype=np.float64) for k in self._info_keys}
        self._info_present = {k: np.zeros(n, dtype=np.bool_) for k in self._info_keys}
        # plain Python bools: read per sub-env per step, faster than numpy scalars
        self._running = [False] * n
        self._num_running = 0
        # steps of each sub-env's episode, for subclasses that step the simulators themselves
        # (their sub-envs' own ``step`` is not called, so the sub-envs do not count)
        self._elapsed = np.zeros(n, np.int64)
        self._started = False

    # --- gymnasium VectorEnv API ---------------------------------------------------------------
    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env, or those in ``options["reset_mask"]`` (a bool array).

        ``seed``: None, an int (sub-env ``i`` gets ``seed + i``) or one seed per sub-env.
        The other ``options`` are passed to every sub-env's ``reset``.
        """
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, int | np.integer):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"got {len(seeds)} seeds for {n} sub-envs")
        sub_options = dict(options) if options else {}
        mask = sub_options.pop("reset_mask", None)
        which: list[int]
        if mask is None:
            which = list(range(n))
        else:
            mask = np.asarray(mask)
            if mask.shape != (n,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({n},), "
                    f"got {mask.dtype} {mask.shape}"
                )
            which = np.flatnonzero(mask).tolist()
        for key in self._info_keys:
            self._info_present[key][which] = False
        for i in which:
            obs, info = self.envs[i].reset(seed=seeds[i], options=sub_options or None)
            self._obs[i] = obs
            self._rewards[i] = 0.0
            self._terminations[i] = False
            self._truncations[i] = False
            self._running[i] = True
            self._elapsed[i] = 0
            self._record_info(i, info)
        self._num_running = sum(self._running)
        self._started = True
        return self._out(self._obs), self._infos()

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every running sub-env with its row of ``actions``; finished sub-envs hold."""
        self._check_step(actions)
        envs, running = self.envs, self._running
        self._rewards.fill(0.0)
        if self._num_running == self.num_envs:  # the common case: one comprehension, no indexing
            which = None
            results = [env.step(action) for env, action in zip(envs, actions, strict=True)]
        else:
            which = [i for i in range(self.num_envs) if running[i]]
            results = [envs[i].step(actions[i]) for i in which]
        if results:
            obs, rewards, terminated, truncated, infos = zip(*results, strict=True)
            sel = slice(None) if which is None else which
            if which is None and self._obs_flat is not None:  # one copy into the flat buffer
                np.concatenate(obs, out=self._obs_flat, casting="same_kind")
            else:
                buf = self._obs
                for j, o in zip(range(self.num_envs) if which is None else which, obs, strict=False):
                    buf[j] = o
            self._rewards[sel] = rewards
            ended = any(terminated) or any(truncated)
            if ended:  # running sub-envs' flags are False until they end
                self._terminations[sel] = terminated
                self._truncations[sel] = truncated
            for key in self._info_keys:
                present = [key in info for info in infos]
                self._info_present[key][sel] = present
                if any(present):
                    self._info_values[key][sel] = [
                        info[key] if p else 0.0 for info, p in zip(infos, present, strict=True)
                    ]
            if ended:
                for j, (te, tr) in enumerate(zip(terminated, truncated, strict=True)):
                    if te or tr:
                        running[j if which is None else which[j]] = False
                self._num_running = sum(running)
        return self._step_results(self._infos())

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """``name(*args, **kwargs)`` on every sub-env (or its value if not callable)."""
        out = []
        for env in self.envs:
            attr = env.get_wrapper_attr(name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(out)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """The attribute ``name`` of every sub-env."""
        return tuple(env.get_wrapper_attr(name) for env in self.envs)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set ``name`` on every sub-env (one value for all, or one per sub-env)."""
        if not isinstance(values, list | tuple):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"got {len(values)} values for {self.num_envs} sub-envs")
        for env, value in zip(self.envs, values, strict=True):
            env.set_wrapper_attr(name, value)

    def render(self) -> tuple[Any, ...] | None:
        """Every sub-env's render."""
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        """Close every sub-env."""
        for env in self.envs:
            env.close()

    # --- internals ---------------------------------------------------------------------------
    def _reset_indices(self, options: dict[str, Any] | None) -> list[int]:
        """The sub-envs a ``reset`` with ``options`` resets (all, or its ``reset_mask``)."""
        mask = (options or {}).get("reset_mask")
        return list(range(self.num_envs)) if mask is None else np.flatnonzero(np.asarray(mask)).tolist()

    def _running_indices(self) -> tuple[list[int], Any]:
        """The running sub-envs, as a list and as an index into per-sub-env arrays (a slice
        when all run)."""
        if self._num_running == self.num_envs:
            return list(range(self.num_envs)), slice(None)
        which = [i for i in range(self.num_envs) if self._running[i]]
        return which, np.asarray(which, dtype=np.int64)

    def _advance(self, which: Sequence[int], sel: Any, limit: int | np.ndarray) -> None:
        """Count one step of the sub-envs ``which`` (``sel`` indexes them); those that reached
        ``limit`` steps are truncated and no longer running."""
        self._elapsed[sel] += 1
        ended = self._elapsed[sel] >= limit
        if ended.any():
            self._truncations[sel] = ended
            for j in np.flatnonzero(ended).tolist():
                self._running[which[j]] = False
            self._num_running = sum(self._running)

    def _check_step(self, actions: Any) -> None:
        if not self._started:
            raise RuntimeError(f"{type(self).__name__}: call reset() before step()")
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} sub-envs")

    def _step_results(
        self, infos: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        return (
            self._out(self._obs),
            self._out(self._rewards),
            self._out(self._terminations),
            self._out(self._truncations),
            infos,
        )

    def _record_info(self, i: int, info: dict[str, Any]) -> None:
        for key in self._info_keys:
            if key in info:
                self._info_values[key][i] = info[key]
                self._info_present[key][i] = True
            else:
                self._info_present[key][i] = False

    def _infos(self) -> dict[str, Any]:
        infos: dict[str, Any] = {}
        for key in self._info_keys:
            present = self._info_present[key]
            if present.any():
                infos[key] = self._out(self._info_values[key])
                infos["_" + key] = self._out(present)
        return infos

    def _out(self, array: np.ndarray) -> np.ndarray:
        return array.copy() if self.copy else array
