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

from workers.envs.base import (
    SPLITS,
    Split,
    Task,
    TaskEnv,
    TaskFamily,
    TaskFamilyError,
    set_vector_tasks,
)
from workers.envs.cartpole import CartPolePhysicsFamily
from workers.envs.metaworld import MetaWorldML1Family, MetaWorldML10Family, MetaWorldML45Family
from workers.envs.mujoco import AntDirFamily, HalfCheetahDirFamily, HalfCheetahVelFamily
from workers.envs.navigation2d import Navigation2DFamily

FAMILIES: dict[str, type[TaskFamily]] = {
    cls.name: cls
    for cls in (
        Navigation2DFamily,
        HalfCheetahVelFamily,
        HalfCheetahDirFamily,
        AntDirFamily,
        CartPolePhysicsFamily,
        MetaWorldML1Family,
        MetaWorldML10Family,
        MetaWorldML45Family,
    )
}


def family_names() -> list[str]:
    """The registered family names, sorted."""
    return sorted(FAMILIES)


def family_parameters(name: str) -> dict[str, Any]:
    """The parameters ``make_family(name, ...)`` accepts, with their defaults
    (``inspect.Parameter.empty`` for a required one); ``seed`` is make_family's own argument.

    Raises:
        TaskFamilyError: ``name`` is not a registered family.
    """
    out: dict[str, Any] = {}
    # a constructor that passes ``**kwargs`` on takes its base class's parameters too
    for klass in _family_class(name).__mro__:
        params = inspect.signature(klass.__init__).parameters  # type: ignore[misc]
        for p in params.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "seed":
                out.setdefault(p.name, p.default)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return out


def make_family(name: str, *, seed: int = 0, **params: Any) -> TaskFamily:
    """Build the family ``name`` with ``params``.

    Args:
        name: a registered family name (see :func:`family_names`).
        seed: seeds the family's construction where it has one (Meta-World's goal
            generation); ignored by the other families.
        **params: the family's parameters (see :func:`family_parameters`).

    Raises:
        TaskFamilyError: unknown family, unknown or missing parameter, or an invalid value;
            the message names the valid choices.
    """
    cls = _family_class(name)
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
    if "seed" in inspect.signature(cls.__init__).parameters:
        params["seed"] = seed
    return cls(**params)


def _family_class(name: str) -> type[TaskFamily]:
    cls = FAMILIES.get(name)
    if cls is None:
        raise TaskFamilyError(f"unknown task family {name!r}; valid families: {family_names()}")
    return cls


__all__ = [
    "FAMILIES",
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
