"""Typed dependencies: settings, the job store, the Ray launcher, the MLflow view, the caller."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request

from service.adapt import AdaptServers
from service.auth import KeyCache, Principal, authenticate, cached_principal
from service.db import Store
from service.errors import ApiError
from service.jobs import JobCaches
from service.launcher import RayLauncher
from service.settings import Settings
from service.tracking_view import TrackingView


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_launcher(request: Request) -> RayLauncher:
    return request.app.state.launcher


async def get_view(request: Request) -> TrackingView:
    return request.app.state.view


async def get_adapt_servers(request: Request) -> AdaptServers:
    return request.app.state.adapt_servers


async def get_job_caches(request: Request) -> JobCaches:
    return request.app.state.job_caches


async def get_key_cache(request: Request) -> KeyCache:
    return request.app.state.key_cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
LauncherDep = Annotated[RayLauncher, Depends(get_launcher)]
ViewDep = Annotated[TrackingView, Depends(get_view)]
AdaptServersDep = Annotated[AdaptServers, Depends(get_adapt_servers)]
JobCachesDep = Annotated[JobCaches, Depends(get_job_caches)]
KeyCacheDep = Annotated[KeyCache, Depends(get_key_cache)]


async def get_principal(request: Request, store: StoreDep, cache: KeyCacheDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'")
    secret = request.app.state.key_secret
    # a key checked within the last seconds needs no store query (and no thread)
    principal = cached_principal(key.strip(), secret=secret, cache=cache)
    if principal is None:
        principal = await asyncio.to_thread(authenticate, store, key.strip(), secret=secret, cache=cache)
    if principal is None:
        raise ApiError(401, "unauthorized", "invalid or revoked API key")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this needs an admin key")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
