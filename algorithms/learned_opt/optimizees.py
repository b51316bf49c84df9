"""Optimizee problem families: batches of functions f(θ) for a learned optimizer to minimise.

A :class:`Problems` is ``B`` independent problems of ``P`` parameters each, side by side: θ is a
``[B, P]`` tensor (row ``b``: problem ``b``'s flat parameters) and ``loss(theta, step)`` returns the
``[B]`` per-problem losses, a pure function of θ (functional, no module state), so gradients and
meta-gradients flow through an optimizer's trajectory θ_0, θ_1, ... .  ``step`` selects the data
of stochastic problems (the minibatch of step ``t``); deterministic problems ignore it.  Because
the problems are independent, ``∇_θ Σ_b f_b(θ_b)`` has problem ``b``'s gradient in row ``b``.

Problem draws are seeded and the splits disjoint: problem ``i`` of split ``s`` has the integer
seed ``SPLIT_OFFSETS[s] + i`` (train ``[0, 10⁹)``, val ``[10⁹, 2·10⁹)``, test ``[2·10⁹, 3·10⁹)``),
drawn with ``numpy.random.default_rng([seed, family_seed])``; the same split, index and family
always give the same problem, whatever batch it is drawn in.

Families:

* :class:`QuadraticFamily` -- ``f(θ) = ‖Wθ − y‖²`` with ``W`` (d × d) and ``y`` (d) i.i.d.
  N(0, 1) (Andrychowicz et al. 2016, sec. 3.1, d = 10); the paper does not state θ0: here θ0 ~
  N(0, σ² I) with σ = ``theta0_scale`` (1 by default).  ``dim`` changes d (the "wider optimizee"
  generalisation).
* :class:`DigitsMLPFamily` -- the paper's MNIST setting (sec. 3.2: one hidden layer of 20 sigmoid
  units, minibatches of 128, cross-entropy) on **scikit-learn's 8×8 digits**
  (``sklearn.datasets.load_digits``: 1,797 images shipped with scikit-learn, pixels scaled to
  [0, 1]), *not* MNIST (28×28, 60,000 images; no download here).  A problem is a fresh random
  initialisation (PyTorch's ``nn.Linear`` default: weights and biases U(−1/√fan_in, 1/√fan_in)) and
  its own stream of minibatches (the data set reshuffled every epoch, 128 images a step), both from
  its seed; every problem trains on the same 1,797 images (as the paper's train and test problems
  share MNIST's training set).  ``loss(theta, t)`` is the mean cross-entropy on minibatch ``t``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

Split = Literal["train", "val", "test"]

#: first seed of each split; a split holds ``SPLIT_SIZE`` problems
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 1_000_000_000, "test": 2_000_000_000}
SPLIT_SIZE = 1_000_000_000


@runtime_checkable
class Problems(Protocol):
    """``n_problems`` optimizees of ``n_params`` parameters each (see the module docstring)."""

    @property
    def n_problems(self) -> int: ...

    @property
    def n_params(self) -> int: ...

    def init_params(self) -> Tensor:
        """A fresh copy of θ0, ``[n_problems, n_params]``."""
        ...

    def loss(self, theta: Tensor, step: int) -> Tensor:
        """The ``[n_problems]`` losses at ``theta`` (``[n_problems, n_params]``) on the data of
        step ``step``; differentiable w.r.t. ``theta``."""
        ...


@runtime_checkable
class ProblemFamily(Protocol):
    """Draws :class:`Problems`: ``count`` problems of ``split`` from index ``start`` on."""

    def sample(self, split: Split, start: int, count: int, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> Problems: ...


def problem_seeds(split: Split, start: int, count: int) -> list[int]:
    """The integer seeds of problems ``start .. start + count − 1`` of ``split``."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"split must be one of {sorted(SPLIT_OFFSETS)}, got {split!r}")
    if start < 0 or count < 1 or start + count > SPLIT_SIZE:
        raise ValueError(f"problems {start} .. {start + count - 1} are outside the split's 0 .. {SPLIT_SIZE - 1} "
                         "(start >= 0, count >= 1)")
    return [SPLIT_OFFSETS[split] + start + i for i in range(count)]


def _check_theta(theta: Tensor, n_problems: int, n_params: int) -> None:
    if tuple(theta.shape) != (n_problems, n_params):
        raise ValueError(f"theta must have shape [{n_problems}, {n_params}] (problems × params), "
                         f"got {tuple(theta.shape)}")


# ---- quadratics ------------------------------------------------------------------------------------
@dataclass
class QuadraticProblems:
    """``f_b(θ) = ‖W_b θ − y_b‖²``: ``W`` ``[B, d, d]``, ``y`` ``[B, d]``, θ0 ``[B, d]``."""

    W: Tensor
    y: Tensor
    theta0: Tensor
    seeds: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        b, d = self.y.shape
        if tuple(self.W.shape) != (b, d, d) or tuple(self.theta0.shape) != (b, d):
            raise ValueError(f"W {tuple(self.W.shape)}, y {tuple(self.y.shape)} and theta0 "
                             f"{tuple(self.theta0.shape)} do not fit [B, d, d], [B, d], [B, d]")

    @property
    def n_problems(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_params(self) -> int:
        return int(self.y.shape[1])

    def init_params(self) -> Tensor:
        return self.theta0.clone()

    def loss(self, theta: Tensor, step: int = 0) -> Tensor:
        """``‖Wθ − y‖²`` per problem (``step`` is ignored: the problem is deterministic)."""
        _check_theta(theta, self.n_problems, self.n_params)
        residual = torch.einsum("bij,bj->bi", self.W, theta) - self.y
        return residual.pow(2).sum(-1)


@dataclass(frozen=True)
class QuadraticFamily:
    """Random quadratics ``‖Wθ − y‖²`` of dimension ``dim`` (Andrychowicz et al. 2016, sec. 3.1:
    ``dim = 10``, W and y i.i.d. N(0, 1)); θ0 ~ N(0, theta0_scale² I) (the paper does not say)."""

    dim: int = 10
    theta0_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if not self.theta0_scale >= 0:
            raise ValueError(f"theta0_scale must be >= 0, got {self.theta0_scale}")

    def sample(self, split: Split, start: int, count: int, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> QuadraticProblems:
        seeds = problem_seeds(split, start, count)
        d = self.dim
        W = np.empty((count, d, d))
        y = np.empty((count, d))
        theta0 = np.empty((count, d))
        for b, seed in enumerate(seeds):
            rng = np.random.default_rng([seed, self.seed])
            W[b] = rng.standard_normal((d, d))
            y[b] = rng.standard_normal(d)
            theta0[b] = self.theta0_scale * rng.standard_normal(d)

        def t(a: np.ndarray) -> Tensor:
            return torch.as_tensor(a, dtype=dtype, device=device)

        return QuadraticProblems(t(W), t(y), t(theta0), seeds)


# ---- the MLP on digits -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def load_digits_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits: ``x`` ``[1797, 64]`` float64 in [0, 1] (pixels / 16) and the
    labels ``[1797]`` int64 (shipped with scikit-learn: nothing is downloaded)."""
    from sklearn.datasets import load_digits  # here: importing scikit-learn takes a while

    digits = load_digits()
    return np.asarray(digits.data, dtype=np.float64) / 16.0, np.asarray(digits.target, dtype=np.int64)


@dataclass(frozen=True)
class MLPShape:
    """A one-hidden-layer MLP's sizes and θ's flat layout ``[W1 (in×hidden, row-major), b1,
    W2 (hidden×out), b2]``."""

    inputs: int
    hidden: int
    outputs: int

    @property
    def n_params(self) -> int:
        return self.inputs * self.hidden + self.hidden + self.hidden * self.outputs + self.outputs

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """``[..., n_params]`` -> ``W1 [..., in, hidden]``, ``b1 [..., hidden]``, ``W2 [..., hidden,
        out]``, ``b2 [..., out]`` (views)."""
        if theta.shape[-1] != self.n_params:
            raise ValueError(f"theta's last dimension must be {self.n_params}, got {theta.shape[-1]}")
        sizes = [self.inputs * self.hidden, self.hidden, self.hidden * self.outputs, self.outputs]
        w1, b1, w2, b2 = torch.split(theta, sizes, dim=-1)
        lead = theta.shape[:-1]
        return {"W1": w1.reshape(*lead, self.inputs, self.hidden), "b1": b1,
                "W2": w2.reshape(*lead, self.hidden, self.outputs), "b2": b2}


_MLP_ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}


class MLPProblems:
    """``B`` MLP classifiers on one data set, each with its θ0 and minibatch stream.

    ``loss(theta, t)``: each problem's mean cross-entropy on its minibatch ``t`` (the minibatches of
    a problem walk through reshuffles of the data set, one permutation per epoch, drawn on demand
    from the problem's generator: minibatch ``t`` is the same whichever steps were asked before).
    """

    def __init__(self, x: Tensor, y: Tensor, theta0: Tensor, shape: MLPShape, *, batch_size: int,
                 activation: str, rngs: list[np.random.Generator], seeds: list[int] | None = None) -> None:
        if activation not in _MLP_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_MLP_ACTIVATIONS)}, got {activation!r}")
        if not 1 <= batch_size <= x.shape[0]:
            raise ValueError(f"batch_size must be in 1 .. {x.shape[0]} (the data set's size), got {batch_size}")
        if theta0.dim() != 2 or theta0.shape[1] != shape.n_params or len(rngs) != theta0.shape[0]:
            raise ValueError(f"theta0 must be [B, {shape.n_params}] with one generator per problem")
        self.x, self.y, self.theta0, self.shape = x, y, theta0, shape
        self.batch_size = batch_size
        self.activation = activation
        self.seeds = seeds or []
        self._rngs = rngs
        self._order: list[np.ndarray] = [np.empty(0, dtype=np.int64) for _ in rngs]
        self._batches: dict[int, Tensor] = {}

    @property
    def n_problems(self) -> int:
        return int(self.theta0.shape[0])

    @property
    def n_params(self) -> int:
        return self.shape.n_params

    def init_params(self) -> Tensor:
        return self.theta0.clone()

    def batch_indices(self, step: int) -> Tensor:
        """``[B, batch_size]`` indices of every problem's minibatch ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step not in self._batches:
            need = (step + 1) * self.batch_size
            n = self.x.shape[0]
            for b, rng in enumerate(self._rngs):
                while self._order[b].shape[0] < need:
                    self._order[b] = np.concatenate((self._order[b], rng.permutation(n)))
            rows = np.stack([order[step * self.batch_size:need] for order in self._order])
            self._batches[step] = torch.as_tensor(rows, device=self.x.device)
        return self._batches[step]

    def logits(self, theta: Tensor, x: Tensor) -> Tensor:
        """``[B, n, outputs]`` logits of ``[B, n, inputs]`` inputs under each problem's θ."""
        p = self.shape.unflatten(theta)
        hidden = _MLP_ACTIVATIONS[self.activation](torch.baddbmm(p["b1"].unsqueeze(1), x, p["W1"]))
        return torch.baddbmm(p["b2"].unsqueeze(1), hidden, p["W2"])

    def loss(self, theta: Tensor, step: int) -> Tensor:
        _check_theta(theta, self.n_problems, self.n_params)
        rows = self.batch_indices(step)
        logits = self.logits(theta, self.x[rows])
        log_probs = torch.log_softmax(logits, dim=-1)
        return -log_probs.gather(-1, self.y[rows].unsqueeze(-1)).squeeze(-1).mean(-1)

    def full_loss(self, theta: Tensor) -> Tensor:
        """``[B]`` mean cross-entropy on the whole data set."""
        _check_theta(theta, self.n_problems, self.n_params)
        logits = self.logits(theta, self.x.unsqueeze(0).expand(self.n_problems, -1, -1))
        log_probs = torch.log_softmax(logits, dim=-1)
        return -log_probs.gather(-1, self.y.expand(self.n_problems, -1).unsqueeze(-1)).squeeze(-1).mean(-1)


@dataclass(frozen=True)
class DigitsMLPFamily:
    """The paper's MNIST optimizee (sec. 3.2) on scikit-learn's 8×8 digits (see the module
    docstring): 64 inputs, ``hidden`` sigmoid units (20), 10 classes, minibatches of 128."""

    hidden: int = 20
    batch_size: int = 128
    activation: str = "sigmoid"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        if self.activation not in _MLP_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_MLP_ACTIVATIONS)}, got {self.activation!r}")

    @property
    def shape(self) -> MLPShape:
        return MLPShape(64, self.hidden, 10)

    def sample(self, split: Split, start: int, count: int, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> MLPProblems:
        seeds = problem_seeds(split, start, count)
        x, y = load_digits_data()
        shape = self.shape
        theta0 = np.empty((count, shape.n_params))
        rngs = []
        for b, seed in enumerate(seeds):
            rng = np.random.default_rng([seed, self.seed])
            parts = []
            for fan_in, fan_out in ((shape.inputs, shape.hidden), (shape.hidden, shape.outputs)):
                bound = 1.0 / np.sqrt(fan_in)
                parts.append(rng.uniform(-bound, bound, fan_in * fan_out))
                parts.append(rng.uniform(-bound, bound, fan_out))
            theta0[b] = np.concatenate(parts)
            rngs.append(rng)  # the same generator then draws the minibatch stream
        return MLPProblems(torch.as_tensor(x, dtype=dtype, device=device), torch.as_tensor(y, device=device),
                           torch.as_tensor(theta0, dtype=dtype, device=device), shape,
                           batch_size=self.batch_size, activation=self.activation, rngs=rngs, seeds=seeds)


__all__ = [
    "SPLIT_OFFSETS",
    "DigitsMLPFamily",
    "MLPProblems",
    "MLPShape",
    "ProblemFamily",
    "Problems",
    "QuadraticFamily",
    "QuadraticProblems",
    "Split",
    "load_digits_data",
    "problem_seeds",
]
