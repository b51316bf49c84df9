"""A trained LSTM optimizer as a ``torch.optim.Optimizer`` for ordinary training loops.

    opt = LearnedOptimizer(model.parameters(), trained_net)
    for x, y in data:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

Every parameter with a gradient, across all param groups, is one block of coordinates of a single
batched call of the LSTM (:class:`~algorithms.learned_opt.lstm_optimizer.LSTMOptimizer` is
coordinatewise, so batching them changes nothing but speed), and ``θ ← θ + g`` (the paper's eq. 1:
the LSTM's output is the step itself, there is no learning rate).  A parameter without a gradient
(``grad is None``) is neither updated nor advances its hidden state.

State: ``self.state[p]`` holds the parameter's LSTM states ``"h"`` and ``"c"``, each
``[num_layers, p.numel(), hidden_size]`` in the LSTM's dtype, created (zeros) at the parameter's
first step; ``state_dict()`` / ``load_state_dict()`` save and restore them like any optimizer state
(the LSTM's weights φ are *not* part of it: build the optimizer from the same trained network
before loading).  Torch's ``load_state_dict`` casts floating-point state to each parameter's dtype;
this class restores the saved states in the LSTM's dtype instead, so a float16 parameter's state
round-trips exactly.

Dtypes (the decision): the LSTM runs in its own dtype ``D`` (φ's).  A parameter may have dtype
``D`` or any floating-point dtype that converts to ``D`` without loss, i.e. with
``torch.promote_types(dtype, D) == D`` (float16 and bfloat16 under a float32 LSTM): its gradient
is cast up to ``D`` and the update cast back to the parameter's dtype.  A parameter of a wider dtype
(float64 under a float32 LSTM) is rejected with a ``TypeError``: its gradient would be rounded
(and could overflow to inf) on the way into the LSTM; convert the LSTM (``net.double()``) instead.
Non-floating-point parameters (integer, bool, complex) are rejected too.

Other errors, each naming the parameter (its name when the optimizer was given
``model.named_parameters()``, else its group and position): a parameter on another device than the
LSTM (``ValueError``), a sparse gradient (``ValueError``, at ``step``), and more than
``max_coordinates`` coordinates in all (``ValueError``; the states take ``2 · num_layers ·
hidden_size`` values per coordinate, 320 bytes in float32 for the paper's LSTM, and the LSTM's
activations more during a step: the bound turns an out-of-memory crash into a clear error).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from algorithms.learned_opt.lstm_optimizer import LSTMOptimizer, LSTMState
from algorithms.learned_opt.specs import LSTMOptimizerSpec

#: the default bound on the coordinates one optimizer handles (10 million: about 3.2 GB of float32
#: LSTM state for the paper's 2 × 20 LSTM)
MAX_COORDINATES = 10_000_000

_STATE_KEYS = ("h", "c")


class LearnedOptimizer(torch.optim.Optimizer):
    """The learned optimizer m(∇; φ) applied coordinatewise to every parameter (see the module
    docstring).

    Args:
        params: the parameters, parameter groups or ``named_parameters()`` (as for any
            ``torch.optim.Optimizer``; groups take no hyperparameters).
        net: the trained :class:`LSTMOptimizer`, or its ``state_dict()`` (then ``spec`` gives the
            architecture; dtype and device: the saved tensors').  A module is used as it is (not
            copied); it is put in eval mode and no gradient of φ is taken.
        spec: the architecture when ``net`` is a state dict (default: :class:`LSTMOptimizerSpec`'s
            defaults); must be None when ``net`` is a module.
        max_coordinates: the most coordinates (elements of all parameters together) accepted.
    """

    def __init__(self, params: Iterable[Any], net: LSTMOptimizer | Mapping[str, Tensor], *,
                 spec: LSTMOptimizerSpec | None = None, max_coordinates: int = MAX_COORDINATES) -> None:
        if isinstance(net, LSTMOptimizer):
            if spec is not None and spec != net.spec:
                raise ValueError("spec differs from the given network's own spec; pass one or the other")
            self.net = net
        elif isinstance(net, Mapping):
            self.net = LSTMOptimizer.from_state_dict(dict(net), spec)
        else:
            raise TypeError(f"net must be an LSTMOptimizer or its state dict, got {type(net).__name__}")
        if max_coordinates < 1:
            raise ValueError(f"max_coordinates must be >= 1, got {max_coordinates}")
        self.net.eval()
        self.max_coordinates = int(max_coordinates)
        self._coordinates = 0
        super().__init__(params, {})

    # ---- checks -----------------------------------------------------------------------------------
    @staticmethod
    def _describe(group: Mapping[str, Any], index: int, group_index: int) -> str:
        names = group.get("param_names")
        if names is not None:
            return f"parameter {names[index]!r}"
        return f"parameter {index} of param group {group_index}"

    def _check_param(self, p: Tensor, what: str) -> None:
        shape = tuple(p.shape)
        if not p.is_floating_point():
            raise TypeError(f"{what} (shape {shape}) has dtype {p.dtype}: the learned optimizer only updates "
                            "floating-point parameters")
        lstm = self.net.dtype
        if p.dtype != lstm and torch.promote_types(p.dtype, lstm) != lstm:
            raise TypeError(f"{what} (shape {shape}) has dtype {p.dtype}, wider than the LSTM's {lstm}: its gradient "
                            f"would be rounded to {lstm}; convert the LSTM (net.to({p.dtype})) or the parameter")
        if p.device != self.net.device:
            raise ValueError(f"{what} (shape {shape}) is on {p.device}, the LSTM on {self.net.device}; move one of "
                             "them so they share a device")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As ``torch.optim.Optimizer.add_param_group``, with the checks of the module docstring."""
        super().add_param_group(param_group)
        group_index = len(self.param_groups) - 1
        group = self.param_groups[group_index]
        extra = sorted(set(group) - {"params", "param_names"})
        if extra:
            self.param_groups.pop()
            raise ValueError(f"param group {group_index} sets {extra}: the learned optimizer takes no hyperparameters")
        added = 0
        try:
            for i, p in enumerate(group["params"]):
                what = self._describe(group, i, group_index)
                self._check_param(p, what)
                added += p.numel()
                if self._coordinates + added > self.max_coordinates:
                    raise ValueError(
                        f"{what} (shape {tuple(p.shape)}) brings the coordinates to {self._coordinates + added:,}, "
                        f"more than max_coordinates = {self.max_coordinates:,} (the LSTM keeps "
                        f"{2 * self.net.spec.num_layers * self.net.spec.hidden_size} state values per coordinate); "
                        "raise max_coordinates if the memory allows")
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise
        self._coordinates += added

    # ---- the step ---------------------------------------------------------------------------------
    def _fresh_state(self, n: int) -> dict[str, Tensor]:
        state = self.net.init_state(n)
        return {"h": state.h, "c": state.c}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One learned step for every parameter with a gradient; returns ``closure()``'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        todo: list[Tensor] = []
        for group_index, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError(f"{self._describe(group, i, group_index)} (shape {tuple(p.shape)}) has a sparse "
                                     "gradient, which the learned optimizer does not support")
                todo.append(p)
        if not todo:
            return loss
        dtype = self.net.dtype
        hs, cs, grads = [], [], []
        for p in todo:
            st = self.state[p]
            if not st:
                st.update(self._fresh_state(p.numel()))
            hs.append(st["h"])
            cs.append(st["c"])
            assert p.grad is not None
            grads.append(p.grad.reshape(-1).to(dtype))
        update, new = self.net(torch.cat(grads), LSTMState(torch.cat(hs, dim=1), torch.cat(cs, dim=1)))
        offset = 0
        for p in todo:
            n = p.numel()
            p.add_(update[offset:offset + n].view_as(p).to(p.dtype))
            st = self.state[p]
            st["h"] = new.h[:, offset:offset + n].clone()
            st["c"] = new.c[:, offset:offset + n].clone()
            offset += n
        return loss

    # ---- checkpoints ------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As ``torch.optim.Optimizer.load_state_dict``; the LSTM states come back in the LSTM's
        dtype (not cast to their parameter's) and are checked against their parameter's size."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"the state dict has {len(saved_groups)} param groups, the optimizer "
                             f"{len(self.param_groups)}")
        # check every saved state first (nothing is changed on an error) and keep its exact values:
        # torch's load_state_dict below casts floating-point state to each parameter's dtype
        restored: list[tuple[Tensor, dict[str, Tensor]]] = []
        for group_index, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"param group {group_index} has {len(group['params'])} parameters, the state "
                                 f"dict's {len(saved['params'])}")
            for i, (pid, p) in enumerate(zip(saved["params"], group["params"], strict=True)):
                if pid not in state_dict["state"]:
                    continue
                expected = (self.net.spec.num_layers, p.numel(), self.net.spec.hidden_size)
                values = {}
                for key in _STATE_KEYS:
                    value = state_dict["state"][pid].get(key)
                    if not isinstance(value, Tensor) or tuple(value.shape) != expected:
                        got = tuple(value.shape) if isinstance(value, Tensor) else value
                        raise ValueError(f"{self._describe(group, i, group_index)}: saved LSTM state {key!r} is {got}, "
                                         f"expected a tensor of shape {expected} (the state of another optimizer "
                                         "or LSTM?)")
                    values[key] = value.to(device=self.net.device, dtype=self.net.dtype, copy=True)
                restored.append((p, values))
        super().load_state_dict(state_dict)
        for p, values in restored:
            self.state[p] = values


__all__ = ["MAX_COORDINATES", "LearnedOptimizer"]
