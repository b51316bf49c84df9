"""Meta-World 3 meta-learning benchmarks: ML1, ML10 and ML45 (Yu et al. 2019, Meta-World).

Tasks come from Meta-World's own benchmark objects (``metaworld.ML1(env_name, seed=...)``,
``metaworld.ML10(seed=...)``, ``metaworld.ML45(seed=...)``): the train split is the benchmark's
``train_tasks`` (envs of ``train_classes``), the test split its ``test_tasks`` (envs of
``test_classes``).  For ML1 both splits are goals of the same env, and Meta-World draws the test
goals with ``seed + 1`` so they differ from the train goals; for ML10/ML45 the test split holds
other envs.  Building a benchmark is slow (ML45 about 25 s), so each is built once per process
and cached per ``(benchmark, env_name, seed)``; it is only built when tasks are sampled, so a
worker that only builds envs from tasks it is handed never builds it.

A :class:`~workers.envs.base.Task` carries ``params={"env_name": ...}`` and, as ``data``, the
pickled Meta-World task, so it is plain picklable data.  Its env is an instance of the task's
Meta-World class with the task set; :class:`MetaWorldTaskEnv` keeps one instance per class
(created on first use) and switches between them when ``set_task`` is handed a task of another
class (ML10/ML45).

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
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from workers.envs.base import Split, Task, TaskFamily, TaskFamilyError, env_thunks
from workers.envs.common import EpisodicTaskEnv, check_int, float32_box

#: Meta-World's episode length (``SawyerXYZEnv.max_path_length``); stepping past it raises.
MAX_PATH_LENGTH = 500

_BENCHMARKS: dict[tuple[str, str | None, int], Any] = {}
_BENCHMARKS_LOCK = threading.Lock()


def v3_env_names() -> list[str]:
    """All Meta-World v3 env names (valid ``env_name`` values of ``metaworld-ml1``)."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return sorted(ALL_V3_ENVIRONMENTS)


def get_benchmark(benchmark: str, *, env_name: str | None = None, seed: int = 0) -> Any:
    """The Meta-World benchmark object ``benchmark`` ("ML1", "ML10", "ML45"), built once per
    process for each ``(benchmark, env_name, seed)``."""
    import metaworld

    key = (benchmark, env_name, int(seed))
    with _BENCHMARKS_LOCK:
        if key not in _BENCHMARKS:
            if benchmark == "ML1":
                _BENCHMARKS[key] = metaworld.ML1(env_name, seed=int(seed))
            elif benchmark in ("ML10", "ML45"):
                _BENCHMARKS[key] = getattr(metaworld, benchmark)(seed=int(seed))
            else:
                raise TaskFamilyError(
                    f"unknown Meta-World benchmark {benchmark!r}; valid: ['ML1', 'ML10', 'ML45']"
                )
        return _BENCHMARKS[key]


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


class MetaWorldFamily(TaskFamily):
    """A Meta-World ML benchmark; tasks are drawn from the split's task list."""

    has_success = True
    #: the Meta-World benchmark class name.
    benchmark_name: str = ""

    def __init__(self, *, max_episode_steps: int = MAX_PATH_LENGTH, seed: int = 0) -> None:
        steps = check_int(self.name, "max_episode_steps", max_episode_steps)
        if steps > MAX_PATH_LENGTH:
            raise TaskFamilyError(
                f"{self.name}: max_episode_steps must be <= {MAX_PATH_LENGTH}, got {steps}: "
                f"Meta-World envs raise when stepped past {MAX_PATH_LENGTH} steps without a reset"
            )
        super().__init__(max_episode_steps=steps)
        self.seed = check_int(self.name, "seed", seed, low=0)

    # --- benchmark ---------------------------------------------------------------------------
    def _env_name(self) -> str | None:
        return None

    @property
    def benchmark(self) -> Any:
        """The Meta-World benchmark object (built on first use, cached per process)."""
        return get_benchmark(self.benchmark_name, env_name=self._env_name(), seed=self.seed)

    def classes(self, split: Split = "train") -> Mapping[str, type]:
        """The env classes of ``split`` (``train_classes`` / ``test_classes``)."""
        split = self._check_split(split)
        env_dict = self._class_dicts()
        return env_dict[split]

    def _class_dicts(self) -> dict[str, Mapping[str, type]]:
        """``{"train": ..., "test": ...}`` without building the benchmark: these are the very
        dicts Meta-World's benchmark classes use (``metaworld.env_dict``)."""
        from metaworld import env_dict

        table = getattr(env_dict, f"{self.benchmark_name}_V3")
        return {"train": table["train"], "test": table["test"]}

    def _all_classes(self) -> dict[str, type]:
        dicts = self._class_dicts()
        return {**dicts["train"], **dicts["test"]}

    def _tasks(self, split: Split) -> list[Any]:
        bench = self.benchmark
        return list(bench.train_tasks if split == "train" else bench.test_tasks)

    # --- TaskFamily ----------------------------------------------------------------------------
    @property
    def observation_space(self) -> gym.spaces.Box:
        return _spaces()[0]

    @property
    def action_space(self) -> gym.spaces.Box:
        return _spaces()[1]

    def num_tasks(self, split: Split = "train") -> int | None:
        return len(self._tasks(self._check_split(split)))

    def sample_tasks(
        self, n: int, rng: np.random.Generator, *, split: Split = "train"
    ) -> list[Task]:
        """``n`` tasks of the split's list: without replacement when ``n`` does not exceed the
        list, else whole shuffled passes over the list plus a partial one."""
        split = self._check_split(split)
        n = self._check_n(n)
        tasks = self._tasks(split)
        size = len(tasks)
        if size == 0:
            raise TaskFamilyError(f"{self.name}: the {split} split has no tasks")
        parts = [rng.permutation(size) for _ in range(n // size)]
        if n % size:
            parts.append(rng.choice(size, size=n % size, replace=False))
        indices = np.concatenate(parts)
        return [
            Task(
                self.name,
                split,
                int(i),
                {"env_name": str(tasks[i].env_name)},
                pickle.dumps(tasks[i]),
            )
            for i in indices
        ]

    def make_vector_env(self, tasks: Sequence[Task], envs_per_task: int) -> gym.vector.VectorEnv:
        """The batched :class:`~workers.envs.metaworld_vector.MetaWorldVectorEnv` (bit for bit
        the single envs' results)."""
        from workers.envs.metaworld_vector import MetaWorldVectorEnv

        return MetaWorldVectorEnv(env_thunks(self, tasks, envs_per_task))

    def make_env(self, task: Task) -> MetaWorldTaskEnv:
        return MetaWorldTaskEnv(
            task,
            family_name=self.name,
            classes=self._all_classes(),
            max_episode_steps=self.max_episode_steps,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "benchmark": self.benchmark_name, "seed": self.seed}


class MetaWorldML1Family(MetaWorldFamily):
    """ML1: 50 train goals and 50 different test goals of one env (``env_name``)."""

    name = "metaworld-ml1"
    benchmark_name = "ML1"

    def __init__(
        self, *, env_name: str, max_episode_steps: int = MAX_PATH_LENGTH, seed: int = 0
    ) -> None:
        super().__init__(max_episode_steps=max_episode_steps, seed=seed)
        valid = v3_env_names()
        if env_name not in valid:
            raise TaskFamilyError(
                f"{self.name}: unknown env_name {env_name!r}; valid env names: {valid}"
            )
        self.env_name = env_name

    def _env_name(self) -> str | None:
        return self.env_name

    def _class_dicts(self) -> dict[str, Mapping[str, type]]:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        classes = {self.env_name: ALL_V3_ENVIRONMENTS[self.env_name]}
        return {"train": classes, "test": classes}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "env_name": self.env_name}


class MetaWorldML10Family(MetaWorldFamily):
    """ML10: 10 train envs (50 goals each), 5 held-out test envs (50 goals each)."""

    name = "metaworld-ml10"
    benchmark_name = "ML10"


class MetaWorldML45Family(MetaWorldFamily):
    """ML45: 45 train envs (50 goals each), 5 held-out test envs (50 goals each)."""

    name = "metaworld-ml45"
    benchmark_name = "ML45"
