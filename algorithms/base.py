"""What every meta-learner shares: the protocol, the data it takes and the metrics it returns."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from algorithms import functional as F
from algorithms.batch import TaskBatch, make_task_batch
from algorithms.episodes import Episodes
from algorithms.errors import NonFiniteError
from algorithms.policies import (
    Params,
    Policy,
    PolicySpec,
    make_policy,
    stack_params,
    unstack_params,
)
from algorithms.registry import AdvantageSpec


@dataclass
class MetaBatch:
    """The episodes of one meta-iteration, per task.

    Attributes:
        train: ``train[k][i]``: episodes of task ``i`` sampled before inner step ``k``
            (with θ for ``k = 0``, then with the task's adapted parameters).
        valid: ``valid[i]``: episodes of task ``i`` sampled with the fully adapted parameters
            (the post-adaptation, "query" episodes); None where the plan samples none.
    """

    train: list[list[Episodes]]
    valid: list[Episodes] | None

    def __post_init__(self) -> None:
        if self.valid is None and not self.train:
            raise ValueError("MetaBatch: no episodes")
        n = len(self.valid) if self.valid is not None else len(self.train[0])
        for k, step in enumerate(self.train):
            if len(step) != n:
                raise ValueError(f"MetaBatch: inner step {k} has {len(step)} tasks, valid has {n}")


@dataclass
class UpdateMetrics:
    """What one outer update reports (namespaced names, logged as they are)."""

    values: dict[str, float] = field(default_factory=dict)
    accepted: bool = True

    def __getitem__(self, key: str) -> float:
        return self.values[key]


class Stopwatch:
    """Seconds spent in the named sections of one update, reported beside its other metrics as
    ``time/<section>_s`` (a job's profile: where a learner's time goes).  On CUDA each section
    ends with a synchronisation, so kernels launched in it are counted in it."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.seconds: dict[str, float] = {}
        self._cuda = torch.device(device).type == "cuda"

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._cuda:
                torch.cuda.synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        return {f"time/{name}_s": s for name, s in self.seconds.items()}


@dataclass
class LearnerState:
    """Serialisable learner state for checkpoints: the meta-parameters, optimizer state,
    iteration counter and the configuration that made them."""

    algorithm: str
    policy_spec: PolicySpec
    config: Any  # the algorithm's spec (a pydantic model registered in algorithms.registry)
    params: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    iteration: int
    advantage: AdvantageSpec = field(default_factory=AdvantageSpec)


@runtime_checkable
class MetaLearner(Protocol):
    """The interface MAML, Reptile and multi-task PG share.

    ``adapt`` is what happens between sampling phases (one inner step for every task, no
    graph kept); ``learn`` is the outer update from the phases of one iteration, in the order of
    the algorithm's plan (:mod:`algorithms.plans`).
    """

    name: str
    policy: Policy
    iteration: int

    @property
    def params(self) -> Params: ...

    def adapt(self, params: Sequence[Params], episodes: Sequence[Episodes]) -> list[Params]: ...

    def learn(self, phases: Sequence[Sequence[Episodes]]) -> UpdateMetrics: ...

    def state_dict(self) -> LearnerState: ...

    def load_state_dict(self, state: LearnerState) -> None: ...


def check_finite(name: str, *tensors: torch.Tensor) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` if any tensor has NaN/inf."""
    for t in tensors:
        if not torch.isfinite(t).all():
            raise NonFiniteError(f"{name} is not finite (NaN or inf); the update was rejected")


class HoldsPolicy:
    """θ as a learner hands it out and takes it back: the parameters of its ``policy`` module."""

    policy: torch.nn.Module

    @property
    def params(self) -> Params:
        """A copy of θ, on the learner's device."""
        return {k: v.detach().clone() for k, v in self.policy.named_parameters()}

    def _set_params(self, params: Params) -> None:
        with torch.no_grad():
            for k, v in self.policy.named_parameters():
                v.copy_(params[k])


class PolicyGradientLearner(HoldsPolicy):
    """What the three learners share: the policy θ, the inner policy-gradient step, batching
    of episodes, metrics and checkpoints.  Subclasses implement ``step``.

    ``config`` is the algorithm's spec; it must have ``inner_lr``.  ``advantage`` says how
    returns become advantages (the job's ``advantage`` section).
    """

    name = "base"

    def __init__(self, policy_spec: PolicySpec, config: Any, *, advantage: AdvantageSpec | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self.advantage = advantage or AdvantageSpec()
        self.device = torch.device(device)
        self.policy: Policy = make_policy(policy_spec, seed=seed).to(self.device)
        self.iteration = 0
        self._optimizer: torch.optim.Optimizer | None = None
        self._rng = np.random.default_rng(seed)

    def batch(self, episodes: Sequence[Episodes]) -> TaskBatch:
        dtype = next(self.policy.parameters()).dtype
        return make_task_batch(episodes, advantage=self.advantage, device=self.device, dtype=dtype)

    def adapt(self, params: Sequence[Params], episodes: Sequence[Episodes]) -> list[Params]:
        """One inner policy-gradient step for every task from its own parameters (no graph)."""
        batch = self.batch(episodes)
        stacked = stack_params([{k: v.to(self.device) for k, v in p.items()} for p in params])
        phi = F.adapt(self.policy, stacked, [batch], inner_lr=self.config.inner_lr, create_graph=False)
        check_finite("adapted parameters", *phi.values())
        return unstack_params(phi)

    def learn(self, phases: Sequence[Sequence[Episodes]]) -> UpdateMetrics:
        """The outer update from an iteration's phases: the inner steps' phases, then the
        post-adaptation one (:func:`algorithms.plans.inner_loop_plan`)."""
        return self.step(MetaBatch(train=[list(p) for p in phases[:-1]], valid=list(phases[-1])))

    def step(self, batch: MetaBatch) -> UpdateMetrics:
        raise NotImplementedError

    def _finish(self, metrics: UpdateMetrics, batch: MetaBatch) -> UpdateMetrics:
        metrics.values.update(episode_metrics(batch))
        self.iteration += 1
        return metrics

    def state_dict(self) -> LearnerState:
        return LearnerState(
            algorithm=self.name,
            policy_spec=self.policy.spec,
            config=self.config,
            params={k: v.detach().cpu().clone() for k, v in self.params.items()},
            optimizer=None if self._optimizer is None else self._optimizer.state_dict(),
            iteration=self.iteration,
            advantage=self.advantage,
        )

    def load_state_dict(self, state: LearnerState) -> None:
        if state.algorithm != self.name:
            raise ValueError(f"checkpoint is for {state.algorithm!r}, this learner is {self.name!r}")
        self._set_params({k: v.to(self.device) for k, v in state.params.items()})
        if self._optimizer is not None and state.optimizer is not None:
            self._optimizer.load_state_dict(state.optimizer)
        self.iteration = state.iteration


def episode_metrics(batch: MetaBatch) -> dict[str, float]:
    """Pre-adaptation (θ's episodes) and, where the batch has them, post-adaptation returns
    (mean episode return over tasks) and success rates."""
    pre = batch.train[0] if batch.train else batch.valid
    assert pre is not None
    out = {
        "meta/return_pre": float(np.mean([e.returns.mean() for e in pre])),
        "meta/success_pre": float(np.mean([e.successes.mean() for e in pre])),
    }
    if batch.valid is not None:
        out["meta/return_post"] = float(np.mean([e.returns.mean() for e in batch.valid]))
        out["meta/success_post"] = float(np.mean([e.successes.mean() for e in batch.valid]))
    return out
