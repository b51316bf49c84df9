"""Shared fixtures: one local Ray per test session (its files in a temp dir), and a fresh
MLflow SQLite store per test."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def pytest_collection_modifyitems(config, items):  # noqa: ANN001
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray with 2 CPUs, started once; its temp dir is short (socket path limits)."""
    import ray

    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, logging_level="ERROR",
             runtime_env={"env_vars": {"MLFLOW_DISABLE_TELEMETRY": "true"}})
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A real MLflow tracking store (SQLite + local artifacts) in the test's temp dir."""
    monkeypatch.setenv("METARL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("METARL_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield tmp_path
