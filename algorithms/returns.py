"""Discounted returns and generalized advantage estimation, time-major ``[T, B]``.

``dones[t, b]`` means the episode in column ``b`` ended at step ``t``: nothing after it is
credited to it (no bootstrapping across an episode end).  ``mask`` zeroes padding.
"""

from __future__ import annotations

import torch
from torch import Tensor


def discounted_returns(rewards: Tensor, dones: Tensor, *, gamma: float) -> Tensor:
    """``R_t = r_t + gamma * (1 - done_t) * R_{t+1}``, with ``R_T = 0``."""
    not_done = 1.0 - dones.to(rewards.dtype)
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * not_done[t] * running
        out[t] = running
    return out


def gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    *,
    gamma: float,
    gae_lambda: float,
    last_values: Tensor | None = None,
) -> Tensor:
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16).

    ``delta_t = r_t + gamma * (1 - done_t) * V_{t+1} - V_t``;
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}``.

    Args:
        rewards, values, dones: ``[T, B]``.
        last_values: ``V_T`` of the state after the last step, for columns that did not end
            (zeros if omitted, i.e. the horizon is the end of the task).
    """
    not_done = 1.0 - dones.to(rewards.dtype)
    next_values = torch.cat(
        [values[1:], (torch.zeros_like(values[0]) if last_values is None else last_values).unsqueeze(0)]
    )
    deltas = rewards + gamma * not_done * next_values - values
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        out[t] = running
    return out


def normalize(x: Tensor, mask: Tensor, *, dims: tuple[int, ...] | None = None, eps: float = 1e-8) -> Tensor:
    """Masked standardisation (zero mean, unit std over ``mask``); padding stays 0."""
    dims = tuple(range(x.dim())) if dims is None else dims
    count = mask.sum(dim=dims, keepdim=True).clamp_min(1.0)
    mean = (x * mask).sum(dim=dims, keepdim=True) / count
    var = ((x - mean).pow(2) * mask).sum(dim=dims, keepdim=True) / count
    return (x - mean) / (var.sqrt() + eps) * mask
