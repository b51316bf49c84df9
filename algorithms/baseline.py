"""The linear feature baseline of Duan et al. 2016 (rllab), the one MAML uses.

Features of a state at step ``t`` of its episode: ``[o, o**2, t/100, (t/100)**2, (t/100)**3, 1]``
with ``o`` the observation clipped to ``[-10, 10]``.  The baseline is a ridge regression of the
discounted returns on those features, fitted per task on that task's episodes, with the
regulariser raised tenfold until the solve is finite (Duan et al.'s recipe).

All functions are batched over tasks: tensors carry a leading task dimension ``n``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from algorithms.errors import NonFiniteError


def features(obs: Tensor, mask: Tensor, dones: Tensor | None = None) -> Tensor:
    """Features ``[n, T, B, 2*obs_dim + 4]`` of obs ``[n, T, B, obs_dim]``.

    The time feature counts steps since the column's last episode start (``dones`` inside a
    column restart it); padded steps get all-zero features.
    """
    n, horizon, b = mask.shape
    o = obs.clamp(-10.0, 10.0)
    if dones is None:
        steps = torch.arange(horizon, dtype=obs.dtype, device=obs.device).view(1, horizon, 1).expand(n, horizon, b)
    else:
        steps = torch.zeros_like(mask)
        count = torch.zeros_like(mask[:, 0])
        d = dones.to(obs.dtype)
        for t in range(horizon):
            steps[:, t] = count
            count = (count + 1.0) * (1.0 - d[:, t])
    al = (steps / 100.0).unsqueeze(-1)
    feats = torch.cat([o, o * o, al, al**2, al**3, torch.ones_like(al)], dim=-1)
    return feats * mask.unsqueeze(-1)


def fit(feats: Tensor, targets: Tensor, mask: Tensor, *, reg_coeff: float = 1e-5, tries: int = 5) -> Tensor:
    """Ridge weights ``[n, F]`` from features ``[n, T, B, F]`` and targets ``[n, T, B]``.

    Solved in float64 with the regulariser raised ×10 until the weights are finite.
    """
    x = (feats * mask.unsqueeze(-1)).flatten(1, 2).double()
    y = (targets * mask).flatten(1, 2).double()
    xtx = x.transpose(1, 2) @ x
    xty = (x.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)
    eye = torch.eye(xtx.shape[-1], dtype=xtx.dtype, device=xtx.device)
    reg = reg_coeff
    for _ in range(tries):
        weights = torch.linalg.solve(xtx + reg * eye, xty)
        if torch.isfinite(weights).all():
            return weights.to(feats.dtype)
        reg *= 10.0
    raise NonFiniteError(
        f"linear baseline: no finite solution up to reg_coeff={reg / 10:g} (are the rewards or observations finite?)"
    )


def predict(feats: Tensor, weights: Tensor) -> Tensor:
    """Values ``[n, T, B]`` (zero on padding, since padded features are zero)."""
    return torch.einsum("ntbf,nf->ntb", feats, weights)
