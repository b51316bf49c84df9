"""N-way K-shot classification over a data set's classes: the episode protocol of Vinyals et al.
2016 (sec. 2.2: "episodes" of N classes, K labelled examples each, and query examples of the same
classes) as used by MAML (Finn et al. 2017, sec. 5.2).

A data set's classes are split once, disjointly, into meta-train, meta-val and meta-test pools
(fixed by the data set, never by the caller's seed), so a model is scored on classes it never
trained on.  A **task** is ``ways`` distinct classes of one pool in a random order: the class at
position ``i`` gets label ``i`` of the episode, so the draw also assigns the labels at random.
An **episode** of a task takes ``shots`` + ``queries`` distinct examples of each class: the first
``shots`` form the support set, the rest the query set (no example in both).

Subclasses say which classes each split holds, how many examples a class has and what they are
(the abstract methods of :class:`FewShotClassification`); classes made of a base class rotated
by a multiple of 90° -- Omniglot's augmentation (Santoro et al. 2016; Vinyals et al. 2016,
sec. 4.1.1) -- are numbered by :func:`rotated_class`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from workers.supervised.splits import SUPERVISED_SPLITS, check_split
from workers.tasks import Split, SupervisedTaskDistribution, SupportQuery, Task, TaskFamilyError

__all__ = [
    "ROTATIONS",
    "FewShotClassification",
    "rotated_class",
    "task_classes",
    "unrotated_class",
]

#: Rotations by ``k`` x 90° (``np.rot90``'s ``k``): each makes a new class of a base class.
ROTATIONS = 4


def rotated_class(base: int, k: int) -> int:
    """The class id of base class ``base`` rotated by ``k`` x 90° (``k`` in 0..3)."""
    return base * ROTATIONS + k


def unrotated_class(cls: int) -> tuple[int, int]:
    """``(base, k)`` of a rotated class id (the inverse of :func:`rotated_class`)."""
    return divmod(int(cls), ROTATIONS)


def task_classes(task: Task) -> tuple[int, ...]:
    """The class ids of a classification task, in label order (label ``i`` is class ``[i]``)."""
    raw = task.params.get("classes")
    if not isinstance(raw, str) or not raw:
        raise TaskFamilyError(f"{task.describe()}: not a classification task (no 'classes' parameter); "
                              "sample tasks with the distribution's sample_tasks")
    return tuple(int(c) for c in raw.split(","))


class FewShotClassification(SupervisedTaskDistribution):
    """N-way K-shot classification (see the module docstring); ``output_dim`` is ``ways``.

    Args:
        ways: N, the classes of a task.
        shots: K, support examples per class (an episode's default).
        queries: query examples per class (an episode's default).
    """

    #: The splits ``sample_tasks`` takes.
    splits: ClassVar[tuple[str, ...]] = SUPERVISED_SPLITS

    def __init__(self, *, ways: int, shots: int, queries: int) -> None:
        for label, value in (("ways", ways), ("shots", shots), ("queries", queries)):
            if value < 1:
                raise TaskFamilyError(f"{self.name}: {label} must be >= 1, got {value}")
        if ways < 2:
            raise TaskFamilyError(f"{self.name}: ways must be >= 2 for a classification task, got {ways}")
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)

    @property
    def output_dim(self) -> int:
        return self.ways

    # --- the data set ------------------------------------------------------------------------
    @abc.abstractmethod
    def split_classes(self, split: str) -> Sequence[int]:
        """The class ids of ``split``'s pool (disjoint from the other splits' pools)."""

    @abc.abstractmethod
    def class_size(self, cls: int) -> int:
        """How many examples class ``cls`` has."""

    @abc.abstractmethod
    def examples(self, cls: int, indices: np.ndarray) -> np.ndarray:
        """Examples ``indices`` of class ``cls``: ``[len(indices), *input_shape]`` float32."""

    def num_classes(self, split: str = "train") -> int:
        """How many classes ``split``'s pool holds."""
        return len(self.split_classes(self._check_split(split)))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "ways": self.ways, "shots": self.shots, "queries": self.queries,
                "classes": {s: len(self.split_classes(s)) for s in self.splits}}

    # --- tasks -------------------------------------------------------------------------------
    def sample_tasks(self, n: int, rng: np.random.Generator, *, split: str = "train") -> list[Task]:
        """``n`` tasks of ``ways`` distinct classes of ``split``'s pool, in a random label order."""
        checked = self._check_split(split)
        n = self._check_n(n)
        pool = np.asarray(self.split_classes(checked), dtype=np.int64)
        out = []
        for i in range(n):
            chosen = rng.choice(pool, size=self.ways, replace=False)
            out.append(Task(self.name, checked, i, {"classes": ",".join(str(int(c)) for c in chosen)}))
        return out

    def episode(self, task: Task, rng: np.random.Generator, *, shots: int | None = None,
                queries: int | None = None) -> SupportQuery:
        """An episode of ``task``: per class, ``shots`` support and ``queries`` query examples,
        all distinct; both sets ordered by label.  ``shots``/``queries`` default to the
        distribution's."""
        shots = self.shots if shots is None else int(shots)
        queries = self.queries if queries is None else int(queries)
        if shots < 1 or queries < 1:
            raise TaskFamilyError(f"{self.name}: an episode needs shots >= 1 and queries >= 1, got {shots}, {queries}")
        classes = self._task_classes(task)
        xs, xq = [], []
        for cls in classes:
            size = self.class_size(cls)
            if shots + queries > size:
                raise TaskFamilyError(f"{self.name}: class {cls} has {size} examples; an episode of {shots} shots "
                                      f"and {queries} queries needs {shots + queries}")
            picked = rng.choice(size, size=shots + queries, replace=False)
            x = self.examples(cls, picked)
            xs.append(x[:shots])
            xq.append(x[shots:])
        labels = np.arange(len(classes), dtype=np.int64)
        return SupportQuery(
            x_support=np.concatenate(xs).astype(np.float32, copy=False),
            y_support=np.repeat(labels, shots),
            x_query=np.concatenate(xq).astype(np.float32, copy=False),
            y_query=np.repeat(labels, queries),
        )

    # --- checks ------------------------------------------------------------------------------
    def _check_split(self, split: str) -> Split:
        return check_split(self.name, split)

    def _task_classes(self, task: Task) -> tuple[int, ...]:
        if task.family != self.name:
            raise TaskFamilyError(f"{self.name}: got a task of {task.family!r}; sample tasks from {self.name!r}")
        classes = task_classes(task)
        pool = set(self.split_classes(task.split))
        foreign = [c for c in classes if c not in pool]
        if foreign or len(set(classes)) != len(classes) or len(classes) < 2:
            raise TaskFamilyError(f"{task.describe()}: classes must be 2 or more distinct classes of the "
                                  f"{task.split!r} pool; not in it: {foreign}")
        return classes

    def _check_pools(self, *, ways: int, shots: int, queries: int) -> None:
        """Every split has ``ways`` classes and every class ``shots + queries`` examples."""
        for split in self.splits:
            pool = self.split_classes(split)
            if len(pool) < ways:
                raise TaskFamilyError(f"{self.name}: the {split} split has {len(pool)} classes; "
                                      f"{ways}-way tasks need at least {ways}")
            smallest = min(self.class_size(c) for c in pool)
            if smallest < shots + queries:
                raise TaskFamilyError(f"{self.name}: a class of the {split} split has only {smallest} examples; "
                                      f"{shots} shots + {queries} queries need {shots + queries}")
