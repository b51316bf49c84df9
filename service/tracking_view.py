"""What the service reads from (and the one tag it writes to) MLflow: a job's run, its metrics,
its checkpoints, and the desired rollout-worker count.  All access goes through one
``MlflowClient`` bound to the service's tracking URI."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import httpx

from workers.contract import CHECKPOINT_DIR, DESIRED_WORKERS_TAG, EXPERIMENT, JOB_ID_TAG

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

#: one metric per finished iteration (the driver logs it last of the batch, always)
MARKER = "perf/env_steps_total"


#: metric points of finished runs kept in memory (about 100 bytes each)
HISTORY_CACHE_POINTS = 500_000


class _Lru:
    """A thread-safe LRU map bounded by the summed sizes of its values."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.size = capacity, 0
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: Any, value: Any, size: int) -> None:
        size = max(size, 1)
        if size > self.capacity:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= old[1]
            self._items[key] = (value, size)
            self.size += size
            while self.size > self.capacity:
                _, (_, dropped) = self._items.popitem(last=False)
                self.size -= dropped


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
        self._final = _Lru(HISTORY_CACHE_POINTS)

    def reachable(self) -> bool:
        """Whether the store answers a query (a tracking server: within 5 s, its database included)."""
        if self.tracking_uri.startswith(("http://", "https://")):
            try:
                r = httpx.get(f"{self.tracking_uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
                              params={"max_results": 1}, timeout=5.0)
                return r.status_code == 200
            except httpx.HTTPError:
                return False
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

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        """Each metric's latest value (one query, without the iteration count)."""
        return dict(self.client.get_run(run_id).data.metrics)

    def cached_history(self, run_id: str, keys: list[str], *,
                       final_as: Hashable) -> dict[str, list[dict[str, Any]]] | None:
        """The histories of ``keys`` if all are cached under ``final_as`` (no MLflow access), else None."""
        out = {}
        for key in keys:
            points = self._final.get((run_id, final_as, key))
            if points is None:
                return None
            out[key] = points
        return out

    def history(self, run_id: str, keys: list[str] | None = None, *,
                final_as: Hashable | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every metric's history, ``key -> [{step, value, timestamp}]`` in step order.
        ``final_as``: the run is over and its histories cannot change until this token does (a
        job's attempt: a resumed run logs more), so they are cached under it (bounded, LRU)."""
        final = final_as is not None
        if keys is None:
            keys = self._final.get((run_id, final_as, None)) if final else None
            if keys is None:
                keys = sorted(self.client.get_run(run_id).data.metrics)
                if final:
                    self._final.put((run_id, final_as, None), keys, len(keys))
        out: dict[str, list[dict[str, Any]]] = {}
        for key in keys:
            points = self._final.get((run_id, final_as, key)) if final else None
            if points is None:
                raw = sorted(self.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
                points = [{"step": m.step, "value": m.value, "timestamp": m.timestamp} for m in raw]
                if final:
                    self._final.put((run_id, final_as, key), points, len(points))
            out[key] = points
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
