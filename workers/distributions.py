"""Task distributions of either kind by name: what the engine's processes (the driver, the rollout
actors, a loaded model) build from a job spec's ``task_family``."""

from __future__ import annotations

from typing import Any

from workers.catalog import family_info
from workers.envs import make_family
from workers.supervised import make_distribution
from workers.tasks import TaskDistribution, TaskFamilyError


def build_distribution(name: str, *, seed: int = 0, **params: Any) -> TaskDistribution:
    """Build the registered task distribution ``name``: an RL task family
    (:func:`workers.envs.make_family`) or a supervised one
    (:func:`workers.supervised.make_distribution`), by its catalog kind."""
    try:
        kind = family_info(name).kind
    except LookupError as exc:
        raise TaskFamilyError(str(exc.args[0])) from None
    if kind == "supervised":
        return make_distribution(name, seed=seed, **params)
    return make_family(name, seed=seed, **params)


__all__ = ["build_distribution"]
