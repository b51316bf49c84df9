"""Task distributions: the one base of every kind of meta-learning task, and its two kinds.

* an **RL task family** (:class:`workers.envs.base.TaskFamily`, ``kind = "rl"``): a distribution
  over MDPs sharing spaces; a task becomes envs (``make_env``, ``make_vector_env``), episodes are
  cut at its horizon, and its evaluation protocol (episodes after adaptation, deterministic
  actions, a success signal) is a set of attributes;
* a **supervised task distribution** (:class:`SupervisedTaskDistribution`, ``kind =
  "supervised"``): a distribution over classification or regression problems; a task becomes
  episodes of a support set and a query set (``episode``).

Both sample :class:`Task` values -- plain, picklable data that crosses process boundaries --
with a caller's ``numpy.random.Generator`` (same seed, same tasks), from a ``train`` or ``test``
split.  The phase runner (:mod:`workers.runner`) does not look inside a task; sources do.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from algorithms.supervised.data import SupportQuery

__all__ = ["SPLITS", "Split", "SupervisedTaskDistribution", "SupportQuery", "Task", "TaskDistribution",
           "TaskFamilyError"]

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


class TaskFamilyError(ValueError):
    """A family name, parameter or task that does not exist; the message lists what does."""


@dataclass(frozen=True)
class Task:
    """One task of a family: plain, picklable data (it crosses process boundaries).

    Attributes:
        family: the family's registered name, e.g. ``"halfcheetah-vel"``.
        split: ``"train"`` or ``"test"``.
        index: position of the task in its family's task list where the family has a finite
            list (Meta-World), else a running index of the draw.
        params: the task's physical parameters, e.g. ``{"goal_x": .1, "goal_y": -.3}``,
            ``{"velocity": 1.3}`` or ``{"direction": -1.0}``; Meta-World tasks carry
            ``{"env_name": "reach-v3"}`` plus the opaque task ``data``.
        data: an opaque payload the family needs to rebuild the task (Meta-World's
            pickled goal/state data); ``b""`` where none.
    """

    family: str
    split: Split
    index: int
    params: Mapping[str, float | str] = field(default_factory=dict)
    data: bytes = b""

    @property
    def env_name(self) -> str | None:
        name = self.params.get("env_name")
        return str(name) if name is not None else None

    def describe(self) -> str:
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.params.items()}
        return f"{self.family}[{self.split}#{self.index}]{shown}"


class TaskDistribution(abc.ABC):
    """What every task distribution has: a name, a kind, seeded task draws per split."""

    name: str = ""
    kind: ClassVar[Literal["rl", "supervised"]]

    @abc.abstractmethod
    def sample_tasks(self, n: int, rng: np.random.Generator, *, split: Split = "train") -> list[Task]:
        """Draw ``n`` tasks of ``split``; deterministic given ``rng``'s state."""

    def num_tasks(self, split: Split = "train") -> int | None:
        """Size of a finite task list (Meta-World's goals, a data set's classes), or None."""
        return None

    def describe(self) -> dict[str, Any]:
        """What this distribution is, for logs and run params."""
        return {"name": self.name, "kind": self.kind}

    def _check_split(self, split: str) -> Split:
        if split not in SPLITS:
            raise TaskFamilyError(f"{self.name}: unknown split {split!r}; valid splits: {list(SPLITS)}")
        return split  # type: ignore[return-value]

    def _check_n(self, n: int) -> int:
        if not isinstance(n, int | np.integer) or n < 1:
            raise TaskFamilyError(f"{self.name}: number of tasks must be a positive integer, got {n!r}")
        return int(n)


class SupervisedTaskDistribution(TaskDistribution):
    """A distribution over supervised problems (N-way K-shot classification, regression)."""

    kind: ClassVar[Literal["rl", "supervised"]] = "supervised"
    #: what the engine reads of an RL family's evaluation protocol, for either kind: a supervised
    #: distribution has no success signal, and its meta-test episodes are its own
    has_success: ClassVar[bool] = False
    eval_episodes: ClassVar[int | None] = None
    deterministic_eval: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input."""

    @property
    @abc.abstractmethod
    def output_dim(self) -> int:
        """Classes of an episode (``ways``) or the regression target's size."""

    @abc.abstractmethod
    def episode(self, task: Task, rng: np.random.Generator, *, shots: int | None = None,
                queries: int | None = None) -> SupportQuery:
        """``shots`` support and ``queries`` query examples per class (or per task, for
        regression) of ``task``; the distribution's own ``shots`` and ``queries`` where omitted."""

