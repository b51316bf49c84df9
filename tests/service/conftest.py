"""A live API server (uvicorn in its own process, as users run it) against the session's Ray head
(its job server) and an MLflow SQLite store in the test's temp dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.ports import free_port


@dataclass
class LiveService:
    """``python -m service`` on 127.0.0.1; ``restart()`` kills it (SIGKILL) and starts it again
    on the same data dir, port and Ray head."""

    home: Path
    env: dict[str, str]
    port: int
    proc: subprocess.Popen | None = None
    log_file: Path | None = None
    _log: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_key(self) -> str:
        return (self.home / "admin.key").read_text().strip()

    def client(self, key: str | None = None, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key or self.admin_key}"},
                            timeout=timeout)

    def start(self) -> None:
        self.log_file = self.home / "service.log"
        self._log = open(self.log_file, "a")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen([sys.executable, "-m", "service"], env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.log_file.read_text()[-3000:]}")
            try:
                httpx.get(f"{self.url}/healthz", timeout=2)  # any answer: the server is up
                return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"service did not start: {self.log_file.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()

    def restart(self) -> None:
        self.kill()
        self.start()


def service_env(*, home: Path, ray_head, extra: dict[str, str] | None = None) -> dict[str, str]:  # noqa: ANN001
    env = dict(os.environ)
    env.update({
        "METARL_HOME": str(home),
        "METARL_PORT": str(free_port()),
        "METARL_RAY_DASHBOARD": ray_head.dashboard_url,
        "METARL_RAY_TOKEN_FILE": ray_head.token_file,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "METARL_ARTIFACT_ROOT": str(home / "mlartifacts"),
        "METARL_POLL_INTERVAL_S": "0.5",
        "METARL_SSE_INTERVAL_S": "0.3",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **(extra or {}),
    })
    return env


@pytest.fixture(scope="module")
def live_service(tmp_path_factory, ray_head) -> Iterator[LiveService]:  # noqa: ANN001
    """One API server per test module (its own data dir, job store and MLflow store)."""
    home = tmp_path_factory.mktemp("metarl-home")
    env = service_env(home=home, ray_head=ray_head)
    svc = LiveService(home=home, env=env, port=int(env["METARL_PORT"]))
    svc.start()
    yield svc
    svc.kill(signal.SIGTERM)


@pytest.fixture()
def models_store(live_service, monkeypatch):  # noqa: ANN001
    """This process reads the live service's MLflow store (to load its models in process)."""
    import mlflow

    for var in ("MLFLOW_TRACKING_URI", "METARL_ARTIFACT_ROOT", "METARL_HOME"):
        monkeypatch.setenv(var, live_service.env[var])
    mlflow.set_tracking_uri(live_service.env["MLFLOW_TRACKING_URI"])
    yield
    mlflow.set_tracking_uri(None)
