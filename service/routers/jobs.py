"""``/v1/jobs``: submit, list, show, metrics, live events, logs, cancel, scale, resume."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from service import jobs
from service.db import TERMINAL
from service.deps import JobCachesDep, LauncherDep, PrincipalDep, SettingsDep, StoreDep, ViewDep
from service.errors import invalid_field, unavailable
from service.launcher import LauncherError
from service.schemas import (
    JobPublic,
    JobsPublic,
    JobStatus,
    JobUpdate,
    LogsPublic,
    MetricsPublic,
)
from workers.contract import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

HEARTBEAT_S = 15.0
#: The largest page offset accepted (SQLite and PostgreSQL take 64-bit offsets; a larger one is a 422).
MAX_OFFSET = 2**31 - 1


def _json(model: BaseModel) -> Response:
    """The hot read endpoints answer with their already-validated model, serialized once (a
    returned model would be validated and serialized again against ``response_model``)."""
    return Response(model.model_dump_json(), media_type="application/json")


@router.post("", status_code=201, response_model=JobPublic)
async def submit(spec: JobSpec, response: Response, store: StoreDep, launcher: LauncherDep, principal: PrincipalDep,
                 settings: SettingsDep,
                 idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JobPublic:
    """Validate and submit a meta-training job (the body is the job spec)."""
    job, created = await asyncio.to_thread(jobs.submit_job, store=store, launcher=launcher, principal=principal,
                                           spec=spec, idempotency_key=idempotency_key,
                                           max_active=settings.max_active_jobs)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return jobs.to_public(job)


@router.get("", response_model=JobsPublic)
async def list_(store: StoreDep, caches: JobCachesDep, principal: PrincipalDep, status: JobStatus | None = None,
                offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Response:
    body = await asyncio.to_thread(jobs.list_page, store=store, caches=caches, principal=principal, status=status,
                                   offset=offset, limit=limit)
    return Response(body, media_type="application/json")


@router.get("/{job_id}", response_model=JobPublic)
async def show(job_id: str, store: StoreDep, caches: JobCachesDep, view: ViewDep, principal: PrincipalDep) -> Response:
    job = jobs.cached_job(caches=caches, principal=principal, job_id=job_id)
    if job is not None and job.latest_metrics is not None:  # settled: served from memory
        return _json(jobs.to_public(job, latest_metrics=json.loads(job.latest_metrics)))
    return _json(await asyncio.to_thread(jobs.show_job, store=store, caches=caches, view=view, principal=principal,
                                         job_id=job_id))


@router.get("/{job_id}/metrics", response_model=MetricsPublic)
async def metrics(job_id: str, store: StoreDep, caches: JobCachesDep, view: ViewDep, principal: PrincipalDep,
                  key: Annotated[list[str] | None, Query(description="only these metrics")] = None) -> Response:
    cached = jobs.cached_job(caches=caches, principal=principal, job_id=job_id)
    history = None
    if cached is not None and cached.run_id is not None and key:  # settled, its histories maybe in memory
        history = view.cached_history(cached.run_id, key, final_as=cached.attempt)
    if cached is not None and history is not None:
        job = cached
    else:
        job, history = await asyncio.to_thread(jobs.job_history, store=store, caches=caches, view=view,
                                               principal=principal, job_id=job_id, keys=key)
    return _json(MetricsPublic.model_validate({"job_id": job.id, "run_id": job.run_id, "metrics": history}))


def _last_event_id(value: str | None) -> int:
    if value is None or not value.strip():
        return -1
    try:
        n = int(value.strip())
    except ValueError:
        n = -2
    if not -1 <= n < 1 << 31:
        raise invalid_field("Last-Event-ID", "must be the id of an event of this stream (an iteration, -1 or more)")
    return n


@router.get("/{job_id}/events")
async def events(job_id: str, request: Request, store: StoreDep, caches: JobCachesDep, view: ViewDep,
                 settings: SettingsDep, principal: PrincipalDep,
                 last_event_id: Annotated[str | None, Header(
                     description="resume: the `id` of the last event received (EventSource sends it on "
                                 "reconnecting); only later iterations' `metrics` events follow")] = None,
                 ) -> StreamingResponse:
    """Server-sent events: ``status`` (the job, on every change), ``metrics`` (each finished
    iteration: ``{"step", "metrics"}``), ``end`` (the final job), then the stream closes.  Every
    event's ``id`` is the last iteration streamed so far (-1 before the first): a client that
    reconnects with ``Last-Event-ID`` (to this or another API process) gets the job's current
    ``status`` and then the iterations after that one, none twice and none missed."""
    after = _last_event_id(last_event_id)
    read = functools.partial(jobs.get_job, store=store, caches=caches, principal=principal, job_id=job_id)
    job = await asyncio.to_thread(read)

    async def stream() -> AsyncIterator[str]:
        last_status: tuple[str, int, str | None] | None = None
        last_step, last_beat = after, time.monotonic()
        current = job
        while True:
            if current.run_id is not None:
                new = await asyncio.to_thread(view.iterations_since, current.run_id, last_step)
                for step, values in new:
                    yield jobs.events_payload("metrics", {"step": step, "metrics": values}, event_id=step)
                    last_step = step
            key = (current.status, current.attempt, current.model_version)
            if key != last_status:
                yield jobs.events_payload("status", jobs.to_public(current).model_dump(mode="json"),
                                          event_id=last_step)
                last_status = key
            if current.status in TERMINAL and (current.run_id is None or current.iteration <= last_step + 1):
                yield jobs.events_payload("end", jobs.to_public(current).model_dump(mode="json"), event_id=last_step)
                return
            if await request.is_disconnected():
                return
            if time.monotonic() - last_beat > HEARTBEAT_S:
                yield ": keep-alive\n\n"
                last_beat = time.monotonic()
            await asyncio.sleep(settings.sse_interval_s)
            current = await asyncio.to_thread(read)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{job_id}/logs", response_model=LogsPublic)
async def logs(job_id: str, store: StoreDep, caches: JobCachesDep, launcher: LauncherDep, principal: PrincipalDep,
               tail: Annotated[int | None, Query(ge=1, le=100_000, description="only the last N lines")] = None,
               ) -> LogsPublic:
    job = await asyncio.to_thread(jobs.get_job, store=store, caches=caches, principal=principal, job_id=job_id)
    try:
        text = await asyncio.to_thread(launcher.logs, job.submission_id)
    except LauncherError as exc:
        raise unavailable(str(exc)) from exc
    if tail is not None:
        text = "\n".join(text.splitlines()[-tail:])
    return LogsPublic(job_id=job.id, submission_id=job.submission_id, logs=text)


@router.post("/{job_id}/cancel", response_model=JobPublic)
async def cancel(job_id: str, store: StoreDep, caches: JobCachesDep, launcher: LauncherDep, view: ViewDep,
                 principal: PrincipalDep) -> JobPublic:
    """Stop the job; its rollout actors, learner and placement groups are released."""
    job = await asyncio.to_thread(jobs.cancel_job, store=store, caches=caches, launcher=launcher, view=view,
                                  principal=principal, job_id=job_id)
    return jobs.to_public(job)


@router.patch("/{job_id}", response_model=JobPublic)
async def update(job_id: str, body: JobUpdate, store: StoreDep, caches: JobCachesDep, view: ViewDep,
                 principal: PrincipalDep) -> JobPublic:
    """Change ``rollout_workers`` of a pending or running job (applied between iterations)."""
    job = await asyncio.to_thread(jobs.scale_job, store=store, caches=caches, view=view, principal=principal,
                                  job_id=job_id, rollout_workers=body.rollout_workers)
    return jobs.to_public(job)


@router.post("/{job_id}/resume", response_model=JobPublic)
async def resume(job_id: str, store: StoreDep, caches: JobCachesDep, launcher: LauncherDep, view: ViewDep,
                 principal: PrincipalDep) -> JobPublic:
    """A new attempt of a stopped or failed job from its last checkpoint (same MLflow run)."""
    job = await asyncio.to_thread(jobs.resume_job, store=store, caches=caches, launcher=launcher, view=view,
                                  principal=principal, job_id=job_id)
    return jobs.to_public(job)
