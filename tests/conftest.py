"""Shared fixtures: one local Ray per test session (its files in a temp dir), and a fresh
MLflow SQLite store per test."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass

import pytest

from tests.ports import free_port

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



@dataclass(frozen=True)
class RayHead:
    """The test session's Ray head: its dashboard (with the job server) and auth token file."""

    dashboard_url: str
    token_file: str
    temp_dir: str


_HEAD: list[RayHead] = []


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray head with 2 CPUs and its job server on loopback, started once (``ray start
    --block`` in a subprocess, every port free-picked so it coexists with a user's ``metarl up``),
    with token auth on; this process connects to it as a driver."""
    import subprocess
    import sys
    import time

    import ray

    tmp, token = _RAY_TMP, _RAY_TOKEN
    gcs, dashboard = free_port(), free_port()
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    log = open(os.path.join(tmp, "head.log"), "w")  # noqa: SIM115 - closed at teardown
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--num-cpus=2", f"--port={gcs}", "--node-ip-address=127.0.0.1",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         "--dashboard-agent-listen-port=0", f"--ray-client-server-port={free_port()}", f"--temp-dir={tmp}",
         "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            ray.init(address=f"127.0.0.1:{gcs}", logging_level="ERROR",
                     runtime_env={"env_vars": {"MLFLOW_DISABLE_TELEMETRY": "true"}})
            break
        except Exception:
            if head.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError(f"the test Ray head did not start: {open(log.name).read()[-3000:]}") from None
            time.sleep(1.0)
    _HEAD.append(RayHead(dashboard_url=f"http://127.0.0.1:{dashboard}", token_file=token, temp_dir=tmp))
    yield ray
    ray.shutdown()
    head.terminate()
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_head(ray_session) -> RayHead:  # noqa: ANN001
    """The session's Ray head, for tests that submit through its job server; returned once the
    job server takes submissions (its agent starts some seconds after the head)."""
    import sys
    import time

    from ray.job_submission import JobSubmissionClient

    head = _HEAD[0]
    with open(head.token_file) as f:
        client = JobSubmissionClient(head.dashboard_url, headers={"Authorization": f"Bearer {f.read().strip()}"})
    deadline = time.monotonic() + 180
    while True:
        try:
            sid = client.submit_job(entrypoint=f"{sys.executable} -c pass", entrypoint_num_cpus=0)
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    while not client.get_job_status(sid).is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
    return head


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A real MLflow tracking store (SQLite + local artifacts) in the test's temp dir."""
    monkeypatch.setenv("METARL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("METARL_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield tmp_path
