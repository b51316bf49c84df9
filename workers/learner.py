"""The learner: holds the meta-learner (policy, optimizer state) on CUDA when asked and present,
else on the CPU; computes adapted parameters for every task and the outer update.

An ordinary class, made a Ray actor in one place (:func:`remote_learner`).  Episodes arrive as
Ray object references resolved by Ray itself (top-level arguments), so they travel from the
rollout actors to the learner's process without passing through the driver.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from algorithms.base import LearnerState
from algorithms.episodes import Episodes
from algorithms.policies import Params, PolicySpec
from algorithms.registry import AdvantageSpec, AlgorithmSpec, make_learner


@dataclass(frozen=True)
class LearnerInfo:
    device: str
    cuda_available: bool
    device_name: str
    threads: int
    node_id: str
    pid: int


def _flatten(shards: Sequence[list[Episodes]]) -> list[Episodes]:
    return [e for shard in shards for e in shard]


class Learner:
    """Wraps a registered algorithm's learner (:class:`~algorithms.base.MetaLearner`); shards
    arrive in task order."""

    def __init__(
        self, spec: AlgorithmSpec, policy_spec: PolicySpec, *, advantage: AdvantageSpec | None = None, seed: int,
        gpus: float = 0.0, threads: int | None = None,
    ) -> None:
        want_cuda = gpus > 0
        self.device = torch.device("cuda" if want_cuda and torch.cuda.is_available() else "cpu")
        torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
        self.learner: Any = make_learner(spec, policy_spec, advantage=advantage, seed=seed, device=self.device)
        self._adapt_s = 0.0  # inner-step compute since the last ``learn``

    def info(self) -> LearnerInfo:
        from workers.rollout import _node_id

        return LearnerInfo(
            device=str(self.device),
            cuda_available=torch.cuda.is_available(),
            device_name=torch.cuda.get_device_name(0) if self.device.type == "cuda" else "cpu",
            threads=torch.get_num_threads(),
            node_id=_node_id(),
            pid=os.getpid(),
        )

    def params(self) -> Params:
        """θ on the CPU (what the rollout workers get)."""
        return {k: v.cpu() for k, v in self.learner.params.items()}

    def adapt(self, params: Params | list[Params], *shards: list[Episodes]) -> list[Params]:
        """One inner step for every task; ``params`` is θ or the per-task parameters so far."""
        t0 = time.perf_counter()
        episodes = _flatten(shards)
        start = [params] * len(episodes) if isinstance(params, dict) else params
        out = [{k: v.cpu() for k, v in p.items()} for p in self.learner.adapt(start, episodes)]
        self._adapt_s += time.perf_counter() - t0
        return out

    def learn(self, layout: Sequence[int], *shards: list[Episodes]) -> dict[str, float]:
        """The outer update from an iteration's phases, in the plan's order; ``layout[k]`` is
        the number of shards of phase ``k``.

        Beside the algorithm's metrics: ``time/learner_learn_s`` and ``time/learner_adapt_s``, the
        seconds this actor computed the update and the iteration's inner steps (what the driver
        waits for beyond them is the transfer of episodes and results)."""
        t0 = time.perf_counter()
        phases, i = [], 0
        for count in layout:
            phases.append(_flatten(shards[i : i + count]))
            i += count
        out = dict(self.learner.learn(phases).values)
        out["time/learner_learn_s"] = time.perf_counter() - t0
        out["time/learner_adapt_s"], self._adapt_s = self._adapt_s, 0.0
        return out

    def state_dict(self) -> LearnerState:
        return self.learner.state_dict()

    def load_state_dict(self, state: LearnerState) -> None:
        self.learner.load_state_dict(state)

    def get_iteration(self) -> int:
        return self.learner.iteration


def remote_learner(  # noqa: ANN201 - a Ray actor class
    *, gpus: float, num_cpus: float = 0.0, node_id: str | None = None
):
    """The one place :class:`Learner` becomes a Ray actor.

    With ``gpus > 0`` it requests them (Ray schedules it on a GPU node).  Without, it takes no
    CPU of its own: MAML's phases alternate, so it computes while the rollout actors wait; it
    runs on ``node_id`` (the head node, where Ray Jobs run the driver) so losing a worker node
    does not take it along.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": gpus, "max_restarts": 0}
    if gpus == 0 and node_id is not None:
        # hard affinity: a soft one was seen to land on a worker node even with the head free
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    return ray.remote(Learner).options(**options)
