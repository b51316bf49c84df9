"""The coordinatewise LSTM optimizer m(∇; φ) of Andrychowicz et al. 2016.

The optimizee's parameters θ are updated by ``θ_{t+1} = θ_t + g_t`` with
``[g_t; h_{t+1}] = m(∇_t, h_t; φ)`` (eq. 1-2), where ``∇_t = ∇_θ f(θ_t)``.  The optimizer is
*coordinatewise* (sec. 2.1): one small LSTM, its weights φ shared by every coordinate, each
coordinate with its own hidden state.  Here every coordinate is one row of a batch, so one call
handles any number of coordinates (and any number of optimizees side by side), and permuting the
coordinates permutes the updates.

Per coordinate ``i`` and step:

* input ``x_i = ∇_i`` (one feature) or, with the preprocessing of Appendix A and ``p = 10``,
  ``x_i = (log|∇_i| / p, sgn ∇_i)`` if ``|∇_i| ≥ e^{−p}`` and ``x_i = (−1, e^p ∇_i)`` otherwise
  (two features): the first keeps the magnitude's scale on a log axis, the second its sign;
* ``num_layers`` stacked LSTM cells (``torch.nn.LSTMCell``; paper: 2 layers of 20 units), each
  layer ``ℓ`` with its state ``(h_i^ℓ, c_i^ℓ)``;
* the update ``g_i = s · (w · h_i^L + b)``: a linear output layer on the top layer's hidden state,
  times the output multiplier ``s`` (paper, sec. 3.2: 0.1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from algorithms.learned_opt.specs import LSTMOptimizerSpec


class LSTMState(NamedTuple):
    """The hidden state of every coordinate: ``h`` and ``c`` of shape ``[num_layers, n_coords,
    hidden_size]`` (row ``i`` of each layer belongs to coordinate ``i``)."""

    h: Tensor
    c: Tensor

    def detach(self) -> LSTMState:
        """The same values, cut from the autograd graph (a truncation boundary of BPTT)."""
        return LSTMState(self.h.detach(), self.c.detach())

    @property
    def n_coords(self) -> int:
        return int(self.h.shape[1])


def preprocess_gradients(grad: Tensor, p: float = 10.0) -> Tensor:
    """Andrychowicz et al. 2016, Appendix A: ``[n]`` gradients -> ``[n, 2]`` features,
    ``(log|∇| / p, sgn ∇)`` where ``|∇| ≥ e^{−p}`` and ``(−1, e^p ∇)`` elsewhere.

    Both branches are continuous at ``|∇| = e^{−p}`` in their first feature (``log e^{−p} / p =
    −1``) and bounded in their second (``|e^p ∇| < 1``).  A zero gradient maps to ``(−1, 0)``.
    """
    if p <= 0:
        raise ValueError(f"the preprocessing's p must be positive, got {p}")
    threshold = math.exp(-p)
    magnitude = grad.abs()
    large = magnitude >= threshold
    log_part = torch.log(magnitude.clamp_min(threshold)) / p  # clamped: no log(0) in the unused branch
    first = torch.where(large, log_part, torch.full_like(grad, -1.0))
    second = torch.where(large, torch.sign(grad), grad * math.exp(p))
    return torch.stack((first, second), dim=-1)


class LSTMOptimizer(nn.Module):
    """m(∇, h; φ): the coordinatewise LSTM optimizer (see the module docstring).

    Args:
        spec: the architecture (default: the paper's 2 × 20 LSTM, preprocessing, output × 0.1).
        seed: seed of φ's initialisation (PyTorch's default initialisation of ``LSTMCell`` and
            ``Linear``, drawn from a private generator state: the global RNG is left as it was).
        chunk_size: the most coordinates one pass of the cells takes; more are done in chunks of
            this many rows, one after the other (the same arithmetic per row: the coordinates are
            independent).  An execution setting, not part of φ: on one CPU core a step over 151,000
            coordinates took 0.8 s in one piece and 0.20 s in chunks of 4,096 (the LSTM's
            ``[rows, 4·hidden]`` gate tensors stay in cache).  None: one pass.
    """

    def __init__(self, spec: LSTMOptimizerSpec | None = None, *, seed: int = 0,
                 chunk_size: int | None = 4096) -> None:
        super().__init__()
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.spec = spec or LSTMOptimizerSpec()
        self.chunk_size = chunk_size
        inputs = 2 if self.spec.preprocess else 1
        hidden = self.spec.hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.cells = nn.ModuleList(
                nn.LSTMCell(inputs if layer == 0 else hidden, hidden) for layer in range(self.spec.num_layers)
            )
            self.output = nn.Linear(hidden, 1)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Tensor], spec: LSTMOptimizerSpec | None = None, *,
                        chunk_size: int | None = 4096) -> LSTMOptimizer:
        """A module with the architecture ``spec`` and the weights ``state_dict`` (its dtype and
        device: those of the saved tensors)."""
        net = cls(spec, chunk_size=chunk_size)
        first = next(iter(state_dict.values()), None)
        if first is not None:
            net.to(dtype=first.dtype, device=first.device)
        net.load_state_dict(state_dict)
        return net

    @property
    def dtype(self) -> torch.dtype:
        return self.output.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.output.weight.device

    def init_state(self, n_coords: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> LSTMState:
        """Zero hidden states for ``n_coords`` coordinates (default device and dtype: φ's)."""
        if n_coords < 0:
            raise ValueError(f"n_coords must be >= 0, got {n_coords}")
        shape = (self.spec.num_layers, n_coords, self.spec.hidden_size)
        where = torch.device(device) if device is not None else self.device
        kind = dtype or self.dtype
        return LSTMState(torch.zeros(shape, device=where, dtype=kind), torch.zeros(shape, device=where, dtype=kind))

    def features(self, grad_flat: Tensor) -> Tensor:
        """The LSTM's input for ``[n]`` gradients: ``[n, 2]`` preprocessed or ``[n, 1]`` raw."""
        if self.spec.preprocess:
            return preprocess_gradients(grad_flat, self.spec.preprocess_p)
        return grad_flat.unsqueeze(-1)

    def forward(self, grad_flat: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:  # type: ignore[override]
        """One step for every coordinate: ``[n]`` gradients and their states -> ``[n]`` updates
        ``g`` (to be *added* to θ) and the new states.  Differentiable w.r.t. φ (and the state)."""
        if grad_flat.dim() != 1:
            raise ValueError(f"grad_flat must be 1-D (one row per coordinate), got shape {tuple(grad_flat.shape)}")
        expected = (self.spec.num_layers, grad_flat.shape[0], self.spec.hidden_size)
        if tuple(state.h.shape) != expected or tuple(state.c.shape) != expected:
            raise ValueError(f"state shapes {tuple(state.h.shape)}, {tuple(state.c.shape)} do not match {expected} "
                             "([num_layers, n_coords, hidden_size]; see init_state)")
        n = grad_flat.shape[0]
        if self.chunk_size is None or n <= self.chunk_size:
            return self._step(grad_flat, state.h, state.c)
        parts = [self._step(grad_flat[i:i + self.chunk_size], state.h[:, i:i + self.chunk_size],
                            state.c[:, i:i + self.chunk_size]) for i in range(0, n, self.chunk_size)]
        return (torch.cat([u for u, _ in parts]),
                LSTMState(torch.cat([s.h for _, s in parts], dim=1), torch.cat([s.c for _, s in parts], dim=1)))

    def _step(self, grad: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, LSTMState]:
        x = self.features(grad.to(self.dtype))
        hs, cs = [], []
        for layer, cell in enumerate(self.cells):
            h, c = cell(x, (h0[layer], c0[layer]))
            hs.append(h)
            cs.append(c)
            x = h
        update = self.output(x).squeeze(-1) * self.spec.output_scale
        return update, LSTMState(torch.stack(hs), torch.stack(cs))


__all__ = ["LSTMOptimizer", "LSTMState", "preprocess_gradients"]
