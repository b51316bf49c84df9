"""Supervised few-shot task distributions (kind ``"supervised"``, :class:`workers.tasks.SupervisedTaskDistribution`).

:func:`make_distribution` builds one by its registered name (:mod:`workers.catalog`), with its
parameters validated against the catalog's bounds::

    dist = make_distribution("sinusoid", shots=5)
    rng = np.random.default_rng(0)
    tasks = dist.sample_tasks(25, rng)                   # split="train" | "val" | "test"
    episodes = [dist.episode(t, rng) for t in tasks]     # SupportQuery: x_support, y_support, ...

Distributions and their parameters:

* ``sinusoid``: MAML's sine-wave regression (:class:`SinusoidRegression`); ``shots``,
  ``queries``, ``amplitude_low``/``_high``, ``phase_low``/``_high``, ``input_low``/``_high``;
* ``digits-rotations``: embedded 8x8 digits x 4 rotations, 24/8/8 classes
  (:class:`DigitsRotations`); ``ways``, ``shots``, ``queries``;
* ``glyphs``: embedded procedurally drawn characters, Omniglot's shape (1100/100/423
  characters, 20 drawings each) (:class:`Glyphs`); ``ways``, ``shots``, ``queries``, ``size``;
* ``omniglot`` (:class:`Omniglot`) and ``mini-imagenet`` (:class:`MiniImageNet`): the benchmarks
  from a local directory in their published layout (``data_dir``, else
  ``$METARL_DATA_DIR/<name>``); ``ways``, ``shots``, ``queries``, ``data_dir``.

Every distribution has three splits, ``train``, ``val`` and ``test``; the classification data
sets' class pools are disjoint.  RL task families are built by :func:`workers.envs.make_family`.
"""

from __future__ import annotations

from typing import Any

from workers.catalog import family_info
from workers.catalog import family_names as _catalog_names
from workers.supervised.classes import FewShotClassification, task_classes
from workers.supervised.datasets import DigitsRotations, MiniImageNet, Omniglot
from workers.supervised.glyphs import Glyphs
from workers.supervised.images import DATA_DIR_ENV
from workers.supervised.sinusoid import SinusoidRegression
from workers.supervised.splits import SUPERVISED_SPLITS
from workers.tasks import SupervisedTaskDistribution, SupportQuery, Task, TaskFamilyError

__all__ = [
    "DATA_DIR_ENV",
    "SUPERVISED_SPLITS",
    "DigitsRotations",
    "FewShotClassification",
    "Glyphs",
    "MiniImageNet",
    "Omniglot",
    "SinusoidRegression",
    "SupervisedTaskDistribution",
    "SupportQuery",
    "Task",
    "TaskFamilyError",
    "distribution_names",
    "make_distribution",
    "task_classes",
]


def distribution_names() -> list[str]:
    """The registered supervised distributions' names, sorted."""
    return [name for name in _catalog_names() if family_info(name).kind == "supervised"]


def make_distribution(name: str, *, seed: int = 0, **params: Any) -> SupervisedTaskDistribution:
    """Build the supervised distribution ``name`` with ``params`` (the others take their defaults).

    Args:
        name: a registered supervised distribution (see :func:`distribution_names`).
        seed: seeds the distribution's construction where its registration says it is seeded;
            ignored by the others (none of this package's: their splits are fixed).
        **params: the distribution's parameters, validated against the catalog's model (bounds).

    Raises:
        TaskFamilyError: unknown name, an RL family, or unknown, missing or invalid parameters; the
            message names the valid choices.
    """
    try:
        info = family_info(name)
    except LookupError:
        raise TaskFamilyError(f"unknown supervised task distribution {name!r}; valid: {distribution_names()}") from None
    if info.kind != "supervised":
        raise TaskFamilyError(f"{name} is an RL task family, not a supervised task distribution; "
                              "build it with workers.envs.make_family")
    try:
        values = info.validate(params).model_dump()
    except ValueError as exc:
        raise TaskFamilyError(str(exc)) from None
    if info.seeded:
        values["seed"] = seed
    dist = info.builder_class()(**values)
    if not isinstance(dist, SupervisedTaskDistribution):
        raise TaskFamilyError(f"{name}: its builder {info.builder} made a {type(dist).__name__}, "
                              "not a SupervisedTaskDistribution")
    return dist
