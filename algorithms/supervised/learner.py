"""What the supervised meta-learners share: episodes as tensors, the task losses and metrics, the
guarded outer update (a NaN/inf leaves parameters and optimizer as they were), adaptation and
evaluation at meta-test, and checkpoints.

A learner is built as the registry builds every learner, ``Learner(net_spec, spec, advantage=...,
seed=..., device=...)`` (``advantage`` is taken for that signature and unused), and is driven by
the phase runner like the RL learners:

* ``learn([episodes])`` -- one outer update from the single phase of its plan: one
  :class:`~algorithms.supervised.data.SupportQuery` per task of the meta-batch;
* ``adapt(params, episodes)`` / ``adapt_task(params, episode)`` -- each task's model after
  adaptation on its support set (a params dict :meth:`SupervisedLearner.predict` takes: adapted
  parameters, or θ with the prototypes or the support memory of a metric learner);
* ``evaluate(episodes)`` -- adapt on each support set, score the query set.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from algorithms.base import HoldsPolicy, LearnerState, UpdateMetrics
from algorithms.errors import NonFiniteError
from algorithms.registry import AdvantageSpec
from algorithms.supervised.data import SupportQuery
from algorithms.supervised.nets import Net, NetSpec, Params, make_net


# --- data ------------------------------------------------------------------------------------------
@dataclass
class EpisodeBatch:
    """The episodes of a meta-batch stacked over tasks: ``x_*`` ``[T, N, *input_shape]``, ``y_*``
    ``[T, N]`` (class indices, int64) or ``[T, N, out_dim]`` (regression targets)."""

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor
    classification: bool

    @property
    def n_tasks(self) -> int:
        return int(self.x_support.shape[0])


def make_episode_batch(episodes: Sequence[SupportQuery], *, spec: NetSpec, dtype: torch.dtype = torch.float32,
                       device: torch.device | str = "cpu") -> EpisodeBatch:
    """Stack ``episodes`` (one per task) as tensors, after checking they fit ``spec`` and each
    other (a meta-batch's tasks share their shapes: the tasks are a batch dimension).

    Raises:
        ValueError: no episodes, shapes that differ between tasks or from ``spec``, class indices
            outside ``0..output_dim-1``, a regression target of the wrong size.
        NonFiniteError: an input or a target is NaN/inf.
    """
    if not episodes:
        raise ValueError("a supervised meta-batch needs at least one episode")
    first = episodes[0]
    for i, e in enumerate(episodes):
        for a, b, what in ((e.x_support, first.x_support, "support inputs"), (e.y_support, first.y_support,
                           "support targets"), (e.x_query, first.x_query, "query inputs"),
                           (e.y_query, first.y_query, "query targets")):
            if a.shape != b.shape:
                raise ValueError(f"task {i}'s {what} have shape {a.shape}, task 0's {b.shape}: the tasks of a "
                                 "meta-batch must have the same shapes (the same ways, shots and queries)")
    if tuple(first.x_support.shape[1:]) != tuple(spec.input_shape):
        raise ValueError(f"the episodes' inputs have shape {first.x_support.shape[1:]}, the network takes "
                         f"{tuple(spec.input_shape)}")
    classification = first.classification

    def stack(name: str) -> np.ndarray:
        return np.stack([getattr(e, name) for e in episodes])

    xs, ys, xq, yq = stack("x_support"), stack("y_support"), stack("x_query"), stack("y_query")
    for a, name in ((xs, "support inputs"), (xq, "query inputs")) + (
            () if classification else ((ys, "support targets"), (yq, "query targets"))):
        if not np.isfinite(a).all():
            raise NonFiniteError(f"the episodes' {name} are not finite (NaN or inf)")
    if classification:
        for labels, name in ((ys, "support"), (yq, "query")):
            if labels.size and (labels.min() < 0 or labels.max() >= spec.output_dim):
                raise ValueError(f"{name} class indices must be in 0..{spec.output_dim - 1} (output_dim), "
                                 f"got {int(labels.min())}..{int(labels.max())}")
    elif ys.shape[-1] != spec.output_dim:
        raise ValueError(f"regression targets have size {ys.shape[-1]}, the network outputs {spec.output_dim}")

    def inputs(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a).to(device=device, dtype=dtype)

    def targets(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a).to(device=device, dtype=torch.long) if classification else inputs(a)

    return EpisodeBatch(inputs(xs), targets(ys), inputs(xq), targets(yq), classification)


# --- losses and metrics ----------------------------------------------------------------------------
def task_loss(out: Tensor, y: Tensor, *, classification: bool) -> Tensor:
    """Per-task loss over the last sample dimension: the mean cross-entropy of logits ``out``
    ``[..., N, C]`` against class indices ``y`` ``[..., N]``, or the mean squared error of
    ``out`` ``[..., N, D]`` against ``y`` (mean over samples and output entries).  Returns
    ``[...]`` (a scalar for one task)."""
    if classification:
        return -torch.log_softmax(out, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(-1)
    return (out - y).pow(2).mean(dim=(-2, -1))


def query_metrics(out: Tensor, y: Tensor, *, classification: bool, suffix: str = "") -> dict[str, float]:
    """Accuracy (classification) or MSE (regression) of outputs ``out`` over all tasks' queries,
    as ``meta/accuracy{suffix}`` / ``meta/mse{suffix}``."""
    with torch.no_grad():
        if classification:
            return {f"meta/accuracy{suffix}": float((out.argmax(-1) == y).to(torch.float32).mean())}
        return {f"meta/mse{suffix}": float((out - y).pow(2).mean())}


# --- the learner -----------------------------------------------------------------------------------
class SupervisedLearner(HoldsPolicy):
    """The base of the supervised meta-learners (see the module docstring).

    Subclasses set ``name`` and ``uses_head``, implement :meth:`_update` (one outer update from a
    batch, returning its metrics) and :meth:`adapt_task`, and, where the model has meta-parameters
    beside θ (Meta-SGD's α), :meth:`_extra_parameters`.

    Attributes:
        policy: the network whose parameters are θ (named ``policy`` for the learner interface the
            runner and checkpoints share with the RL learners; also :attr:`net`).
        config: the algorithm's spec.
        iteration: outer updates taken.
    """

    name: ClassVar[str] = "supervised"
    #: whether θ has a linear head (the gradient-based learners) or ends at the embedding
    uses_head: ClassVar[bool] = True
    #: whether the query accuracy of θ itself (``meta/accuracy_pre``) means anything
    has_pre_metrics: ClassVar[bool] = True

    policy: nn.Module

    def __init__(self, policy_spec: NetSpec, config: Any, *, advantage: AdvantageSpec | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        if not isinstance(policy_spec, NetSpec):
            raise TypeError(f"{type(self).__name__} takes an algorithms.supervised.nets.NetSpec, got "
                            f"{type(policy_spec).__name__}")
        self.config = config
        self.advantage = advantage or AdvantageSpec()  # the registry's learner signature; unused
        self.device = torch.device(device)
        self.net_spec = policy_spec
        self.policy = self._build(policy_spec, seed).to(self.device)
        self.iteration = 0
        self._optimizer: torch.optim.Optimizer | None = None

    # ---- construction -------------------------------------------------------------------------
    def _build(self, spec: NetSpec, seed: int) -> nn.Module:
        """The module holding θ (a :class:`Net`; Matching Networks add their LSTMs)."""
        return make_net(spec, head=self.uses_head, seed=seed)

    @property
    def net(self) -> Net:
        """The network (encoder and, where used, head)."""
        return cast(Net, self.policy)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.policy.parameters()).dtype

    def _extra_parameters(self) -> dict[str, nn.Parameter]:
        """Meta-parameters beside θ, by checkpoint key (Meta-SGD's α); none by default."""
        return {}

    def extra_parameter_keys(self) -> list[str]:
        """The checkpoint keys of the meta-parameters beside θ (none for most learners)."""
        return list(self._extra_parameters())

    def meta_parameters(self) -> list[nn.Parameter]:
        """Everything the outer step updates: θ and the extra meta-parameters."""
        return [*self.policy.parameters(), *self._extra_parameters().values()]

    # ---- data ---------------------------------------------------------------------------------
    def batch(self, episodes: Sequence[SupportQuery]) -> EpisodeBatch:
        """The episodes as tensors on the learner's device (see :func:`make_episode_batch`)."""
        return make_episode_batch(episodes, spec=self.net_spec, dtype=self.dtype, device=self.device)

    def _classification_only(self, batch: EpisodeBatch) -> None:
        if not batch.classification:
            raise ValueError(f"{self.name} is a classifier; the episodes have regression targets "
                             "(use sl-maml, anil, meta-sgd or sl-reptile)")

    # ---- the outer update ---------------------------------------------------------------------
    def learn(self, phases: Sequence[Sequence[SupportQuery]]) -> UpdateMetrics:
        """One outer update from the plan's single phase: one episode per task of the meta-batch.

        Raises:
            NonFiniteError: an input, the loss, a gradient or the new meta-parameters are NaN/inf;
                the parameters and the optimizer's state are left as they were.
        """
        if len(phases) != 1 or not phases[0]:
            raise ValueError(f"{type(self).__name__}.learn takes one phase of episodes (one per task), got "
                             f"{[len(p) for p in phases]}")
        batch = self.batch(list(phases[0]))
        backup = [p.detach().clone() for p in self.meta_parameters()]
        opt_backup = None if self._optimizer is None else copy.deepcopy(self._optimizer.state_dict())
        try:
            metrics = self._update(batch)
            if not all(torch.isfinite(p).all() for p in self.meta_parameters()):
                raise NonFiniteError(f"{self.name}'s new meta-parameters are not finite (NaN or inf); "
                                     "the update was rejected")
        except NonFiniteError:
            with torch.no_grad():
                for p, b in zip(self.meta_parameters(), backup, strict=True):
                    p.copy_(b)
            if self._optimizer is not None and opt_backup is not None:
                self._optimizer.load_state_dict(opt_backup)
            raise
        self.iteration += 1
        return UpdateMetrics(metrics)

    def _update(self, batch: EpisodeBatch) -> dict[str, float]:
        raise NotImplementedError

    def _outer_step(self, loss: Tensor, *, max_grad_norm: float | None) -> float:
        """Back-propagate ``loss`` and take the optimizer's step; returns the gradient's norm
        (before clipping).  Raises :class:`NonFiniteError` before stepping on a NaN/inf."""
        assert self._optimizer is not None
        self._check_outer_loss(loss)
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return self._clip_and_step(max_grad_norm=max_grad_norm)

    def _check_outer_loss(self, loss: Tensor) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteError(f"{self.name}'s outer loss is not finite (NaN or inf); the update was rejected")

    def _clip_and_step(self, *, max_grad_norm: float | None) -> float:
        """Clip the accumulated gradient of the meta-parameters and take the optimizer's step;
        returns the norm before clipping.  Raises :class:`NonFiniteError` before stepping on a
        NaN/inf."""
        assert self._optimizer is not None
        params = self.meta_parameters()
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm is not None else math.inf)
        if not torch.isfinite(norm):
            self._optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"{self.name}'s outer gradient is not finite (NaN or inf); the update was rejected")
        self._optimizer.step()
        return float(norm)

    # ---- meta-test ----------------------------------------------------------------------------
    def adapt(self, params: Sequence[Params], episodes: Sequence[SupportQuery]) -> list[Params]:
        """Each task's model after adaptation on its episode's support set, from its own
        parameters (no graph); the runner's inner-step interface."""
        if len(params) != len(episodes):
            raise ValueError(f"adapt: {len(params)} parameter dicts for {len(episodes)} episodes")
        return [self.adapt_task(p, e) for p, e in zip(params, episodes, strict=True)]

    def adapt_task(self, params: Params, episode: SupportQuery, *, steps: int | None = None) -> Params:
        """The model of ``episode``'s task after adaptation on its support set (its query set is
        not used): a params dict :meth:`predict` takes.  ``steps``: inner steps where the
        algorithm has them (default: its meta-test setting)."""
        raise NotImplementedError

    def predict(self, params: Params, x: Tensor) -> Tensor:
        """Outputs for inputs ``x`` ``[N, *input_shape]``: logits (their argmax is the class) or
        regression outputs, from a model :meth:`adapt_task` made (or θ, where it predicts)."""
        with torch.no_grad():
            return self.net(params, x.to(device=self.device, dtype=self.dtype))

    def evaluate(self, episodes: Sequence[SupportQuery], *, steps: int | None = None) -> dict[str, float]:
        """Meta-test metrics of θ on ``episodes``: adapt on each support set, score its query set.

        Returns:
            ``loss/query`` and ``meta/accuracy`` (classification) or ``meta/mse`` (regression)
            after adaptation, and where θ itself predicts, ``meta/accuracy_pre`` /
            ``meta/mse_pre``: means over the episodes' query examples.
        """
        batch = self.batch(episodes)
        theta = self.params
        post = torch.stack([
            self.predict(self.adapt_task(theta, e, steps=steps), batch.x_query[i]) for i, e in enumerate(episodes)
        ])
        c = batch.classification
        out = {"loss/query": float(task_loss(post, batch.y_query, classification=c).mean())}
        out.update(query_metrics(post, batch.y_query, classification=c))
        if self.has_pre_metrics:
            pre = self.predict(theta, batch.x_query)
            out.update(query_metrics(pre, batch.y_query, classification=c, suffix="_pre"))
        return out

    # ---- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> LearnerState:
        params = {k: v.detach().cpu().clone() for k, v in self.params.items()}
        params.update({k: v.detach().cpu().clone() for k, v in self._extra_parameters().items()})
        return LearnerState(
            algorithm=self.name,
            # LearnerState types its policy spec as the MLP's; a checkpoint pickles the NetSpec
            policy_spec=cast(Any, self.net_spec),
            config=self.config,
            params=params,
            optimizer=None if self._optimizer is None else copy.deepcopy(self._optimizer.state_dict()),
            iteration=self.iteration,
            advantage=self.advantage,
        )

    def load_state_dict(self, state: LearnerState) -> None:
        if state.algorithm != self.name:
            raise ValueError(f"checkpoint is for {state.algorithm!r}, this learner is {self.name!r}")
        extra = self._extra_parameters()
        expected = set(self.params) | set(extra)
        if set(state.params) != expected:
            raise ValueError(f"checkpoint parameters {sorted(set(state.params) ^ expected)} do not match this "
                             f"{self.name} learner's network")
        self._set_params({k: v.to(self.device) for k, v in state.params.items() if k not in extra})
        with torch.no_grad():
            for k, p in extra.items():
                p.copy_(state.params[k])
        if self._optimizer is not None and state.optimizer is not None:
            self._optimizer.load_state_dict(state.optimizer)
        self.iteration = state.iteration



__all__ = ["EpisodeBatch", "SupervisedLearner", "make_episode_batch", "query_metrics", "task_loss"]
