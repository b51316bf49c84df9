"""What the registered-model tests share: a fresh SQLite MLflow store with a local artifact root
for a test module, and a trained learner's state with the job spec that trained it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from algorithms.base import LearnerState
from workers.contract import JobSpec


@dataclass(frozen=True)
class Store:
    root: Path
    uri: str
    experiment_id: str


@dataclass(frozen=True)
class Trained:
    spec: JobSpec
    state: LearnerState
    metrics: dict[str, float]


@contextmanager
def fresh_store(root: Path, experiment: str) -> Iterator[Store]:
    """Point MLflow (and ``METARL_HOME``) at a new SQLite store under ``root`` while inside."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("METARL_HOME", str(root / "home"))
        mp.setenv("METARL_ARTIFACT_ROOT", str(root / "artifacts"))
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        experiment_id = client.create_experiment(experiment, artifact_location=str(root / "artifacts"))
        try:
            yield Store(root=root, uri=uri, experiment_id=experiment_id)
        finally:
            mlflow.set_tracking_uri(None)
