"""The FastAPI app factory: ``create_app(settings)``.

Start-up migrates the job store, writes the admin key on first start, reconciles every
non-terminal job with Ray (a restarted service loses nothing), and starts the poller that keeps
running jobs' status and progress fresh."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors, jobs, observability
from service.adapt import AdaptServers
from service.auth import KeyCache, bootstrap_admin, load_secret
from service.db import Store
from service.launcher import RayLauncher
from service.routers import cluster, health, keys, models
from service.routers import jobs as jobs_router
from service.schemas import ERROR_RESPONSES
from service.settings import Settings
from service.tracking_view import TrackingView

log = logging.getLogger("metarl.service")

VERSION = "0.1.0"


class BodyLimit:
    """413 for request bodies over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        import json

        payload = json.dumps(errors.body("too_large", f"request body over {self.limit} bytes")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class _TooLarge(Exception):
    pass


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between the server processes of one data dir."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def create_app(settings: Settings | None = None, *, launcher: RayLauncher | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.home.mkdir(parents=True, exist_ok=True)
        store = Store(settings.db_url)

        def first_start() -> tuple[bytes, str | None]:
            # several server processes (METARL_WORKERS) start at once: one migrates and bootstraps
            # (the job store, and a local MLflow store, whose first use creates its tables)
            with file_lock(settings.home / ".startup.lock"):
                store.migrate()
                TrackingView(settings.tracking_uri).reachable()
                secret = load_secret(home=settings.home,
                                     configured=settings.key_secret.get_secret_value() if settings.key_secret else None)
                created = bootstrap_admin(store, path=settings.admin_key_file, owner=settings.admin_owner,
                                          secret=secret)
                return secret, created

        secret, created = await asyncio.to_thread(first_start)
        if created:
            log.warning("first start: admin API key written to %s (mode 0600)", settings.admin_key_file)
        app.state.settings = settings
        app.state.store = store
        app.state.key_secret = secret
        app.state.launcher = launcher or RayLauncher(settings)
        app.state.view = TrackingView(settings.tracking_uri)
        app.state.adapt_servers = AdaptServers.from_settings(settings)  # started on the first adapt request
        if settings.reconcile_on_start:
            n = await asyncio.to_thread(jobs.reconcile, store=store, launcher=app.state.launcher, view=app.state.view)
            if n:
                log.info("reconciled %d unfinished job(s) with Ray", n)
        # everything loaded so far (FastAPI, MLflow, SQLAlchemy: ~10^6 objects) lives as long as the
        # process: keep it out of the cyclic GC, whose full passes otherwise stall every request
        gc.collect()
        gc.freeze()
        # request garbage is short-lived and acyclic: collect the young generation rarely
        gc.set_threshold(50_000, 20, 20)
        poller = asyncio.create_task(jobs.poll_forever(app))
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await asyncio.to_thread(app.state.adapt_servers.close)
            store.dispose()

    app = FastAPI(title="metarl", version=VERSION, lifespan=lifespan, responses=ERROR_RESPONSES,
                  description="Meta-RL training jobs on Ray, models in MLflow.")
    # the requests' shared in-memory state is this app's (two apps in a process share nothing)
    app.state.job_caches = jobs.JobCaches()
    app.state.key_cache = KeyCache()
    errors.install(app)
    observability.install(app)
    for r in (jobs_router.router, models.router, cluster.router, keys.router, health.router):
        app.include_router(r)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
