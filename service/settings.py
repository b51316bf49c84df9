"""Service settings: ``METARL_*`` environment variables, validated at start-up and injected as a
dependency (never imported as a global)."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def is_placeholder(secret: str) -> bool:
    """A ``change-me`` placeholder of ``.env.example``, which production refuses."""
    return secret.strip().lower().startswith("change-me")


def _default_home() -> Path:
    return Path(os.environ.get("METARL_HOME", Path.home() / ".metarl")).expanduser()


class Settings(BaseSettings):
    """Everything the control plane needs to know about where things are."""

    model_config = SettingsConfigDict(env_prefix="METARL_", extra="ignore", frozen=True)

    # ``default=`` by keyword: type checkers read a field's default from it (a positional one they miss)
    home: Path = Field(default_factory=_default_home,
                       description="data dir: job store, admin key, local MLflow store, logs")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the job store; SQLite in the data dir if unset")
    ray_dashboard: str = Field(default="http://127.0.0.1:8265", description="Ray dashboard / job server address")
    ray_token_file: Path | None = Field(default=None, description=(
        "Ray auth token file (RAY_AUTH_MODE=token); RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token if unset and present"))
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; MLFLOW_TRACKING_URI or SQLite in the data dir if unset")
    artifact_root: str | None = Field(default=None, description="artifact root of the local MLflow store")
    host: str = Field(default="127.0.0.1", description="interface the API binds")
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64,
                         description="API server processes (uvicorn workers); one of them runs the poller")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30,
                                description="request bodies above this get 413, declared or streamed (chunked)")
    max_json_depth: int = Field(default=64, ge=4, le=256, description=(
        "JSON request bodies nesting arrays and objects deeper than this get 422"))
    max_header_bytes: int = Field(default=16 << 10, ge=4 << 10, le=1 << 20, description=(
        "a request line and headers together above this are refused (431; 400 from the HTTP server)"))
    poll_interval_s: float = Field(default=2.0, gt=0, le=60,
                                   description="how often running jobs are refreshed from Ray")
    sse_interval_s: float = Field(default=1.0, gt=0, le=60, description="how often an event stream looks for news")
    job_env: dict[str, str] = Field(default_factory=dict, description="extra environment variables for job drivers")
    max_active_jobs: int = Field(default=16, ge=1, le=100_000,
                                 description="pending + running jobs one owner may have; more get 429")
    admin_owner: str = Field(default="admin", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    reconcile_on_start: bool = True
    adapt_servers: int = Field(default=1, ge=0, le=64, description=(
        "model server processes per API process behind POST /v1/models/{name}/adapt (0: that endpoint answers 503)"))
    adapt_timeout_s: float = Field(default=60.0, gt=0, le=3600, description=(
        "how long an adapt request waits for a free model server, and for its answer"))
    adapt_cache_models: int = Field(default=8, ge=1, le=1024, description="models each model server keeps loaded")
    adapt_threads: int = Field(default=1, ge=1, le=256, description="torch threads of each model server")
    key_secret: SecretStr | None = Field(default=None, description=(
        "secret of the API keys' keyed hash; <home>/key_secret (generated, 0600) if unset; "
        "replicas sharing a job store need the same"))

    dev: bool = Field(default=False, description=(
        "development mode: accept the example secrets of .env.example (change-me-...) in the database URL, "
        "the key secret and the Ray token; refused otherwise"))

    @model_validator(mode="after")
    def _no_example_secrets(self) -> Settings:
        if self.dev:
            return self
        found = []
        if self.database_url:
            password = urlsplit(self.database_url).password
            if password and is_placeholder(unquote(password)):
                found.append("METARL_DATABASE_URL's password")
        if self.key_secret is not None and is_placeholder(self.key_secret.get_secret_value()):
            found.append("METARL_KEY_SECRET")
        if is_placeholder(self.ray_token or ""):
            found.append("the Ray auth token")
        if found:
            raise ValueError(f"{' and '.join(found)}: an example value of .env.example (change-me-...); set a real "
                             "secret (python3 -c 'import secrets; print(secrets.token_hex(32))'), or METARL_DEV=1 "
                             "for a development setup")
        return self

    @field_validator("ray_dashboard")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("METARL_RAY_DASHBOARD must be an http(s):// URL of the Ray dashboard, e.g. http://127.0.0.1:8265")
        return v.rstrip("/")

    @cached_property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'metarl.db'}"

    @cached_property
    def tracking_uri(self) -> str:
        uri = self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @cached_property
    def artifacts(self) -> str:
        return self.artifact_root or os.environ.get("METARL_ARTIFACT_ROOT") or str(self.home / "mlartifacts")

    @property
    def admin_key_file(self) -> Path:
        return self.home / "admin.key"

    @cached_property
    def ray_token(self) -> str | None:
        """The Ray auth token to send to the job server, if token auth is in use."""
        candidates = [self.ray_token_file, os.environ.get("RAY_AUTH_TOKEN_PATH"), Path.home() / ".ray" / "auth_token"]
        if os.environ.get("RAY_AUTH_TOKEN"):
            return os.environ["RAY_AUTH_TOKEN"].strip()
        for c in candidates:
            if c and Path(c).is_file():
                return Path(c).read_text().strip()
        return None

    def mlflow_env(self) -> dict[str, str]:
        """What a job driver needs to log where the service reads."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "METARL_ARTIFACT_ROOT": self.artifacts,
                "METARL_HOME": str(self.home), "MLFLOW_DISABLE_TELEMETRY": "true"}
