"""The API's request and response models (one set per resource)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from workers.contract import NAME_PATTERN


def _utc(v: dt.datetime) -> dt.datetime:
    """The store keeps naive UTC; the API says so (RFC 3339 needs the offset)."""
    return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)


UtcDatetime = Annotated[dt.datetime, AfterValidator(_utc)]

JobStatus = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- errors -------------------------------------------------------------------------------------
class ErrorDetail(_Out):
    code: str = Field(description="machine-readable: invalid_request, not_found, conflict, too_large, ...")
    message: str = Field(description="what went wrong; names the field or resource")
    details: Any = None


class ErrorBody(_Out):
    error: ErrorDetail


#: documented on every operation: the error statuses the API answers with
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in ((401, "missing or invalid API key"), (403, "needs an admin key"),
                       (404, "not found, or not the caller's"), (409, "conflicts with the resource's state"),
                       (413, "request body too large"), (422, "invalid request; the message names the fields"),
                       (429, "too many active jobs"), (503, "Ray, MLflow or the store unavailable"))
}


# ---- jobs ---------------------------------------------------------------------------------------
class Progress(_Out):
    iteration: int = Field(description="iterations finished")
    iterations: int = Field(description="iterations asked for")
    fraction: float


class DeclaredMetric(_Out):
    """A headline metric the job's algorithm declares: what the CLI and a dashboard show first."""

    key: str = Field(description="the logged name, e.g. meta/return_post")
    label: str = Field(description="what people read, e.g. return after adaptation")
    fmt: str = Field(description="Python format spec of a value, e.g. .2f")


class JobPublic(_Out):
    id: str
    name: str
    owner: str
    status: JobStatus
    message: str | None = None
    attempt: int
    submission_id: str
    progress: Progress
    rollout_workers: int = Field(description="rollout workers asked for (PATCH changes it)")
    run_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    latest_metrics: dict[str, float] = Field(default_factory=dict)
    metrics_declared: list[DeclaredMetric] = Field(
        default_factory=list, description="the algorithm's headline metrics, in display order")
    spec: dict[str, Any]
    created_at: UtcDatetime
    updated_at: UtcDatetime
    finished_at: UtcDatetime | None = None


class JobsPublic(_Out):
    data: list[JobPublic]
    count: int = Field(description="jobs matching the filter (all pages)")
    offset: int
    limit: int


class JobUpdate(_In):
    rollout_workers: int = Field(ge=1, le=512, description="rollout workers from the next iteration on")


class MetricPoint(_Out):
    step: int
    value: float
    timestamp: int


class MetricsPublic(_Out):
    job_id: str
    run_id: str | None
    metrics: dict[str, list[MetricPoint]]


class LogsPublic(_Out):
    job_id: str
    submission_id: str
    logs: str


# ---- models ---------------------------------------------------------------------------------------
class ModelVersionPublic(_Out):
    name: str
    version: str
    uri: str
    aliases: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict, description="the training run's final metrics")
    metrics_declared: list[DeclaredMetric] = Field(
        default_factory=list, description="the headline metrics its algorithm declares, in display order")
    run_id: str | None = None
    status: str | None = None
    created_at: UtcDatetime | None = None


class ModelPublic(_Out):
    name: str
    aliases: dict[str, str] = Field(default_factory=dict, description="alias -> version")
    latest_version: str | None = None
    versions: int
    description: str | None = None
    updated_at: UtcDatetime | None = None


class ModelsPublic(_Out):
    data: list[ModelPublic]
    count: int


class ModelVersionsPublic(_Out):
    data: list[ModelVersionPublic]
    count: int


class AliasUpdate(_In):
    version: str = Field(pattern=r"^[1-9][0-9]{0,8}$", description="the version the alias points to")


class EvaluationCreate(_In):
    episodes: int = Field(10, ge=1, le=1000, description=(
        "K: episodes per adaptation step (RL²: adaptation episodes of the trial; not used by supervised models)"))
    steps: int | None = Field(None, ge=1, le=200, description=(
        "n: inner steps (default: 1 for RL models, the algorithm's own meta-test steps for supervised ones; "
        "RL² takes none: 1)"))
    tasks: int = Field(10, ge=1, le=2000, description=(
        "held-out test tasks (supervised: test episodes; the papers: 600)"))
    seed: int = Field(0, ge=0, le=2**31 - 1)
    later_lr: float | None = Field(None, gt=0, le=10.0, description=(
        "step size of inner steps 2..n (default: the model's inner_lr); the MAML paper's meta-test uses 0.05"))
    split: Literal["test", "train", "val"] = Field("test", description=(
        "tasks to adapt on: the family's held-out test tasks, its training tasks (Meta-World's train "
        "goals/classes), or a supervised distribution's meta-validation split"))


class AdaptRequest(_In):
    """A support set to adapt on and a query set to predict (``POST /v1/models/{name}/adapt``)."""

    version: str | None = Field(None, pattern=r"^[1-9][0-9]{0,8}$", description=(
        "the version to adapt (default: ``alias``'s, else the newest one the caller owns)"))
    alias: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,255}$", description="an alias of the model")
    support_x: list[Any] = Field(description=(
        "support inputs, [N, *input_shape] numbers, or one flat vector per example (a digit: 64 numbers); "
        "N <= 1000"))
    support_y: list[Any] = Field(description=(
        "support labels: [N] class indices 0..ways-1 (classifiers), or [N] / [N, out_dim] regression targets"))
    query_x: list[Any] = Field(description="query inputs, as support_x; at most 1000")
    steps: int | None = Field(None, ge=1, le=100, description=(
        "inner steps (gradient-based learners; default: the algorithm's meta-test setting); the metric "
        "learners (ProtoNets, Matching networks) take none"))
    probabilities: bool = Field(False, description="classifiers: also return each query's class probabilities")

    @model_validator(mode="after")
    def _one_version(self) -> AdaptRequest:
        if self.version is not None and self.alias is not None:
            raise ValueError("version and alias: give one of them (or neither: the newest version)")
        return self


class AdaptResponse(_Out):
    model_name: str
    model_version: str
    algorithm: str
    problem: Literal["classification", "regression"]
    steps: int | None = Field(None, description="inner steps taken (None: a metric learner)")
    predictions: list[int] | list[list[float]] = Field(description=(
        "per query: the class index (classifiers) or the regression values"))
    probabilities: list[list[float]] | None = Field(None, description="per query: the class probabilities, if asked")
    timings_ms: dict[str, float] = Field(default_factory=dict, description=(
        "the model server's time: load (0 when the model was loaded already), adapt, predict"))


class EvaluationPublic(_Out):
    id: str
    owner: str
    model_name: str
    model_version: str
    status: JobStatus
    message: str | None = None
    request: EvaluationCreate
    run_id: str | None = None
    summary: dict[str, float] = Field(default_factory=dict, description=(
        "the report's headline numbers once finished, e.g. return_pre, return_post, success_post"))
    return_pre: float | None = Field(default=None, description="summary['return_pre'] (kept for older clients)")
    return_post: float | None = Field(default=None, description="summary['return_post'] (kept for older clients)")
    success_post: float | None = Field(default=None, description="summary['success_post'] (kept for older clients)")
    result: dict[str, Any] | None = Field(None, description="the full report (per task and overall) once finished")
    created_at: UtcDatetime
    updated_at: UtcDatetime


class EvaluationsPublic(_Out):
    data: list[EvaluationPublic]
    count: int


# ---- cluster, keys, health --------------------------------------------------------------------
class NodePublic(_Out):
    node_id: str
    address: str
    alive: bool
    is_head: bool
    cpus: float
    gpus: float
    memory_gb: float


class ClusterPublic(_Out):
    nodes: list[NodePublic]
    cpus: float
    gpus: float
    cpus_free: float
    gpus_free: float


class KeyCreate(_In):
    owner: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    admin: bool = False


class KeyPublic(_Out):
    id: str
    owner: str
    admin: bool
    key: str | None = Field(default=None, description="shown once, at creation")


class Health(_Out):
    status: Literal["ok", "degraded"]
    ray: bool
    mlflow: bool
    database: bool
    version: str


__all__ = [name for name in dir() if name[0].isupper()] + ["NAME_PATTERN"]
