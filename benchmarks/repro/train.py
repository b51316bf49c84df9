"""Meta-training a suite's jobs with the distributed engine, in this process: a private local Ray,
MLflow in the work directory, resuming unfinished runs from their last checkpoint, a training
budget after which the running job stops at its next checkpoint, and (optionally) only the newest
checkpoint of each run kept, so that a work directory is small enough to commit and to resume from
in another session, checked out at the same absolute path."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .state import RunState, State, run_key
from .suites import Suite, variant_iterations

log = logging.getLogger("metarl.reproduce")


def use_workdir(workdir: Path) -> None:
    """Point MLflow (and the engine's data dir) at ``workdir``; before Ray starts, so its workers
    inherit it."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    os.environ["METARL_HOME"] = str(workdir / "home")
    os.environ["METARL_ARTIFACT_ROOT"] = str(workdir / "mlartifacts")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ.pop("RAY_ADDRESS", None)  # a private local Ray, never a cluster that happens to run


@dataclass
class LocalRay:
    """A private local Ray (``address="local"``: never attaches to a running cluster), started on
    first use, with its files in a short temp dir (socket path limits)."""

    num_cpus: int
    temp_dir: str | None = None

    def ensure(self) -> None:
        import tempfile

        import ray

        if ray.is_initialized():
            return
        self.temp_dir = tempfile.mkdtemp(prefix="ray-repro-", dir="/tmp")
        ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False, _temp_dir=self.temp_dir,
                 logging_level=logging.WARNING, log_to_driver=False)

    def shutdown(self) -> None:
        import shutil

        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


def prune_checkpoints(run_id: str) -> list[int]:
    """Delete every checkpoint artifact of the run but the one its ``latest.json`` names (the one
    a resume loads); the iterations deleted.  Checkpoint selection needs them all: not for it."""
    import tempfile

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from workers import tracking

    found = tracking.checkpoint_iterations(run_id)
    if len(found) < 2:
        return []
    client = tracking.client()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            latest = client.download_artifacts(run_id, f"{tracking.CHECKPOINT_DIR}/latest.json", tmp)
        except Exception:  # noqa: BLE001 - no latest.json: nothing is known to be safe to delete
            return []
        keep = json.loads(Path(latest).read_text())["file"]
    repo = get_artifact_repository(client.get_run(run_id).info.artifact_uri)
    gone = [it for it in found if tracking.checkpoint_name(it) != keep]
    for it in gone:
        repo.delete_artifacts(f"{tracking.CHECKPOINT_DIR}/{tracking.checkpoint_name(it)}")
    return gone


@dataclass
class _Progress:
    """One run's hooks: record the run id as soon as it exists, then after every iteration add
    the wall time to the state (so a killed process loses at most one iteration of it), log a
    line of the algorithm's declared headline metrics, advance the progress bar and (``prune``)
    delete the run's checkpoints older than its newest."""

    state: State
    entry: RunState
    job_id: str
    label: str
    total: int
    metrics: tuple[Any, ...]  # the algorithm's declared headline metrics (algorithms.registry.Metric)
    progress: Any
    bar: Any
    driver: Any = None
    budget_spent: Callable[[], bool] | None = None
    checkpoint_every: int = 1
    prune: bool = False
    clock: float = field(default_factory=time.perf_counter)

    def charge(self) -> None:
        now = time.perf_counter()
        self.entry.train_seconds += now - self.clock
        self.clock = now
        self.state.save()

    def started(self, run_id: str) -> None:
        self.entry.run_id, self.entry.job_id = run_id, self.job_id
        self.state.save()

    def iterated(self, it: int, m: dict[str, float]) -> None:
        self.charge()
        shown = [(x.label, f"{m[x.key]:{x.fmt}}") for x in self.metrics if x.key in m]
        log.info("%s iteration %d/%d: %s (%.1f s)", self.label, it + 1, self.total,
                 ", ".join(f"{label} {value}" for label, value in shown), m["time/iteration_s"])
        status = f"{shown[-1][0]} {shown[-1][1]}, " if shown else ""
        self.progress.update(self.bar, completed=it + 1, status=f"{status}{m['time/iteration_s']:.1f} s/it")
        if self.prune:
            self.prune_now()
        if (self.budget_spent is not None and self.driver is not None and self.driver.stop_after_iteration is None
                and self.budget_spent()):
            # stop right after the next checkpoint, so nothing trained is lost
            self.driver.stop_after_iteration = -(-(it + 1) // self.checkpoint_every) * self.checkpoint_every
            log.info("%s: training budget spent, stopping after the checkpoint of iteration %d", self.label,
                     self.driver.stop_after_iteration)

    def prune_now(self) -> None:
        """Keep only the run's newest checkpoint (a failure to delete is logged, never raised)."""
        if self.entry.run_id is None:
            return
        try:
            gone = prune_checkpoints(self.entry.run_id)
        except Exception as exc:  # noqa: BLE001 - pruning saves space; it must not stop training
            log.warning("%s: could not delete old checkpoints: %s", self.label, exc)
            return
        if gone:
            log.debug("%s: deleted checkpoints %s", self.label, gone)


def train(suite: Suite, state: State, *, seeds: Sequence[int], iterations: int | Mapping[str, int],
          overrides: Sequence[str], ray_: LocalRay, console: Any, budget_spent: Callable[[], bool] | None = None,
          prune: bool = False) -> None:
    """Train every (variant, seed) not finished yet; resume unfinished ones from their checkpoint.
    ``iterations``: one count for every variant, or per variant (a suite's env-step budget).

    Once ``budget_spent()`` is true (asked before each run and after each iteration), the running
    job stops at its next checkpoint and no further run starts: the next call with the same
    arguments goes on from there.  ``prune``: keep only each run's newest checkpoint (deleted after
    every iteration and when the run ends; never for checkpoint selection)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from algorithms import registry
    from workers import tracking
    from workers.driver import DriverHooks, run_job

    todo = []
    for variant in suite.variants:
        for seed in seeds:
            spec = suite.job_spec(variant, seed=seed, iterations=variant_iterations(iterations, variant),
                                  overrides=overrides)
            entry = state.runs.get(run_key(variant, seed))
            wanted = json.loads(spec.model_dump_json())
            if entry is not None and entry.spec != wanted:
                changed = sorted(k for k in set(entry.spec) | set(wanted) if entry.spec.get(k) != wanted.get(k))
                raise SystemExit(
                    f"{variant} seed {seed} in {state.path.parent} was trained with another spec (differs in: "
                    f"{', '.join(changed)}); re-run with the same settings, or pass another --workdir"
                )
            if entry is not None and entry.finished:
                log.info("%s seed %d: finished earlier (run %s), skipped", variant, seed, entry.run_id)
                continue
            todo.append((variant, seed, spec))
    if not todo:
        return
    ray_.ensure()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console) as progress:
        for variant, seed, spec in todo:
            if budget_spent is not None and budget_spent():
                log.info("training budget spent: %s seed %d not started; run the same command to go on", variant, seed)
                break
            entry = state.runs.setdefault(run_key(variant, seed), RunState(spec=json.loads(spec.model_dump_json())))
            checkpoint = tracking.load_checkpoint(entry.run_id) if entry.run_id else None
            if entry.run_id and checkpoint is None:
                log.info("%s seed %d: run %s has no checkpoint yet, starting over", variant, seed, entry.run_id)
                entry.abandoned_runs.append(entry.run_id)
            resume = entry.run_id if checkpoint is not None else None
            start = checkpoint.iteration if checkpoint is not None else 0
            if resume is not None:
                log.info("%s seed %d: resuming run %s from iteration %d", variant, seed, resume, start)
            bar = progress.add_task(f"{variant} seed {seed}", total=spec.iterations, completed=start,
                                    status="resuming" if resume else "starting")
            driver_hooks = DriverHooks()
            hooks = _Progress(state=state, entry=entry, job_id=f"reproduce-{suite.name}-{variant}-s{seed}",
                              label=f"{variant} seed {seed}", total=spec.iterations,
                              metrics=registry.get(spec.algorithm.name).metrics, progress=progress, bar=bar,
                              driver=driver_hooks, budget_spent=budget_spent, checkpoint_every=spec.checkpoint_every,
                              prune=prune)
            driver_hooks.on_start, driver_hooks.on_iteration = hooks.started, hooks.iterated
            try:
                result = run_job(spec, job_id=hooks.job_id, resume_run_id=resume, hooks=driver_hooks)
            finally:
                hooks.charge()
                if prune:
                    hooks.prune_now()
            entry.finished = result.status == "SUCCEEDED"
            entry.model_uri = result.model_uri
            state.save()
            progress.update(bar, status=result.status.lower())
            if not entry.finished:
                log.info("%s seed %d stopped at iteration %d of %d (training budget); run the same command to go on",
                         variant, seed, result.iterations, spec.iterations)
