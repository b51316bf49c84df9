"""Pure PyTorch + numpy meta-RL algorithms.

Nothing here imports ray, mlflow, fastapi, gymnasium, ``workers`` or ``service``: the package is
usable on its own and its functions are side-effect free over explicit parameter dicts.
"""

from algorithms.episodes import Episodes
from algorithms.policies import (
    CategoricalMLPPolicy,
    GaussianMLPPolicy,
    Params,
    Policy,
    PolicySpec,
    make_policy,
)

__all__ = [
    "CategoricalMLPPolicy",
    "Episodes",
    "GaussianMLPPolicy",
    "Params",
    "Policy",
    "PolicySpec",
    "make_policy",
]
