"""The job store, keys and settings without a server: migrations agree with the models and keep
data, keys are stored hashed, settings refuse bad values."""

from __future__ import annotations

import stat

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import select

from service import auth
from service.db import Base, Job, Store
from service.settings import Settings


def test_migrations_match_the_models_and_an_upgrade_keeps_jobs(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    with store.session() as s:
        s.add(Job(id="job-1", owner="ann", name="n", spec="{}", status="RUNNING", attempt=1, submission_id="job-1",
                  iteration=3, iterations=10, rollout_workers=2))
    store.dispose()
    again = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    again.migrate()  # a restart (or an upgrade) runs the migrations again: nothing is lost
    with again.session() as s:
        job = s.scalar(select(Job).where(Job.id == "job-1"))
        assert job is not None and job.iteration == 3 and job.status == "RUNNING"


def test_keys_are_hashed_checked_and_revocable(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    key_id, key = auth.create_key(store, owner="ann")
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT key_hash FROM api_keys").scalars().all()
    assert key not in stored and auth.hash_key(key) in stored
    p = auth.authenticate(store, key)
    assert p is not None and p.owner == "ann" and not p.is_admin
    assert auth.authenticate(store, key + "x") is None
    assert auth.authenticate(store, "not-a-key") is None
    assert auth.revoke_key(store, key_id)
    assert auth.authenticate(store, key) is None


def test_admin_key_is_written_once_with_mode_0600(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    path = tmp_path / "home" / "admin.key"
    key = auth.bootstrap_admin(store, path=path, owner="admin")
    assert key is not None and path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.bootstrap_admin(store, path=path, owner="admin") is None  # second start: kept
    principal = auth.authenticate(store, key)
    assert principal is not None and principal.is_admin


def test_settings_come_from_the_environment_and_refuse_bad_values(monkeypatch, tmp_path):
    monkeypatch.setenv("METARL_HOME", str(tmp_path))
    monkeypatch.setenv("METARL_PORT", "9123")
    monkeypatch.setenv("METARL_RAY_DASHBOARD", "http://10.0.0.5:8265/")
    s = Settings()
    assert s.port == 9123 and s.ray_dashboard == "http://10.0.0.5:8265" and s.host == "127.0.0.1"
    assert s.db_url == f"sqlite:///{tmp_path / 'metarl.db'}"
    monkeypatch.setenv("METARL_DATABASE_URL", "postgresql+psycopg://u:p@db/metarl")
    assert Settings().db_url == "postgresql+psycopg://u:p@db/metarl"
    monkeypatch.setenv("METARL_PORT", "0")
    with pytest.raises(ValidationError, match="port"):
        Settings()
    monkeypatch.setenv("METARL_PORT", "8000")
    monkeypatch.setenv("METARL_RAY_DASHBOARD", "10.0.0.5:8265")
    with pytest.raises(ValidationError, match="http"):
        Settings()
