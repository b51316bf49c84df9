"""Prototypical Networks (Snell, Swersky & Zemel 2017).

A class's prototype is the mean embedding of its support examples, ``c_k = 1/|S_k| Σ f(x)``
(eq. 1); a query's logits are minus its squared Euclidean distances to the prototypes,
``−‖f(x) − c_k‖²`` (eq. 2, the distance the paper finds best); the embedding network is trained by
Adam on the query cross-entropy.  Classification only; every class of an episode needs a support
example.

Adapting to a task is computing its prototypes.  As the paper notes (sec. 2.4), with the squared
Euclidean distance the classifier is linear in the embedding: ``−‖f − c_k‖² = 2 c_kᵀ f − ‖c_k‖² −
‖f‖²`` and the last term is the same for every class.  :meth:`ProtoNet.adapt_task` returns θ with
that linear head (``head.weight = 2 c``, ``head.bias = −‖c‖²``), so an adapted model is an
ordinary classifier whose logits differ from eq. 2's by a per-query constant (the same softmax,
cross-entropy and argmax).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from algorithms.registry import AdvantageSpec
from algorithms.supervised.data import SupportQuery
from algorithms.supervised.learner import EpisodeBatch, SupervisedLearner, query_metrics, task_loss
from algorithms.supervised.nets import NetSpec, Params
from algorithms.supervised.protonet import ProtoNetSpec


def prototypes(support_emb: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """Mean embedding per class: ``[..., Ns, d]``, classes ``[..., Ns]`` -> ``[..., ways, d]``
    (Snell et al. 2017, eq. 1).  Raises ``ValueError`` if a class has no support example."""
    onehot = F.one_hot(support_y, ways).to(support_emb.dtype)
    counts = onehot.sum(-2)
    if bool((counts == 0).any()):
        raise ValueError(f"every one of the {ways} classes needs a support example (a prototype)")
    return onehot.transpose(-1, -2) @ support_emb / counts.unsqueeze(-1)


def prototype_logits(query_emb: Tensor, protos: Tensor) -> Tensor:
    """``−‖f(x) − c_k‖²``: ``[..., Nq, d]`` queries, ``[..., ways, d]`` prototypes ->
    ``[..., Nq, ways]`` (Snell et al. 2017, eq. 2 with the squared Euclidean distance)."""
    return -(query_emb.unsqueeze(-2) - protos.unsqueeze(-3)).pow(2).sum(-1)


class ProtoNet(SupervisedLearner):
    """Prototypical Networks (see the module docstring): θ is the encoder alone."""

    name = "protonet"
    uses_head = False
    has_pre_metrics = False
    config: ProtoNetSpec

    def __init__(self, policy_spec: NetSpec, spec: ProtoNetSpec | None = None, *,
                 advantage: AdvantageSpec | None = None, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(policy_spec, spec or ProtoNetSpec(), advantage=advantage, seed=seed, device=device)
        self._optimizer = torch.optim.Adam(self.meta_parameters(), lr=self.config.lr)

    def logits(self, theta: Params, batch: EpisodeBatch) -> Tensor:
        """Every task's query logits ``[T, Nq, ways]`` (differentiable w.r.t. ``theta``); the
        support and the query sets are embedded separately (each its own batch statistics)."""
        protos = prototypes(self.net.embed(theta, batch.x_support), batch.y_support, self.net_spec.output_dim)
        return prototype_logits(self.net.embed(theta, batch.x_query), protos)

    def _update(self, batch: EpisodeBatch) -> dict[str, float]:
        self._classification_only(batch)
        logits = self.logits(dict(self.policy.named_parameters()), batch)
        loss = task_loss(logits, batch.y_query, classification=True).mean()
        grad_norm = self._outer_step(loss, max_grad_norm=self.config.max_grad_norm)
        metrics = {"loss/query": float(loss.detach()), "meta/grad_norm": grad_norm}
        metrics.update(query_metrics(logits.detach(), batch.y_query, classification=True))
        return metrics

    def adapt_task(self, params: Params, episode: SupportQuery, *, steps: int | None = None) -> Params:
        """θ with the task's prototypes as a linear head (see the module docstring); ``steps`` is
        ignored (no inner steps)."""
        batch = self.batch([episode])
        self._classification_only(batch)
        theta = {k: v.detach().to(self.device) for k, v in params.items() if not k.startswith("head.")}
        with torch.no_grad():
            c = prototypes(self.net.embed(theta, batch.x_support[0]), batch.y_support[0], self.net_spec.output_dim)
        return {**theta, "head.weight": 2.0 * c, "head.bias": -c.pow(2).sum(-1)}

    def predict(self, params: Params, x: Tensor) -> Tensor:
        if "head.weight" not in params:
            raise ValueError("ProtoNet classifies with a task's prototypes: pass the parameters adapt_task returns")
        return super().predict(params, x)


__all__ = ["ProtoNet", "prototype_logits", "prototypes"]
