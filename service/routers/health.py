"""``GET /healthz`` (liveness) and ``GET /metrics`` (Prometheus); neither needs a key."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service import health, observability
from service.deps import LauncherDep, StoreDep, ViewDep
from service.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health,
            responses={503: {"model": Health, "description": "degraded: Ray, MLflow or the job store unreachable"}})
async def healthz(request: Request, store: StoreDep, launcher: LauncherDep, view: ViewDep) -> Response:
    """200 ``{"status": "ok", ...}`` when Ray's job server, MLflow and the job store answer;
    503 with the same body (``"status": "degraded"``) when one does not."""
    result = await health.check(store=store, launcher=launcher, view=view, version=request.app.version)
    return JSONResponse(result.model_dump(), status_code=200 if result.status == "ok" else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {observability.CONTENT_TYPE: {}}, "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    return Response(observability.render(request), media_type=observability.CONTENT_TYPE)
