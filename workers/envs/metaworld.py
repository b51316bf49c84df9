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
pickled Meta-World task, so it is plain picklable data.  Its env is a
:class:`~workers.envs.metaworld_env.MetaWorldTaskEnv` (one Meta-World env per class, switched by
``set_task``), whose module lists the Meta-World behaviour it relies on; episodes last at most
:data:`MAX_PATH_LENGTH` (500) steps.  The vector env is the batched
:class:`~workers.envs.metaworld_vector.MetaWorldVectorEnv`.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from workers.envs.base import Split, Task, TaskFamily, TaskFamilyError, env_thunks
from workers.envs.common import check_int
from workers.envs.metaworld_env import MAX_PATH_LENGTH, MetaWorldTaskEnv, _spaces, decode_task
from workers.envs.metaworld_vector import MetaWorldVectorEnv

__all__ = [
    "MAX_PATH_LENGTH",
    "MetaWorldFamily",
    "MetaWorldML1Family",
    "MetaWorldML10Family",
    "MetaWorldML45Family",
    "MetaWorldTaskEnv",
    "decode_task",
    "get_benchmark",
    "v3_env_names",
]

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


class MetaWorldFamily(TaskFamily):
    """A Meta-World ML benchmark; tasks are drawn from the split's task list."""

    has_success = True
    # Meta-World's meta-test protocol (metaworld.evaluation): 3 evaluation episodes per test goal
    # after adaptation, with the deterministic evaluation action (the policy mean)
    eval_episodes = 3
    deterministic_eval = True
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
