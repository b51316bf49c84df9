"""Meta-test evaluation of a registered meta-policy on its family's held-out test tasks.

``python -m workers.evaluate --model models:/NAME/V --episodes K --steps n [--tasks N] [--seed S]
[--later-lr A] [--split test|train|val] [--sampled-eval] [--json] [--evaluation-id ID]``

For each of ``N`` tasks drawn from the family's test split (``family.sample_tasks(N, rng,
split="test")``; Meta-World's test goals / test classes; ``--split train`` evaluates on training
tasks instead, for benchmarks that report both):

* **pre**: ``K`` episodes sampled with the meta-parameters θ (the first adaptation batch);
* **adapt**: ``n`` inner policy-gradient steps, each on ``K`` fresh episodes sampled with the
  current parameters, exactly as :meth:`workers.model.MetaPolicy.adapt`: the first with the
  model's ``inner_lr``, later ones with ``later_lr`` (default ``inner_lr``; the MAML paper's
  meta-test uses α = 0.1, then 0.05);
* **post**: evaluation episodes with the adapted parameters.  For most families these are ``K``
  episodes sampled from the adapted policy, the quantity training logs as ``meta/return_post``.
  Meta-World families follow the benchmark's ``metaworld.evaluation.metalearning_evaluation``:
  3 evaluation episodes per test goal with the deterministic evaluation action (the policy
  mean), an episode counting as a success if ``info["success"]`` was 1 at any step.
  ``--sampled-eval`` samples the adapted policy's actions instead, as garage's ``MetaEvaluator``
  does (the protocol behind the Meta-World paper's figures).

The report has per-task pre/post return and success rate, and over tasks their means with a
95% Student-t interval; and the **curve over inner steps** ``k = 0..n`` (Finn et al. 2017,
Fig. 5 and the appendix tables): step 0 is the pre episodes, step ``k < n`` the episodes sampled
after ``k`` steps (the batch the next step learns from), step ``n`` the post evaluation
episodes.  Since every step samples with the same sampler in the same order, step ``k`` of an
``n``-step evaluation equals the post value of a ``k``-step one with the same seed (for
families whose evaluation episodes are sampled like the adaptation ones).  The evaluation is
logged as a run of the MLflow experiment ``metarl-evaluations`` tagged with the model it
evaluated (and with ``metarl.evaluation_id``
when the control plane submitted it, which is how the service finds the result).

**RL²** (a recurrent policy that adapts in its hidden state, not by inner steps; the report's
``adaptation`` is ``"trial"``, the gradient-based learners' ``"gradient"``) is meta-tested by
Meta-World's protocol through its registered meta-test plan (one evaluation phase) and the
trial sampler's meta-test (:meth:`workers.trial_sampler.TrialPhaseSampler.meta_test`): per task,
a trial of ``K`` adaptation episodes from a zero state (actions sampled: the policy explores)
builds the hidden state, then the family's evaluation episodes (``eval_episodes``, else ``K``;
deterministic where the family says, Meta-World: 3) each start from the state the trial left; an
episode succeeds if ``info["success"]`` was 1 at any step.  The report maps onto the same fields:
**pre** is the trial's first episode (what the policy does before it knows the task), **post**
the evaluation episodes, and the curve is **per episode of the trial** -- ``k = 0..K-1`` the
trial's episode ``k``, ``k = K`` the evaluation episodes -- so it shows how fast the policy
adapts.  ``steps`` must be 1 (``n`` inner steps mean nothing to RL²) and ``later_lr`` unset.

A **supervised** few-shot model (:class:`~workers.model.SupervisedMetaModel`: ``sl-maml``,
``anil``, ``meta-sgd``, ``sl-reptile``, ``protonet``, ``matching``; the report's ``adaptation`` is
``"supervised"``) is meta-tested by the few-shot protocol (Vinyals et al. 2016; Finn et al. 2017,
sec. 5; Snell et al. 2017): ``N`` tasks drawn from the distribution's split (``test``; ``val``, a
supervised distribution's meta-validation split, and ``train`` too), one episode each (its support
and query sets, ``shots`` and ``queries`` per class as the distribution was trained with), all
drawn from one generator seeded with ``seed``.  The model adapts on each support set exactly as
:meth:`~workers.model.SupervisedMetaModel.adapt` does -- ``n`` inner steps for the algorithms that
take them (default: the algorithm's meta-test setting, e.g. MAML's ``test_inner_steps``; ignored,
and reported as 0, for ProtoNets and Matching Networks) -- and is scored on the query set:
**accuracy** (classification) or **MSE** (regression, mean over query points and outputs) per
episode, and over episodes their mean with a 95% Student-t interval (the papers report 600 test
episodes for classification, 100 or more tasks for regression).  Where θ itself predicts (the
gradient-based learners) the query figure before adaptation is reported too (``accuracy_pre`` /
``mse_pre``).  ``episodes`` is not used (a supervised task gives one episode) and ``later_lr`` must
be unset.  The RL fields of the report (``return_*``, ``success_*``) are null; ``summary`` holds the
headline numbers (``accuracy``, ``accuracy_ci_low``, ``accuracy_ci_high``, ``accuracy_pre``, or
the same for ``mse``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from algorithms.episodes import Episodes
from workers import tracking
from workers.contract import EVALUATION_EXPERIMENT as EXPERIMENT
from workers.contract import (
    EVALUATION_ID_TAG,
    EVALUATION_REPORT,
    MODEL_NAME_TAG,
    MODEL_URI_TAG,
    MODEL_VERSION_TAG,
)
from workers.envs import Task
from workers.envs.base import SPLITS, Split
from workers.model import (
    MetaPolicy,
    ModelFormatError,
    ModelNotFoundError,
    RecurrentMetaPolicy,
    SupervisedMetaModel,
    TrialMetaTest,
    TrialMetaTestSource,
    parse_registry_uri,
    resolve_model_version,
)
from workers.model.recurrent import MAX_ENVS  # at most this many sub-envs at once; tasks go in chunks that fit
from workers.runner import SamplerSource
from workers.sampler import Sampler
from workers.supervised import SUPERVISED_SPLITS, SupportQuery
from workers.trial_sampler import TrialPhaseSampler

log = logging.getLogger("metarl.evaluate")

#: The control plane's evaluation id (``--evaluation-id``) must match this; the service finds the
#: evaluation's run by its tag (``EVALUATION_ID_TAG``).
EVALUATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: ``EvaluationReport.adaptation``: by inner policy-gradient steps (MAML, Reptile, multi-task
#: PG), within a trial, in a recurrent policy's hidden state (RL²), or on a supervised task's
#: support set (the supervised few-shot learners)
GRADIENT, TRIAL, SUPERVISED = "gradient", "trial", "supervised"
#: The report's fields only a supervised evaluation has (left out of an RL report's JSON).
SUPERVISED_FIELDS = ("metric", "accuracy", "accuracy_pre", "mse", "mse_pre", "summary", "ways", "shots", "queries")


@dataclass(frozen=True)
class TaskResult:
    """One test task's pre- and post-adaptation performance.

    Attributes:
        index: position of the task in the evaluation (the MLflow ``step`` of its metrics).
        task: the task, described (``Task.describe()``).
        return_pre: mean undiscounted return of the episodes sampled with θ (RL²: the return of
            the trial's first episode).
        return_post: mean return of the evaluation episodes with the adapted parameters (RL²:
            from the state the trial left).
        success_pre: fraction of the θ episodes that succeeded (0 where the family has none;
            RL²: whether the trial's first episode succeeded).
        success_post: fraction of the evaluation episodes that succeeded.
        return_steps: mean return after ``k = 0..n`` inner steps (``[0]`` is ``return_pre``,
            ``[n]`` is ``return_post``); RL²: the return of each episode ``k = 0..K-1`` of the
            trial, then ``return_post``.
        success_steps: success rate after ``k = 0..n`` inner steps (RL²: per episode of the
            trial, then ``success_post``).
    """

    index: int
    task: str
    return_pre: float
    return_post: float
    success_pre: float
    success_post: float
    return_steps: tuple[float, ...] = ()
    success_steps: tuple[float, ...] = ()


@dataclass(frozen=True)
class EpisodeResult:
    """One test task's few-shot figures (a supervised model): its query set scored after
    adaptation on its support set, and by θ itself where θ predicts.

    Attributes:
        index: position of the task in the evaluation (the MLflow ``step`` of its metrics).
        task: the task, described (``Task.describe()``).
        support: examples in the support set.
        query: examples in the query set.
        accuracy: fraction of the query set classified right after adaptation (classification).
        accuracy_pre: the same with θ (the gradient-based learners; None for the metric learners,
            which classify only against a support set).
        mse: mean squared error over the query set's points and outputs after adaptation
            (regression).
        mse_pre: the same with θ.
    """

    index: int
    task: str
    support: int
    query: int
    accuracy: float | None = None
    accuracy_pre: float | None = None
    mse: float | None = None
    mse_pre: float | None = None


@dataclass(frozen=True)
class Interval:
    """A mean over tasks with its 95% Student-t interval (None bounds with fewer than 2 tasks)."""

    mean: float
    low: float | None
    high: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Interval:
        x = np.asarray(values, dtype=np.float64)
        mean = float(x.mean())
        if x.size < 2:
            return cls(mean=mean, low=None, high=None)
        from scipy.stats import t

        half = float(t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
        return cls(mean=mean, low=mean - half, high=mean + half)


@dataclass(frozen=True)
class EvaluationReport:
    """What :func:`evaluate` measured, and how.

    Attributes:
        model_uri: the URI as given.
        model_name: the registered model name, where the URI names one.
        model_version: the registered version evaluated (aliases resolved).
        task_family: the family the test tasks came from.
        episodes: ``K``, episodes per adaptation step (and the pre-adaptation episodes); RL²:
            the episodes of the adaptation trial.
        steps: ``n``, inner steps (1 for RL², which takes none).
        seed: seeds the task draw, the env resets and the action noise.
        eval_episodes: evaluation episodes per task after adaptation.
        deterministic_eval: whether the evaluation episodes used the policy's mean/argmax.
        has_success: whether the family reports success (Meta-World).
        results: one :class:`TaskResult` per test task (a supervised model: one
            :class:`EpisodeResult`).
        return_pre, return_post, success_pre, success_post: means over tasks, 95% intervals
            (None for a supervised model).
        seconds: wall time of the evaluation.
        run_id: the MLflow run it was logged as, if logged.
        split: the split the tasks were drawn from (``test`` unless asked otherwise).
        inner_lr: step size of the first inner step (the model's; None for RL²).
        later_lr: step size of inner steps 2..n (None for RL²).
        return_steps, success_steps: over tasks, the mean (95% interval) after ``k = 0..n``
            inner steps; RL²: per episode ``k = 0..K-1`` of the trial, then the evaluation
            episodes (see the module docstring).
        adaptation: how the model adapts: ``"gradient"`` (inner policy-gradient steps),
            ``"trial"`` (RL²: within a trial, in its hidden state) or ``"supervised"`` (a
            supervised few-shot model, on each task's support set).

    A supervised evaluation (see the module docstring) has ``episodes`` and ``eval_episodes`` 1
    (one support/query episode per task), ``steps`` the inner steps taken (0 for an algorithm
    without inner steps), null RL fields, and:

    Attributes:
        metric: ``"accuracy"`` (classification) or ``"mse"`` (regression).
        accuracy, accuracy_pre: over tasks, the mean query accuracy after adaptation and with θ
            (None where θ does not predict), 95% intervals.
        mse, mse_pre: the same for the query MSE of a regression model.
        summary: the headline numbers (``name -> value``) the service shows: ``accuracy``,
            ``accuracy_ci_low``, ``accuracy_ci_high``, ``accuracy_pre`` (or ``mse...``), those
            known.
        ways, shots, queries: the distribution's episodes (``ways`` None for regression; shots
            and queries per class, or per task for regression).
    An RL report's JSON (:meth:`to_dict`) has none of these fields.
    """

    model_uri: str
    model_name: str | None
    model_version: int | None
    task_family: str
    episodes: int
    steps: int
    seed: int
    eval_episodes: int
    deterministic_eval: bool
    has_success: bool
    results: tuple[TaskResult | EpisodeResult, ...]
    return_pre: Interval | None
    return_post: Interval | None
    success_pre: Interval | None
    success_post: Interval | None
    seconds: float
    run_id: str | None = None
    split: str = "test"
    inner_lr: float | None = None
    later_lr: float | None = None
    return_steps: tuple[Interval, ...] = ()
    success_steps: tuple[Interval, ...] = ()
    adaptation: str = GRADIENT
    metric: str | None = None
    accuracy: Interval | None = None
    accuracy_pre: Interval | None = None
    mse: Interval | None = None
    mse_pre: Interval | None = None
    summary: dict[str, float] | None = None
    ways: int | None = None
    shots: int | None = None
    queries: int | None = None

    @property
    def tasks(self) -> int:
        return len(self.results)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (an RL report without the supervised fields)."""
        out = dataclasses.asdict(self)
        out["tasks"] = self.tasks
        if self.adaptation != SUPERVISED:
            for key in SUPERVISED_FIELDS:
                del out[key]
        return out


def evaluate(
    model_uri: str,
    *,
    episodes: int = 10,
    steps: int | None = None,
    tasks: int = 10,
    seed: int = 0,
    later_lr: float | None = None,
    split: str = "test",
    log_to_mlflow: bool = True,
    evaluation_id: str | None = None,
    sampled_eval: bool = False,
) -> EvaluationReport:
    """Meta-test ``model_uri`` on ``tasks`` held-out test tasks (see the module docstring).

    Args:
        model_uri: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/...`` or a directory.
        episodes: ``K``, episodes per adaptation step (and pre-adaptation episodes).
        steps: ``n``, inner policy-gradient steps (default 1; a supervised model: inner steps on
            the support set, default the algorithm's meta-test setting).
        tasks: ``N``, test tasks.
        seed: seeds the task draw, env resets and action noise (a supervised model: the tasks
            and their episodes).
        later_lr: step size of inner steps 2..n (default: the model's ``inner_lr``).
        split: the task split to draw from (``test``, or ``train`` for a training-task figure;
            a supervised distribution also has ``val``).
        log_to_mlflow: log the evaluation as a run of the ``metarl-evaluations`` experiment.
        sampled_eval: the evaluation episodes sample the adapted policy's actions even where the
            family's protocol takes its mean (Meta-World): the protocol of garage's
            ``MetaEvaluator``, which produced the Meta-World paper's RL² and MAML figures.  The
            report's ``deterministic_eval`` says which was used.  Not for supervised models.
        evaluation_id: the control plane's id of this evaluation, logged as the run tag
            ``metarl.evaluation_id``.

    An RL² model (a :class:`~workers.model.RecurrentMetaPolicy`) is meta-tested within a trial
    of ``episodes`` episodes instead, and a supervised model
    (:class:`~workers.model.SupervisedMetaModel`) on the support and query sets of ``tasks``
    episodes (see the module docstring).

    Raises:
        ModelNotFoundError: nothing at ``model_uri``.
        ValueError: a count below 1, a negative seed, a ``later_lr`` that is not positive, an
            unknown split or a malformed ``evaluation_id``; for an RL² model, ``steps`` other
            than 1 or a ``later_lr``; for a supervised model, a ``later_lr``.
    """
    _check_request(episodes=episodes, steps=steps, tasks=tasks, seed=seed, later_lr=later_lr, split=split,
                   evaluation_id=evaluation_id)
    start = time.perf_counter()
    resolved = resolve_model_version(model_uri)
    policy = MetaPolicy.load(model_uri if resolved is None else f"models:/{resolved[0]}/{resolved[1]}")
    parsed = parse_registry_uri(model_uri)
    model_name = resolved[0] if resolved else (parsed[0] if parsed else None)
    model_version = resolved[1] if resolved else None
    if isinstance(policy, SupervisedMetaModel):
        if sampled_eval:
            raise ValueError("sampled_eval: a supervised model is scored on its query set; there are no actions "
                             "to sample")
        report = _supervised_report(policy, model_uri=model_uri, model_name=model_name, model_version=model_version,
                                    steps=steps, tasks=tasks, seed=seed, later_lr=later_lr, split=split, start=start)
        if log_to_mlflow:
            run_id = log_evaluation(report, training_run_id=policy.training_run_id, evaluation_id=evaluation_id)
            report = dataclasses.replace(report, run_id=run_id)
        return report
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    rl_split = cast(Split, split)
    steps = 1 if steps is None else steps
    inner_lr: float | None = None
    step2_lr: float | None = None
    if isinstance(policy, RecurrentMetaPolicy):
        _check_trial_request(steps=steps, later_lr=later_lr)
        adaptation, points = TRIAL, episodes + 1
        family = policy.family
        test_tasks = family.sample_tasks(tasks, np.random.default_rng(seed), split=rl_split)
        trials = _trial_meta_test(policy, test_tasks, episodes=episodes, seed=seed, sampled_eval=sampled_eval)
        results = tuple(_trial_task_result(i, task, t) for i, (task, t) in enumerate(zip(test_tasks, trials,
                                                                                            strict=True)))
    elif isinstance(policy, MetaPolicy):
        adaptation, points = GRADIENT, steps + 1
        inner_lr, step2_lr = policy.inner_lr, policy.step_lr(1, later_lr=later_lr)
        family = policy.family
        test_tasks = family.sample_tasks(tasks, np.random.default_rng(seed), split=rl_split)
        by_step = _meta_test(policy, test_tasks, episodes=episodes, steps=steps, seed=seed, later_lr=later_lr,
                             sampled_eval=sampled_eval)
        results = tuple(_task_result(i, task, [by_step[k][i] for k in range(steps + 1)])
                        for i, task in enumerate(test_tasks))
    else:
        raise ModelFormatError(f"{model_uri!r} holds a {type(policy).__name__}, which this evaluation cannot meta-test")
    log.info("evaluated %d %s tasks", len(test_tasks), split)
    report = EvaluationReport(
        model_uri=model_uri,
        model_name=model_name,
        model_version=model_version,
        task_family=family.name,
        episodes=episodes,
        steps=steps,
        seed=seed,
        eval_episodes=family.eval_episodes or episodes,
        deterministic_eval=family.deterministic_eval and not sampled_eval,
        has_success=family.has_success,
        results=results,
        return_pre=Interval.of([r.return_pre for r in results]),
        return_post=Interval.of([r.return_post for r in results]),
        success_pre=Interval.of([r.success_pre for r in results]),
        success_post=Interval.of([r.success_post for r in results]),
        seconds=time.perf_counter() - start,
        split=split,
        inner_lr=inner_lr,
        later_lr=step2_lr,
        return_steps=tuple(Interval.of([r.return_steps[k] for r in results]) for k in range(points)),
        success_steps=tuple(Interval.of([r.success_steps[k] for r in results]) for k in range(points)),
        adaptation=adaptation,
    )
    if log_to_mlflow:
        run_id = log_evaluation(report, training_run_id=policy.training_run_id, evaluation_id=evaluation_id)
        report = dataclasses.replace(report, run_id=run_id)
    return report


def _check_request(*, episodes: int, steps: int | None, tasks: int, seed: int, later_lr: float | None, split: str,
                   evaluation_id: str | None) -> None:
    for name, value in (("episodes", episodes), ("steps", steps), ("tasks", tasks)):
        if name == "steps" and value is None:
            continue  # the model's default
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if later_lr is not None and not (math.isfinite(later_lr) and later_lr > 0):
        raise ValueError(f"later_lr must be a positive number, got {later_lr!r}")
    if split not in SUPERVISED_SPLITS:  # an RL family's are checked once the model is loaded
        raise ValueError(f"split must be one of {list(SUPERVISED_SPLITS)}, got {split!r}")
    if evaluation_id is not None and not EVALUATION_ID_PATTERN.match(evaluation_id):
        raise ValueError(f"evaluation_id must match {EVALUATION_ID_PATTERN.pattern}, got {evaluation_id!r}")


def _check_trial_request(*, steps: int, later_lr: float | None) -> None:
    """What an RL² model cannot be asked: inner steps, or a step size for them."""
    if steps != 1:
        raise ValueError(
            f"steps={steps}: this is an RL² model, which adapts within a trial (its hidden state over the trial's "
            "episodes, set by episodes=K) and takes no inner steps; evaluate it with steps=1"
        )
    if later_lr is not None:
        raise ValueError(
            f"later_lr={later_lr}: this is an RL² model, which takes no inner steps (so no step size); leave it unset"
        )


def _supervised_report(policy: SupervisedMetaModel, *, model_uri: str, model_name: str | None,
                       model_version: int | None, steps: int | None, tasks: int, seed: int, later_lr: float | None,
                       split: str, start: float) -> EvaluationReport:
    """The few-shot meta-test of a supervised model (see the module docstring): ``tasks``
    episodes of ``split``, each adapted on its support set and scored on its query set."""
    if later_lr is not None:
        raise ValueError(f"later_lr={later_lr}: this is a supervised model, whose inner steps (where its algorithm "
                         "takes them) use the algorithm's own step size; leave it unset")
    takes_steps = policy.default_steps is not None
    if not takes_steps and steps is not None:
        log.info("%s takes no inner steps; steps=%d is not used", policy.algorithm, steps)
    used = steps if takes_steps else None
    dist = policy.family
    rng = np.random.default_rng(seed)
    # a supervised distribution's splits are SUPERVISED_SPLITS ("val" too; workers.tasks.Split names two)
    test_tasks = dist.sample_tasks(tasks, rng, split=cast(Split, split))
    results = tuple(_episode_result(i, task, policy, dist.episode(task, rng), steps=used)
                    for i, task in enumerate(test_tasks))
    log.info("evaluated %d %s episodes", len(results), split)
    metric = "accuracy" if policy.classification else "mse"
    post = Interval.of([_value(getattr(r, metric)) for r in results])
    pre = Interval.of([_value(getattr(r, f"{metric}_pre")) for r in results]) if policy.can_predict_unadapted else None
    figures = {metric: post, f"{metric}_pre": pre}
    return EvaluationReport(
        model_uri=model_uri,
        model_name=model_name,
        model_version=model_version,
        task_family=dist.name,
        episodes=1,
        steps=(used or policy.default_steps or 0) if takes_steps else 0,
        seed=seed,
        eval_episodes=1,
        deterministic_eval=dist.deterministic_eval,
        has_success=False,
        results=results,
        return_pre=None,
        return_post=None,
        success_pre=None,
        success_post=None,
        seconds=time.perf_counter() - start,
        split=split,
        inner_lr=policy.inner_lr,
        adaptation=SUPERVISED,
        metric=metric,
        accuracy=figures.get("accuracy"),
        accuracy_pre=figures.get("accuracy_pre"),
        mse=figures.get("mse"),
        mse_pre=figures.get("mse_pre"),
        summary=_summary(figures),
        ways=policy.ways,
        shots=_int_attr(dist, "shots"),
        queries=_int_attr(dist, "queries"),
    )


def _episode_result(index: int, task: Task, policy: SupervisedMetaModel, episode: SupportQuery, *,
                    steps: int | None) -> EpisodeResult:
    """One episode's query figures: after adaptation on its support set (with ``steps`` inner
    steps, None: the algorithm's default) and, where θ predicts, before."""
    adapted = policy.adapt(episode, steps=steps)
    xq, yq = episode.x_query, episode.y_query
    sizes = {"support": len(episode.x_support), "query": len(xq)}
    if policy.classification:
        pre = float(np.mean(policy.predict(xq) == yq)) if policy.can_predict_unadapted else None
        return EpisodeResult(index, task.describe(), **sizes, accuracy=float(np.mean(adapted.predict(xq) == yq)),
                             accuracy_pre=pre)
    target = np.asarray(yq, np.float32)
    mse_pre = float(np.mean((policy.predict(xq) - target) ** 2)) if policy.can_predict_unadapted else None
    return EpisodeResult(index, task.describe(), **sizes, mse=float(np.mean((adapted.predict(xq) - target) ** 2)),
                         mse_pre=mse_pre)


def _value(x: float | None) -> float:
    assert x is not None  # the figure the model reports, for every episode
    return x


def _summary(figures: dict[str, Interval | None]) -> dict[str, float]:
    """The headline numbers of a supervised report: each figure's mean and, with its 95% interval,
    ``<name>_ci_low`` / ``<name>_ci_high``; the post-adaptation one's interval only (the report
    holds the others)."""
    out: dict[str, float] = {}
    for i, (name, interval) in enumerate(figures.items()):
        if interval is None:
            continue
        out[name] = interval.mean
        if i == 0 and interval.low is not None and interval.high is not None:
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = interval.low, interval.high
    return out


def _int_attr(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None)
    return int(value) if isinstance(value, int | np.integer) else None


def _meta_test(policy: MetaPolicy, tasks: list[Task], *, episodes: int, steps: int, seed: int,
               later_lr: float | None, sampled_eval: bool = False) -> list[list[Episodes]]:
    """``by_step[k][i]``: task ``i``'s episodes after ``k`` inner steps; ``by_step[steps]`` are the
    evaluation episodes (the family's evaluation protocol: Meta-World's 3 deterministic
    episodes per goal).  Tasks go through the meta-test plan in chunks that fit ``MAX_ENVS``."""
    family = policy.family
    per_task = _envs_per_task(episodes=episodes, steps=steps, eval_episodes=family.eval_episodes or episodes)
    chunk = max(1, MAX_ENVS // per_task)
    sampler = Sampler(family, policy.policy_spec, envs_per_task=per_task, seed=seed)
    source = SamplerSource.evaluating(sampler, family, episodes_per_task=episodes, sampled_actions=sampled_eval)
    by_step: list[list[Episodes]] = [[] for _ in range(steps + 1)]
    try:
        for i in range(0, len(tasks), chunk):
            collected = policy.meta_test(tasks[i : i + chunk], source=source, steps=steps, later_lr=later_lr)
            for k, phase in enumerate(collected.phases):
                by_step[k].extend(phase)
    finally:
        sampler.close()
    return by_step


def _trial_meta_test(policy: RecurrentMetaPolicy, tasks: list[Task], *, episodes: int,
                     seed: int, sampled_eval: bool = False) -> list[TrialMetaTest]:
    """Each task's RL² meta-test (its adaptation trial and evaluation episodes): the model's
    meta-test plan run by the phase runner over a :class:`~workers.model.TrialMetaTestSource`
    (the family's evaluation protocol), tasks in chunks that fit ``MAX_ENVS``."""
    family = policy.family
    per_task = min(family.eval_episodes or episodes, MAX_ENVS)  # the evaluation episodes run side by side
    chunk = max(1, MAX_ENVS // per_task)
    sampler = TrialPhaseSampler(family, policy.policy_spec, episodes_per_trial=episodes, envs_per_task=per_task,
                                seed=seed)
    source = TrialMetaTestSource.evaluating(sampler, family, adaptation_episodes=episodes,
                                            sampled_actions=sampled_eval)
    out: list[TrialMetaTest] = []
    try:
        for i in range(0, len(tasks), chunk):
            (phase,) = policy.meta_test(tasks[i : i + chunk], source=source).phases
            out.extend(phase)
    finally:
        sampler.close()
    return out


def _trial_task_result(index: int, task: Task, test: TrialMetaTest) -> TaskResult:
    """One task's figures from its RL² meta-test: pre is the trial's first episode, post the
    evaluation episodes, the curve each episode of the trial then the evaluation."""
    returns, success = test.adaptation_returns, test.adaptation_success
    return_post, success_post = float(test.evaluation_returns.mean()), float(test.evaluation_success.mean())
    return TaskResult(
        index=index,
        task=task.describe(),
        return_pre=float(returns[0]),
        return_post=return_post,
        success_pre=float(success[0]),
        success_post=success_post,
        return_steps=(*(float(x) for x in returns), return_post),
        success_steps=(*(float(x) for x in success), success_post),
    )


def _task_result(index: int, task: Task, by_step: list[Episodes]) -> TaskResult:
    """One task's figures from its episodes after ``k = 0..n`` inner steps."""
    return TaskResult(
        index=index,
        task=task.describe(),
        return_pre=float(by_step[0].returns.mean()),
        return_post=float(by_step[-1].returns.mean()),
        success_pre=float(by_step[0].successes.mean()),
        success_post=float(by_step[-1].successes.mean()),
        return_steps=tuple(float(e.returns.mean()) for e in by_step),
        success_steps=tuple(float(e.successes.mean()) for e in by_step),
    )


def _envs_per_task(*, episodes: int, steps: int, eval_episodes: int) -> int:
    """Sub-envs per task: the count that wastes the fewest episodes (the sampler runs whole
    rounds of sub-envs), the largest such count on a tie (fewer, more batched rounds)."""
    top = min(max(episodes, eval_episodes), MAX_ENVS)

    def cost(k: int) -> tuple[int, int]:
        sampled = steps * math.ceil(episodes / k) * k + math.ceil(eval_episodes / k) * k
        return sampled, -k

    return min(range(1, top + 1), key=cost)


def log_evaluation(
    report: EvaluationReport, *, training_run_id: str | None = None, evaluation_id: str | None = None
) -> str:
    """Log ``report`` as a finished run of the ``metarl-evaluations`` experiment; returns its id.
    ``evaluation_id`` (the control plane's) becomes the run tag ``metarl.evaluation_id``."""
    from mlflow.entities import RunTag

    client = tracking.client()
    experiment_id = tracking.ensure_experiment(EXPERIMENT)
    label = (
        f"{report.model_name}-v{report.model_version}" if report.model_version is not None else report.model_uri
    )
    tags = {
        MODEL_URI_TAG: report.model_uri,
        MODEL_NAME_TAG: report.model_name or "",
        MODEL_VERSION_TAG: "" if report.model_version is None else str(report.model_version),
        "metarl.task_family": report.task_family,
        "metarl.adaptation": report.adaptation,
    }
    if training_run_id:
        tags["metarl.training_run_id"] = training_run_id
    if evaluation_id:
        tags[EVALUATION_ID_TAG] = evaluation_id
    run = client.create_run(experiment_id, run_name=f"eval-{label}"[:250], tags=tags)
    run_id = run.info.run_id
    try:
        if report.adaptation == SUPERVISED:
            _log_supervised(client, run_id, report)
        else:
            _log_rl(client, run_id, report)
        client.log_batch(run_id, tags=[RunTag("metarl.seconds", f"{report.seconds:.3f}")])
        client.log_text(
            run_id, json.dumps(dataclasses.replace(report, run_id=run_id).to_dict(), indent=2), EVALUATION_REPORT
        )
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def _log_rl(client: Any, run_id: str, report: EvaluationReport) -> None:
    """An RL evaluation's params and metrics: pre/post return (and success), the curve over inner
    steps (RL²: over the trial's episodes), per-task figures."""
    from mlflow.entities import Metric, Param

    params: dict[str, Any] = {
        "episodes": report.episodes,
        "steps": report.steps,
        "tasks": report.tasks,
        "seed": report.seed,
        "eval_episodes": report.eval_episodes,
        "deterministic_eval": report.deterministic_eval,
        "split": report.split,
    }
    if report.adaptation == TRIAL:
        params["adaptation"] = report.adaptation  # no step sizes: RL² takes no inner steps
    else:
        params.update(inner_lr=report.inner_lr, later_lr=report.later_lr)
    now = int(time.time() * 1000)
    metrics = []
    # success rates only where the family reports success (elsewhere they would read 0)
    keys = ("return_pre", "return_post") + (("success_pre", "success_post") if report.has_success else ())
    for key in keys:
        metrics += _interval_metrics(f"eval/{key}", getattr(report, key), now, 0)
    # the curve over inner steps: MLflow step = number of inner steps taken (RL²: the episode
    # of the trial, K for the evaluation episodes)
    curves = [("return_step", report.return_steps)] + (
        [("success_step", report.success_steps)] if report.has_success else []
    )
    for key, curve in curves:
        for k, interval in enumerate(curve):
            metrics += _interval_metrics(f"eval/{key}", interval, now, k)
    for r in report.results:
        for key in keys:
            metrics.append(Metric(f"eval/task_{key}", float(getattr(r, key)), now, r.index))
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    _log_metrics(client, run_id, metrics)


def _interval_metrics(name: str, interval: Interval, now: int, step: int) -> list[Any]:
    """``name`` (the mean) and, where the interval has them, ``name_ci_low`` / ``name_ci_high``."""
    from mlflow.entities import Metric

    out = [Metric(name, interval.mean, now, step)]
    if interval.low is not None and interval.high is not None:
        out += [Metric(f"{name}_ci_low", interval.low, now, step), Metric(f"{name}_ci_high", interval.high, now, step)]
    return out


def _log_supervised(client: Any, run_id: str, report: EvaluationReport) -> None:
    """A supervised evaluation's params and metrics: ``eval/<metric>`` and ``eval/<metric>_pre``
    (``accuracy`` or ``mse``) with their 95% intervals, and per episode ``eval/task_<metric>``
    (MLflow step = the episode's index)."""
    from mlflow.entities import Metric, Param

    params: dict[str, Any] = {"adaptation": report.adaptation, "tasks": report.tasks, "steps": report.steps,
                              "seed": report.seed, "split": report.split, "metric": report.metric}
    params.update({k: v for k, v in (("ways", report.ways), ("shots", report.shots), ("queries", report.queries),
                                     ("inner_lr", report.inner_lr)) if v is not None})
    now = int(time.time() * 1000)
    metrics = []
    keys = [k for k in (f"{report.metric}", f"{report.metric}_pre") if getattr(report, k) is not None]
    for key in keys:
        metrics += _interval_metrics(f"eval/{key}", getattr(report, key), now, 0)
    for r in report.results:
        for key in keys:
            metrics.append(Metric(f"eval/task_{key}", float(getattr(r, key)), now, r.index))
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    _log_metrics(client, run_id, metrics)


def _log_metrics(client: Any, run_id: str, metrics: list[Any]) -> None:
    for i in range(0, len(metrics), 1000):  # MLflow's log_batch limit
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


# ---- CLI -------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _evaluation_id(text: str) -> str:
    if not EVALUATION_ID_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"must match {EVALUATION_ID_PATTERN.pattern}, got {text!r}")
    return text


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _cell(i: Interval | None) -> str:
    """``mean [low, high]``, ``-`` for a figure not reported."""
    return "-" if i is None else f"{_fmt(i.mean)} [{_fmt(i.low)}, {_fmt(i.high)}]"


def _table(report: EvaluationReport) -> Any:
    from rich.markup import escape
    from rich.table import Table

    if report.adaptation == SUPERVISED:
        return _supervised_table(report)
    trial = report.adaptation == TRIAL
    budget = (f"a trial of K={report.episodes} episodes" if trial
              else f"K={report.episodes} episodes x {report.steps} step(s)")
    title = (
        f"{report.model_uri}: {report.task_family}, {report.tasks} {report.split} tasks, {budget}, "
        f"{report.eval_episodes} evaluation episodes{' from its state' if trial else ''}"
        f"{' (deterministic)' if report.deterministic_eval else ''}"
    )
    # RL²: pre is the trial's first episode, post the evaluation episodes from the state it left
    pre, post = ("1st episode of the trial", "after the trial") if trial else ("pre", "post")
    table = Table(title=escape(title))
    table.add_column("#", justify="right")
    table.add_column("task")
    table.add_column(f"return {pre}", justify="right")
    table.add_column(f"return {post}", justify="right")
    if report.has_success:
        table.add_column(f"success {pre}", justify="right")
        table.add_column(f"success {post}", justify="right")
    for r in report.results:
        assert isinstance(r, TaskResult)  # an RL report's
        row = [str(r.index), escape(r.task), _fmt(r.return_pre), _fmt(r.return_post)]
        if report.has_success:
            row += [_fmt(r.success_pre), _fmt(r.success_post)]
        table.add_row(*row)

    summary = ["", "mean [95% CI]", _cell(report.return_pre), _cell(report.return_post)]
    if report.has_success:
        summary += [_cell(report.success_pre), _cell(report.success_post)]
    table.add_section()
    table.add_row(*summary, style="bold")
    return table


def _supervised_table(report: EvaluationReport) -> Any:
    """A supervised evaluation: each episode's query accuracy (or MSE) before and after adaptation,
    then their means with 95% intervals."""
    from rich.markup import escape
    from rich.table import Table

    metric = report.metric or "accuracy"
    shape = (f"{report.ways}-way {report.shots}-shot" if report.ways is not None
             else f"{report.shots}-shot" if report.shots is not None else "few-shot")
    queries = "" if report.queries is None else f", {report.queries} queries{' per class' if report.ways else ''}"
    steps = "no inner steps" if report.steps == 0 else f"{report.steps} inner step(s)"
    title = (f"{report.model_uri}: {report.task_family}, {report.tasks} {report.split} episodes, {shape}{queries}, "
             f"{steps}")
    pre = getattr(report, f"{metric}_pre")
    digits = 3
    table = Table(title=escape(title))
    table.add_column("#", justify="right")
    table.add_column("task")
    if pre is not None:
        table.add_column(f"{metric} pre", justify="right")
    table.add_column(f"{metric} post", justify="right")
    for r in report.results:
        assert isinstance(r, EpisodeResult)  # a supervised report's
        row = [str(r.index), escape(r.task)]
        if pre is not None:
            row.append(_fmt(getattr(r, f"{metric}_pre"), digits))
        row.append(_fmt(getattr(r, metric), digits))
        table.add_row(*row)
    table.add_section()

    def cell(i: Interval | None) -> str:
        return "-" if i is None else f"{_fmt(i.mean, digits)} [{_fmt(i.low, digits)}, {_fmt(i.high, digits)}]"

    summary = ["", "mean [95% CI]"] + ([cell(pre)] if pre is not None else []) + [cell(getattr(report, metric))]
    table.add_row(*summary, style="bold")
    return table


def _steps_table(report: EvaluationReport) -> Any:
    """Mean [95% CI] over tasks after each number of inner steps (RL²: per episode of the trial,
    then the evaluation episodes)."""
    from rich.table import Table

    trial = report.adaptation == TRIAL
    if trial:
        table = Table(title="per episode of the trial, then the evaluation episodes from its state")
        table.add_column("episode of the trial", justify="right")
    else:
        table = Table(title=f"after k inner steps (α = {_fmt(report.inner_lr, 3)}, then {_fmt(report.later_lr, 3)})")
        table.add_column("k", justify="right")
    table.add_column("return", justify="right")
    if report.has_success:
        table.add_column("success", justify="right")
    for k, (r, sr) in enumerate(zip(report.return_steps, report.success_steps, strict=True)):
        label = "evaluation" if trial and k == report.episodes else str(k)
        row = [label, f"{_fmt(r.mean)} [{_fmt(r.low)}, {_fmt(r.high)}]"]
        if report.has_success:
            row.append(f"{_fmt(sr.mean)} [{_fmt(sr.low)}, {_fmt(sr.high)}]")
        table.add_row(*row)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m workers.evaluate", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="models:/NAME/VERSION, models:/NAME@ALIAS, runs:/... or a directory")
    parser.add_argument("--episodes", type=_positive, default=10,
                        help="K: episodes per adaptation step; RL²: episodes of the adaptation trial (default 10; "
                             "a supervised model: not used, one support/query episode per task)")
    parser.add_argument("--steps", type=_positive, default=None,
                        help="n: inner policy-gradient steps (default 1; RL² takes none: 1); a supervised model: inner "
                             "steps on the support set (default: its algorithm's meta-test setting; none for "
                             "protonet and matching)")
    parser.add_argument("--tasks", type=_positive, default=10,
                        help="N: held-out test tasks (default 10; a supervised model: test episodes, the papers use "
                             "600 for classification)")
    parser.add_argument("--seed", type=_non_negative, default=0,
                        help="seed of tasks, resets and action noise (default 0)")
    parser.add_argument("--later-lr", type=_positive_float, default=None,
                        help="step size of inner steps 2..n (default: the model's inner_lr; the MAML paper uses 0.05)")
    parser.add_argument("--split", choices=SUPERVISED_SPLITS, default="test",
                        help="task split to evaluate on (default test; val: a supervised distribution's "
                             "meta-validation split)")
    parser.add_argument("--sampled-eval", action="store_true",
                        help="evaluation episodes sample the adapted policy's actions where the family's protocol "
                             "takes its mean (Meta-World): garage's MetaEvaluator protocol")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the evaluation as an MLflow run")
    parser.add_argument("--evaluation-id", type=_evaluation_id, default=None,
                        help="the control plane's evaluation id, logged as the run tag metarl.evaluation_id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from rich.console import Console

    err = Console(stderr=True)
    try:
        report = evaluate(
            args.model, episodes=args.episodes, steps=args.steps, tasks=args.tasks, seed=args.seed,
            later_lr=args.later_lr, split=args.split, log_to_mlflow=not args.no_mlflow,
            evaluation_id=args.evaluation_id, sampled_eval=args.sampled_eval,
        )
    except (ModelNotFoundError, ModelFormatError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        out = Console()
        out.print(_table(report))
        if report.adaptation != SUPERVISED and (report.steps > 1 or (report.adaptation == TRIAL
                                                                      and report.episodes > 1)):
            out.print(_steps_table(report))
        if report.run_id:
            out.print(f"logged as MLflow run {report.run_id} (experiment {EXPERIMENT!r})", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
