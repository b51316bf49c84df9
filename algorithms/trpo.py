"""Conjugate gradient and TRPO's backtracking line search (Schulman et al. 2015, App. C)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CGResult:
    x: Tensor
    iterations: int
    residual: float


def conjugate_gradient(
    avp: Callable[[Tensor], Tensor], b: Tensor, *, iters: int = 10, residual_tol: float = 1e-10
) -> CGResult:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given only ``v -> A v``."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rdotr = torch.dot(r, r)
    done = 0
    for i in range(iters):
        if rdotr.item() < residual_tol:
            break
        ap = avp(p)
        alpha = rdotr / torch.dot(p, ap)
        x = x + alpha * p
        r = r - alpha * ap
        new_rdotr = torch.dot(r, r)
        p = r + (new_rdotr / rdotr) * p
        rdotr = new_rdotr
        done = i + 1
    return CGResult(x=x, iterations=done, residual=float(rdotr.sqrt()))


@dataclass(frozen=True)
class LineSearchResult:
    accepted: bool
    step_fraction: float
    backtracks: int
    loss: float
    kl: float


def backtracking_line_search(
    evaluate: Callable[[Tensor], tuple[float, float]],
    x0: Tensor,
    fullstep: Tensor,
    *,
    loss_before: float,
    max_kl: float,
    backtrack_ratio: float,
    max_backtracks: int,
) -> tuple[Tensor, LineSearchResult]:
    """Shrink ``fullstep`` until the loss improves and the KL stays within ``max_kl``.

    ``evaluate(x) -> (loss, kl)``.  Returns the accepted point, or ``x0`` itself when no
    fraction satisfies both conditions (the step is rejected).
    """
    loss, kl = loss_before, 0.0
    for k in range(max_backtracks):
        frac = backtrack_ratio**k
        x = x0 - frac * fullstep
        loss, kl = evaluate(x)
        finite = torch.isfinite(torch.tensor([loss, kl])).all().item()
        if finite and loss < loss_before and kl <= max_kl:
            return x, LineSearchResult(True, frac, k, loss, kl)
    return x0, LineSearchResult(False, 0.0, max_backtracks, loss, kl)
