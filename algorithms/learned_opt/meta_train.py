"""Meta-training a learned optimizer by truncated BPTT, running it, and the hand-designed baselines.

Andrychowicz et al. 2016, sec. 2: the optimizer's parameters φ minimise the expected loss of the
optimizee along the trajectory the optimizer makes,

    L(φ) = E_f [ Σ_{t=1}^{T} w_t f(θ_t) ],   θ_{t+1} = θ_t + g_t,   [g_t; h_{t+1}] = m(∇_t, h_t; φ),

with ``∇_t = ∇_θ f(θ_t)`` and every ``w_t = 1`` (eq. 3 and below).  The gradient ``∂L/∂φ`` is
taken through the trajectory, **dropping the second derivatives of f**: the paper assumes
``∂∇_t/∂φ = 0`` (sec. 2, "Computing the gradient of the loss ... only requires first
derivatives"), so ∇_t enters the LSTM as a constant (``torch.autograd.grad`` without
``create_graph``: the optimizee's Hessian never appears).  φ still reaches ``f(θ_t)`` through
every earlier update ``g_s``, ``s < t``, and through the hidden states.

Truncated BPTT (sec. 3: T = 100 optimizee steps, unrolled 20 at a time): an episode's ``T`` steps
are cut into truncations of ``unroll`` steps.  Truncation ``k`` starts from θ and the hidden
states where truncation ``k − 1`` ended, *detached* (constants of φ), and its meta-loss
``Σ_{t = s+1}^{s+unroll} f(θ_t)`` (mean over the episode's problems) is back-propagated into φ
and followed by one Adam step, before the next truncation continues the same optimizees with the
updated φ.  The loss of the starting point θ_s is not part of a truncation's meta-loss (it does
not depend on φ once detached).

The baselines (:func:`tune_baseline`, :func:`compare_baselines`) are ``torch.optim``'s SGD,
SGD with momentum 0.9, Nesterov's accelerated gradient (momentum 0.9), RMSprop and Adam (their
defaults otherwise), each with a learning rate picked from a grid on *training* problems by the
mean over problems of the **final** loss ``f(θ_T)`` (``criterion="final"``; or the mean of the
whole curve, ``criterion="mean"``), then run on the held-out problems.  Every one of them is
elementwise, so one ``torch.optim`` optimizer on the ``[B, P]`` tensor of ``B`` independent
problems is exactly ``B`` separate runs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from algorithms.errors import NonFiniteError
from algorithms.learned_opt.lstm_optimizer import LSTMOptimizer, LSTMState
from algorithms.learned_opt.optimizees import ProblemFamily, Problems
from algorithms.learned_opt.specs import MetaTrainSpec

Criterion = Literal["final", "mean"]

#: the hand-designed baselines: name -> optimizer class and fixed settings (the lr is tuned)
BASELINES: dict[str, tuple[Callable[..., torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "nag": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "adam": (torch.optim.Adam, {}),
}

#: the default learning-rate grid of the baselines: 10^-4 .. 10^1, three per decade
DEFAULT_LRS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-4, 1, 16))


# ---- one truncation -------------------------------------------------------------------------------
def unroll_meta_loss(net: LSTMOptimizer, problems: Problems, theta: Tensor, state: LSTMState, *, start: int,
                     unroll: int, weights: Sequence[float] | None = None) -> tuple[Tensor, Tensor, LSTMState]:
    """One truncation of BPTT: ``unroll`` steps of the learned optimizer from step ``start``.

    Args:
        net: the optimizer m(·; φ).
        problems: the optimizees; ``problems.loss(θ, t)`` is ``f(θ_t)`` on step ``t``'s data.
        theta: θ_start, ``[B, P]``; used as a constant (detached here).
        state: the hidden states at ``start`` (``B·P`` coordinates); detached here.
        start: the step index ``s`` of θ_start.
        unroll: the truncation length.
        weights: ``w_{s+1} .. w_{s+unroll}`` (default all 1, the paper's choice).

    Returns:
        ``(meta_loss, θ_{s+unroll}, state)``: ``meta_loss = Σ_{j=1}^{unroll} w_{s+j} · mean_b
        f_b(θ_{s+j})``, differentiable w.r.t. φ (the gradients fed to the LSTM are constants:
        ``∂∇_t/∂φ = 0``), and the end point and states (still attached to the graph; detach them
        before the next truncation).
    """
    if unroll < 1:
        raise ValueError(f"unroll must be >= 1, got {unroll}")
    w = [1.0] * unroll if weights is None else [float(v) for v in weights]
    if len(w) != unroll:
        raise ValueError(f"weights has {len(w)} entries, unroll is {unroll}")
    batch = problems.n_problems
    theta = theta.detach().requires_grad_(True)
    state = state.detach()
    loss = problems.loss(theta, start)
    meta_loss = theta.new_zeros(())
    for j in range(unroll):
        # ∇_t = ∇_θ f(θ_t) as a constant: no create_graph, so no second derivatives of f
        (grad,) = torch.autograd.grad(loss.sum(), theta, retain_graph=True)
        update, state = net(grad.reshape(-1), state)
        theta = theta + update.view_as(theta)
        loss = problems.loss(theta, start + j + 1)
        meta_loss = meta_loss + w[j] * loss.sum() / batch
    return meta_loss, theta, state


# ---- meta-training --------------------------------------------------------------------------------
@dataclass
class MetaTrainResult:
    """What :func:`meta_train` reports.

    Attributes:
        meta_losses: one per meta-iteration (one truncation, one Adam step on φ): the truncation's
            meta-loss ``Σ_t f(θ_t)`` over its ``unroll`` steps, mean over the episode's problems.
        episode_losses: one per episode: ``Σ_{t=1}^{T} f(θ_t)`` (the sum of its truncations'
            meta-losses), mean over its problems.
        val_losses: ``(episode, mean final validation loss f(θ_T))`` after every ``val_every``
            episodes (and after the last), when validation problems were given.
        best_episode: the episode after which the kept φ was saved (the best validation loss:
            the paper's early stopping), or the last episode without validation.
        seconds: wall-clock time of the training (validation included).
    """

    meta_losses: list[float] = field(default_factory=list)
    episode_losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    best_episode: int = -1
    seconds: float = 0.0


def meta_train(net: LSTMOptimizer, family: ProblemFamily, spec: MetaTrainSpec | None = None, *,
               optimizer: torch.optim.Optimizer | None = None, validation: Problems | None = None,
               val_every: int = 10, on_episode: Callable[[int, float], None] | None = None) -> MetaTrainResult:
    """Meta-train ``net`` in place on problems of ``family``'s training split (see the module
    docstring for the meta-loss and the truncations).

    Args:
        net: the optimizer to train (φ: its parameters; dtype and device of the problems: φ's).
        family: draws the training problems: episode ``e`` gets problems ``spec.first_problem +
            e·B .. + B − 1`` of the ``"train"`` split (``B = spec.problems_per_episode``).
        spec: episodes, batch, T, truncation, Adam's step size, clipping (default: the paper's
            T = 100 and unroll 20; 100 episodes of 16 problems).
        optimizer: the optimizer of φ (default ``torch.optim.Adam(net.parameters(), spec.meta_lr)``);
            pass one to continue a training.
        validation: held-out problems (e.g. of the ``"val"`` split) for early stopping: every
            ``val_every`` episodes the mean final loss ``f(θ_T)`` of a :func:`run_optimizer` run of
            ``spec.steps`` steps is measured, and at the end ``net`` is given the φ with the lowest
            one (Andrychowicz et al. 2016, sec. 3: "we pick the best optimizer (according to the
            final validation loss)").
        val_every: the validation period in episodes.
        on_episode: called after each episode with ``(episode, episode_loss)``.

    Raises:
        NonFiniteError: a meta-loss or meta-gradient is NaN/inf (φ is left as before that step).
    """
    spec = spec or MetaTrainSpec()
    if val_every < 1:
        raise ValueError(f"val_every must be >= 1, got {val_every}")
    opt = optimizer or torch.optim.Adam(net.parameters(), lr=spec.meta_lr)
    result = MetaTrainResult()
    dtype, device = net.dtype, net.device
    best: tuple[float, int, dict[str, Tensor]] | None = None
    began = time.perf_counter()
    truncations = spec.steps // spec.unroll
    batch = spec.problems_per_episode
    net.train()
    for episode in range(spec.episodes):
        problems = family.sample("train", spec.first_problem + episode * batch, batch, dtype=dtype, device=device)
        theta = problems.init_params()
        state = net.init_state(theta.numel())
        episode_loss = 0.0
        for k in range(truncations):
            meta_loss, theta, state = unroll_meta_loss(net, problems, theta, state, start=k * spec.unroll,
                                                       unroll=spec.unroll)
            if not torch.isfinite(meta_loss):
                raise NonFiniteError(f"the meta-loss of episode {episode}, truncation {k} is not finite")
            opt.zero_grad(set_to_none=True)
            meta_loss.backward()
            grads = [p.grad for p in net.parameters() if p.grad is not None]
            if spec.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), spec.max_grad_norm)
            if not all(bool(torch.isfinite(g).all()) for g in grads):
                raise NonFiniteError(f"the meta-gradient of episode {episode}, truncation {k} is not finite")
            opt.step()
            theta, state = theta.detach(), state.detach()
            value = float(meta_loss.detach())
            result.meta_losses.append(value)
            episode_loss += value
        result.episode_losses.append(episode_loss)
        if on_episode is not None:
            on_episode(episode, episode_loss)
        if validation is not None and ((episode + 1) % val_every == 0 or episode + 1 == spec.episodes):
            final = float(np.mean(run_optimizer(net, validation, spec.steps)[:, -1]))
            result.val_losses.append((episode, final))
            if math.isfinite(final) and (best is None or final < best[0]):
                best = (final, episode, copy.deepcopy(net.state_dict()))
    if best is not None:
        net.load_state_dict(best[2])
        result.best_episode = best[1]
    else:
        result.best_episode = spec.episodes - 1
    result.seconds = time.perf_counter() - began
    return result


# ---- running an optimizer -------------------------------------------------------------------------
@torch.no_grad()
def run_optimizer(net: LSTMOptimizer, problems: Problems, steps: int) -> np.ndarray:
    """The learned optimizer on ``problems`` for ``steps`` steps, no meta-gradient: the
    ``[B, steps + 1]`` losses ``f(θ_0) .. f(θ_steps)`` (float64; ``f(θ_t)`` on step ``t``'s data)."""
    return optimize(net, problems, steps)[1]


@torch.no_grad()
def optimize(net: LSTMOptimizer, problems: Problems, steps: int) -> tuple[Tensor, np.ndarray]:
    """:func:`run_optimizer` that also returns where it ends: ``(θ_steps, curve)``, θ ``[B, P]``
    (detached, φ's dtype) and the ``[B, steps + 1]`` losses."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    was_training = net.training
    net.eval()
    theta = problems.init_params().to(net.dtype)
    state = net.init_state(theta.numel())
    curve = np.empty((problems.n_problems, steps + 1))
    try:
        for t in range(steps + 1):
            with torch.enable_grad():
                leaf = theta.detach().requires_grad_(True)
                loss = problems.loss(leaf, t)
                if t < steps:
                    (grad,) = torch.autograd.grad(loss.sum(), leaf)
            curve[:, t] = loss.detach().double().cpu().numpy()
            if t < steps:
                update, state = net(grad.reshape(-1), state)
                theta = theta + update.view_as(theta)
    finally:
        net.train(was_training)
    return theta.detach(), curve


def run_baseline(problems: Problems, name: str, lr: float, steps: int) -> np.ndarray:
    """A hand-designed optimizer of :data:`BASELINES` with step size ``lr`` on ``problems``: the
    ``[B, steps + 1]`` losses ``f(θ_0) .. f(θ_steps)`` (float64; non-finite once it diverges)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; one of {sorted(BASELINES)}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    cls, kwargs = BASELINES[name]
    theta = problems.init_params().detach().requires_grad_(True)
    opt = cls([theta], lr=lr, **kwargs)
    curve = np.empty((problems.n_problems, steps + 1))
    for t in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = problems.loss(theta, t)
        curve[:, t] = loss.detach().double().cpu().numpy()
        if t == steps:
            break
        if not torch.isfinite(loss).all():  # diverged: the rest of the curve is inf
            curve[:, t + 1:] = np.inf
            break
        loss.sum().backward()
        opt.step()
    return curve


def curve_score(curve: np.ndarray, criterion: Criterion = "final") -> float:
    """A run's score: the mean over problems of the final loss (``"final"``) or of the whole
    curve (``"mean"``); ``inf`` if any value is NaN/inf (a diverged run)."""
    if criterion not in ("final", "mean"):
        raise ValueError(f"criterion must be 'final' or 'mean', got {criterion!r}")
    values = curve[:, -1] if criterion == "final" else curve
    return float(values.mean()) if np.isfinite(values).all() else math.inf


@dataclass
class BaselineResult:
    """A tuned baseline: its ``lr``, the grid's scores on the training problems (``lr -> score``,
    see :func:`curve_score`) and its ``[B, steps + 1]`` curves on the held-out problems."""

    name: str
    lr: float
    grid: dict[float, float]
    curves: np.ndarray


def tune_baseline(problems: Problems, name: str, steps: int, *, lrs: Sequence[float] = DEFAULT_LRS,
                  criterion: Criterion = "final") -> tuple[float, dict[float, float]]:
    """The learning rate of ``lrs`` with the best :func:`curve_score` on ``problems`` (training
    problems), and every lr's score.  Raises ``ValueError`` if every lr diverged."""
    if len(lrs) == 0:
        raise ValueError("lrs is empty")
    grid = {float(lr): curve_score(run_baseline(problems, name, float(lr), steps), criterion) for lr in lrs}
    best = min(grid, key=lambda lr: grid[lr])
    if not math.isfinite(grid[best]):
        raise ValueError(f"{name}: every learning rate of {list(grid)} diverged on the training problems")
    return best, grid


def compare_baselines(train: Problems, test: Problems, steps: int, *,
                      names: Sequence[str] = ("sgd", "momentum", "nag", "rmsprop", "adam"),
                      lrs: Sequence[float] = DEFAULT_LRS, criterion: Criterion = "final") -> dict[str, BaselineResult]:
    """Each baseline's lr tuned on ``train`` (:func:`tune_baseline`), then its curves on ``test``."""
    out = {}
    for name in names:
        lr, grid = tune_baseline(train, name, steps, lrs=lrs, criterion=criterion)
        out[name] = BaselineResult(name, lr, grid, run_baseline(test, name, lr, steps))
    return out


__all__ = [
    "BASELINES",
    "DEFAULT_LRS",
    "BaselineResult",
    "MetaTrainResult",
    "compare_baselines",
    "curve_score",
    "meta_train",
    "optimize",
    "run_baseline",
    "run_optimizer",
    "tune_baseline",
    "unroll_meta_loss",
]
