"""A learned optimizer from the model registry, as a ``torch.optim.Optimizer``.

    from workers.model import LearnedOptimizer

    opt = LearnedOptimizer.load("models:/digits-lstm-optimizer@champion", model.parameters())
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()                      # θ ← θ + m(∇θ; φ), the LSTM's states in opt.state

A model an ``lstm-optimizer`` job registered holds the LSTM's weights φ (``lstmopt/*``) and its
architecture (the job's ``algorithm.optimizer``); :meth:`LearnedOptimizer.load` builds
:class:`algorithms.learned_opt.torch_optimizer.LearnedOptimizer` from them -- same checks (dtype,
device, sparse gradients, ``max_coordinates``), hidden states in ``state_dict()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from algorithms.learned_opt.learner import PREFIX
from algorithms.learned_opt.lstm_optimizer_job import LSTMOptimizerJobSpec
from algorithms.learned_opt.torch_optimizer import MAX_COORDINATES
from algorithms.learned_opt.torch_optimizer import LearnedOptimizer as _LearnedOptimizer
from workers.model.policy import MetaPolicy, ModelFormatError


class LearnedOptimizer(_LearnedOptimizer):
    """:class:`algorithms.learned_opt.torch_optimizer.LearnedOptimizer` with :meth:`load` from the
    model registry (see the module docstring)."""

    @classmethod
    def load(cls, uri: str, params: Iterable[Any], *, device: str | torch.device | None = None,
             max_coordinates: int = MAX_COORDINATES) -> LearnedOptimizer:
        """The optimizer a registered ``lstm-optimizer`` model holds, over ``params``.

        Args:
            uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...`` or a local model
                directory (anything :meth:`workers.model.MetaPolicy.load` takes).
            params: the parameters to optimize (tensors, ``named_parameters()`` or param groups).
            device: where the LSTM runs (default: the first parameter's device).
            max_coordinates: the most coordinates accepted (see the base class).

        Raises:
            ModelNotFoundError: nothing at ``uri``.
            ModelFormatError: the model is not a learned optimizer (another algorithm's).
            TypeError, ValueError: a parameter that does not fit (dtype wider than the LSTM's
                float32, not floating-point, another device, too many coordinates), naming it.
        """
        model = MetaPolicy.load(uri)
        config = getattr(model, "config", None)
        if not isinstance(config, LSTMOptimizerJobSpec):
            raise ModelFormatError(f"{uri} is a {model.algorithm!r} model, not a learned optimizer; load one an "
                                   "lstm-optimizer job registered")
        weights = {k[len(PREFIX):]: v for k, v in model.params.items() if k.startswith(PREFIX)}
        if not weights:
            raise ModelFormatError(f"{uri}: the model holds no optimizer weights ({PREFIX}*)")
        params = list(params)
        if device is None:
            device = _first_device(params)
        weights = {k: v.to(device) for k, v in weights.items()}
        return cls(params, weights, spec=config.optimizer, max_coordinates=max_coordinates)


def _first_device(params: list[Any]) -> torch.device:
    """The device of the first tensor among parameters, named parameters or param groups (CPU if none)."""
    for item in params:
        if isinstance(item, dict):
            inner = list(item.get("params", []))
            if inner:
                return _first_device(inner)
            continue
        tensor = item[1] if isinstance(item, tuple) else item
        if isinstance(tensor, torch.Tensor):
            return tensor.device
    return torch.device("cpu")


__all__ = ["LearnedOptimizer"]
