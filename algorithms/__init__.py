"""Pure PyTorch + numpy meta-learning algorithms.

Nothing here imports ray, mlflow, fastapi, gymnasium, ``workers`` or ``service``: the package is
usable on its own and its functions are side-effect free over explicit parameter dicts.

Importing the package (or :mod:`algorithms.registry`, or an algorithm's package such as
:mod:`algorithms.maml`) does not import torch: the specs and registrations are light, so the
API process can validate job specs without the learners.  The names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Episodes": "algorithms.episodes",
    "CategoricalMLPPolicy": "algorithms.policies",
    "GaussianMLPPolicy": "algorithms.policies",
    "Params": "algorithms.policies",
    "Policy": "algorithms.policies",
    "PolicySpec": "algorithms.policies",
    "make_policy": "algorithms.policies",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'algorithms' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
