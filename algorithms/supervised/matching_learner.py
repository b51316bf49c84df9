"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016).

A query ``x̂``'s class distribution mixes the support labels by attention,
``P(y | x̂, S) = Σ_i a(x̂, x_i) y_i`` with ``a(x̂, x_i) = softmax_i(c(f(x̂), g(x_i)))`` and ``c``
the cosine similarity (eq. 1-2); the network is trained by Adam on the query negative
log-likelihood.  ``cosine_scale`` multiplies the cosines before the softmax (1: the paper's).
Classification only; every class of an episode needs a support example.

Without full-context embeddings ``f = g`` is the encoder.  With them (``fce``; sec. 2.1.2 and
appendix A.1-A.2):

* the support embedding ``g(x_i, S) = g'(x_i) + h→_i + h←_i``, a bidirectional LSTM (hidden size
  the embedding's) run over the support set's encoder embeddings ``g'`` in the episode's order;
* the query embedding ``f(x̂, S)`` is ``K = fce_steps`` steps of an attention LSTM from
  ``h_0 = f'(x̂)``, ``c_0 = 0``: ``r_{k-1} = Σ_i softmax_i(h_{k-1}ᵀ g(x_i)) g(x_i)``,
  ``ĥ_k, c_k = LSTM([f'(x̂), r_{k-1}], h_{k-1}, c_{k-1})``, ``h_k = ĥ_k + f'(x̂)``; ``f = h_K``.
  The paper feeds the read-out ``r_{k-1}`` with the LSTM's hidden state (``[h_{k-1}, r_{k-1}]``);
  here it enters with the cell's input, the common reimplementation that keeps the cell's state at
  the embedding's size.

Adapting to a task is embedding its support set: :meth:`MatchingNetworks.adapt_task` returns θ
with the support memory (``support.embeddings`` ``g(S)`` and ``support.labels`` one-hot), which
:meth:`MatchingNetworks.predict` attends over (it returns log-probabilities).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from algorithms.registry import AdvantageSpec
from algorithms.supervised.data import SupportQuery
from algorithms.supervised.learner import EpisodeBatch, SupervisedLearner, query_metrics, task_loss
from algorithms.supervised.matching import MatchingSpec
from algorithms.supervised.nets import Net, NetSpec, Params, make_net

ENCODER = "encoder."


def similarities(query_emb: Tensor, support_emb: Tensor, *, scale: float = 1.0) -> Tensor:
    """``scale · c(f(x̂), g(x_i))``, the cosine similarities ``[..., Nq, Ns]`` of ``[..., Nq, d]``
    queries and ``[..., Ns, d]`` support embeddings."""
    return scale * F.normalize(query_emb, dim=-1) @ F.normalize(support_emb, dim=-1).transpose(-1, -2)


def attention(query_emb: Tensor, support_emb: Tensor, *, scale: float = 1.0) -> Tensor:
    """``a(x̂, x_i)``: softmax over the support of the (scaled) cosine similarities,
    ``[..., Nq, Ns]`` (Vinyals et al. 2016, eq. 2)."""
    return torch.softmax(similarities(query_emb, support_emb, scale=scale), dim=-1)


def matching_log_probs(query_emb: Tensor, support_emb: Tensor, support_labels: Tensor, *,
                       scale: float = 1.0) -> Tensor:
    """``log P(y = k | x̂, S) = log Σ_{i: y_i = k} a(x̂, x_i)``, ``[..., Nq, ways]`` (eq. 1), from
    one-hot ``support_labels`` ``[..., Ns, ways]``; computed as a log-sum-exp of the log-attention
    (stable where an attention weight underflows)."""
    log_a = torch.log_softmax(similarities(query_emb, support_emb, scale=scale), dim=-1)
    mask = torch.zeros_like(support_labels).masked_fill(support_labels <= 0, float("-inf"))
    return torch.logsumexp(log_a.unsqueeze(-1) + mask.unsqueeze(-3), dim=-2)


def lstm_cell(params: Params, prefix: str, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One step of an LSTM cell with ``nn.LSTMCell``'s parameters and gate order (i, f, g, o)."""
    gates = F.linear(x, params[f"{prefix}weight_ih"], params[f"{prefix}bias_ih"]) + F.linear(
        h, params[f"{prefix}weight_hh"], params[f"{prefix}bias_hh"])
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def fce_support(params: Params, g0: Tensor) -> Tensor:
    """``g(x_i, S) = g'(x_i) + h→_i + h←_i``: the bidirectional LSTM over ``g0`` ``[..., Ns, d]``."""
    n = g0.shape[-2]
    zero = torch.zeros_like(g0[..., 0, :])
    outs: dict[str, list[Tensor]] = {}
    for direction, order in (("fce_forward.", range(n)), ("fce_backward.", range(n - 1, -1, -1))):
        h, c = zero, zero
        seq: list[Tensor] = [zero] * n
        for i in order:
            h, c = lstm_cell(params, direction, g0[..., i, :], h, c)
            seq[i] = h
        outs[direction] = seq
    return g0 + torch.stack(outs["fce_forward."], dim=-2) + torch.stack(outs["fce_backward."], dim=-2)


def fce_query(params: Params, f0: Tensor, support: Tensor, *, steps: int) -> Tensor:
    """``f(x̂, S)``: ``steps`` steps of the attention LSTM over the support embeddings ``support``
    ``[..., Ns, d]`` from ``f0`` ``[..., Nq, d]`` (see the module docstring)."""
    h, c = f0, torch.zeros_like(f0)
    for _ in range(steps):
        read = torch.softmax(h @ support.transpose(-1, -2), dim=-1) @ support
        h_hat, c = lstm_cell(params, "fce_query.", torch.cat([f0, read], dim=-1), h, c)
        h = h_hat + f0
    return h


class MatchingModule(nn.Module):
    """θ of Matching Networks: the ``encoder`` and, with FCE, the support's bidirectional LSTM
    (``fce_forward``, ``fce_backward``) and the query's attention LSTM cell (``fce_query``)."""

    def __init__(self, spec: NetSpec, *, fce: bool, seed: int) -> None:
        super().__init__()
        self.spec = spec  # as a Net's: the in-process loop builds its sampler from ``learner.policy.spec``
        self.encoder = make_net(spec, head=False, seed=seed)
        d = spec.embedding_dim
        if fce:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)
                self.fce_forward = nn.LSTMCell(d, d)
                self.fce_backward = nn.LSTMCell(d, d)
                self.fce_query = nn.LSTMCell(2 * d, d)


class MatchingNetworks(SupervisedLearner):
    """Matching Networks (see the module docstring).  θ's names: ``encoder.*`` and, with FCE,
    ``fce_forward.*``, ``fce_backward.*``, ``fce_query.*`` (``nn.LSTMCell``'s)."""

    name = "matching"
    uses_head = False
    has_pre_metrics = False
    config: MatchingSpec

    def __init__(self, policy_spec: NetSpec, spec: MatchingSpec | None = None, *,
                 advantage: AdvantageSpec | None = None, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(policy_spec, spec or MatchingSpec(), advantage=advantage, seed=seed, device=device)
        self._optimizer = torch.optim.Adam(self.meta_parameters(), lr=self.config.lr)

    def _build(self, spec: NetSpec, seed: int) -> nn.Module:
        return MatchingModule(spec, fce=self.config.fce, seed=seed)

    @property
    def net(self) -> Net:
        return self.policy.encoder  # type: ignore[return-value]

    # ---- the embeddings -----------------------------------------------------------------------
    def embed_support(self, theta: Params, x: Tensor) -> Tensor:
        """``g(x_i, S)`` of a support set ``[..., Ns, *input_shape]``."""
        g = self.net.embed(_encoder(theta), x)
        return fce_support(theta, g) if self.config.fce else g

    def embed_query(self, theta: Params, x: Tensor, support_emb: Tensor) -> Tensor:
        """``f(x̂, S)`` of a query set ``[..., Nq, *input_shape]`` given ``g(S)``."""
        f = self.net.embed(_encoder(theta), x)
        return fce_query(theta, f, support_emb, steps=self.config.fce_steps) if self.config.fce else f

    def log_probs(self, theta: Params, batch: EpisodeBatch) -> Tensor:
        """Every task's query log-probabilities ``[T, Nq, ways]`` (differentiable w.r.t. θ)."""
        ways = self.net_spec.output_dim
        labels = _one_hot(batch.y_support, ways, dtype=self.dtype)
        g = self.embed_support(theta, batch.x_support)
        f = self.embed_query(theta, batch.x_query, g)
        return matching_log_probs(f, g, labels, scale=self.config.cosine_scale)

    # ---- learning -----------------------------------------------------------------------------
    def _update(self, batch: EpisodeBatch) -> dict[str, float]:
        self._classification_only(batch)
        logp = self.log_probs(dict(self.policy.named_parameters()), batch)
        loss = task_loss(logp, batch.y_query, classification=True).mean()
        grad_norm = self._outer_step(loss, max_grad_norm=self.config.max_grad_norm)
        metrics = {"loss/query": float(loss.detach()), "meta/grad_norm": grad_norm}
        metrics.update(query_metrics(logp.detach(), batch.y_query, classification=True))
        return metrics

    # ---- meta-test ----------------------------------------------------------------------------
    def adapt_task(self, params: Params, episode: SupportQuery, *, steps: int | None = None) -> Params:
        """θ with the task's support memory (``support.embeddings``, ``support.labels``); ``steps``
        is ignored (no inner steps)."""
        batch = self.batch([episode])
        self._classification_only(batch)
        theta = {k: v.detach().to(self.device) for k, v in params.items() if not k.startswith("support.")}
        with torch.no_grad():
            g = self.embed_support(theta, batch.x_support[0])
        labels = _one_hot(batch.y_support[0], self.net_spec.output_dim, dtype=self.dtype)
        return {**theta, "support.embeddings": g, "support.labels": labels}

    def predict(self, params: Params, x: Tensor) -> Tensor:
        """Log-probabilities ``[N, ways]`` of queries ``x`` given an adapted model's support memory."""
        if "support.embeddings" not in params:
            raise ValueError("Matching Networks classify against a support set: pass the parameters adapt_task "
                             "returns")
        with torch.no_grad():
            g = params["support.embeddings"]
            f = self.embed_query(params, x.to(device=self.device, dtype=self.dtype), g)
            return matching_log_probs(f, g, params["support.labels"], scale=self.config.cosine_scale)


def _encoder(theta: Params) -> Params:
    return {k[len(ENCODER):]: v for k, v in theta.items() if k.startswith(ENCODER)}


def _one_hot(y: Tensor, ways: int, *, dtype: torch.dtype) -> Tensor:
    """One-hot labels; every class must have a support example (its attention mass)."""
    labels = F.one_hot(y, ways).to(dtype)
    if bool((labels.sum(-2) == 0).any()):
        raise ValueError(f"every one of the {ways} classes needs a support example")
    return labels


__all__ = ["MatchingModule", "MatchingNetworks", "attention", "fce_query", "fce_support", "lstm_cell",
           "matching_log_probs", "similarities"]
