"""``/v1/keys``: API keys (admin only)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from sqlalchemy import select

from service import auth
from service.db import ApiKey
from service.deps import AdminDep, KeyCacheDep, StoreDep
from service.errors import not_found
from service.schemas import KeyCreate, KeyPublic

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", status_code=201, response_model=KeyPublic)
async def create(body: KeyCreate, request: Request, store: StoreDep, _: AdminDep) -> KeyPublic:
    """A new key for ``owner``; the key is in this response only (it is stored hashed)."""
    key_id, key = await asyncio.to_thread(auth.create_key, store, owner=body.owner, is_admin=body.admin,
                                          secret=request.app.state.key_secret)
    return KeyPublic(id=key_id, owner=body.owner, admin=body.admin, key=key)


@router.get("", response_model=list[KeyPublic])
async def list_(store: StoreDep, _: AdminDep) -> list[KeyPublic]:
    def rows() -> list[ApiKey]:
        with store.session() as s:
            return list(s.scalars(select(ApiKey).where(ApiKey.revoked.is_(False)).order_by(ApiKey.created_at)))

    return [KeyPublic(id=r.id, owner=r.owner, admin=r.is_admin) for r in await asyncio.to_thread(rows)]


@router.delete("/{key_id}", status_code=204)
async def revoke(key_id: str, store: StoreDep, cache: KeyCacheDep, _: AdminDep) -> None:
    if not await asyncio.to_thread(auth.revoke_key, store, key_id, cache=cache):
        raise not_found("key", key_id)
