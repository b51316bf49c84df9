"""The rollout actors of one job: created in placement groups spread over the nodes, resized
between iterations, sampled scatter/gather with lost shards re-sampled."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from workers.envs import Task
from workers.rollout import FamilyRef, ShardStats, remote_rollout_worker

log = logging.getLogger(__name__)

#: test hook: called with (pool, phase label) right after a phase's calls are submitted
SubmitHook = Callable[["WorkerPool", str], None]


@dataclass
class _Slot:
    actor: Any
    index: int
    group: PlacementGroup
    bundle: int


@dataclass
class PhaseResult:
    """A phase's episode references (one per shard, in task order) and their stats."""

    episode_refs: list[ray.ObjectRef]
    stats: list[ShardStats]
    resubmitted: int = 0
    seconds: float = 0.0


@dataclass
class WorkerPool:
    family: FamilyRef
    policy_spec: Any
    envs_per_worker: int
    seed: int
    name_prefix: str
    ready_timeout_s: float = 120.0
    shard_timeout_s: float = 900.0
    max_attempts: int = 5
    on_submit: SubmitHook | None = None
    #: the job's algorithm spec: its registered sampler collects the data (None: episodes)
    algorithm: Any = None
    _slots: list[_Slot] = field(default_factory=list)
    _groups: list[PlacementGroup] = field(default_factory=list)
    _next_index: int = 0

    @property
    def size(self) -> int:
        return len(self._slots)

    @property
    def actors(self) -> list[Any]:
        return [s.actor for s in self._slots]

    def resize(self, n: int) -> None:
        """Add actors (in a new placement group, bundles spread over nodes) or retire the
        most recently added ones (and their emptied placement groups)."""
        if n < 1:
            raise ValueError(f"rollout_workers must be >= 1, got {n}")
        if n > self.size:
            self._grow(n - self.size)
        while self.size > n:
            slot = self._slots.pop()
            ray.kill(slot.actor, no_restart=True)
            if not any(s.group is slot.group for s in self._slots):
                remove_placement_group(slot.group)
                self._groups = [g for g in self._groups if g is not slot.group]

    def _grow(self, k: int) -> None:
        group = placement_group([{"CPU": 1}] * k, strategy="SPREAD")
        try:
            ray.get(group.ready(), timeout=self.ready_timeout_s)
        except GetTimeoutError:
            remove_placement_group(group)
            total = ray.cluster_resources().get("CPU", 0)
            raise RuntimeError(
                f"could not place {k} more rollout worker(s) (1 CPU each) within {self.ready_timeout_s:.0f} s; "
                f"the cluster has {total:g} CPUs in all and {self.size} worker(s) of this job already"
            ) from None
        self._groups.append(group)
        for b in range(k):
            self._slots.append(self._start(group, b))

    def _start(self, group: PlacementGroup, bundle: int) -> _Slot:
        index = self._next_index
        self._next_index += 1
        cls = remote_rollout_worker()
        actor = cls.options(
            name=f"{self.name_prefix}-rollout-{index}",
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=bundle
            ),
        ).remote(
            self.family, self.policy_spec, envs_per_worker=self.envs_per_worker, seed=self.seed, worker_index=index,
            algorithm=self.algorithm,
        )
        return _Slot(actor=actor, index=index, group=group, bundle=bundle)

    def _replace(self, i: int) -> None:
        old = self._slots[i]
        try:
            ray.kill(old.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._slots[i] = self._start(old.group, old.bundle)

    def shards(self, n_tasks: int) -> list[np.ndarray]:
        """Contiguous, near-equal task shards, one per worker (fewer if fewer tasks)."""
        return [s for s in np.array_split(np.arange(n_tasks), min(self.size, n_tasks)) if len(s)]

    def sample(self, params: Any, tasks: Sequence[Task], *, episodes_per_task: int, label: str = "") -> PhaseResult:
        """Scatter the tasks over the workers, then gather.  Only the small stats come back to
        the driver; a shard whose worker died is sampled again (the actor is restarted by Ray,
        or replaced), so a phase is always complete."""
        start = time.perf_counter()
        shards = self.shards(len(tasks))
        submitted: dict[int, tuple[int, ray.ObjectRef, ray.ObjectRef]] = {}

        def submit(shard: int, slot: int) -> None:
            idx = shards[shard]
            stats_ref, eps_ref = (
                self._slots[slot]
                .actor.sample.options(num_returns=2)
                .remote(params, [tasks[i] for i in idx], idx.tolist(), episodes_per_task=episodes_per_task)
            )
            submitted[shard] = (slot, stats_ref, eps_ref)

        for s in range(len(shards)):
            submit(s, s % self.size)
        if self.on_submit is not None:
            self.on_submit(self, label)
        done: dict[int, ShardStats] = {}
        attempts = dict.fromkeys(range(len(shards)), 1)
        resubmitted = 0
        deadline = time.monotonic() + self.shard_timeout_s
        while len(done) < len(shards):
            waiting = {submitted[s][1]: s for s in range(len(shards)) if s not in done}
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=max(1.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"rollout shards did not finish within {self.shard_timeout_s:.0f} s")
            for ref in ready:
                s = waiting[ref]
                try:
                    done[s] = ray.get(ref)
                except (RayActorError, RayTaskError) as exc:
                    if isinstance(exc, RayTaskError) and not isinstance(exc, RayActorError) and not _is_infra(exc):
                        raise
                    slot = submitted[s][0]
                    if attempts[s] >= self.max_attempts:
                        raise RuntimeError(
                            f"rollout shard {s} (tasks {shards[s].tolist()}) failed {attempts[s]} times; "
                            f"last error: {exc}"
                        ) from exc
                    attempts[s] += 1
                    log.warning("rollout worker %d lost its shard (%s); re-sampling it", slot, type(exc).__name__)
                    self._replace(slot)
                    submit(s, slot)
                    resubmitted += 1
        return PhaseResult(
            episode_refs=[submitted[s][2] for s in range(len(shards))],
            stats=[done[s] for s in range(len(shards))],
            resubmitted=resubmitted,
            seconds=time.perf_counter() - start,
        )

    def shutdown(self) -> None:
        for slot in self._slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._slots.clear()
        for g in self._groups:
            try:
                remove_placement_group(g)
            except Exception:  # noqa: BLE001 - already removed
                pass
        self._groups.clear()


def _is_infra(exc: RayTaskError) -> bool:
    """A task error caused by the cluster (worker/node died), not by our code."""
    from ray.exceptions import NodeDiedError, OwnerDiedError, WorkerCrashedError

    cause = getattr(exc, "cause", None)
    return isinstance(cause, RayActorError | WorkerCrashedError | NodeDiedError | OwnerDiedError)
