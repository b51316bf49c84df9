"""The data of supervised few-shot meta-learning: one episode of one task (Vinyals et al. 2016's
"episode"; Finn et al. 2017, sec. 3.1's ``D_i`` and ``D'_i``), as plain numpy (it crosses process
boundaries: made by a rollout actor, learned from by the learner)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SupportQuery:
    """One supervised episode of a task: the support set adapted on, the query set scored on.

    ``x_*`` are ``[N, *input_shape]`` float32; ``y_*`` are ``[N]`` int64 class indices (0..ways-1
    within the episode) or ``[N, out_dim]`` float32 regression targets.
    """

    x_support: np.ndarray
    y_support: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray

    def __post_init__(self) -> None:
        for x, y, name in ((self.x_support, self.y_support, "support"), (self.x_query, self.y_query, "query")):
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"SupportQuery: the {name} set has {x.shape[0]} inputs and {y.shape[0]} targets")
        if self.x_support.shape[1:] != self.x_query.shape[1:]:
            raise ValueError(
                f"SupportQuery: support inputs {self.x_support.shape[1:]} and query inputs {self.x_query.shape[1:]} "
                "differ in shape"
            )

    @property
    def classification(self) -> bool:
        """Class-index targets (else regression targets)."""
        return self.y_support.ndim == 1


__all__ = ["SupportQuery"]
