"""Task families: distributions over MDPs sharing spaces (see :mod:`workers.envs.base`).

The registry maps a family name to its class; :func:`make_family` builds one from a name and
keyword parameters, checking both::

    family = make_family("halfcheetah-vel", max_episode_steps=200)
    tasks = family.sample_tasks(20, np.random.default_rng(0))
    vec = family.make_vector_env(tasks, envs_per_task=10)
    set_vector_tasks(vec, family.sample_tasks(20, rng), 10)

Families and their parameters (all take ``max_episode_steps``):

* ``navigation2d``: ``low``, ``high`` (goal box; natively batched vector env);
* ``halfcheetah-vel``: ``velocity_low``, ``velocity_high``; ``halfcheetah-dir``; ``ant-dir``;
* ``cartpole-physics``: ``length_low``, ``length_high``, ``masspole_low``, ``masspole_high``;
* ``metaworld-ml1`` (``env_name``), ``metaworld-ml10``, ``metaworld-ml45``: seeded by ``seed``.

Families without a published train/test split (``navigation2d``, ``halfcheetah-vel``,
``cartpole-physics`` and the two-task direction families) draw both splits from the same
distribution.
"""

from __future__ import annotations

import inspect
from typing import Any

from workers.catalog import family_info
from workers.catalog import family_names as _catalog_names
from workers.envs.base import (
    SPLITS,
    Split,
    Task,
    TaskEnv,
    TaskFamily,
    TaskFamilyError,
    set_vector_tasks,
)


def family_names() -> list[str]:
    """The registered RL task families' names, sorted (:mod:`workers.catalog`; the supervised
    distributions are :func:`workers.supervised.distribution_names`)."""
    return [name for name in _catalog_names() if family_info(name).kind == "rl"]


def family_parameters(name: str) -> dict[str, Any]:
    """The parameters ``make_family(name, ...)`` accepts, with their defaults
    (``inspect.Parameter.empty`` for a required one), as the catalog declares them; ``seed`` is
    make_family's own argument.

    Raises:
        TaskFamilyError: ``name`` is not a registered family.
    """
    fields = _info(name).params.model_fields
    return {k: (inspect.Parameter.empty if f.is_required() else f.default) for k, f in fields.items()}


def make_family(name: str, *, seed: int = 0, **params: Any) -> TaskFamily:
    """Build the family ``name`` with ``params`` (the others take their defaults).

    Args:
        name: a registered family name (see :func:`family_names`).
        seed: seeds the family's construction where it has one (Meta-World's goal
            generation); ignored by the other families.
        **params: the family's parameters (see :func:`family_parameters`).

    Raises:
        TaskFamilyError: unknown family, unknown or missing parameter, or an invalid value;
            the message names the valid choices.
    """
    info = _info(name)
    if info.kind != "rl":
        raise TaskFamilyError(f"{name} is a {info.kind} task distribution, not a task family of envs; "
                              "build it with workers.supervised.make_distribution")
    accepted = family_parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TaskFamilyError(
            f"{name}: unknown parameter(s) {unknown}; valid parameters: {sorted(accepted)}"
        )
    missing = sorted(
        k
        for k, default in accepted.items()
        if default is inspect.Parameter.empty and k not in params
    )
    if missing:
        raise TaskFamilyError(
            f"{name}: missing required parameter(s) {missing}; valid parameters: {sorted(accepted)}"
        )
    if info.seeded:
        params["seed"] = seed
    family = info.builder_class()(**params)
    if not isinstance(family, TaskFamily):
        raise TaskFamilyError(f"{name}: its builder {info.builder} made a {type(family).__name__}, not a TaskFamily")
    return family


def _info(name: str) -> Any:
    try:
        return family_info(name)
    except LookupError:
        raise TaskFamilyError(f"unknown task family {name!r}; valid families: {family_names()}") from None


def __getattr__(name: str) -> Any:
    if name == "FAMILIES":  # name -> class, for every registered family (imports them all)
        return {n: family_info(n).builder_class() for n in family_names()}
    raise AttributeError(f"module 'workers.envs' has no attribute {name!r}")


__all__ = [
    "SPLITS",
    "Split",
    "Task",
    "TaskEnv",
    "TaskFamily",
    "TaskFamilyError",
    "family_names",
    "family_parameters",
    "make_family",
    "set_vector_tasks",
]
