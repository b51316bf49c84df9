"""Ray Job Submission: the only place the service talks to Ray.  Jobs run
``python -m workers.driver`` (evaluations ``python -m workers.evaluate``) on the cluster; the
spec travels in the runtime env, never as a file or a caller-chosen entrypoint."""

from __future__ import annotations

import datetime as dt
import logging
import shlex
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from service.settings import Settings

log = logging.getLogger("metarl.service.launcher")

SPEC_ENV = "METARL_JOB_SPEC"
SUBMIT_RETRY_S = 30.0
#: the service writes a row just before submitting it: Ray not knowing it is normal for this long
SUBMIT_GRACE_S = 60.0


def unknown_for_too_long(written_at: dt.datetime) -> bool:
    """Whether a submission Ray does not know was written long enough ago to count as lost."""
    from service.db import utcnow

    return (utcnow() - written_at).total_seconds() > SUBMIT_GRACE_S


class LauncherError(RuntimeError):
    """Ray's job server refused or could not be reached (the message says which)."""


@dataclass(frozen=True)
class SubmissionInfo:
    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    message: str | None
    start_time: int | None
    end_time: int | None


class RayLauncher:
    """A thin, thread-safe wrapper over :class:`ray.job_submission.JobSubmissionClient`."""

    def __init__(self, settings: Settings, *, driver_python: str | None = None) -> None:
        self.settings = settings
        self.address = settings.ray_dashboard
        self.python = driver_python or sys.executable
        self._client: Any = None
        self._lock = threading.Lock()

    # ---- connection -------------------------------------------------------------------------
    @property
    def headers(self) -> dict[str, str]:
        token = self.settings.ray_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                try:
                    self._client = JobSubmissionClient(self.address, headers=self.headers)
                except Exception as exc:  # noqa: BLE001 - connection refused, auth, version: one clear message
                    raise LauncherError(f"cannot reach Ray's job server at {self.address}: {exc}") from exc
            return self._client

    def reachable(self) -> bool:
        try:
            r = httpx.get(f"{self.address}/api/version", headers=self.headers, timeout=3.0)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def get_json(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        """GET a dashboard endpoint (cluster view)."""
        try:
            r = httpx.get(f"{self.address}{path}", headers=self.headers, params=params, timeout=10.0)
        except httpx.HTTPError as exc:
            raise LauncherError(f"cannot reach the Ray dashboard at {self.address}: {exc}") from exc
        if r.status_code != 200:
            raise LauncherError(f"Ray dashboard {path}: HTTP {r.status_code} {r.text[:200]}")
        return r.json()

    # ---- jobs ---------------------------------------------------------------------------------
    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {**self.settings.mlflow_env(), "OMP_NUM_THREADS": "1", **self.settings.job_env, **extra}
        return {k: str(v) for k, v in env.items()}

    def submit_driver(self, *, submission_id: str, job_id: str, owner: str, spec_json: str,
                      resume_run_id: str | None = None) -> None:
        args = [self.python, "-m", "workers.driver", "--spec-env", SPEC_ENV, "--job-id", job_id]
        if resume_run_id:
            args += ["--resume", resume_run_id]
        env = {SPEC_ENV: spec_json, "METARL_JOB_ID": job_id, "METARL_OWNER": owner}
        self._submit(submission_id, args, env, {"metarl_job_id": job_id, "owner": owner, "kind": "train"})

    def submit_evaluation(self, *, submission_id: str, owner: str, model_uri: str, episodes: int,
                          steps: int | None, tasks: int, seed: int, later_lr: float | None = None,
                          split: str = "test") -> None:
        args = [self.python, "-m", "workers.evaluate", "--model", model_uri, "--episodes", str(episodes),
                "--tasks", str(tasks), "--seed", str(seed), "--split", split, "--evaluation-id", submission_id]
        if steps is not None:  # else the model's own default (evaluate's)
            args += ["--steps", str(steps)]
        if later_lr is not None:
            args += ["--later-lr", repr(float(later_lr))]
        self._submit(submission_id, args, {"METARL_OWNER": owner}, {"owner": owner, "kind": "evaluation"})

    def _submit(self, submission_id: str, args: list[str], env: dict[str, str], metadata: dict[str, str]) -> None:
        deadline = time.monotonic() + SUBMIT_RETRY_S
        while True:
            try:
                self.client().submit_job(
                    entrypoint=shlex.join(args),
                    submission_id=submission_id,
                    runtime_env={"env_vars": self._env(env)},
                    metadata=metadata,
                    entrypoint_num_cpus=0,
                )
                return
            except LauncherError:
                raise
            except Exception as exc:  # noqa: BLE001
                # a head that just started has no job agent yet: that passes, everything else is final
                if "No available agent" in str(exc) and time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                raise LauncherError(f"Ray refused submission {submission_id}: {exc}") from exc

    def info(self, submission_id: str) -> SubmissionInfo | None:
        """The submission's status, or None when Ray does not know it."""
        try:
            details = self.client().get_job_info(submission_id)
        except LauncherError:
            raise
        except Exception as exc:  # noqa: BLE001
            if "does not exist" in str(exc) or "404" in str(exc):
                return None
            raise LauncherError(f"cannot get status of {submission_id}: {exc}") from exc
        return SubmissionInfo(status=str(details.status.value if hasattr(details.status, "value") else details.status),
                              message=details.message, start_time=details.start_time, end_time=details.end_time)

    def stop(self, submission_id: str) -> bool:
        try:
            return bool(self.client().stop_job(submission_id))
        except Exception as exc:  # noqa: BLE001
            raise LauncherError(f"cannot stop {submission_id}: {exc}") from exc

    def logs(self, submission_id: str) -> str:
        try:
            return str(self.client().get_job_logs(submission_id))
        except Exception as exc:  # noqa: BLE001
            raise LauncherError(f"cannot read logs of {submission_id}: {exc}") from exc

    async def tail(self, submission_id: str) -> AsyncIterator[str]:
        async for chunk in self.client().tail_job_logs(submission_id):
            yield chunk
