"""All MLflow access of the engine: runs, metrics, checkpoints, plots, the control tag.

Defaults: ``MLFLOW_TRACKING_URI`` if set, else a SQLite store in the data dir
(``METARL_HOME``, default ``~/.metarl``) with artifacts beside it.  Telemetry is switched off.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from algorithms.base import LearnerState

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# the names the service reads, defined once in the contract (re-exported for the engine's callers)
from workers.contract import ATTEMPT_JOB_TAG as ATTEMPT_JOB_TAG
from workers.contract import CHECKPOINT_DIR as CHECKPOINT_DIR
from workers.contract import DESIRED_WORKERS_TAG as DESIRED_WORKERS_TAG
from workers.contract import EXPERIMENT as EXPERIMENT
from workers.contract import FAILURE_TAG as FAILURE_TAG
from workers.contract import JOB_ID_TAG as JOB_ID_TAG
from workers.contract import METRICS_TAG as METRICS_TAG
from workers.contract import OWNER_TAG as OWNER_TAG
from workers.contract import STATUS_TAG as STATUS_TAG


def data_dir() -> Path:
    return Path(os.environ.get("METARL_HOME", Path.home() / ".metarl")).expanduser()


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    home = data_dir()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def artifact_root() -> str:
    return os.environ.get("METARL_ARTIFACT_ROOT", str(data_dir() / "mlartifacts"))


def client():  # noqa: ANN201 - mlflow.MlflowClient
    import mlflow

    return mlflow.MlflowClient(tracking_uri())


def ensure_experiment(name: str = EXPERIMENT) -> str:
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None if tracking_uri().startswith(("http://", "https://", "databricks")) else artifact_root()
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:  # noqa: BLE001 - created concurrently by another job: use it
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@dataclass
class Tracker:
    """One job's MLflow run."""

    run_id: str
    experiment_id: str

    @classmethod
    def start(cls, *, run_name: str, job_id: str, params: dict[str, str], resume_run_id: str | None = None) -> Tracker:
        c = client()
        if resume_run_id is not None:
            run = c.get_run(resume_run_id)  # raises a clear MlflowException if missing
            c.update_run(resume_run_id, status="RUNNING")
            tracker = cls(run_id=resume_run_id, experiment_id=run.info.experiment_id)
            tracker.set_tags({STATUS_TAG: "RUNNING", "metarl.resumed_by": job_id})
            return tracker
        exp = ensure_experiment()
        run = c.create_run(exp, run_name=run_name, tags={JOB_ID_TAG: job_id, STATUS_TAG: "RUNNING"})
        tracker = cls(run_id=run.info.run_id, experiment_id=exp)
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            c.log_batch(run.info.run_id, params=items[i : i + 100])
        return tracker

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        client().log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        client().log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def desired_workers(self) -> int | None:
        """The rollout-worker count the control plane asked for (a run tag), if any."""
        value = client().get_run(self.run_id).data.tags.get(DESIRED_WORKERS_TAG)
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    # ---- checkpoints -------------------------------------------------------------------
    def log_checkpoint(self, state: LearnerState) -> str:
        """Upload ``ckpt-<iteration>.pt``, then point ``latest.json`` at it (so a crash while
        uploading never replaces the last good checkpoint)."""
        name = checkpoint_name(state.iteration)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            torch.save(_state_to_dict(state), path)
            c = client()
            c.log_artifact(self.run_id, str(path), artifact_path=CHECKPOINT_DIR)
            latest = Path(tmp) / "latest.json"
            latest.write_text(json.dumps({"iteration": state.iteration, "file": name}))
            c.log_artifact(self.run_id, str(latest), artifact_path=CHECKPOINT_DIR)
        return f"{CHECKPOINT_DIR}/{name}"

    def latest_checkpoint(self) -> LearnerState | None:
        return load_checkpoint(self.run_id)

    def log_figure(self, png: bytes, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_bytes(png)
            client().log_artifact(self.run_id, str(path), artifact_path=str(Path(artifact_file).parent))

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return metric_history(self.run_id, key)

    def finish(self, status: str, *, failure: str | None = None) -> None:
        tags = {STATUS_TAG: status}
        if failure:
            tags[FAILURE_TAG] = failure[:5000]
        self.set_tags(tags)
        client().set_terminated(self.run_id, status=status)


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``key`` in run ``run_id``, by step, one per step: the latest logged,
    since a resumed job re-runs (and logs again) the iterations after its last checkpoint."""
    latest = {m.step: m.value for m in sorted(client().get_metric_history(run_id, key), key=lambda m: m.timestamp)}
    return sorted(latest.items())


def checkpoint_name(iteration: int) -> str:
    return f"ckpt-{iteration:06d}.pt"


_CHECKPOINT_FILE = re.compile(r"ckpt-(\d{6,})\.pt")


def checkpoint_iterations(run_id: str) -> list[int]:
    """The iterations the run has a checkpoint of, ascending (empty if none)."""
    found = []
    for info in client().list_artifacts(run_id, CHECKPOINT_DIR):
        m = _CHECKPOINT_FILE.fullmatch(Path(info.path).name)
        if m is not None and not info.is_dir:
            found.append(int(m.group(1)))
    return sorted(found)


def load_checkpoint(run_id: str, iteration: int | None = None) -> LearnerState | None:
    """The run's checkpoint of ``iteration`` (default: its latest), or None if it has none."""
    c = client()
    with tempfile.TemporaryDirectory() as tmp:

        def fetch(name: str) -> str | None:
            try:
                return c.download_artifacts(run_id, f"{CHECKPOINT_DIR}/{name}", tmp)
            except Exception:  # noqa: BLE001 - not logged (no checkpoint yet, or none of that iteration)
                return None

        if iteration is None:
            latest = fetch("latest.json")
            if latest is None:
                return None
            # latest.json names a file that must exist: a missing one is an error, not "no checkpoint"
            path = c.download_artifacts(run_id, f"{CHECKPOINT_DIR}/{json.loads(Path(latest).read_text())['file']}", tmp)
        else:
            path = fetch(checkpoint_name(iteration))
            if path is None:
                return None
        return _state_from_dict(torch.load(path, map_location="cpu", weights_only=False))


def _state_to_dict(state: LearnerState) -> dict[str, Any]:
    """A checkpoint's content: tensors and plain data (the specs as JSON-ready dicts)."""
    return {
        "algorithm": state.algorithm,
        "policy_spec": state.policy_spec,
        "config": state.config.model_dump(mode="json"),
        "advantage": state.advantage.model_dump(mode="json"),
        "params": state.params,
        "optimizer": state.optimizer,
        "iteration": state.iteration,
    }


def _state_from_dict(d: dict[str, Any]) -> LearnerState:
    from algorithms import registry
    from algorithms.registry import AdvantageSpec

    spec = registry.get(d["algorithm"]).spec.model_validate(d["config"])
    return LearnerState(algorithm=d["algorithm"], policy_spec=d["policy_spec"], config=spec, params=d["params"],
                        optimizer=d["optimizer"], iteration=d["iteration"],
                        advantage=AdvantageSpec.model_validate(d.get("advantage") or {}))


def learning_curve_png(history: list[dict[str, float]], *, metrics: Sequence[Any], title: str) -> bytes:
    """PNG of the algorithm's declared headline metrics over meta-iterations: its returns (or
    losses) in one panel, its rates (success, accuracy: the metrics whose values all lie in
    [0, 1] and whose name says so) in a second one where present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(h["iteration"]) for h in history]
    shown = [m for m in metrics if any(m.key in h for h in history)]
    rates = [m for m in shown if any(w in m.key for w in ("success", "accuracy"))]
    values = [m for m in shown if m not in rates]
    panels = [p for p in (values, rates) if p]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6.5 * max(1, len(panels)), 4), squeeze=False)
    for ax, group in zip(axes[0], panels or [[]], strict=False):
        for m in group:
            xs = [x for x, h in zip(steps, history, strict=True) if m.key in h]
            ax.plot(xs, [h[m.key] for h in history if m.key in h], label=m.label)
        ax.set_xlabel("meta-iteration")
        if group is rates:
            ax.set_ylim(0, 1)
        if group:
            ax.legend()
    axes[0][0].set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
