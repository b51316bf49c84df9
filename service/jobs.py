"""Jobs: submit, list, show, refresh from Ray and MLflow, cancel, scale, resume, reconcile.

Ray's job table is the truth about running work; the job store is the service's view of it,
refreshed by :func:`poll_forever` and on start-up by :func:`reconcile`.  Keyword-only functions;
the routers are thin wrappers."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import declared, evaluations
from service.auth import Principal
from service.db import ACTIVE, TERMINAL, Job, Store, serialize, utcnow
from service.errors import ApiError, conflict, not_found, unavailable
from service.launcher import LauncherError, RayLauncher, unknown_for_too_long
from service.schemas import JobPublic, JobsPublic, Progress
from service.tracking_view import TrackingView
from workers.contract import FAILURE_TAG, METRICS_TAG, MODEL_URI_TAG, JobSpec

log = logging.getLogger("metarl.service.jobs")

CANCEL_WAIT_S = 10.0


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


def request_hash(spec: JobSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def model_name_of(spec: JobSpec) -> str:
    return spec.register_as or spec.name


# ---- reads ---------------------------------------------------------------------------------------
def to_public(job: Job, *, latest_metrics: dict[str, float] | None = None) -> JobPublic:
    spec = json.loads(job.spec)
    model_uri = f"models:/{job.model_name}/{job.model_version}" if job.model_name and job.model_version else None
    return JobPublic.model_validate({
        "id": job.id, "name": job.name, "owner": job.owner, "status": job.status, "message": job.message,
        "attempt": job.attempt, "submission_id": job.submission_id,
        "progress": Progress(iteration=job.iteration, iterations=job.iterations,
                             fraction=round(job.iteration / max(job.iterations, 1), 4)),
        "rollout_workers": job.rollout_workers, "run_id": job.run_id, "model_name": job.model_name,
        "model_version": job.model_version, "model_uri": model_uri, "latest_metrics": latest_metrics or {},
        "metrics_declared": declared.of_job(job.metric_names, spec), "spec": spec, "created_at": job.created_at,
        "updated_at": job.updated_at, "finished_at": job.finished_at,
    })


class RowViews:
    """Public views of job rows without their metrics (a list page's items), keyed by the row's
    version: reused while the row is unchanged (``updated_at`` moves on every update), so a page
    of finished jobs costs no re-validation.  Bounded; the oldest entries go first."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, Any, str, int], JobPublic] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job: Job) -> JobPublic:
        key = (job.id, job.updated_at, job.status, job.attempt)
        with self._lock:
            hit = self._items.get(key)
        if hit is None:
            hit = to_public(job)
            with self._lock:
                self._items[key] = hit
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return hit


#: how long a settled job's row is served from memory (another replica's resume shows within this)
SETTLED_TTL_S = 2.0


def settled(job: Job) -> bool:
    """Finished, with its run and (if it succeeded) its model known: nothing refreshes it any more;
    only a resume changes it."""
    return job.status in TERMINAL and job.run_id is not None and (job.status != "SUCCEEDED" or bool(job.model_version))


class SettledJobs:
    """job id -> settled row, for :data:`SETTLED_TTL_S`; this process drops an entry when it
    changes the row (resume, first latest-metrics fill)."""

    def __init__(self, ttl_s: float = SETTLED_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._items: dict[str, tuple[float, Job]] = {}
        self._lock = threading.Lock()

    def get(self, job_id: str) -> Job | None:
        hit = self._items.get(job_id)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, job: Job) -> None:
        with self._lock:
            if len(self._items) > 10_000:
                now = time.monotonic()
                self._items = {k: v for k, v in self._items.items() if v[0] >= now}
            self._items[job.id] = (time.monotonic() + self.ttl_s, job)

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._items.pop(job_id, None)


def _visible(job: Job | None, principal: Principal) -> TypeGuard[Job]:
    return job is not None and (job.owner == principal.owner or principal.is_admin)


def cached_job(*, caches: JobCaches, principal: Principal, job_id: str) -> Job | None:
    """A settled job read within the last seconds, if the caller may see it (no store access)."""
    job = caches.settled.get(job_id)
    return job if _visible(job, principal) else None


def get_job(*, store: Store, caches: JobCaches, principal: Principal, job_id: str) -> Job:
    """The job, if the caller may see it (its owner or an admin); else 404."""
    with store.session() as s:
        job = s.get(Job, job_id)
    if not _visible(job, principal):
        raise not_found("job", job_id)
    if settled(job):
        caches.settled.put(job)
    return job


def list_jobs(*, store: Store, principal: Principal, status: str | None, offset: int,
              limit: int) -> tuple[list[Job], int]:
    q = select(Job)
    if not principal.is_admin:
        q = q.where(Job.owner == principal.owner)
    if status is not None:
        q = q.where(Job.status == status)
    with store.session() as s:
        count = s.scalar(select(func.count()).select_from(q.subquery())) or 0
        rows = list(s.scalars(q.order_by(Job.created_at.desc(), Job.id).offset(offset).limit(limit)))
    return rows, count


_PageKey = tuple[str | None, str | None, int, int]


class ListPages:
    """Serialized pages of ``GET /v1/jobs``, each stored with the version of the caller's job set
    it was built from: ``(count, max(updated_at))`` of the rows the caller may see.  Every insert
    moves the max (a new row's ``updated_at`` is now), every update moves it (``onupdate``), every
    delete moves the count; the one update that keeps ``updated_at`` (the first fill of a finished
    job's ``latest_metrics``) changes nothing a list shows.  The version is read *before* the page,
    so a change racing the read can only make the entry look older than it is, never newer: a
    page is never served stale, in any process, and a hit costs one indexed aggregate query
    instead of loading and validating the rows (0.5 ms against 3 ms for a page of 20 here).
    ``updated_at`` comes from the writer's clock: the processes writing one job store share a
    host (the API runs as one replica with ``METARL_WORKERS`` processes), so a later write never
    carries an earlier time unless the clock is stepped back.

    One per app (it serves one job store); ``max_bytes`` bounds the serialized pages kept (a page
    of 500 jobs is ~0.5 MB), least recently used first out."""

    MAX_BYTES = 64 * 2**20

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.rows = RowViews()
        self._bytes = 0
        self._pages: OrderedDict[_PageKey, tuple[tuple[int, Any], bytes]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        """The serialized pages' summed size."""
        return self._bytes

    @staticmethod
    def _key(principal: Principal, status: str | None, offset: int, limit: int) -> _PageKey:
        return (None if principal.is_admin else principal.owner, status, offset, limit)

    @staticmethod
    def version(store: Store, principal: Principal) -> tuple[int, Any]:
        """``(count, max(updated_at))`` of the jobs ``principal`` may see: one indexed query."""
        q = select(func.count(), func.max(Job.updated_at))
        if not principal.is_admin:
            q = q.where(Job.owner == principal.owner)
        with store.engine.connect() as conn:
            count, newest = conn.execute(q).one()
        return int(count), newest

    def cached(self, *, principal: Principal, status: str | None, offset: int, limit: int,
               version: tuple[int, Any]) -> bytes | None:
        key = self._key(principal, status, offset, limit)
        with self._lock:
            hit = self._pages.get(key)
            if hit is None or hit[0] != version:
                return None
            self._pages.move_to_end(key)
            return hit[1]

    def build(self, *, store: Store, principal: Principal, status: str | None, offset: int, limit: int,
              version: tuple[int, Any]) -> bytes:
        rows, total = list_jobs(store=store, principal=principal, status=status, offset=offset, limit=limit)
        page = JobsPublic(data=[self.rows.get(j) for j in rows], count=total, offset=offset, limit=limit)
        body = page.model_dump_json().encode()
        key = self._key(principal, status, offset, limit)
        with self._lock:
            old = self._pages.pop(key, None)
            self._bytes += len(body) - (len(old[1]) if old else 0)
            self._pages[key] = (version, body)
            while self._bytes > self.max_bytes and self._pages:
                self._bytes -= len(self._pages.popitem(last=False)[1][1])
        return body


@dataclass
class JobCaches:
    """The job reads' in-memory state, one per app (``app.state.job_caches``, made by the app
    factory and handed to the functions here): nothing is shared between apps of one process."""

    settled: SettledJobs = field(default_factory=SettledJobs)
    pages: ListPages = field(default_factory=ListPages)


def list_page(*, store: Store, caches: JobCaches, principal: Principal, status: str | None, offset: int,
              limit: int) -> bytes:
    """``GET /v1/jobs``: the page as JSON bytes, from :class:`ListPages` while the caller's job
    set is unchanged."""
    pages = caches.pages
    version = pages.version(store, principal)
    return (pages.cached(principal=principal, status=status, offset=offset, limit=limit, version=version)
            or pages.build(store=store, principal=principal, status=status, offset=offset, limit=limit,
                           version=version))


def latest_metrics(*, view: TrackingView, job: Job, store: Store | None = None,
                   caches: JobCaches | None = None) -> dict[str, float]:
    """A job's latest metrics: a finished job's from the job store (final, written by the last
    refresh, or on the first read after an upgrade when ``store`` is given), an active job's live
    from MLflow."""
    if job.run_id is None:
        return {}
    final = job.status in TERMINAL
    if final and job.latest_metrics is not None:
        return dict(json.loads(job.latest_metrics))
    try:
        metrics = view.latest_metrics(job.run_id)
    except Exception as exc:  # noqa: BLE001 - the store being briefly unreachable must not fail a read
        log.warning("metrics of %s: %s", job.id, exc)
        return {}
    if final and store is not None:
        with store.session() as s:
            s.execute(update(Job).where(Job.id == job.id, Job.status == job.status, Job.latest_metrics.is_(None))
                      .values(latest_metrics=json.dumps(metrics), updated_at=Job.updated_at))
        if caches is not None:
            caches.settled.drop(job.id)
    return metrics


def show_job(*, store: Store, caches: JobCaches, view: TrackingView, principal: Principal, job_id: str) -> JobPublic:
    """``GET /v1/jobs/{id}``: the job with its latest metrics (one thread hop for the handler)."""
    job = get_job(store=store, caches=caches, principal=principal, job_id=job_id)
    return to_public(job, latest_metrics=latest_metrics(view=view, job=job, store=store, caches=caches))


def job_history(*, store: Store, caches: JobCaches, view: TrackingView, principal: Principal, job_id: str,
                keys: list[str] | None) -> tuple[Job, dict[str, list[dict[str, Any]]]]:
    """``GET /v1/jobs/{id}/metrics``: the job and its metrics' histories (a finished job's are
    final, so the view may cache them)."""
    job = get_job(store=store, caches=caches, principal=principal, job_id=job_id)
    if job.run_id is None:
        return job, {}
    return job, view.history(job.run_id, keys, final_as=job.attempt if job.status in TERMINAL else None)


# ---- submit ------------------------------------------------------------------------------------
def _prior(s: Session, *, principal: Principal, idempotency_key: str, digest: str) -> Job | None:
    """The caller's job recorded under ``idempotency_key``, if any; 409 when it was another spec."""
    prior = s.scalar(select(Job).where(Job.owner == principal.owner, Job.idempotency_key == idempotency_key))
    if prior is not None and prior.request_hash != digest:
        raise conflict(f"Idempotency-Key {idempotency_key!r} was used for a different job spec", {"job_id": prior.id})
    return prior


def submit_job(*, store: Store, launcher: RayLauncher, principal: Principal, spec: JobSpec,
               idempotency_key: str | None, max_active: int | None = None) -> tuple[Job, bool]:
    """Record and submit a job; returns ``(job, created)``.  A repeated ``Idempotency-Key`` with
    the same spec returns the first job, also when the repeats race each other (the store's unique
    ``(owner, idempotency_key)`` picks one winner; the others read its row back); with another spec
    it is a 409.  An owner with ``max_active`` pending or running jobs gets 429.  A model name
    belongs to the owner whose job first registered into it: anyone else, an admin included, gets
    a 409 for it (an admin's version would be one its owner cannot see, so an admin may read and
    manage another owner's model but not add versions to it)."""
    digest = request_hash(spec)
    model_name = model_name_of(spec)
    try:
        with store.session() as s:
            if idempotency_key is not None:  # a repeat is answered without waiting for a lock
                prior = _prior(s, principal=principal, idempotency_key=idempotency_key, digest=digest)
                if prior is not None:
                    return prior, False
            # one new submission at a time per owner (its active count) and per model name (its owner)
            if serialize(s, f"metarl.owner:{principal.owner}", *([f"metarl.model:{model_name}"] if model_name else [])):
                if idempotency_key is not None:  # a racing repeat may have committed while this one waited
                    prior = _prior(s, principal=principal, idempotency_key=idempotency_key, digest=digest)
                    if prior is not None:
                        return prior, False
            if max_active is not None:
                mine = select(func.count()).select_from(Job).where(Job.owner == principal.owner,
                                                                   Job.status.in_(ACTIVE))
                active = s.scalar(mine) or 0
                if active >= max_active:
                    raise ApiError(429, "too_many_jobs",
                                   f"{principal.owner} has {active} pending or running jobs (the limit is "
                                   f"{max_active}, METARL_MAX_ACTIVE_JOBS); wait for one to finish or cancel one",
                                   {"active": active, "limit": max_active})
            taken = s.scalar(select(Job.owner).where(Job.model_name == model_name, Job.owner != principal.owner)
                             .limit(1))
            if taken is not None:
                raise conflict(f"the model name {model_name!r} belongs to another owner; choose another register_as",
                               {"field": "register_as", **({"owner": taken} if principal.is_admin else {})})
            job_id = new_job_id()
            job = Job(id=job_id, owner=principal.owner, name=spec.name, spec=spec.model_dump_json(),
                      status="PENDING", attempt=1, submission_id=job_id, iteration=0, iterations=spec.iterations,
                      rollout_workers=spec.resources.rollout_workers, model_name=model_name,
                      idempotency_key=idempotency_key, request_hash=digest,
                      metric_names=json.dumps(declared.for_algorithm(spec.algorithm.name)))
            s.add(job)
    except IntegrityError:
        if idempotency_key is None:
            raise
        # a request with the same key committed its row between our read and our insert
        with store.session() as s:
            prior = _prior(s, principal=principal, idempotency_key=idempotency_key, digest=digest)
        if prior is None:  # not the idempotency constraint that failed
            raise
        return prior, False
    try:
        launcher.submit_driver(submission_id=job.submission_id, job_id=job.id, owner=job.owner, spec_json=job.spec)
    except LauncherError as exc:
        with store.session() as s:  # nothing half-created: the row goes with the failed submission
            s.delete(s.get(Job, job.id))
        raise unavailable(str(exc)) from exc
    log.info("job %s submitted by %s (%s)", job.id, job.owner, spec.name)
    return job, True


# ---- refresh from Ray and MLflow ---------------------------------------------------------------
def refresh(*, store: Store, launcher: RayLauncher, view: TrackingView, job_id: str) -> Job:
    """Bring one job's row up to date: status from Ray, run id, progress and model from MLflow."""
    with store.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise not_found("job", job_id)
        if job.status in TERMINAL and job.run_id is not None and (job.status != "SUCCEEDED" or job.model_version):
            return job
        info = launcher.info(job.submission_id)
        if info is None:
            # a row is written just before its submission: give the submission time to land
            if job.status in ACTIVE and unknown_for_too_long(job.updated_at):
                job.status = "FAILED"
                job.message = ("Ray has no record of this job (was the cluster restarted?); "
                               "resume it to continue from its last checkpoint")
                job.finished_at = utcnow()
            return job
        if job.run_id is None:
            job.run_id = view.find_run(job.id)
            if job.run_id is not None:
                spec_workers = json.loads(job.spec)["resources"]["rollout_workers"]
                if job.rollout_workers != spec_workers:  # scaled before the run existed
                    view.set_desired_workers(job.run_id, job.rollout_workers)
        if job.run_id is not None:
            state = view.run_state(job.run_id)
            job.iteration = min(state.iteration, job.iterations)
            job.latest_metrics = json.dumps(state.metrics)
            _keep_declaration(job, state.tags.get(METRICS_TAG))
            uri = state.tags.get(MODEL_URI_TAG)
            if uri and uri.startswith("models:/"):
                name, _, version = uri.removeprefix("models:/").rpartition("/")
                job.model_name, job.model_version = name, version
            failure = state.tags.get(FAILURE_TAG)
        else:
            failure = None
        if info.status != job.status:
            log.info("job %s: %s -> %s", job.id, job.status, info.status)
            job.status = info.status
            if info.status in TERMINAL:
                job.finished_at = utcnow()
        if info.status == "FAILED":
            job.message = failure or info.message or job.message
        elif info.status == "STOPPED":
            job.message = job.message or "stopped"
        return job


def _keep_declaration(job: Job, tag: str | None) -> None:
    """Keep the metrics the run declares (its driver's tag: the algorithm as the engine knows it)."""
    found = declared.parse_json(tag)
    if found is not None:
        text = json.dumps(found)
        if text != job.metric_names:
            job.metric_names = text


def reconcile(*, store: Store, launcher: RayLauncher, view: TrackingView) -> int:
    """Refresh every non-terminal job (start-up: a restarted service loses nothing)."""
    with store.session() as s:
        ids = list(s.scalars(select(Job.id).where(Job.status.in_(ACTIVE))))
    for job_id in ids:
        try:
            refresh(store=store, launcher=launcher, view=view, job_id=job_id)
        except (LauncherError, ApiError) as exc:
            log.warning("reconcile %s: %s", job_id, exc)
    return len(ids)


async def poll_forever(app: FastAPI) -> None:
    """Keep active jobs and evaluations fresh (status, progress, model, results) every
    ``poll_interval_s``."""
    st = app.state
    # held for the process's life; created 0600 like everything the service writes
    lock = os.fdopen(os.open(st.settings.home / ".poller.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a")
    holder = False
    while True:
        await asyncio.sleep(st.settings.poll_interval_s)
        if not holder:  # with several server processes, one polls; another takes over if it dies
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                holder = True
            except BlockingIOError:
                continue
        for fn in (reconcile, evaluations.refresh_active):
            try:
                await asyncio.to_thread(fn, store=st.store, launcher=st.launcher, view=st.view)
            except Exception as exc:  # noqa: BLE001 - a poller that dies silently would freeze every status
                log.warning("poller (%s): %s", fn.__name__, exc)


# ---- control -------------------------------------------------------------------------------------
def _row(s: Session, job_id: str) -> Job:
    """The job's row in session ``s`` (404 when it went meanwhile)."""
    row = s.get(Job, job_id)
    if row is None:
        raise not_found("job", job_id)
    return row


def cancel_job(*, store: Store, caches: JobCaches, launcher: RayLauncher, view: TrackingView, principal: Principal,
               job_id: str) -> Job:
    """Stop a job: Ray stops its driver, whose actors and placement groups go with it."""
    job = get_job(store=store, caches=caches, principal=principal, job_id=job_id)
    if job.status in TERMINAL:
        raise conflict(f"job {job_id} is already {job.status}")
    try:
        launcher.stop(job.submission_id)
    except LauncherError as exc:
        raise unavailable(str(exc)) from exc
    with store.session() as s:
        _row(s, job_id).message = f"cancelled by {principal.owner}"
    deadline = time.monotonic() + CANCEL_WAIT_S
    while True:
        job = refresh(store=store, launcher=launcher, view=view, job_id=job_id)
        if job.status in TERMINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.25)


def scale_job(*, store: Store, caches: JobCaches, view: TrackingView, principal: Principal, job_id: str,
              rollout_workers: int) -> Job:
    """Ask a running job for ``rollout_workers`` rollout actors from its next iteration on."""
    job = get_job(store=store, caches=caches, principal=principal, job_id=job_id)
    if job.status in TERMINAL:
        raise conflict(f"job {job_id} is {job.status}; only a pending or running job can be scaled")
    with store.session() as s:
        row = _row(s, job_id)
        row.rollout_workers = rollout_workers
        run_id = row.run_id
    if run_id is not None:
        view.set_desired_workers(run_id, rollout_workers)
    return get_job(store=store, caches=caches, principal=principal, job_id=job_id)


def resume_job(*, store: Store, caches: JobCaches, launcher: RayLauncher, view: TrackingView, principal: Principal,
               job_id: str) -> Job:
    """A new attempt of a stopped or failed job, from its run's last checkpoint."""
    job = get_job(store=store, caches=caches, principal=principal, job_id=job_id)
    if job.status not in ("STOPPED", "FAILED"):
        raise conflict(f"job {job_id} is {job.status}; only a stopped or failed job can be resumed")
    run_id = job.run_id
    if run_id is None or not view.has_checkpoint(run_id):
        raise conflict(f"job {job_id} has no checkpoint to resume from (it stopped before its first checkpoint)")
    attempt = job.attempt + 1
    submission_id = f"{job.id}-r{attempt}"
    try:
        launcher.submit_driver(submission_id=submission_id, job_id=job.id, owner=job.owner, spec_json=job.spec,
                               resume_run_id=run_id)
    except LauncherError as exc:
        raise unavailable(str(exc)) from exc
    if job.rollout_workers != json.loads(job.spec)["resources"]["rollout_workers"]:
        view.set_desired_workers(run_id, job.rollout_workers)
    caches.settled.drop(job_id)
    with store.session() as s:
        row = _row(s, job_id)
        row.attempt, row.submission_id, row.status = attempt, submission_id, "PENDING"
        row.message = f"resumed (attempt {attempt}) from the checkpoint at iteration {row.iteration}"
        row.finished_at = None
    caches.settled.drop(job_id)
    log.info("job %s resumed as %s", job_id, submission_id)
    return get_job(store=store, caches=caches, principal=principal, job_id=job_id)


def events_payload(kind: str, data: Any, *, event_id: int | None = None) -> str:
    head = "" if event_id is None else f"id: {event_id}\n"
    return f"{head}event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
