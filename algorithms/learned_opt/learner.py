"""The ``lstm-optimizer`` job's learner: meta-trains a coordinatewise LSTM optimizer on the problems
a supervised task distribution's tasks pose (see :mod:`algorithms.learned_opt.lstm_optimizer_job`).

The meta-batch's ``B`` tasks are ``B`` optimizee problems side by side: θ is a ``[B, P]`` tensor
(row ``b``: the network's ``P`` parameters for task ``b``, flattened in the network's parameter
order) and ``f_b(θ_b)`` is the network's support loss on task ``b`` (``torch.func.vmap`` over the
rows), so one LSTM call updates every coordinate of every problem.  Training draws each problem's
θ_0 from the network's default initialisation with a fresh seed (the learner's generator), so the
optimizer never sees the same starting point twice.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap

from algorithms.errors import NonFiniteError
from algorithms.learned_opt.lstm_optimizer import LSTMOptimizer
from algorithms.learned_opt.lstm_optimizer_job import LSTMOptimizerJobSpec
from algorithms.learned_opt.meta_train import optimize, unroll_meta_loss
from algorithms.registry import AdvantageSpec
from algorithms.supervised.data import SupportQuery
from algorithms.supervised.learner import EpisodeBatch, SupervisedLearner, query_metrics, task_loss
from algorithms.supervised.nets import Net, NetSpec, Params, make_net

#: the checkpoint keys of the optimizer's weights φ: ``lstmopt/<name>``
PREFIX = "lstmopt/"


class NetworkProblems:
    """``B`` copies of a network, each trained on its own task's support set: the
    :class:`~algorithms.learned_opt.optimizees.Problems` of a meta-batch.

    Args:
        net: the network (its module only computes: the parameters are the rows of θ).
        keys, shapes: the parameter names and shapes, in θ's flat order.
        theta0: ``[B, P]`` starting points.
        x, y: ``[B, N, ...]`` inputs and ``[B, N]`` / ``[B, N, D]`` targets of the problems.
        classification: cross-entropy (else mean squared error).
    """

    def __init__(self, net: Net, keys: list[str], shapes: list[torch.Size], theta0: Tensor, x: Tensor, y: Tensor,
                 *, classification: bool) -> None:
        self.net, self.keys, self.shapes = net, keys, shapes
        self.sizes = [math.prod(s) for s in shapes]
        if theta0.dim() != 2 or theta0.shape[1] != sum(self.sizes) or theta0.shape[0] != x.shape[0]:
            raise ValueError(f"theta0 must be [{x.shape[0]}, {sum(self.sizes)}], got {tuple(theta0.shape)}")
        self.theta0, self.x, self.y, self.classification = theta0, x, y, classification

    @property
    def n_problems(self) -> int:
        return int(self.theta0.shape[0])

    @property
    def n_params(self) -> int:
        return int(self.theta0.shape[1])

    def init_params(self) -> Tensor:
        return self.theta0.clone()

    def unflatten(self, row: Tensor) -> Params:
        """One problem's ``[P]`` parameters as the network's parameter dict (views)."""
        return {k: v.reshape(s) for k, v, s in zip(self.keys, row.split(self.sizes), self.shapes, strict=True)}

    def outputs(self, theta: Tensor, x: Tensor) -> Tensor:
        """Each problem's network on its inputs: ``[B, N, out]``."""
        return vmap(lambda row, xb: self.net(self.unflatten(row), xb))(theta, x)

    def loss(self, theta: Tensor, step: int = 0) -> Tensor:
        """The ``[B]`` support losses (deterministic: ``step`` is ignored)."""
        return task_loss(self.outputs(theta, self.x), self.y, classification=self.classification)


class LSTMOptimizerLearner(SupervisedLearner):
    """Meta-trains the LSTM optimizer φ (see the module docstring); θ -- the network's parameters
    -- stays the fixed random initialisation adaptation starts from.

    >>> learner = LSTMOptimizerLearner(NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(8,)))
    >>> sorted(learner.state_dict().params)[-1]
    'lstmopt/output.weight'
    """

    name = "lstm-optimizer"
    config: LSTMOptimizerJobSpec

    def __init__(self, policy_spec: NetSpec, spec: LSTMOptimizerJobSpec | None = None, *,
                 advantage: AdvantageSpec | None = None, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(policy_spec, spec or LSTMOptimizerJobSpec(), advantage=advantage, seed=seed, device=device)
        self.optimizer_net = LSTMOptimizer(self.config.optimizer, seed=seed + 7919).to(device=self.device,
                                                                                      dtype=self.dtype)
        self._optimizer = torch.optim.Adam(self.meta_parameters(), lr=self.config.meta_lr)
        #: θ's names and shapes, in the flat order of a problem's row
        self._keys = [k for k, _ in self.policy.named_parameters()]
        self._shapes = [p.shape for _, p in self.policy.named_parameters()]
        self.policy.requires_grad_(False)  # θ is not meta-learned

    def _extra_parameters(self) -> dict[str, nn.Parameter]:
        return {f"{PREFIX}{k}": p for k, p in self.optimizer_net.named_parameters()}

    def meta_parameters(self) -> list[nn.Parameter]:
        """φ only: the optimizer's weights (θ is a fixed starting point)."""
        return list(self.optimizer_net.parameters())

    @property
    def test_steps(self) -> int:
        return self.config.test_steps

    # ---- problems -----------------------------------------------------------------------------
    def _flatten(self, params: Params) -> Tensor:
        return torch.cat([params[k].detach().reshape(-1).to(device=self.device, dtype=self.dtype)
                          for k in self._keys])

    def fresh_inits(self, n: int, key: int = 0) -> Tensor:
        """``[n, P]`` starting points: the network's default initialisation, each from a seed drawn
        from ``(iteration, key)``."""
        seeds = np.random.default_rng([104729, self.iteration, key]).integers(0, 2**62, size=n)
        return torch.stack([self._flatten(dict(make_net(self.net_spec, head=self.uses_head, seed=int(s))
                                               .named_parameters())) for s in seeds])

    def problems(self, theta0: Tensor, x: Tensor, y: Tensor, *, classification: bool) -> NetworkProblems:
        return NetworkProblems(self.net, self._keys, self._shapes, theta0, x, y, classification=classification)

    # ---- learning -----------------------------------------------------------------------------
    def _update(self, batch: EpisodeBatch) -> dict[str, float]:
        assert self._optimizer is not None
        cfg, c = self.config, batch.classification
        data = batch.x_support.detach().to("cpu", torch.float32).contiguous().numpy()
        theta = self.fresh_inits(batch.n_tasks, key=zlib.crc32(data.tobytes()))
        coordinates = theta.numel()
        if coordinates > cfg.max_coordinates:
            raise ValueError(f"lstm-optimizer: {batch.n_tasks} tasks x {theta.shape[1]:,} network parameters = "
                             f"{coordinates:,} coordinates, more than max_coordinates ({cfg.max_coordinates:,}); "
                             "use a smaller network or meta_batch_size, or raise algorithm.max_coordinates")
        problems = self.problems(theta, batch.x_support, batch.y_support, classification=c)
        with torch.no_grad():
            pre = problems.outputs(theta, batch.x_query)
        state = self.optimizer_net.init_state(coordinates)
        self.optimizer_net.train()
        meta_losses, norms = [], []
        for k in range(cfg.steps // cfg.unroll):
            meta_loss, theta, state = unroll_meta_loss(self.optimizer_net, problems, theta, state,
                                                       start=k * cfg.unroll, unroll=cfg.unroll)
            self._check_outer_loss(meta_loss)
            self._optimizer.zero_grad(set_to_none=True)
            meta_loss.backward()
            norms.append(self._clip_and_step(max_grad_norm=cfg.max_grad_norm))
            theta, state = theta.detach(), state.detach()
            meta_losses.append(float(meta_loss.detach()) / cfg.unroll)
        with torch.no_grad():
            if not torch.isfinite(theta).all():
                raise NonFiniteError(f"{self.name}: the optimizees' parameters are not finite (NaN or inf) after "
                                     f"{cfg.steps} steps; the update was rejected")
            final = problems.loss(theta)
            post = problems.outputs(theta, batch.x_query)
            query = task_loss(post, batch.y_query, classification=c).mean()
        metrics = {"loss/query": float(query), "loss/support_final": float(final.mean()),
                   "loss/meta": float(np.mean(meta_losses)), "meta/grad_norm": float(np.mean(norms))}
        metrics.update(query_metrics(post, batch.y_query, classification=c))
        metrics.update(query_metrics(pre, batch.y_query, classification=c, suffix="_pre"))
        return metrics

    # ---- meta-test ----------------------------------------------------------------------------
    def _episode_problem(self, params: Params, episode: SupportQuery) -> NetworkProblems:
        """The network on ``episode``'s support set from ``params``: one problem."""
        batch = self.batch([episode])
        return self.problems(self._flatten(params)[None], batch.x_support, batch.y_support,
                             classification=batch.classification)

    def adapt_task(self, params: Params, episode: SupportQuery, *, steps: int | None = None) -> Params:
        """The network after ``steps`` (default ``test_steps``) steps of the learned optimizer on the
        episode's support set, from ``params``; no graph is kept."""
        problems = self._episode_problem(params, episode)
        theta, _ = optimize(self.optimizer_net, problems, self.test_steps if steps is None else int(steps))
        if not torch.isfinite(theta).all():
            raise NonFiniteError(f"{self.name}: the optimizee's parameters are not finite after adaptation")
        return {k: v.clone() for k, v in problems.unflatten(theta[0]).items()}

    def training_curve(self, episode: SupportQuery, *, steps: int | None = None) -> np.ndarray:
        """The support losses ``f(θ_0) .. f(θ_steps)`` of adapting θ on ``episode`` (``[steps + 1]``)."""
        problems = self._episode_problem(self.params, episode)
        return optimize(self.optimizer_net, problems, self.test_steps if steps is None else int(steps))[1][0]


__all__ = ["PREFIX", "LSTMOptimizerLearner", "NetworkProblems"]
