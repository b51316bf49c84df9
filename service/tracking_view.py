"""What the service reads from (and the one tag it writes to) MLflow: a job's run, its metrics,
its checkpoints, and the desired rollout-worker count.  All access goes through one
``MlflowClient`` bound to the service's tracking URI."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from workers.tracking import CHECKPOINT_DIR, DESIRED_WORKERS_TAG, EXPERIMENT, JOB_ID_TAG

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

#: one metric per finished iteration (the driver logs it last of the batch, always)
MARKER = "perf/env_steps_total"


@dataclass(frozen=True)
class RunState:
    run_id: str
    status: str
    iteration: int  # iterations finished
    metrics: dict[str, float]
    tags: dict[str, str]


class TrackingView:
    def __init__(self, tracking_uri: str) -> None:
        import mlflow

        self.tracking_uri = tracking_uri
        self.client = mlflow.MlflowClient(tracking_uri)

    def reachable(self) -> bool:
        try:
            self.client.search_experiments(max_results=1)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable" for the health check
            return False

    def find_run(self, job_id: str) -> str | None:
        """The run a job's first attempt created (tagged with the job id)."""
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            return None
        runs = self.client.search_runs([exp.experiment_id], filter_string=f"tags.`{JOB_ID_TAG}` = '{job_id}'",
                                       max_results=1, order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    def run_state(self, run_id: str) -> RunState:
        run = self.client.get_run(run_id)
        marker = self.client.get_metric_history(run_id, MARKER)
        iteration = max((m.step for m in marker), default=-1) + 1
        return RunState(run_id=run_id, status=run.info.status, iteration=iteration,
                        metrics=dict(run.data.metrics), tags=dict(run.data.tags))

    def history(self, run_id: str, keys: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every metric's history, ``key -> [{step, value, timestamp}]`` in step order."""
        if keys is None:
            keys = sorted(self.client.get_run(run_id).data.metrics)
        out: dict[str, list[dict[str, Any]]] = {}
        for key in keys:
            points = sorted(self.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
            out[key] = [{"step": m.step, "value": m.value, "timestamp": m.timestamp} for m in points]
        return out

    def iterations_since(self, run_id: str, after: int) -> list[tuple[int, dict[str, float]]]:
        """Metrics of iterations with step > ``after``, grouped by step (for the event stream)."""
        marker = self.client.get_metric_history(run_id, MARKER)
        if not any(m.step > after for m in marker):
            return []
        by_step: dict[int, dict[str, float]] = {}
        for key, points in self.history(run_id).items():
            for p in points:
                if p["step"] > after:
                    by_step.setdefault(p["step"], {})[key] = p["value"]
        done = {m.step for m in marker}
        return [(s, by_step[s]) for s in sorted(by_step) if s in done]

    def has_checkpoint(self, run_id: str) -> bool:
        return any(a.path.endswith("latest.json") for a in self.client.list_artifacts(run_id, CHECKPOINT_DIR))

    def set_desired_workers(self, run_id: str, n: int) -> None:
        self.client.set_tag(run_id, DESIRED_WORKERS_TAG, str(n))
