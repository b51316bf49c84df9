"""Meta-test evaluations of registered model versions: ``python -m workers.evaluate`` as a Ray job.

A row in the ``evaluations`` table is written, then the job is submitted (its id is the row's
id); if Ray refuses, the row goes again and the caller gets a 503.  Status is refreshed from Ray
when an evaluation is read; once Ray says SUCCEEDED the report is read from the MLflow run the
evaluation logged (tagged ``metarl.evaluation_id``).  Callers see only their own evaluations
(an admin: all)."""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service import registry
from service.auth import Principal
from service.db import ACTIVE, TERMINAL, Evaluation, Store
from service.errors import ApiError, invalid_field, not_found, unavailable
from service.launcher import LauncherError, RayLauncher, unknown_for_too_long
from service.schemas import EvaluationCreate, EvaluationPublic
from service.tracking_view import TrackingView
from workers.contract import EVALUATION_EXPERIMENT, EVALUATION_ID_TAG, EVALUATION_REPORT

log = logging.getLogger("metarl.service.evaluations")

#: the report's headline numbers when it names none itself (``summary``): today's meta-test reports
SUMMARY_KEYS = ("return_pre", "return_post", "success_post")


def new_evaluation_id() -> str:
    return f"eval-{uuid.uuid4().hex[:12]}"


def to_public(row: Evaluation) -> EvaluationPublic:
    summary: dict[str, float] = json.loads(row.summary) if row.summary else {}
    return EvaluationPublic.model_validate({
        "id": row.id, "owner": row.owner, "model_name": row.model_name, "model_version": row.model_version,
        "status": row.status, "message": row.message, "request": EvaluationCreate.model_validate_json(row.request),
        "run_id": row.run_id, "summary": summary, **{k: summary.get(k) for k in SUMMARY_KEYS},
        "result": json.loads(row.result) if row.result else None, "created_at": row.created_at,
        "updated_at": row.updated_at,
    })


def summary_of(report: dict[str, Any]) -> dict[str, float]:
    """The report's headline numbers: its own ``summary`` (``name -> number``) if it has one, else
    the means of :data:`SUMMARY_KEYS` it reports (a family without a success signal, navigation or
    MuJoCo, reports none: no success of 0)."""
    own = report.get("summary")
    if isinstance(own, dict):
        return {str(k): float(v) for k, v in own.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    keys = [k for k in SUMMARY_KEYS if report.get("has_success", True) or not k.startswith("success")]
    means = {k: _mean(report, k) for k in keys}
    return {k: v for k, v in means.items() if v is not None}


# ---- create ------------------------------------------------------------------------------------
def create_evaluation(*, store: Store, launcher: RayLauncher, view: TrackingView, principal: Principal, name: str,
                      version: str, request: EvaluationCreate) -> Evaluation:
    """Record and submit a meta-test of ``name`` version ``version`` (404 if the caller cannot
    see it, 503 with nothing created if Ray refuses the submission)."""
    mv = registry.get_version_entity(view=view, principal=principal, name=name, version=version)
    if request.split == "val" and registry.algorithm_kind(mv) != "supervised":
        raise invalid_field("split", "'val' is a supervised distribution's meta-validation split; an RL task "
                                     "family has 'train' and 'test'")
    eval_id = new_evaluation_id()
    row = Evaluation(id=eval_id, owner=principal.owner, model_name=mv.name, model_version=str(mv.version),
                     request=request.model_dump_json(), status="PENDING", submission_id=eval_id)
    with store.session() as s:
        s.add(row)
    try:
        launcher.submit_evaluation(submission_id=eval_id, owner=principal.owner,
                                   model_uri=f"models:/{mv.name}/{mv.version}", episodes=request.episodes,
                                   steps=request.steps, tasks=request.tasks, seed=request.seed,
                                   later_lr=request.later_lr, split=request.split)
    except LauncherError as exc:
        with store.session() as s:  # nothing half-created: the row goes with the failed submission
            s.delete(s.get(Evaluation, eval_id))
        raise unavailable(str(exc)) from exc
    log.info("evaluation %s of models:/%s/%s submitted by %s", eval_id, mv.name, mv.version, principal.owner)
    return row


# ---- read and refresh --------------------------------------------------------------------------
def _owned(row: Evaluation | None, principal: Principal, eval_id: str) -> Evaluation:
    if row is None or (row.owner != principal.owner and not principal.is_admin):
        raise not_found("evaluation", eval_id)
    return row


def get_evaluation(*, store: Store, launcher: RayLauncher, view: TrackingView, principal: Principal,
                   eval_id: str) -> Evaluation:
    """The evaluation, refreshed from Ray (and MLflow, once finished); 404 unless the caller's."""
    with store.session() as s:
        _owned(s.get(Evaluation, eval_id), principal, eval_id)
    return refresh(store=store, launcher=launcher, view=view, eval_id=eval_id)


def list_evaluations(*, store: Store, launcher: RayLauncher, view: TrackingView, principal: Principal, name: str,
                     version: str) -> list[Evaluation]:
    """The caller's evaluations of a version it can see (an admin: everyone's), newest first."""
    registry.get_version_entity(view=view, principal=principal, name=name, version=version)
    q = select(Evaluation.id).where(Evaluation.model_name == name, Evaluation.model_version == version)
    if not principal.is_admin:
        q = q.where(Evaluation.owner == principal.owner)
    with store.session() as s:
        ids = list(s.scalars(q.order_by(Evaluation.created_at.desc(), Evaluation.id)))
    return [refresh(store=store, launcher=launcher, view=view, eval_id=i) for i in ids]


def refresh(*, store: Store, launcher: RayLauncher, view: TrackingView, eval_id: str) -> Evaluation:
    """Bring one row up to date with Ray and MLflow.  A Ray or MLflow outage leaves the row as
    it was (a read never fails for that); the next read tries again."""
    with store.session() as s:
        row = s.get(Evaluation, eval_id)
        if row is None:
            raise not_found("evaluation", eval_id)
        if row.status in TERMINAL:
            return row
        try:
            info = launcher.info(row.submission_id)
        except LauncherError as exc:
            log.warning("status of evaluation %s: %s", eval_id, exc)
            return row
        if info is None:
            if unknown_for_too_long(row.created_at):
                row.status, row.message = "FAILED", "Ray has no record of this evaluation (was the cluster restarted?)"
            return row
        if info.status == "SUCCEEDED":
            try:
                found = read_result(view=view, eval_id=eval_id)
            except Exception as exc:  # noqa: BLE001 - MLflow briefly unreachable: keep the old status, retry on the next read
                log.warning("result of evaluation %s: %s", eval_id, exc)
                return row
            if found is None:
                row.status = "FAILED"
                row.message = ("the evaluation finished but logged no result "
                               f"(no MLflow run tagged {EVALUATION_ID_TAG}={eval_id})")
                return row
            run_id, report = found
            row.run_id, row.result = run_id, json.dumps(report)
            row.summary = json.dumps(summary_of(report))
            row.status, row.message = "SUCCEEDED", None
        else:
            if info.status != row.status:
                log.info("evaluation %s: %s -> %s", eval_id, row.status, info.status)
            row.status = info.status
            if info.status in ("FAILED", "STOPPED"):
                row.message = info.message or info.status.lower()
        return row


def _mean(report: dict[str, Any], key: str) -> float | None:
    value = report.get(key)
    if isinstance(value, dict):
        value = value.get("mean")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_result(*, view: TrackingView, eval_id: str) -> tuple[str, dict[str, Any]] | None:
    """``(run_id, report)`` of the run tagged with ``eval_id``, or None if there is none."""
    exp = view.client.get_experiment_by_name(EVALUATION_EXPERIMENT)
    if exp is None:
        return None
    runs = view.client.search_runs([exp.experiment_id], filter_string=f"tags.`{EVALUATION_ID_TAG}` = '{eval_id}'",
                                   max_results=1)
    if not runs:
        return None
    run = runs[0]
    with tempfile.TemporaryDirectory(prefix="metarl-eval-") as tmp:
        path = view.client.download_artifacts(run.info.run_id, EVALUATION_REPORT, tmp)
        report = json.loads(Path(path).read_text())
    return run.info.run_id, report


def refresh_active(*, store: Store, launcher: RayLauncher, view: TrackingView) -> int:
    """Refresh every unfinished meta-test evaluation (status and, once done, its result)."""
    with store.session() as s:
        ids = list(s.scalars(select(Evaluation.id).where(Evaluation.status.in_(ACTIVE))))
    for eval_id in ids:
        try:
            refresh(store=store, launcher=launcher, view=view, eval_id=eval_id)
        except (LauncherError, ApiError) as exc:
            log.warning("refresh %s: %s", eval_id, exc)
    return len(ids)
