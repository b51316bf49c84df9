"""The FastAPI app factory: ``create_app(settings)``.

Start-up migrates the job store, writes the admin key on first start, reconciles every
non-terminal job with Ray (a restarted service loses nothing), and starts the poller that keeps
running jobs' status and progress fresh."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.engine import make_url
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


#: How much of a streamed body past the limit is still read (and dropped) before the 413: a client
#: sends its whole body before it reads the answer, so closing on it unread would cost it the 413.
#: A body longer than the limit plus this gets the 413 and a closed connection.
DRAIN_BYTES = 8 << 20


class HeaderLimit:
    """431 for a request whose request line and headers together are over ``limit`` bytes.  The
    HTTP server (h11, ``METARL_MAX_HEADER_BYTES``) refuses a header block that it has to read in
    several pieces, with a 400, before it is parsed; one that came in a single read reaches here."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
            size += sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or [])
            if size > self.limit:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1009})
                    return
                await _send_json(send, 431, errors.body(
                    "headers_too_large", f"request line and headers over {self.limit} bytes"), close=True)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for request bodies over ``limit`` bytes, declared (Content-Length) or streamed
    (chunked), and 422 for JSON bodies nested deeper than ``max_depth``, both in the service's
    error shape.  A request with a body is read whole (at most ``limit`` bytes) before the app
    sees it: the routes parse it whole anyway."""

    def __init__(self, app: ASGIApp, limit: int, max_depth: int = 64) -> None:
        self.app, self.limit, self.max_depth = app, limit, max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(send, close=True)
            return
        if (declared is None or declared == b"0") and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        chunks: list[bytes] = []
        seen, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            more = bool(message.get("more_body", False))
            if seen > self.limit:
                drained = await self._drain(receive, more=more, seen=seen)
                await self._too_large(send, close=not drained)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        if is_json(headers.get(b"content-type")) and json_too_deep(body, self.max_depth):
            message = f"JSON nested deeper than {self.max_depth} levels"
            await _send_json(send, 422, errors.body("invalid_request", f"invalid request: body: {message}",
                                                    [{"field": "body", "message": message, "type": "json_too_deep"}]))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect a stream waits for

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, *, more: bool, seen: int) -> bool:
        """Read and drop the rest of an over-limit body, up to ``DRAIN_BYTES``; whether it all came."""
        while more:
            if seen > self.limit + DRAIN_BYTES:
                return False
            message = await receive()
            if message["type"] != "http.request":
                return False
            seen += len(message.get("body", b""))
            more = bool(message.get("more_body", False))
        return True

    async def _too_large(self, send: Send, *, close: bool) -> None:
        await _send_json(send, 413, errors.body("too_large", f"request body over {self.limit} bytes"), close=close)


async def _send_json(send: Send, status: int, content: dict, *, close: bool = False) -> None:
    payload = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:  # the body was not read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def is_json(content_type: bytes | None) -> bool:
    """Whether the route parses a body of this content type as JSON (``application/json``, ``+json``)."""
    if not content_type:
        return False
    kind = content_type.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))


#: every byte but JSON's brackets and the string quote (dropped before the depth scan)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def json_too_deep(body: bytes, limit: int) -> bool:
    """Whether the JSON text ``body`` nests arrays and objects more than ``limit`` deep, by one scan
    of its brackets outside strings (no parse: the route parses the body itself, and a parse of
    a deep one would recurse).  Escaped backslashes and quotes are removed first, so that what is
    left of a string is its quotes; brackets inside strings are not nesting."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    structure = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    depth, in_string = 0, False
    for ch in structure:
        if ch == 0x22:  # "
            in_string = not in_string
        elif in_string:
            continue
        elif ch in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        else:  # ] }
            depth -= 1
    return False


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between the server processes of one data dir."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _private(path: Path, mode: int) -> None:
    """``chmod mode`` on ``path`` when it exists, is ours and is not a symlink (a failure is logged)."""
    try:
        st = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) == mode:
        return
    try:
        os.chmod(path, mode)
    except OSError as exc:
        log.warning("could not make %s private (mode %o): %s", path, mode, exc)


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory ones."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL (an MLflow server's http://): no file of ours
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


#: MLflow's HTTP client settings in the API process: few, short retries
MLFLOW_HTTP_FOR_REQUESTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                            "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def make_home_private(settings: Settings) -> None:
    """The data dir 0700 (created so; an existing one tightened), its local SQLite stores (job
    store, MLflow) and their journals 0600, and a local artifact root inside it 0700: other
    users of the machine must not read jobs, keys or models."""
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    _private(settings.home, 0o700)
    for url in (settings.db_url, settings.tracking_uri):
        db = _sqlite_file(url)
        if db is not None:
            for p in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))):
                _private(p, 0o600)
    artifacts = Path(settings.artifacts.removeprefix("file://"))
    if artifacts.is_absolute() and artifacts.resolve().is_relative_to(settings.home.resolve()):
        _private(artifacts, 0o700)
    for name in (".startup.lock", ".poller.lock"):
        _private(settings.home / name, 0o600)


def create_app(settings: Settings | None = None, *, launcher: RayLauncher | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        make_home_private(settings)
        if settings.tracking_uri.startswith(("http://", "https://")):
            # a request that reads MLflow fails within seconds while the tracking server is down
            # (MLflow's client otherwise retries for minutes); drivers keep MLflow's patient defaults
            for k, v in MLFLOW_HTTP_FOR_REQUESTS.items():
                os.environ.setdefault(k, v)
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
                make_home_private(settings)  # what the first start created (the stores, their journals)
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
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, max_depth=settings.max_json_depth)
    app.add_middleware(HeaderLimit, limit=settings.max_header_bytes)
    return app
