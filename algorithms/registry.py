"""Learners by name."""

from __future__ import annotations

from typing import Any

import torch

from algorithms.base import PolicyGradientLearner
from algorithms.maml import MAML
from algorithms.multitask import MultiTaskPG
from algorithms.policies import PolicySpec
from algorithms.reptile import Reptile

LEARNERS: dict[str, type[PolicyGradientLearner]] = {"maml": MAML, "reptile": Reptile, "multitask-pg": MultiTaskPG}


def make_learner(
    name: str, spec: PolicySpec, config: Any = None, *, seed: int = 0, device: str | torch.device = "cpu"
) -> PolicyGradientLearner:
    """The learner called ``name`` (``maml``, ``reptile``, ``multitask-pg``)."""
    try:
        cls = LEARNERS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; valid: {sorted(LEARNERS)}") from None
    return cls(spec, config, seed=seed, device=device)
