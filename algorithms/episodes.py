"""The typed container episodes travel in between processes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Episodes:
    """A batch of episodes of ONE task, time-major: arrays shaped ``[T, B, ...]``.

    Each column ``b`` is one episode that starts at ``t = 0``; ``mask[t, b]`` is 1 for the
    steps the episode really took and 0 after it ended (padding), so ``T`` is the horizon.
    ``dones[t, b]`` marks the step an episode ended on (terminated or truncated).  GAE and the
    returns also accept columns with several episodes back to back (``dones`` inside a column).

    Attributes:
        obs: float32 ``[T, B, obs_dim]``, the observation the action was taken in.
        actions: float32 ``[T, B, act_dim]`` (continuous) or int64 ``[T, B]`` (discrete); the
            action as sampled, before any clipping to the action space.
        rewards: float32 ``[T, B]``.
        dones: bool ``[T, B]``.
        mask: float32 ``[T, B]``.
        log_probs: float32 ``[T, B]``, log-probability of the action under the behaviour policy.
        success: float32 ``[T, B]``, ``info["success"]`` where the family reports it, else 0.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    mask: np.ndarray
    log_probs: np.ndarray
    success: np.ndarray

    def __post_init__(self) -> None:
        t, b = self.rewards.shape
        for name in ("dones", "mask", "log_probs", "success"):
            shape = getattr(self, name).shape
            if shape != (t, b):
                raise ValueError(f"Episodes.{name} has shape {shape}, expected {(t, b)}")
        if self.obs.shape[:2] != (t, b) or self.actions.shape[:2] != (t, b):
            raise ValueError(
                f"Episodes.obs {self.obs.shape} / actions {self.actions.shape} do not start with {(t, b)}"
            )

    @property
    def horizon(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def num_steps(self) -> int:
        """Env steps actually taken (padding excluded)."""
        return int(self.mask.sum())

    @property
    def returns(self) -> np.ndarray:
        """Undiscounted return of each column, ``[B]``."""
        return (self.rewards * self.mask).sum(axis=0)

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(axis=0).astype(np.int64)

    @property
    def successes(self) -> np.ndarray:
        """1 for a column whose episode reached success at any step (Meta-World's rule), ``[B]``."""
        return (self.success * self.mask).max(axis=0)

    def select(self, columns: np.ndarray | slice) -> Episodes:
        """The episodes of the given columns."""
        return Episodes(
            obs=self.obs[:, columns],
            actions=self.actions[:, columns],
            rewards=self.rewards[:, columns],
            dones=self.dones[:, columns],
            mask=self.mask[:, columns],
            log_probs=self.log_probs[:, columns],
            success=self.success[:, columns],
        )

    @staticmethod
    def concatenate(parts: list[Episodes]) -> Episodes:
        """Columns of several batches side by side (padded to the longest horizon)."""
        if not parts:
            raise ValueError("Episodes.concatenate needs at least one batch")
        horizon = max(p.horizon for p in parts)
        padded = [p.pad_to(horizon) for p in parts]
        return Episodes(
            **{f: np.concatenate([getattr(p, f) for p in padded], axis=1) for f in _FIELDS}
        )

    def pad_to(self, horizon: int) -> Episodes:
        """Zero-pad (mask 0) to ``horizon`` steps."""
        extra = horizon - self.horizon
        if extra < 0:
            raise ValueError(f"cannot pad {self.horizon} steps down to {horizon}")
        if extra == 0:
            return self

        def pad(a: np.ndarray) -> np.ndarray:
            widths = [(0, extra)] + [(0, 0)] * (a.ndim - 1)
            return np.pad(a, widths)

        return Episodes(**{f: pad(getattr(self, f)) for f in _FIELDS})


_FIELDS = ("obs", "actions", "rewards", "dones", "mask", "log_probs", "success")
