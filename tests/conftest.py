"""Shared fixtures: one local Ray per test session (its files in a temp dir), and a fresh
MLflow SQLite store per test."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from dataclasses import dataclass

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Ray reads its auth mode when it is imported: token auth on, with this session's own token (not
# ~/.ray/auth_token), before any test module imports ray.  Short temp dir: socket path limits.
_RAY_TMP = tempfile.mkdtemp(prefix="ray", dir="/tmp")
_RAY_TOKEN = os.path.join(_RAY_TMP, "auth_token")
with open(_RAY_TOKEN, "w") as _f:
    _f.write(secrets.token_hex(32))
os.environ.update({"RAY_TMPDIR": _RAY_TMP, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": _RAY_TOKEN})


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RayHead:
    """The test session's Ray head: its dashboard (with the job server) and auth token file."""

    dashboard_url: str
    token_file: str
    temp_dir: str


_HEAD: list[RayHead] = []


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray with 2 CPUs and its job server on loopback, started once, with token auth
    on (its token in the temp dir, not ~/.ray); its temp dir is short (socket path limits)."""
    import ray

    tmp, token = _RAY_TMP, _RAY_TOKEN
    ctx = ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=_free_port(),
                   _temp_dir=tmp, logging_level="ERROR",
                   runtime_env={"env_vars": {"MLFLOW_DISABLE_TELEMETRY": "true"}})
    _HEAD.append(RayHead(dashboard_url=f"http://{ctx.dashboard_url}", token_file=token, temp_dir=tmp))
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_head(ray_session) -> RayHead:  # noqa: ANN001
    """The session's Ray head, for tests that submit through its job server."""
    return _HEAD[0]


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A real MLflow tracking store (SQLite + local artifacts) in the test's temp dir."""
    monkeypatch.setenv("METARL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("METARL_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield tmp_path
