"""API keys: ``Authorization: Bearer mrl_<id>_<random>``.  Keys are random (256 bits), so a keyed
hash is a safe stored form and a cheap check: the store holds ``HMAC-SHA256(server secret, key)``
(hex), looked up by that digest and compared in constant time -- no password hash per request.
The server secret is ``METARL_KEY_SECRET`` or ``<data dir>/key_secret`` (generated on first start,
mode 0600; replicas sharing a job store must share it).  Keys stored by an earlier version as an
unkeyed SHA-256 still work and are re-stored keyed on first use.

A small in-memory cache (:class:`KeyCache`, one per app: ``app.state.key_cache``) maps recent
digests to their principal for :data:`CACHE_TTL_S` seconds (a hot client costs no store query per
request); revoking a key drops it from that cache at once, and from any other process's within
the TTL.  The key itself is shown once.  The first
start writes an admin key to ``<data dir>/admin.key`` with mode 0600, which the CLI picks up on
the same machine."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from service.db import ApiKey, Store

PREFIX = "mrl_"
OWNER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: how long a checked key is trusted without asking the store again
CACHE_TTL_S = 5.0
CACHE_SIZE = 1024


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    owner: str
    is_admin: bool
    key_id: str


def load_secret(*, home: Path, configured: str | None = None) -> bytes:
    """The server's key-hashing secret: ``configured`` (``METARL_KEY_SECRET``) if given, else
    ``home/key_secret``, created with 32 random bytes (mode 0600) when missing."""
    if configured:
        return configured.encode()
    path = home / "key_secret"
    if not path.is_file():
        home.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it just now
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip().encode()


def hash_key(key: str, *, secret: bytes) -> str:
    """The stored form of ``key``: HMAC-SHA256 under the server secret, hex."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def _legacy_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyCache:
    """digest -> (expiry, principal), bounded, thread-safe; one per app."""

    def __init__(self, *, ttl_s: float = CACHE_TTL_S, size: int = CACHE_SIZE) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._items: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        with self._lock:
            hit = self._items.get(digest)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                del self._items[digest]
                return None
            return hit[1]

    def put(self, digest: str, principal: Principal) -> None:
        with self._lock:
            self._items[digest] = (time.monotonic() + self.ttl_s, principal)
            self._items.move_to_end(digest)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, (_, p) in self._items.items() if p.key_id == key_id]:
                del self._items[digest]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()



def create_key(store: Store, *, owner: str, secret: bytes, is_admin: bool = False) -> tuple[str, str]:
    """A new key for ``owner``; returns ``(key_id, key)`` (the key is not stored)."""
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    with store.session() as s:
        s.add(ApiKey(id=key_id, owner=owner, key_hash=hash_key(key, secret=secret), is_admin=is_admin))
    return key_id, key


def cached_principal(key: str, *, secret: bytes, cache: KeyCache) -> Principal | None:
    """The principal of ``key`` if it was checked within the TTL (no store access)."""
    if not key.startswith(PREFIX):
        return None
    return cache.get(hash_key(key, secret=secret))


def authenticate(store: Store, key: str, *, secret: bytes, cache: KeyCache) -> Principal | None:
    """The principal of a valid, unrevoked ``key`` (kept in ``cache`` for the TTL), else None."""
    if not key.startswith(PREFIX):
        return None
    digest = hash_key(key, secret=secret)
    hit = cache.get(digest)
    if hit is not None:
        return hit
    with store.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
        if row is None:  # stored by an earlier version: re-store it keyed
            legacy = _legacy_hash(key)
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == legacy))
            if row is None or not hmac.compare_digest(row.key_hash, legacy):
                return None
            row.key_hash = digest
        if row.revoked or not hmac.compare_digest(row.key_hash, digest):
            return None
        principal = Principal(owner=row.owner, is_admin=row.is_admin, key_id=row.id)
    cache.put(digest, principal)
    return principal


def revoke_key(store: Store, key_id: str, *, cache: KeyCache) -> bool:
    """Revoke the key (False when there is none with that id) and forget it in ``cache``."""
    with store.session() as s:
        row = s.get(ApiKey, key_id)
        if row is None:
            return False
        row.revoked = True
    cache.drop(key_id)
    return True


def bootstrap_admin(store: Store, *, path: Path, owner: str, secret: bytes) -> str | None:
    """Create the admin key on first start and write it to ``path`` (0600).  Returns the new key,
    or None when an admin key already exists."""
    with store.session() as s:
        exists = s.scalar(select(ApiKey).where(ApiKey.is_admin.is_(True), ApiKey.revoked.is_(False)))
    if exists is not None and path.is_file():
        return None
    _, key = create_key(store, owner=owner, is_admin=True, secret=secret)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return key
