"""The job store, keys and settings without a server: migrations agree with the models and keep
data, keys are stored hashed, settings refuse bad values."""

from __future__ import annotations

import hashlib
import stat

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import select

from service import auth
from service.db import ApiKey, Base, Job, Store
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


def test_an_upgrade_from_0001_keeps_jobs_and_adds_latest_metrics(tmp_path):
    from alembic import command
    from alembic.config import Config

    from service.db import MIGRATIONS

    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql(
            "INSERT INTO jobs (id, owner, name, spec, status, attempt, submission_id, iteration, iterations,"
            " rollout_workers, created_at, updated_at) VALUES ('job-old', 'ann', 'n', '{}', 'SUCCEEDED', 1,"
            " 'job-old', 10, 10, 2, '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
        cols = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(jobs)")}
    assert "latest_metrics" not in cols
    store.migrate()  # to head
    with store.engine.connect() as conn:
        cols = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(jobs)")}
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    assert "latest_metrics" in cols and version == "0002"
    with store.session() as s:
        job = s.get(Job, "job-old")
        assert job is not None and job.status == "SUCCEEDED" and job.iteration == 10 and job.latest_metrics is None


def test_keys_are_hashed_checked_and_revocable(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    secret = auth.load_secret(home=tmp_path / "home")
    assert stat.S_IMODE((tmp_path / "home" / "key_secret").stat().st_mode) == 0o600
    assert auth.load_secret(home=tmp_path / "home") == secret  # generated once, then kept
    key_id, key = auth.create_key(store, owner="ann", secret=secret)
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT key_hash FROM api_keys").scalars().all()
    # a keyed hash: neither the key nor its plain SHA-256 is stored
    assert key not in stored and auth.hash_key(key, secret=secret) in stored
    assert hashlib.sha256(key.encode()).hexdigest() not in stored
    p = auth.authenticate(store, key, secret=secret)
    assert p is not None and p.owner == "ann" and not p.is_admin
    assert auth.authenticate(store, key, secret=b"another server") is None
    assert auth.authenticate(store, key + "x", secret=secret) is None
    assert auth.authenticate(store, "not-a-key", secret=secret) is None
    assert auth.cached_principal(key, secret=secret) == p  # checked once: cached for a few seconds
    assert auth.revoke_key(store, key_id)
    assert auth.cached_principal(key, secret=secret) is None  # revocation empties this process's cache
    assert auth.authenticate(store, key, secret=secret) is None


def test_keys_stored_unkeyed_by_an_earlier_version_still_work_and_are_rehashed(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    secret = auth.load_secret(home=tmp_path, configured="s3cret")
    key = "mrl_0123456789ab_" + "x" * 43
    with store.session() as s:
        s.add(ApiKey(id="0123456789ab", owner="ann", key_hash=hashlib.sha256(key.encode()).hexdigest()))
    p = auth.authenticate(store, key, secret=secret)
    assert p is not None and p.owner == "ann"
    with store.session() as s:
        assert s.get(ApiKey, "0123456789ab").key_hash == auth.hash_key(key, secret=secret)


def test_admin_key_is_written_once_with_mode_0600(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    path = tmp_path / "home" / "admin.key"
    secret = auth.load_secret(home=tmp_path / "home")
    key = auth.bootstrap_admin(store, path=path, owner="admin", secret=secret)
    assert key is not None and path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.bootstrap_admin(store, path=path, owner="admin", secret=secret) is None  # second start: kept
    principal = auth.authenticate(store, key, secret=secret)
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


def test_a_cached_list_page_never_outlives_a_change_made_by_another_process(tmp_path):
    """``GET /v1/jobs`` pages are served from memory while the caller's job set is unchanged;
    a second Store on the same file stands for another server process writing."""
    import json

    from sqlalchemy import delete, update

    from service import jobs
    from service.auth import Principal

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    here, other = Store(url), Store(url)
    here.migrate()
    ann = Principal(owner="ann", is_admin=False, key_id="k-ann")
    admin = Principal(owner="admin", is_admin=True, key_id="k-admin")

    def add(job_id: str, owner: str = "ann") -> None:
        with other.session() as s:
            s.add(Job(id=job_id, owner=owner, name=job_id, spec="{}", status="RUNNING", attempt=1, submission_id=job_id,
                      iteration=0, iterations=10, rollout_workers=2))

    def page(who: Principal = ann, **kw) -> dict:
        args = {"status": None, "offset": 0, "limit": 20} | kw
        return json.loads(jobs.list_page(store=here, principal=who, **args))

    add("job-a")
    first = page()
    assert [j["id"] for j in first["data"]] == ["job-a"] and first["count"] == 1
    assert page() == first  # served again, unchanged
    add("job-b")  # an insert
    assert [j["id"] for j in page()["data"]] == ["job-b", "job-a"]
    with other.session() as s:  # an update
        s.execute(update(Job).where(Job.id == "job-a").values(status="SUCCEEDED", iteration=10))
    shown = {j["id"]: j for j in page()["data"]}
    assert shown["job-a"]["status"] == "SUCCEEDED" and shown["job-a"]["progress"]["iteration"] == 10
    assert [j["id"] for j in page(status="SUCCEEDED")["data"]] == ["job-a"]
    with other.session() as s:  # a delete
        s.execute(delete(Job).where(Job.id == "job-b"))
    assert [j["id"] for j in page()["data"]] == ["job-a"] and page()["count"] == 1
    add("job-z", owner="bob")  # another owner's job: not in ann's page, in the admin's
    assert page()["count"] == 1 and page(admin)["count"] == 2
    assert page(limit=1, offset=1)["data"] == []


def test_cached_list_pages_stay_within_their_byte_budget(tmp_path, monkeypatch):
    from service import jobs
    from service.auth import Principal

    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    with store.session() as s:
        for i in range(30):
            s.add(Job(id=f"job-{i:02d}", owner="ann", name="n", spec="{}", status="RUNNING", attempt=1,
                      submission_id=f"job-{i:02d}", iteration=0, iterations=10, rollout_workers=2))
    pages = jobs._ListPages()
    ann = Principal(owner="ann", is_admin=False, key_id="k")
    version = pages.version(store, ann)
    one = pages.build(store=store, principal=ann, status=None, offset=0, limit=5, version=version)
    monkeypatch.setattr(jobs._ListPages, "MAX_BYTES", 3 * len(one))
    for offset in range(10):  # pages of 5 jobs each about the same size: at most 3 stay
        pages.build(store=store, principal=ann, status=None, offset=offset, limit=5, version=version)
    kept = [k for k in range(10) if pages.cached(store=store, principal=ann, status=None, offset=k, limit=5, version=version)]
    assert kept == [7, 8, 9] and pages._bytes <= 3 * len(one)
