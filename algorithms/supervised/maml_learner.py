"""The gradient-based supervised meta-learners: MAML (Finn et al. 2017, Algorithm 2), ANIL (Raghu
et al. 2020) and Meta-SGD (Li et al. 2017).

All three adapt by SGD on a task's support set from θ and meta-learn by Adam on the query loss of
the adapted parameters, averaged over the meta-batch:

    φ_i = θ − α ⊙ ∇_θ L(θ; support_i)  (``steps`` times),   min_θ  1/T Σ_i L(φ_i(θ); query_i)

back-propagated through the inner steps (second order; ``first_order`` treats the inner gradients
as constants).  They differ in what the inner loop adapts and with what step:

* MAML: every parameter, a fixed α = ``inner_lr``;
* ANIL: only the linear head (the encoder's embedding of a task's examples is computed once and
  the inner loop runs on it); the encoder learns in the outer step through the head's adaptation;
* Meta-SGD: every parameter, one step, α a meta-learned tensor per parameter (θ's shapes).

The tasks of a meta-batch are computed one by one (``task_batching="loop"``: the plain reference,
``torch.autograd.grad`` with ``create_graph``) or as a batch dimension (``"vmap"``:
``torch.func.vmap`` over tasks of a per-task ``torch.func.grad``, the functorch MAML form); both
give the same loss and meta-gradient (``tests/algorithms/test_supervised_learners.py``).  The
default, ``"auto"``, takes the one measured faster: vmap on a GPU and for MLPs, the loop for conv4
on a CPU (:attr:`GradientLearner.task_batching`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from algorithms.registry import AdvantageSpec
from algorithms.supervised.anil import ANILSpec
from algorithms.supervised.data import SupportQuery
from algorithms.supervised.learner import EpisodeBatch, SupervisedLearner, query_metrics, task_loss
from algorithms.supervised.meta_sgd import MetaSGDSpec
from algorithms.supervised.nets import NetSpec, Params
from algorithms.supervised.sl_maml import SLMAMLSpec
from algorithms.supervised.specs import InnerLoopSpec

#: a step size per adapted parameter: a float (MAML, ANIL) or a tensor of its shape (Meta-SGD)
StepSizes = Mapping[str, float | Tensor]


def sgd_steps(loss_fn: Callable[[Params], Tensor], phi: Params, lr: StepSizes, *, steps: int, first_order: bool,
              grad_mode: Literal["autograd", "func"]) -> Params:
    """``steps`` inner SGD steps ``φ ← φ − α ⊙ ∇L(φ)`` from ``phi`` (Finn et al. 2017, eq. 1; Li
    et al. 2017, eq. 2 with a tensor α).

    Args:
        loss_fn: the task's support loss of the adapted parameters.
        phi: the parameters the inner loop adapts (in the graph of θ where it is to be
            differentiated through).
        lr: the step size of each.
        first_order: the gradients are constants (no graph through them).
        grad_mode: ``"autograd"`` (``torch.autograd.grad``; ``phi`` must require grad) or
            ``"func"`` (``torch.func.grad``: usable inside ``vmap``).

    Returns:
        The adapted parameters, differentiable w.r.t. whatever ``phi`` and ``lr`` depend on.
    """
    for _ in range(steps):
        if grad_mode == "func":
            g = grad(loss_fn)(phi)
            if first_order:
                g = {k: v.detach() for k, v in g.items()}
        else:
            with torch.enable_grad():
                loss = loss_fn(phi)
                gs = torch.autograd.grad(loss, list(phi.values()), create_graph=not first_order)
            g = dict(zip(phi, gs, strict=True))
        phi = {k: v - lr[k] * g[k] for k, v in phi.items()}
    return phi


class GradientLearner(SupervisedLearner):
    """What MAML, ANIL and Meta-SGD share (see the module docstring); subclasses say which
    parameters adapt (:meth:`inner_keys`), with which step sizes (:meth:`step_sizes`) and how many
    steps (:attr:`train_steps`, :attr:`test_steps`)."""

    config: SLMAMLSpec | ANILSpec | MetaSGDSpec
    #: the inner loop adapts only the head (ANIL): the encoder's output is computed once per set
    head_only: ClassVar[bool] = False

    def __init__(self, policy_spec: NetSpec, config: SLMAMLSpec | ANILSpec | MetaSGDSpec, *,
                 advantage: AdvantageSpec | None = None, seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(policy_spec, config, advantage=advantage, seed=seed, device=device)
        self._init_extra()
        self._optimizer = torch.optim.Adam(self.meta_parameters(), lr=config.outer_lr)

    def _init_extra(self) -> None:
        """Create meta-parameters beside θ before the optimizer is built (Meta-SGD's α)."""

    @property
    def task_batching(self) -> Literal["loop", "vmap"]:
        """How the meta-batch's tasks are computed: the spec's choice, or for ``"auto"`` vmap on a
        GPU and for MLPs and the per-task loop for conv4 on a CPU (benchmarks/supervised.py's speed
        part: on 2 CPU cores, MAML's second-order step of meta-batch 32 on 5-way 1-shot conv4 took
        0.6x the loop's speed through vmap, 4x on the sinusoid MLP)."""
        mode = self.config.task_batching
        if mode != "auto":
            return mode
        return "vmap" if self.device.type != "cpu" or self.net_spec.kind == "mlp" else "loop"

    # ---- what adapts, how ---------------------------------------------------------------------
    def inner_keys(self) -> list[str]:
        """The names of the parameters the inner loop adapts."""
        names = [k for k, _ in self.policy.named_parameters()]
        return [k for k in names if k.startswith("head.")] if self.head_only else names

    def step_sizes(self) -> StepSizes:
        """α of each adapted parameter."""
        return {k: self.config.inner_lr for k in self.inner_keys()}

    @property
    def train_steps(self) -> int:
        """Inner steps per task in meta-training."""
        cfg = self.config
        return cfg.inner_steps if isinstance(cfg, InnerLoopSpec) else 1

    @property
    def test_steps(self) -> int:
        """Inner steps when adapting at meta-test (by default)."""
        cfg = self.config
        return cfg.test_inner_steps if isinstance(cfg, InnerLoopSpec) else 1

    # ---- one task, functionally ---------------------------------------------------------------
    def _features(self, frozen: Params, x: Tensor) -> Tensor:
        """What the adapted parameters see: the inputs (MAML) or their embedding by the frozen
        encoder (ANIL: computed once, outside the inner loop)."""
        return self.net.embed(frozen, x) if self.head_only else x

    def _apply(self, frozen: Params, phi: Params, features: Tensor) -> Tensor:
        """Outputs of the model whose adapted part is ``phi``."""
        if self.head_only:
            return torch.nn.functional.linear(features, phi["head.weight"], phi["head.bias"])
        return self.net({**frozen, **phi}, features)

    def task_outer(self, theta: Params, lr: StepSizes, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, *,
                   steps: int, classification: bool, first_order: bool,
                   grad_mode: Literal["autograd", "func"]) -> tuple[Tensor, Tensor]:
        """One task's query loss after ``steps`` inner steps on its support set from ``theta``,
        and the query outputs: ``(loss, outputs)``, differentiable w.r.t. ``theta`` and ``lr``."""
        keys = set(self.inner_keys())
        frozen = {k: v for k, v in theta.items() if k not in keys}
        phi = {k: v for k, v in theta.items() if k in keys}
        fs, fq = self._features(frozen, xs), self._features(frozen, xq)

        def support_loss(p: Params) -> Tensor:
            return task_loss(self._apply(frozen, p, fs), ys, classification=classification)

        phi = sgd_steps(support_loss, phi, lr, steps=steps, first_order=first_order, grad_mode=grad_mode)
        out = self._apply(frozen, phi, fq)
        return task_loss(out, yq, classification=classification), out

    def outer_loss(self, theta: Params, batch: EpisodeBatch, *, lr: StepSizes | None = None,
                   task_batching: Literal["loop", "vmap"] | None = None, steps: int | None = None,
                   first_order: bool | None = None) -> tuple[Tensor, Tensor]:
        """The meta-objective ``1/T Σ_i L(φ_i(θ); query_i)`` at ``theta`` and the query outputs
        ``[T, Nq, out]``; the options default to the spec's.  Differentiable w.r.t. ``theta`` (and
        ``lr``): ``torch.autograd.grad(loss, theta.values())`` is the meta-gradient."""
        cfg = self.config
        lr = self.step_sizes() if lr is None else lr
        mode = task_batching or self.task_batching
        n_steps = self.train_steps if steps is None else steps
        fo = cfg.first_order if first_order is None else first_order
        c = batch.classification
        if mode == "vmap":

            def one(th: Params, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> tuple[Tensor, Tensor]:
                return self.task_outer(th, lr, xs, ys, xq, yq, steps=n_steps, classification=c, first_order=fo,
                                       grad_mode="func")

            losses, outs = vmap(one, in_dims=(None, 0, 0, 0, 0))(
                theta, batch.x_support, batch.y_support, batch.x_query, batch.y_query
            )
        else:
            results = [
                self.task_outer(theta, lr, batch.x_support[i], batch.y_support[i], batch.x_query[i],
                                batch.y_query[i], steps=n_steps, classification=c, first_order=fo,
                                grad_mode="autograd")
                for i in range(batch.n_tasks)
            ]
            losses = torch.stack([r[0] for r in results])
            outs = torch.stack([r[1] for r in results])
        return losses.mean(), outs

    # ---- learning -----------------------------------------------------------------------------
    def _update(self, batch: EpisodeBatch) -> dict[str, float]:
        theta: Params = dict(self.policy.named_parameters())
        c = batch.classification
        with torch.no_grad():
            pre = self.net(theta, batch.x_query)
            pre_loss = task_loss(pre, batch.y_query, classification=c).mean()
        loss, outs = self.outer_loss(theta, batch)
        grad_norm = self._outer_step(loss, max_grad_norm=self.config.max_grad_norm)
        metrics = {"loss/query": float(loss.detach()), "loss/query_pre": float(pre_loss), "meta/grad_norm": grad_norm}
        metrics.update(query_metrics(outs.detach(), batch.y_query, classification=c))
        metrics.update(query_metrics(pre, batch.y_query, classification=c, suffix="_pre"))
        return metrics

    # ---- meta-test ----------------------------------------------------------------------------
    def adapt_task(self, params: Params, episode: SupportQuery, *, steps: int | None = None) -> Params:
        """θ after ``steps`` (default: the spec's meta-test steps) inner SGD steps on ``episode``'s
        support set; no graph is kept."""
        batch = self.batch([episode])
        keys = set(self.inner_keys())
        theta = {k: v.detach().to(self.device) for k, v in params.items()}
        frozen = {k: v for k, v in theta.items() if k not in keys}
        with torch.no_grad():
            fs = self._features(frozen, batch.x_support[0])
        phi = {k: v.clone().requires_grad_(True) for k, v in theta.items() if k in keys}
        lr = {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in self.step_sizes().items()}

        def support_loss(p: Params) -> Tensor:
            return task_loss(self._apply(frozen, p, fs), batch.y_support[0], classification=batch.classification)

        phi = sgd_steps(support_loss, phi, lr, steps=self.test_steps if steps is None else steps, first_order=True,
                        grad_mode="autograd")
        return {**frozen, **{k: v.detach() for k, v in phi.items()}}


class SLMAML(GradientLearner):
    """MAML for supervised few-shot learning (Finn et al. 2017, Algorithm 2).

    >>> from algorithms.supervised.nets import NetSpec
    >>> learner = SLMAML(NetSpec(input_shape=(1,), output_dim=1), SLMAMLSpec(), seed=0)
    >>> sorted(learner.params)
    ['body.0.bias', 'body.0.weight', 'body.1.bias', 'body.1.weight', 'head.bias', 'head.weight']
    """

    name = "sl-maml"

    def __init__(self, policy_spec: NetSpec, spec: SLMAMLSpec | None = None, *, advantage: AdvantageSpec | None = None,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(policy_spec, spec or SLMAMLSpec(), advantage=advantage, seed=seed, device=device)


class ANIL(GradientLearner):
    """ANIL (Raghu et al. 2020): MAML whose inner loop adapts only ``head.weight`` and
    ``head.bias`` on the frozen encoder's embedding of the support set."""

    name = "anil"
    head_only = True

    def __init__(self, policy_spec: NetSpec, spec: ANILSpec | None = None, *, advantage: AdvantageSpec | None = None,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(policy_spec, spec or ANILSpec(), advantage=advantage, seed=seed, device=device)


class MetaSGD(GradientLearner):
    """Meta-SGD (Li et al. 2017): one inner step ``φ = θ − α ⊙ ∇L(θ)`` with α a learned tensor per
    parameter (:attr:`alpha`, initialised to ``inner_lr``), updated with θ by the outer Adam step.

    α is a meta-parameter beside θ: :attr:`params` is θ alone, checkpoints hold α under
    ``alpha/<parameter name>``.
    """

    name = "meta-sgd"
    config: MetaSGDSpec
    alpha: nn.ParameterDict

    def __init__(self, policy_spec: NetSpec, spec: MetaSGDSpec | None = None, *, advantage: AdvantageSpec | None = None,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        super().__init__(policy_spec, spec or MetaSGDSpec(), advantage=advantage, seed=seed, device=device)

    def _init_extra(self) -> None:
        # ParameterDict keys cannot hold dots: α of "body.0.weight" is alpha["body-0-weight"]
        self.alpha = nn.ParameterDict({
            _alpha_key(k): nn.Parameter(torch.full_like(v.detach(), self.config.inner_lr))
            for k, v in self.policy.named_parameters()
        }).to(self.device)

    def _extra_parameters(self) -> dict[str, nn.Parameter]:
        return {f"alpha/{k}": self.alpha[_alpha_key(k)] for k, _ in self.policy.named_parameters()}

    def step_sizes(self) -> StepSizes:
        """α, by parameter name."""
        return {k: self.alpha[_alpha_key(k)] for k in self.inner_keys()}


def _alpha_key(name: str) -> str:
    return name.replace(".", "-")


__all__ = ["ANIL", "GradientLearner", "MetaSGD", "SLMAML", "sgd_steps"]
