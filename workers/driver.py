"""The job driver: ``python -m workers.driver --spec spec.json [--job-id ID] [--resume RUN_ID]``.

Connects to ``RAY_ADDRESS`` (or starts a local Ray), creates the rollout actors in placement
groups spread over the nodes and the learner (on a GPU if the spec asks and one exists), runs the
meta-training loop, logs every iteration to MLflow in one batch, checkpoints every
``checkpoint_every`` iterations, and at the end logs the learning curve and registers the
meta-policy.  A bad spec is refused before anything touches the cluster.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from pydantic import ValidationError

from algorithms import registry
from algorithms.errors import NonFiniteError
from algorithms.plans import IterationPlan, Phase
from workers import tracking
from workers.contract import JobSpec, declared_metrics
from workers.distributions import build_distribution
from workers.learner import remote_learner
from workers.loop import TaskSchedule, family_metrics
from workers.pool import PhaseResult, SubmitHook, WorkerPool
from workers.rollout import FamilyRef
from workers.runner import collect

log = logging.getLogger("metarl.driver")


class JobFailed(RuntimeError):
    """The job stopped for a reason a user can act on (the message says which)."""


class JobCancelled(BaseException):  # noqa: N818 - like KeyboardInterrupt: not an error to catch broadly
    """The driver received SIGTERM (``POST /v1/jobs/{id}/cancel`` stops the Ray job that way)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise JobCancelled(f"signal {signum}")


@dataclass
class DriverHooks:
    """Test and control hooks (not part of the closed job spec)."""

    on_start: Callable[[str], None] | None = None
    on_submit: SubmitHook | None = None
    on_iteration: Callable[[int, dict[str, float]], None] | None = None
    stop_after_iteration: int | None = None
    nan_reward_at_iteration: int | None = None


@dataclass
class JobResult:
    job_id: str
    run_id: str
    iterations: int
    status: str
    final_metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str | None = None
    model_version: str | None = None
    nodes: list[str] = field(default_factory=list)


@dataclass
class _Job:
    """What one attempt of a job holds while it runs."""

    spec: JobSpec
    job_id: str
    owner: str
    family: Any
    tracker: Any
    learner: Any
    pool: WorkerPool
    result: JobResult
    history: list[dict[str, float]] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)
    steps_total: float = 0.0
    #: when the previous iteration's work ended (before its logging and checkpoint)
    iteration_end: float | None = None


def run_job(
    spec: JobSpec,
    *,
    job_id: str | None = None,
    resume_run_id: str | None = None,
    hooks: DriverHooks | None = None,
) -> JobResult:
    """Run (or resume) a meta-training job on the connected Ray cluster."""
    hooks = hooks or DriverHooks()
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, logging_level=logging.WARNING)
    job = _start(spec, job_id=job_id or f"job-{uuid.uuid4().hex[:12]}", resume_run_id=resume_run_id, hooks=hooks)
    tracker, result = job.tracker, job.result
    if hooks.on_start is not None:
        hooks.on_start(tracker.run_id)
    try:
        job.pool.resize(spec.resources.rollout_workers)
        plan = registry.get(spec.algorithm.name).plan(spec.algorithm)
        schedule = TaskSchedule(job.family, spec.meta_batch_size, spec.seed)
        for it in range(result.iterations, spec.iterations):
            _iterate(job, plan, schedule.tasks(it), it, hooks)
            last = it + 1 == spec.iterations
            if (it + 1) % spec.checkpoint_every == 0 or last:
                tracker.log_checkpoint(ray.get(job.learner.state_dict.remote()))
            if hooks.stop_after_iteration is not None and it + 1 >= hooks.stop_after_iteration and not last:
                result.status = "STOPPED"
                tracker.finish("KILLED")
                return result
        _register(job)
        tracker.finish("FINISHED")
        return result
    except NonFiniteError as exc:
        tracker.finish("FAILED", failure=str(exc))
        raise JobFailed(f"update rejected at iteration {result.iterations}: {exc}; "
                        f"the last good checkpoint is kept (resume with --resume {tracker.run_id})") from exc
    except JobCancelled:
        result.status = "STOPPED"
        tracker.finish("KILLED")
        raise
    except BaseException as exc:
        tracker.finish("FAILED", failure=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        job.pool.shutdown()
        ray.kill(job.learner)


def _start(spec: JobSpec, *, job_id: str, resume_run_id: str | None, hooks: DriverHooks) -> _Job:
    """The attempt's family, MLflow run, learner actor (its checkpoint loaded when resuming) and
    rollout pool."""
    owner = os.environ.get("METARL_OWNER", "local")
    family = build_distribution(spec.task_family.name, seed=spec.seed, **spec.task_family.family_kwargs())
    policy_spec = spec.model_spec(family)
    tracker = tracking.Tracker.start(
        run_name=spec.name, job_id=job_id, params=spec.flat_params(), resume_run_id=resume_run_id
    )
    tracker.set_tags({"metarl.spec": spec.model_dump_json(), "metarl.algorithm": spec.algorithm.name,
                      "metarl.task_family": spec.task_family.name, tracking.OWNER_TAG: owner,
                      tracking.ATTEMPT_JOB_TAG: job_id,
                      tracking.METRICS_TAG: json.dumps(declared_metrics(spec.algorithm.name))})
    learner = remote_learner(gpus=spec.resources.learner_gpus, node_id=_head_node_id()).remote(
        spec.algorithm, policy_spec, advantage=spec.advantage, seed=spec.seed, gpus=spec.resources.learner_gpus
    )
    pool = WorkerPool(
        family=FamilyRef(spec.task_family.name, spec.seed, spec.task_family.family_kwargs()),
        policy_spec=policy_spec, envs_per_worker=spec.resources.envs_per_worker, seed=spec.seed,
        name_prefix=f"metarl-{job_id}", on_submit=hooks.on_submit, algorithm=spec.algorithm,
    )
    job = _Job(spec=spec, job_id=job_id, owner=owner, family=family, tracker=tracker, learner=learner, pool=pool,
               result=JobResult(job_id=job_id, run_id=tracker.run_id, iterations=0, status="RUNNING"))
    if resume_run_id is not None:
        _resume(job, resume_run_id)
    info = ray.get(learner.info.remote())
    tracker.set_tags({"metarl.learner_device": info.device, "metarl.learner_device_name": info.device_name,
                      "metarl.learner_node": info.node_id})
    return job


def _resume(job: _Job, run_id: str) -> None:
    """Load the run's last checkpoint into the learner; the history of the iterations before it
    (for the learning curve) and the env-step count come from the run's metrics."""
    state = job.tracker.latest_checkpoint()
    if state is None:
        raise JobFailed(f"run {run_id} has no checkpoint to resume from")
    ray.get(job.learner.load_state_dict.remote(state))
    start = job.result.iterations = state.iteration
    keys = [m.key for m in registry.get(job.spec.algorithm.name).metrics]
    by_step: dict[int, dict[str, float]] = {}
    for key in keys:
        for step, value in job.tracker.metric_history(key):
            if step < start:
                by_step.setdefault(step, {})[key] = value
    job.history = [{"iteration": float(i), **by_step[i]} for i in sorted(by_step)]
    if job.history:
        # the total at the checkpoint's iteration: a killed attempt may have logged iterations past
        # it, which this attempt runs (and counts) again
        totals = dict(job.tracker.metric_history("perf/env_steps_total"))
        job.steps_total = totals.get(start - 1, 0.0)
    log.info("resumed run %s from iteration %d", run_id, start)


def _iterate(job: _Job, plan: IterationPlan, tasks: list[Any], it: int, hooks: DriverHooks) -> None:
    """One meta-iteration: resize the pool if asked, run the plan, log and report."""
    desired = job.tracker.desired_workers()
    if desired is not None and desired != job.pool.size:
        log.info("iteration %d: resizing rollout workers %d -> %d", it, job.pool.size, desired)
        job.pool.resize(desired)
    begin = time.perf_counter()
    metrics = family_metrics(_iteration(job, plan, tasks, it, hooks), job.family)
    if job.iteration_end is not None:
        # the driver's own time between two iterations: the previous one's MLflow logging and
        # checkpoint, this one's check for a resize request
        metrics["time/bookkeeping_s"] = begin - job.iteration_end
    job.iteration_end = time.perf_counter()
    job.steps_total += metrics["perf/env_steps"]
    metrics["perf/env_steps_total"] = job.steps_total
    job.tracker.log_metrics(metrics, step=it)
    job.history.append({"iteration": float(it), **metrics})
    job.result.iterations = it + 1
    job.result.final_metrics = metrics
    shown = [f"{m.label} {metrics[m.key]:{m.fmt}}" for m in registry.get(job.spec.algorithm.name).metrics
             if m.key in metrics]
    log.info("iteration %d/%d: %s", it + 1, job.spec.iterations, ", ".join(shown))
    if hooks.on_iteration is not None:
        hooks.on_iteration(it, metrics)


def _register(job: _Job) -> None:
    """The learning curve, then the meta-policy logged and registered."""
    import mlflow

    from workers.model import log_meta_policy

    spec, tracker, result = job.spec, job.tracker, job.result
    title = f"{spec.name}: {spec.algorithm.name} on {spec.task_family.name}"
    tracker.log_figure(tracking.learning_curve_png(job.history, metrics=registry.get(spec.algorithm.name).metrics,
                                                   title=title), "plots/learning_curve.png")
    mlflow.set_tracking_uri(tracking.tracking_uri())
    with mlflow.start_run(run_id=tracker.run_id):
        registered = log_meta_policy(
            state=ray.get(job.learner.state_dict.remote()), spec=spec, final_metrics=result.final_metrics,
            register_as=spec.register_as or spec.name, extra_tags={"owner": job.owner, "job_id": job.job_id},
            family=job.family,
        )
    result.model_uri, result.model_version = registered.uri, str(registered.version)
    tracker.set_tags({"metarl.model_uri": registered.uri, "metarl.nodes": ",".join(sorted(job.nodes))})
    result.status = "SUCCEEDED"
    result.nodes = sorted(job.nodes)


@dataclass
class PoolSource:
    """Phases sampled by the job's rollout actors: only small stats come back to the driver;
    the episodes stay in the object store until the learner takes them by reference."""

    pool: WorkerPool
    episodes_per_task: int
    iteration: int
    env_steps: int = 0
    seconds: float = 0.0
    resubmitted: int = 0
    nodes: set[str] = field(default_factory=set)
    #: seconds of each phase (by name), and each rollout worker's seconds inside its calls
    phase_seconds: dict[str, float] = field(default_factory=dict)
    busy_seconds: dict[int, float] = field(default_factory=dict)

    def sample(self, phase: Phase, tasks: Sequence[Any], params: Any) -> PhaseResult:
        label = f"{self.iteration}:{phase.name}"
        res = self.pool.sample(params, tasks, episodes_per_task=self.episodes_per_task, label=label)
        _check_complete(res.stats, len(tasks), label)
        self.env_steps += sum(s.env_steps for s in res.stats)
        self.seconds += res.seconds
        self.phase_seconds[phase.name] = self.phase_seconds.get(phase.name, 0.0) + res.seconds
        for s in res.stats:
            self.busy_seconds[s.worker_index] = self.busy_seconds.get(s.worker_index, 0.0) + s.seconds
        self.resubmitted += res.resubmitted
        self.nodes.update(s.node_id for s in res.stats)
        return res


@dataclass
class ActorLearner:
    """The learner actor as the runner's learner port: parameters and episodes by reference."""

    actor: Any
    poison_first_shard: bool = False  # test hook: a NaN reward reaches the outer update

    def meta_params(self) -> Any:
        return self.actor.params.remote()

    def adapt(self, params: Any, data: PhaseResult, *, k: int) -> Any:
        ref = self.actor.adapt.remote(params, *data.episode_refs)
        ray.wait([ref])
        return ref

    def learn(self, phases: list[PhaseResult]) -> dict[str, float]:
        refs = [r for p in phases for r in p.episode_refs]
        if self.poison_first_shard:
            refs[0] = ray.put(_poison(ray.get(refs[0])))
        try:
            return ray.get(self.actor.learn.remote([len(p.episode_refs) for p in phases], *refs))
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, NonFiniteError):
                raise cause from None
            raise


def _iteration(job: _Job, plan: IterationPlan, tasks: list[Any], it: int, hooks: DriverHooks) -> dict[str, float]:
    t0 = time.perf_counter()
    source = PoolSource(job.pool, job.spec.episodes_per_task, it)
    port = ActorLearner(job.learner, poison_first_shard=hooks.nan_reward_at_iteration == it)
    collected = collect(plan, tasks, source=source, learner=port)
    t1 = time.perf_counter()
    metrics = port.learn(collected.phases)
    job.nodes.update(source.nodes)
    took = time.perf_counter() - t0
    learner_busy = metrics.get("time/learner_learn_s", 0.0) + metrics.get("time/learner_adapt_s", 0.0)
    metrics.update({f"time/sample_{name}_s": s for name, s in source.phase_seconds.items()})
    metrics.update({
        "time/sample_s": source.seconds,
        "time/adapt_s": collected.adapt_s,
        "time/learn_s": time.perf_counter() - t1,
        "time/iteration_s": took,
        # the share of the iteration each side computed: rollout workers (inside their sample
        # calls, averaged over the pool) and the learner (update and inner steps)
        "perf/rollout_busy_frac": sum(source.busy_seconds.values()) / max(job.pool.size * took, 1e-9),
        "perf/learner_busy_frac": learner_busy / max(took, 1e-9),
        "perf/env_steps": float(source.env_steps),
        "perf/env_steps_per_s": source.env_steps / max(source.seconds, 1e-9),
        "perf/rollout_workers": float(job.pool.size),
        "perf/nodes": float(len(job.nodes)),
        "fault/resampled_shards": float(source.resubmitted),
        "meta/tasks": float(len(tasks)),
    })
    return metrics


def _head_node_id() -> str:
    """The head node (where Ray Jobs run drivers); the learner prefers it so that losing a worker
    node never takes the learner along.  Falls back to this process's node."""
    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return str(node["NodeID"])
    return ray.get_runtime_context().get_node_id()


def _check_complete(stats: list[Any], n_tasks: int, label: str) -> None:
    got = sorted(i for s in stats for i in s.task_indices)
    if got != list(range(n_tasks)):
        raise JobFailed(f"phase {label}: episodes for tasks {sorted(set(range(n_tasks)) - set(got))} are missing")


def _poison(episodes: list[Any]) -> list[Any]:
    episodes[0].rewards = episodes[0].rewards.copy()  # arrays from the object store are read-only
    episodes[0].rewards[0, 0] = float("nan")
    return episodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a metarl meta-training job.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help="path of the job spec JSON")
    source.add_argument("--spec-env", metavar="VAR",
                        help="read the job spec JSON from this environment variable (the service's launcher)")
    parser.add_argument("--job-id", default=os.environ.get("METARL_JOB_ID"))
    parser.add_argument("--resume", default=None, metavar="RUN_ID",
                        help="continue this MLflow run from its last checkpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    where = args.spec or f"${args.spec_env}"
    try:
        text = Path(args.spec).read_text() if args.spec else os.environ[args.spec_env]
        spec = JobSpec.model_validate_json(text)
    except ValidationError as exc:
        log.error("invalid job spec %s:\n%s", where, exc)
        return 2
    except (OSError, KeyError) as exc:
        log.error("cannot read job spec %s: %s", where, exc)
        return 2
    # connect first: ray.init installs a SIGTERM handler of its own (sys.exit), which would leave
    # a stack dump in the log of every cancelled job
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, logging_level=logging.WARNING)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = run_job(spec, job_id=args.job_id, resume_run_id=args.resume)
    except JobFailed as exc:
        log.error("job failed: %s", exc)
        return 1
    except JobCancelled:
        log.info("job %s cancelled: stopped, its rollout workers and learner released; "
                 "`metarl jobs resume` continues from its last checkpoint", args.job_id)
        return 128 + signal.SIGTERM
    log.info("job %s %s: run %s, model %s", result.job_id, result.status, result.run_id, result.model_uri)
    sys.stdout.write(json.dumps({"job_id": result.job_id, "run_id": result.run_id, "status": result.status,
                                 "model_uri": result.model_uri, "model_version": result.model_version}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
