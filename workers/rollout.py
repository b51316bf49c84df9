"""Rollout workers: an ordinary class (usable in-process) made a Ray actor in one place.

A worker holds the sampler of the job's algorithm (:func:`workers.sampling.make_sampler`: a
:class:`~workers.sampler.Sampler` of episodes over gymnasium vector envs, or the algorithm's own,
e.g. RL²'s trials) and samples the tasks it is given with parameters passed by reference
(``ray.put`` once per phase by the driver).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from algorithms.policies import Params
from workers.distributions import build_distribution
from workers.sampling import make_sampler
from workers.tasks import Task


@dataclass(frozen=True)
class FamilyRef:
    """How to rebuild a task family in another process."""

    name: str
    seed: int = 0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardStats:
    """What sampling one shard took (small: the driver fetches it; episodes go to the learner)."""

    task_indices: list[int]
    env_steps: int
    seconds: float
    worker_index: int
    node_id: str
    pid: int


class RolloutWorker:
    """Samples a phase's data (episodes, or the algorithm's own kind) for the tasks it is handed.

    Args:
        family: the task family to build.
        policy_spec: the policy architecture.
        envs_per_worker: sub-envs this worker steps at once, shared among its tasks.
        seed: the job's base seed; the worker uses ``seed + 1000 * worker_index``.
        worker_index: this worker's index (for seeds and reports).
        algorithm: the job's algorithm spec, whose registered sampler collects the data (None:
            episodes).
    """

    def __init__(
        self, family: FamilyRef, policy_spec: Any, *, envs_per_worker: int, seed: int, worker_index: int,
        algorithm: Any = None,
    ) -> None:
        # rollout actors run one thread each: policy inference is tiny, and torch's default
        # thread pool per actor oversubscribes the node (measured: identical learner work took 0.8 s or 53 s)
        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        self.family = build_distribution(family.name, seed=family.seed, **family.kwargs)
        self.policy_spec = policy_spec
        self.envs_per_worker = envs_per_worker
        self.seed = seed + 1000 * worker_index
        self.worker_index = worker_index
        self.algorithm = algorithm
        self._samplers: dict[int, Any] = {}
        if _in_actor():
            # a job that is cancelled or ends takes its actors with it by SIGTERM; Ray's own
            # handler raises SystemExit wherever the process is (often inside a vector env's
            # __del__), which prints a traceback into the job's log that reads like a crash
            signal.signal(signal.SIGTERM, _exit_quietly)

    def _sampler(self, envs_per_task: int) -> Any:
        if envs_per_task not in self._samplers:
            self._samplers[envs_per_task] = make_sampler(self.algorithm, self.family, self.policy_spec,
                                                         envs_per_task=envs_per_task, seed=self.seed + envs_per_task)
        return self._samplers[envs_per_task]

    def sample(
        self,
        params: Params | Sequence[Params],
        tasks: Sequence[Task],
        task_indices: Sequence[int],
        *,
        episodes_per_task: int,
    ) -> tuple[ShardStats, list[Any]]:
        """The data of ``tasks`` (one :class:`~algorithms.episodes.Episodes`, or the algorithm's
        kind, per task, in order) and the shard's stats;
        ``params`` is θ or the meta-batch's full list of per-task parameters, of which this shard
        uses ``task_indices``.  As a Ray call it has two returns, so the driver can check a shard
        without pulling its episodes."""
        start = time.perf_counter()
        shard_params: Params | list[Params] = params if isinstance(params, dict) else [params[i] for i in task_indices]
        envs_per_task = max(1, min(episodes_per_task, self.envs_per_worker // max(1, len(tasks))))
        sampler = self._sampler(envs_per_task)
        episodes = sampler.sample(tasks, shard_params, episodes_per_task=episodes_per_task)
        stats = ShardStats(
            task_indices=list(task_indices),
            env_steps=sampler.last_stats.env_steps,
            seconds=time.perf_counter() - start,
            worker_index=self.worker_index,
            node_id=_node_id(),
            pid=os.getpid(),
        )
        return stats, episodes

    def info(self) -> dict[str, Any]:
        return {"worker_index": self.worker_index, "node_id": _node_id(), "pid": os.getpid()}


def _in_actor() -> bool:
    """This runs as a Ray actor, in its worker process's main thread (not in process)."""
    try:
        import ray

        return (ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
                and threading.current_thread() is threading.main_thread())
    except Exception:  # noqa: BLE001 - outside Ray: not an actor
        return False


def _exit_quietly(signum: int, frame: Any) -> None:
    os._exit(0)


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray there is no node id
        return "local"
    return "local"


def remote_rollout_worker(*, num_cpus: float = 1.0):  # noqa: ANN201 - a Ray actor class
    """The one place :class:`RolloutWorker` becomes a Ray actor: restarted on failure (its state
    is rebuilt by the constructor), and an interrupted call is retried on the restarted actor."""
    import ray

    return ray.remote(num_cpus=num_cpus, max_restarts=-1, max_task_retries=-1)(RolloutWorker)
