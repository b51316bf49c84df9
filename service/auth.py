"""API keys: ``Authorization: Bearer mrl_...``.  Keys are random (256 bits), so a SHA-256 of the
key is a safe stored form; the key itself is shown once.  The first start writes an admin key to
``<data dir>/admin.key`` with mode 0600, which the CLI picks up on the same machine."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from service.db import ApiKey, Store

PREFIX = "mrl_"
OWNER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    owner: str
    is_admin: bool
    key_id: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(store: Store, *, owner: str, is_admin: bool = False) -> tuple[str, str]:
    """A new key for ``owner``; returns ``(key_id, key)`` (the key is not stored)."""
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    with store.session() as s:
        s.add(ApiKey(id=key_id, owner=owner, key_hash=hash_key(key), is_admin=is_admin))
    return key_id, key


def authenticate(store: Store, key: str) -> Principal | None:
    if not key.startswith(PREFIX):
        return None
    digest = hash_key(key)
    with store.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None or row.revoked or not hmac.compare_digest(row.key_hash, digest):
        return None
    return Principal(owner=row.owner, is_admin=row.is_admin, key_id=row.id)


def revoke_key(store: Store, key_id: str) -> bool:
    with store.session() as s:
        row = s.get(ApiKey, key_id)
        if row is None:
            return False
        row.revoked = True
    return True


def bootstrap_admin(store: Store, *, path: Path, owner: str) -> str | None:
    """Create the admin key on first start and write it to ``path`` (0600).  Returns the new key,
    or None when an admin key already exists."""
    with store.session() as s:
        exists = s.scalar(select(ApiKey).where(ApiKey.is_admin.is_(True), ApiKey.revoked.is_(False)))
    if exists is not None and path.is_file():
        return None
    _, key = create_key(store, owner=owner, is_admin=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return key
