"""A supervised few-shot meta-learner as a user holds it: load it, adapt it to a new task from a
handful of labelled examples (the task's *support set*), predict.

Three lines take a registered model to predictions on a new task::

    m = MetaPolicy.load("models:/sinusoid-maml@latest")   # a SupervisedMetaModel
    a = m.adapt(support_x, support_y)                     # a new model, adapted to the support set
    a.predict(query_x)                                    # class indices, or regression values

:class:`SupervisedMetaModel` is what the loaders return for a model trained by one of the
supervised algorithms (``sl-maml``, ``anil``, ``meta-sgd``, ``sl-reptile``, ``protonet``,
``matching``; the card's ``policy_kind`` is ``"supervised"``).  It holds the learner's state -- θ,
Meta-SGD's learned step sizes α (``alpha/<name>`` parameters), the algorithm's spec -- and
rebuilds the algorithm's own learner (:func:`algorithms.registry.make_learner` and
``load_state_dict``) to adapt and predict, so a loaded model adapts exactly as the learner does at
meta-test (:meth:`~algorithms.supervised.learner.SupervisedLearner.adapt_task`):

* the gradient-based learners (MAML, ANIL, Meta-SGD, Reptile) take ``steps`` inner steps on the
  support set from θ (default: the algorithm's meta-test setting, e.g. MAML's
  ``test_inner_steps``); the adapted model holds the adapted parameters φ;
* ProtoNets compute the prototypes of the support set's classes (the adapted model holds θ with the
  prototypes as a linear head), Matching Networks embed the support set (the adapted model holds θ
  and the support memory); neither takes inner steps.

Inputs are ``[N, *input_shape]`` float arrays (the distribution's input shape: ``(1,)`` for
sinusoid, ``(1, 8, 8)`` for digits-rotations, ``(1, size, size)`` for glyphs, ``(1, 28, 28)`` for
Omniglot); classification labels are int class indices ``0..ways-1`` of shape ``[N]``,
regression targets float ``[N, out_dim]``.
The conv4 networks normalise every batch by its own statistics (transductive batch norm, as in
MAML's reference code and in training), so a task's query examples are predicted *together*: one
example predicted alone can get another answer.

Saved (:meth:`~workers.model.policy.BaseMetaPolicy.save`), an adapted model keeps what it
adapted to (φ, the prototypes, the support memory) and loads back adapted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import gymnasium as gym
import numpy as np
import torch

from algorithms import registry
from algorithms.base import LearnerState
from algorithms.registry import AlgorithmSpec
from algorithms.supervised.data import SupportQuery
from algorithms.supervised.learner import SupervisedLearner
from algorithms.supervised.nets import NetSpec, Params
from workers.catalog import family_info
from workers.contract import JobSpec
from workers.envs import Task
from workers.model.policy import BaseMetaPolicy, ModelFormatError
from workers.supervised import FewShotClassification, SinusoidRegression
from workers.tasks import SupervisedTaskDistribution, TaskFamilyError

#: What a supervised model predicts: class indices or regression values.
Problem = Literal["classification", "regression"]
PROBLEMS: tuple[Problem, ...] = ("classification", "regression")
#: The prefix of Meta-SGD's per-parameter step sizes among a learner state's parameters.
ALPHA_PREFIX = "alpha/"


class SupervisedMetaModel(BaseMetaPolicy[SupervisedTaskDistribution]):
    """A supervised few-shot meta-learner: adapt on a support set, predict queries (see the module
    docstring).

    >>> m = MetaPolicy.load("models:/digits-protonet/1")  # doctest: +SKIP
    >>> a = m.adapt(support_x, support_y)  # doctest: +SKIP
    >>> a.predict(query_x), a.predict_proba(query_x)  # doctest: +SKIP

    :meth:`adapt` returns a new model and leaves this one unchanged.  ``act`` and ``mean_return``
    are RL notions and raise :class:`TypeError`.

    Args:
        spec: the job spec that trained it (a supervised job).
        policy_spec: the network's architecture (:class:`~algorithms.supervised.nets.NetSpec`).
        params: the learner state's parameters (θ and, for Meta-SGD, ``alpha/*``); an adapted
            model's are the adapted ones (φ; θ with the prototype head or the support memory) and
            the same ``alpha/*``.
        algorithm: the algorithm's registered name.
        config: the algorithm's spec the learner was built with (default: the job spec's).
        iteration: meta-iterations trained.
        source: where it was loaded from.
        training_run_id: the MLflow run that trained it.
        problem: ``"classification"`` or ``"regression"`` (read from the distribution if omitted).
        adapted: whether ``params`` are adapted to a task.
        adapted_steps: inner steps taken to adapt (0 for the metric learners).
        learner: a learner already holding this model's meta-parameters (the models :meth:`adapt`
            returns share their parent's); built from ``config`` and ``params`` if omitted.
    """

    kind = "supervised"
    policy_spec_type = NetSpec
    _policy_spec: NetSpec

    def __init__(
        self,
        *,
        spec: JobSpec,
        policy_spec: NetSpec,
        params: Params,
        algorithm: str,
        config: AlgorithmSpec | None = None,
        iteration: int = 0,
        source: str = "",
        training_run_id: str | None = None,
        problem: Problem | None = None,
        adapted: bool = False,
        adapted_steps: int = 0,
        learner: SupervisedLearner | None = None,
    ) -> None:
        if not isinstance(policy_spec, NetSpec):
            raise ModelFormatError(f"a supervised model needs a NetSpec, got {policy_spec!r}")
        cfg = spec.algorithm if config is None else config
        if cfg.name != algorithm:
            raise ModelFormatError(f"the algorithm spec is {cfg.name!r}, the model says {algorithm!r}")
        if problem is not None and problem not in PROBLEMS:
            raise ModelFormatError(f"problem must be one of {list(PROBLEMS)}, got {problem!r}")
        self._config = cfg
        self._adapted = bool(adapted)
        self._learner = learner if learner is not None else _make_learner(cfg, policy_spec, seed=spec.seed)
        self._meta_shapes = {k: tuple(v.shape) for k, v in self._learner.state_dict().params.items()}
        #: the meta-parameters beside θ (Meta-SGD's ``alpha/*``, the LSTM meta-learner's ``metalstm/*``)
        self._extra_keys = frozenset(self._learner.extra_parameter_keys())
        super().__init__(spec=spec, policy_spec=policy_spec, params=params, algorithm=algorithm, iteration=iteration,
                         source=source, training_run_id=training_run_id)
        if learner is None:
            self._learner.load_state_dict(LearnerState(
                algorithm=algorithm, policy_spec=cast(Any, policy_spec), config=cfg,
                params={k: self._params[k] for k in self._meta_shapes}, optimizer=None, iteration=self.iteration,
            ))
        self._problem = problem
        self.adapted_steps = int(adapted_steps)

    def __repr__(self) -> str:
        state = f"adapted, {self.adapted_steps} step(s)" if self._adapted else "not adapted"
        return (f"SupervisedMetaModel({self.algorithm} on {self._spec.task_family.name}, source={self.source!r}, "
                f"{state})")

    # ---- what it is ----
    @property
    def policy_spec(self) -> NetSpec:
        """The network's architecture."""
        return self._policy_spec

    @property
    def config(self) -> AlgorithmSpec:
        """The algorithm's spec (inner step size and steps, ...)."""
        return self._config

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input."""
        return tuple(self._policy_spec.input_shape)

    @property
    def output_dim(self) -> int:
        """Classes of a task (``ways``) or the regression target's size."""
        return int(self._policy_spec.output_dim)

    @property
    def problem(self) -> Problem:
        """``"classification"`` (predictions are class indices) or ``"regression"``; stored with
        the model, else read from its distribution."""
        if self._problem is None:
            self._problem = _problem_of(self._spec, self._family)
        return self._problem

    @property
    def classification(self) -> bool:
        return self.problem == "classification"

    @property
    def ways(self) -> int | None:
        """Classes of a task (None for a regression model)."""
        return self.output_dim if self.classification else None

    @property
    def adapted(self) -> bool:
        """Whether the parameters are adapted to a task's support set (else they are θ)."""
        return self._adapted

    @property
    def default_steps(self) -> int | None:
        """Inner steps :meth:`adapt` takes by default (the algorithm's meta-test setting); None
        for an algorithm that takes none (ProtoNets, Matching Networks)."""
        return _default_steps(self._learner)

    @property
    def inner_lr(self) -> float | None:
        """The inner loop's step size where the algorithm has one fixed one (MAML, ANIL, Reptile);
        None for Meta-SGD (learned per parameter: the ``alpha/*`` parameters) and the metric
        learners."""
        if any(k.startswith(ALPHA_PREFIX) for k in self._params) or self.default_steps is None:
            return None
        lr = getattr(self._config, "inner_lr", None)
        return None if lr is None else float(lr)

    @property
    def can_predict_unadapted(self) -> bool:
        """Whether θ itself predicts (the gradient-based learners' pre-adaptation figure); the
        metric learners classify only against a support set."""
        return bool(self._learner.has_pre_metrics)

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """None: a supervised model has no actions."""
        return None

    # ---- its kind ----
    @classmethod
    def _make_module(cls, policy_spec: Any) -> torch.nn.Module:
        raise NotImplementedError("a supervised model runs its learner's module (see _new_module)")

    def _new_module(self, policy_spec: Any) -> torch.nn.Module:
        return self._learner.policy

    def _checked_params(self, params: Params) -> Params:
        """The learner state's parameters (θ and Meta-SGD's ``alpha/*``, with the learner's
        shapes) and, for an adapted model, what adaptation added (a prototype head, a support
        memory), as float32 CPU copies."""
        missing = sorted(set(self._meta_shapes) - set(params))
        if missing:
            raise ModelFormatError(f"{self._config.name} model: parameters {missing} are missing; it has "
                                   f"{sorted(params)}")
        for k, shape in self._meta_shapes.items():
            if tuple(params[k].shape) != shape:
                raise ModelFormatError(f"parameter {k!r} has shape {tuple(params[k].shape)}, the network needs {shape}")
        extra = sorted(set(params) - set(self._meta_shapes))
        if extra and not self._adapted:
            raise ModelFormatError(f"{self._config.name} model: unknown parameters {extra} (only an adapted model "
                                   "holds more than the learner's)")
        for k, v in params.items():
            if not isinstance(v, torch.Tensor) or not torch.isfinite(v).all():
                raise ModelFormatError(f"parameter {k!r} is not a finite tensor")
        order = [*self._meta_shapes, *extra]
        return {k: params[k].detach().to("cpu", torch.float32).clone() for k in order}

    @classmethod
    def _from_card(cls, card: dict[str, Any], params: Params, *, source: str) -> SupervisedMetaModel:
        try:
            spec = JobSpec.model_validate(card["job_spec"])
            algorithm = str(card["algorithm"])
            config = (registry.get(algorithm).spec.model_validate(card["config"]) if card.get("config") is not None
                      else spec.algorithm)
            policy_spec = NetSpec(**card["policy_spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"not a supervised model's card: {exc}") from exc
        return cls(
            spec=spec,
            policy_spec=policy_spec,
            params=params,
            algorithm=algorithm,
            config=config,
            iteration=card.get("iteration", 0),
            source=source,
            training_run_id=card.get("run_id"),
            problem=card.get("problem"),
            adapted=bool(card.get("adapted", False)),
            adapted_steps=card.get("adapted_steps", 0),
        )

    @classmethod
    def _from_state(cls, spec: JobSpec, state: Any, *, source: str) -> SupervisedMetaModel:
        return cls(spec=spec, policy_spec=state.policy_spec, params=state.params, algorithm=state.algorithm,
                   config=state.config, iteration=state.iteration, source=source)

    def _card_fields(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "adapted": self._adapted,
            "adapted_steps": self.adapted_steps,
            "config": self._config.model_dump(mode="json"),
        }

    # ---- adapting ----
    def adapt(
        self,
        support_x: Any,
        support_y: Any = None,
        *,
        steps: int | None = None,
        seed: int = 0,
    ) -> SupervisedMetaModel:
        """A new model adapted to a task from its support set; this one is unchanged.

        ``adapt(support_x, support_y)``: the support set as arrays -- ``support_x``
        ``[N, *input_shape]`` numbers, ``support_y`` ``[N]`` int class indices ``0..ways-1``
        (classification) or ``[N, out_dim]`` numbers (regression).  ``adapt(task)``: a task of
        the model's distribution (``m.family.sample_tasks(...)``), whose episode is drawn with
        ``seed`` and adapted on by its support set.  ``adapt(episode)``: a
        :class:`~algorithms.supervised.data.SupportQuery`'s support set.

        Adaptation is the algorithm's (see the module docstring): ``steps`` inner steps for the
        gradient-based learners (default :attr:`default_steps`), the prototypes or the support
        memory for the metric learners (which take no ``steps``).  An adapted model adapts on from
        its adapted parameters.

        Raises:
            ValueError: inputs or targets of the wrong shape or type, non-finite values, labels
                outside ``0..ways-1``, a class without a support example where the algorithm
                needs one (ProtoNets, Matching Networks), ``steps`` that is not a positive integer
                or given to an algorithm without inner steps.
            TypeError: something other than a support set, a task or an episode.
            TaskFamilyError: a task of another distribution.
        """
        if isinstance(support_x, Task | SupportQuery):
            if support_y is not None:
                raise TypeError("adapt takes a task or an episode alone, or the arrays support_x and support_y")
            if isinstance(support_x, Task):
                episode = self.episode(support_x, seed=seed)
            else:
                episode = support_x
            xs, ys = self._check_inputs(episode.x_support, "support_x"), episode.y_support
        elif isinstance(support_x, gym.Env):
            raise TypeError("a supervised model adapts on a support set (support_x, support_y), a Task or a "
                            "SupportQuery, not on a gymnasium env")
        else:
            if support_y is None:
                raise TypeError("adapt(support_x, support_y): support_y, the support set's labels or targets, "
                                "is missing")
            xs = self._check_inputs(support_x, "support_x")
            ys = support_y
        ys = self._check_targets(ys, n=len(xs))
        n_steps = self._check_steps(steps)
        empty = SupportQuery(x_support=xs, y_support=ys, x_query=xs[:0], y_query=ys[:0])
        adapted = self._learner.adapt_task(self._task_params(), empty, steps=n_steps)
        params = {k: v.detach() for k, v in adapted.items()}
        params.update({k: v for k, v in self._params.items() if k in self._extra_keys})
        return self._derived(params, steps=n_steps or 0)

    def episode(self, task: Task, *, seed: int = 0) -> SupportQuery:
        """An episode (support and query sets) of ``task``, drawn with ``seed``."""
        if task.family != self._spec.task_family.name:
            raise TaskFamilyError(f"this model was trained on {self._spec.task_family.name!r} tasks, got a "
                                  f"{task.family!r} task; draw tasks from the model's family")
        return self.family.episode(task, np.random.default_rng(seed))

    # ---- predicting ----
    def predict(self, query_x: Any) -> np.ndarray:
        """Predictions for inputs ``[N, *input_shape]``: ``[N]`` int64 class indices (the argmax
        class) for a classifier, ``[N, out_dim]`` float32 values for a regression model.

        Predict a task's queries together: the conv4 networks normalise a batch by its own
        statistics (see the module docstring).

        Raises:
            ValueError: inputs of the wrong shape or type; an unadapted model of an algorithm that
                classifies only against a support set (ProtoNets, Matching Networks).
        """
        out = self._outputs(query_x)
        if self.classification:
            return out.argmax(-1).numpy().astype(np.int64)
        return out.numpy().astype(np.float32)

    def predict_proba(self, query_x: Any) -> np.ndarray:
        """Class probabilities ``[N, ways]`` float32 (rows sum to 1) for inputs
        ``[N, *input_shape]``: the softmax of the logits (Matching Networks: their attention's
        class distribution).

        Raises:
            TypeError: a regression model.
            ValueError: as :meth:`predict`.
        """
        if not self.classification:
            raise TypeError("predict_proba is for classifiers; this model does regression: use predict")
        return torch.softmax(self._outputs(query_x), dim=-1).numpy().astype(np.float32)

    def outputs(self, query_x: Any) -> np.ndarray:
        """The network's raw outputs ``[N, output_dim]`` float32: logits (log-probabilities for
        Matching Networks) or regression values."""
        return self._outputs(query_x).numpy().astype(np.float32)

    # ---- what it does not do ----
    def act(self, obs: np.ndarray | Sequence[float], deterministic: bool = True, *, clip: bool = True) -> np.ndarray:
        """Not for a supervised model: it predicts (:meth:`predict`)."""
        raise TypeError(f"{self.algorithm} is a supervised model: it has no actions; adapt it on a support set and "
                        "predict (m.adapt(support_x, support_y).predict(query_x))")

    def mean_return(self, task_or_env: Task | gym.Env, *, episodes: int = 10, seed: int = 1) -> float:
        """Not for a supervised model: it has no returns; score its predictions on a task's query set."""
        raise TypeError(f"{self.algorithm} is a supervised model: it has no episodes or returns; score "
                        "predict(query_x) against the query set (workers.evaluate meta-tests it)")

    # ---- internals ----
    def _task_params(self) -> Params:
        """The parameters the learner adapts from and predicts with: not the meta-parameters beside
        θ (Meta-SGD's α, the LSTM meta-learner's weights), which are the learner's."""
        return {k: v for k, v in self._params.items() if k not in self._extra_keys}

    def _outputs(self, query_x: Any) -> torch.Tensor:
        x = self._check_inputs(query_x, "query_x")
        if not self._adapted and not self.can_predict_unadapted:
            raise ValueError(f"{self.algorithm} classifies against a task's support set: adapt the model first "
                             "(m.adapt(support_x, support_y).predict(query_x))")
        return self._learner.predict(self._task_params(), torch.from_numpy(x)).detach().cpu()

    def _check_inputs(self, x: Any, what: str) -> np.ndarray:
        """``x`` as float32 ``[N, *input_shape]`` with ``N >= 1``, all finite."""
        try:
            a = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} must be an array of numbers: {exc}") from None
        shape = self.input_shape
        expected = f"[N, {', '.join(map(str, shape))}]"
        if a.dtype.kind not in "iuf":
            raise ValueError(f"{what} must be numbers (int or float), got dtype {a.dtype}")
        if a.ndim != 1 + len(shape) or tuple(a.shape[1:]) != shape:
            hint = f"; for a single example use {what}[None]" if tuple(a.shape) == shape else ""
            raise ValueError(f"{what} must have shape {expected} (N examples of the model's input shape {shape}), "
                             f"got {list(a.shape)}{hint}")
        if a.shape[0] < 1:
            raise ValueError(f"{what} is empty: it needs at least one example")
        out = a.astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError(f"{what} must be finite (no NaN or inf)")
        return out

    def _check_targets(self, y: Any, *, n: int) -> np.ndarray:
        """``y`` as ``[n]`` int64 class indices in ``0..ways-1`` or ``[n, out_dim]`` finite float32."""
        try:
            a = np.asarray(y)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"support_y must be an array: {exc}") from None
        d = self.output_dim
        if self.classification:
            if a.dtype.kind not in "iu":
                raise ValueError(f"support_y must be integer class indices 0..{d - 1} (this model is a {d}-way "
                                 f"classifier), got dtype {a.dtype}")
            if a.shape != (n,):
                raise ValueError(f"support_y must have shape [{n}] (one class index per support example), "
                                 f"got {list(a.shape)}")
            if a.min() < 0 or a.max() >= d:
                raise ValueError(f"support_y's class indices must be in 0..{d - 1} (this model is {d}-way), got "
                                 f"{int(a.min())}..{int(a.max())}")
            return a.astype(np.int64)
        if a.dtype.kind not in "iuf":
            raise ValueError(f"support_y must be numbers (regression targets), got dtype {a.dtype}")
        if a.shape != (n, d):
            hint = "; reshape it with support_y.reshape(-1, 1)" if a.shape == (n,) and d == 1 else ""
            raise ValueError(f"support_y must have shape [{n}, {d}] (one regression target of size {d} per support "
                             f"example), got {list(a.shape)}{hint}")
        out = a.astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError("support_y must be finite (no NaN or inf)")
        return out

    def _check_steps(self, steps: int | None) -> int | None:
        """The inner steps to take: ``steps``, else the algorithm's default; None for an algorithm
        without inner steps."""
        default = self.default_steps
        if steps is None:
            return default
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if default is None:
            raise ValueError(f"{self.algorithm} takes no inner steps (adapting computes from the support set "
                             "directly); leave steps unset")
        return int(steps)

    def _derived(self, params: Params, *, steps: int) -> SupervisedMetaModel:
        out = SupervisedMetaModel(
            spec=self._spec,
            policy_spec=self._policy_spec,
            params=params,
            algorithm=self.algorithm,
            config=self._config,
            iteration=self.iteration,
            source=self.source,
            training_run_id=self.training_run_id,
            problem=self._problem,
            adapted=True,
            adapted_steps=self.adapted_steps + steps,
            learner=self._learner,
        )
        out._family = self._family
        return out


def _make_learner(config: AlgorithmSpec, policy_spec: NetSpec, *, seed: int) -> SupervisedLearner:
    """The algorithm's learner on the CPU (its parameters are replaced by the model's)."""
    learner = registry.make_learner(config, policy_spec, seed=seed)
    if not isinstance(learner, SupervisedLearner):
        raise ModelFormatError(f"{config.name} is not a supervised algorithm (its learner is a "
                               f"{type(learner).__name__}); a supervised model needs one")
    return learner


def _default_steps(learner: SupervisedLearner) -> int | None:
    """The learner's meta-test inner steps: a gradient-based learner's ``test_steps``, else its
    spec's ``test_inner_steps``; None for one without inner steps."""
    steps = getattr(learner, "test_steps", None)
    if steps is None:
        steps = getattr(learner.config, "test_inner_steps", None)
    return None if steps is None else int(steps)


def _problem_of(spec: JobSpec, distribution: SupervisedTaskDistribution | None) -> Problem:
    """Whether ``spec``'s distribution is classification or regression: by its class where that
    says (the N-way K-shot data sets, sinusoid), else by the targets of one of its episodes."""
    builder = family_info(spec.task_family.name).builder_class()
    if issubclass(builder, FewShotClassification):
        return "classification"
    if issubclass(builder, SinusoidRegression):
        return "regression"
    if distribution is None:
        from workers.distributions import build_distribution

        tf = spec.task_family
        built = build_distribution(tf.name, seed=spec.seed, **tf.family_kwargs())
        if not isinstance(built, SupervisedTaskDistribution):
            raise ModelFormatError(f"{tf.name} is not a supervised task distribution")
        distribution = built
    rng = np.random.default_rng(0)
    episode = distribution.episode(distribution.sample_tasks(1, rng)[0], rng)
    return "classification" if episode.classification else "regression"


__all__ = ["ALPHA_PREFIX", "PROBLEMS", "Problem", "SupervisedMetaModel"]
