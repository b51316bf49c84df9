"""``GET /v1/cluster``: nodes, CPUs, GPUs and free capacity, from Ray's dashboard."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from service import cluster
from service.deps import LauncherDep, PrincipalDep
from service.schemas import ClusterPublic

router = APIRouter(prefix="/v1/cluster", tags=["cluster"])


@router.get("", response_model=ClusterPublic)
async def show(launcher: LauncherDep, _: PrincipalDep) -> ClusterPublic:
    """Every node (alive or not) with its resources; totals and free capacity over alive nodes."""
    return await asyncio.to_thread(cluster.cluster_view, launcher=launcher)
