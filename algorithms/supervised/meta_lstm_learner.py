"""The LSTM meta-learner (Ravi & Larochelle 2017) as a supervised learner (see
:mod:`algorithms.supervised.meta_lstm` for the spec).

The learner is the job's network (conv4 for images, an MLP for vectors); its parameters θ, all of
them flattened into one vector of ``n`` coordinates, are the cell state of a two-layer LSTM that
runs coordinatewise (every coordinate is one row of a batch of ``n``; all share the LSTM's
weights -- the paper's parameter sharing, which keeps the meta-learner's size independent of the
learner's).  At inner step ``t`` on a task's support set:

* ``∇_t = ∇_θ L(θ_{t-1})`` and ``L_t`` (the support loss), each preprocessed as in Andrychowicz et
  al. 2016, App. A (:func:`~algorithms.learned_opt.lstm_optimizer.preprocess_gradients`):
  ``x -> (log|x| / p, sgn x)`` if ``|x| ≥ e^{-p}``, else ``(-1, e^p x)``;
* the first layer, an ordinary LSTM of ``hidden_size`` units, reads ``(pre(∇_t), pre(L_t))`` and
  outputs ``h_t``;
* the second layer is the meta-learner cell, whose cell state is θ (eq. 2 of the paper):
  ``f_t = σ(W_F [h_t, θ_{t-1}, f_{t-1}] + b_F)``, ``i_t = σ(W_I [h_t, θ_{t-1}, i_{t-1}] + b_I)``,
  ``θ_t = f_t ⊙ θ_{t-1} − i_t ⊙ ∇_t`` (``f_0 = i_0 = 0``).

The initial cell state θ_0 is the network's parameters, meta-learned with the two layers' weights
by Adam on the query loss at θ_T, averaged over the meta-batch.  ``∇_t`` and ``L_t`` enter as
data: the meta-gradient flows through θ's recurrence and the gates, not through the learner's
gradient computation (the paper's assumption, sec. 3.2; no second derivatives).

Batch norm: the conv4 network has no running statistics; every batch -- a task's support set at
each inner step, its query set -- is normalised by its own statistics in meta-training and at
meta-test alike, which is what the paper states it does at meta-test (sec. 3.4: no global
population statistics, so that no information passes between episodes).

The meta-batch's tasks are unrolled and back-propagated one at a time (their gradients summed):
one task's graph holds ``T`` steps of ``n`` coordinates, a few hundred MB for conv4.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from algorithms.errors import NonFiniteError
from algorithms.learned_opt.lstm_optimizer import preprocess_gradients
from algorithms.registry import AdvantageSpec
from algorithms.supervised.data import SupportQuery
from algorithms.supervised.learner import EpisodeBatch, SupervisedLearner, query_metrics, task_loss
from algorithms.supervised.meta_lstm import MetaLSTMSpec
from algorithms.supervised.nets import NetSpec, Params

#: the checkpoint keys of the meta-learner's own weights: ``metalstm/<name>``
PREFIX = "metalstm/"


class MetaLearnerCell(nn.Module):
    """The two layers: ``lstm`` (the ordinary LSTM cell over the 4 preprocessed inputs) and the
    gates of the meta-learner cell (``w_f``, ``b_f``, ``w_i``, ``b_i``)."""

    def __init__(self, spec: MetaLSTMSpec, generator: torch.Generator) -> None:
        super().__init__()
        h = spec.hidden_size
        self.lstm = nn.LSTMCell(4, h)
        bound = 1.0 / math.sqrt(h)
        with torch.no_grad():
            for p in self.lstm.parameters():
                p.uniform_(-bound, bound, generator=generator)
        self.w_f = nn.Parameter(torch.empty(h + 2).uniform_(-0.01, 0.01, generator=generator))
        self.w_i = nn.Parameter(torch.empty(h + 2).uniform_(-0.01, 0.01, generator=generator))
        self.b_f = nn.Parameter(torch.empty(1).uniform_(*spec.forget_bias, generator=generator))
        self.b_i = nn.Parameter(torch.empty(1).uniform_(*spec.input_bias, generator=generator))


class MetaLSTM(SupervisedLearner):
    """The LSTM meta-learner (see the module docstring).

    >>> learner = MetaLSTM(NetSpec(input_shape=(4,), output_dim=3, hidden_sizes=(8,)), seed=0)
    >>> sorted(k for k in learner.state_dict().params if k.startswith("metalstm/"))[:2]
    ['metalstm/b_f', 'metalstm/b_i']
    """

    name = "meta-lstm"
    config: MetaLSTMSpec

    def __init__(self, policy_spec: NetSpec, spec: MetaLSTMSpec | None = None, *,
                 advantage: AdvantageSpec | None = None, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(policy_spec, spec or MetaLSTMSpec(), advantage=advantage, seed=seed, device=device)
        generator = torch.Generator().manual_seed(seed + 7919)
        self.meta = MetaLearnerCell(self.config, generator).to(device=self.device, dtype=self.dtype)
        self._optimizer = torch.optim.Adam(self.meta_parameters(), lr=self.config.outer_lr)

    def _extra_parameters(self) -> dict[str, nn.Parameter]:
        return {f"{PREFIX}{k}": p for k, p in self.meta.named_parameters()}

    @property
    def train_steps(self) -> int:
        return self.config.inner_steps

    @property
    def test_steps(self) -> int:
        return self.config.test_inner_steps

    # ---- the inner loop -----------------------------------------------------------------------
    def unroll(self, theta: Params, xs: Tensor, ys: Tensor, *, classification: bool, steps: int) -> Params:
        """θ_T after ``steps`` updates of the meta-learner on the support set ``(xs, ys)`` from
        ``theta`` (θ_0); differentiable w.r.t. ``theta`` and the meta-learner's weights where
        grad mode is on (``∇_t`` and ``L_t`` are data: see the module docstring)."""
        keys = list(theta)
        shapes = [theta[k].shape for k in keys]
        sizes = [theta[k].numel() for k in keys]

        def unflatten(flat: Tensor) -> Params:
            return {k: v.reshape(s) for k, v, s in zip(keys, flat.split(sizes), shapes, strict=True)}

        m, p = self.meta, self.config.preprocess_p
        c = torch.cat([theta[k].reshape(-1) for k in keys])
        n = c.numel()
        h = torch.zeros(n, self.config.hidden_size, dtype=c.dtype, device=c.device)
        s = torch.zeros_like(h)
        f_prev = torch.zeros(n, 1, dtype=c.dtype, device=c.device)
        i_prev = torch.zeros_like(f_prev)
        for _ in range(steps):
            point = c.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = task_loss(self.net(unflatten(point), xs), ys, classification=classification)
                (g,) = torch.autograd.grad(loss, point)
            g, loss = g.detach(), loss.detach()
            if not (torch.isfinite(loss) and torch.isfinite(g).all()):
                raise NonFiniteError(f"{self.name}: the support loss or its gradient is not finite (NaN or inf)")
            x_in = torch.cat([preprocess_gradients(g, p), preprocess_gradients(loss, p).expand(n, 2)], dim=1)
            h, s = m.lstm(x_in, (h, s))
            f = torch.sigmoid(torch.cat([h, c[:, None], f_prev], dim=1) @ m.w_f + m.b_f)
            i = torch.sigmoid(torch.cat([h, c[:, None], i_prev], dim=1) @ m.w_i + m.b_i)
            c = f * c - i * g
            f_prev, i_prev = f[:, None], i[:, None]
        return unflatten(c)

    def adapt_task(self, params: Params, episode: SupportQuery, *, steps: int | None = None) -> Params:
        """θ_T after ``steps`` (default: ``test_inner_steps``) meta-learner updates on the
        episode's support set; no graph is kept."""
        batch = self.batch([episode])
        theta = {k: v.detach().to(self.device) for k, v in params.items()}
        with torch.no_grad():
            out = self.unroll(theta, batch.x_support[0], batch.y_support[0], classification=batch.classification,
                              steps=self.test_steps if steps is None else steps)
        return {k: v.detach() for k, v in out.items()}

    # ---- learning -----------------------------------------------------------------------------
    def _update(self, batch: EpisodeBatch) -> dict[str, float]:
        assert self._optimizer is not None
        theta: Params = dict(self.policy.named_parameters())
        c, tasks = batch.classification, batch.n_tasks
        with torch.no_grad():
            pre = self.net(theta, batch.x_query)
            pre_loss = task_loss(pre, batch.y_query, classification=c).mean()
        self._optimizer.zero_grad(set_to_none=True)
        total, outs = 0.0, []
        for t in range(tasks):  # one graph at a time (see the module docstring)
            phi = self.unroll(theta, batch.x_support[t], batch.y_support[t], classification=c, steps=self.train_steps)
            out = self.net(phi, batch.x_query[t])
            loss = task_loss(out, batch.y_query[t], classification=c) / tasks
            self._check_outer_loss(loss)
            loss.backward()
            total += float(loss.detach())
            outs.append(out.detach())
        norm = self._clip_and_step(max_grad_norm=self.config.max_grad_norm)
        post = torch.stack(outs)
        metrics = {"loss/query": total, "loss/query_pre": float(pre_loss), "meta/grad_norm": norm}
        metrics.update(query_metrics(post, batch.y_query, classification=c))
        metrics.update(query_metrics(pre, batch.y_query, classification=c, suffix="_pre"))
        return metrics

    def gates(self) -> dict[str, float]:
        """The gates' biases as probabilities (``σ(b_F)``, ``σ(b_I)``): where the learned update
        rule starts from (near 1 and near a small step)."""
        m = self.meta
        return {"forget": float(torch.sigmoid(m.b_f.detach())), "input": float(torch.sigmoid(m.b_i.detach()))}


__all__ = ["PREFIX", "MetaLSTM", "MetaLearnerCell"]
