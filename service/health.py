"""Liveness: are Ray's job server, MLflow and the job store reachable?"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text

from service.db import Store
from service.launcher import RayLauncher
from service.schemas import Health
from service.tracking_view import TrackingView

log = logging.getLogger("metarl.service.health")


def database_reachable(store: Store) -> bool:
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable" for the health check
        log.warning("health: job store: %s", exc)
        return False


async def check(*, store: Store, launcher: RayLauncher, view: TrackingView, version: str) -> Health:
    """All three checks at once (each is blocking I/O with its own timeout)."""
    ray_ok, mlflow_ok, db_ok = await asyncio.gather(
        asyncio.to_thread(launcher.reachable), asyncio.to_thread(view.reachable),
        asyncio.to_thread(database_reachable, store))
    ok = ray_ok and mlflow_ok and db_ok
    return Health(status="ok" if ok else "degraded", ray=ray_ok, mlflow=mlflow_ok, database=db_ok, version=version)
