"""The job store, keys and settings without a server: migrations agree with the models and keep
data, keys are stored hashed, settings refuse bad values."""

from __future__ import annotations

import datetime as dt
import hashlib
import stat

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import select

from service import auth
from service.db import ApiKey, Base, Evaluation, Job, Store
from service.settings import Settings

#: the newest migration
HEAD = "0003"


def _migrate(store: Store, revision: str, *, down: bool = False) -> None:
    """Bring ``store`` to ``revision`` (up, or ``down`` to it), as an older or newer service would."""
    from alembic import command
    from alembic.config import Config

    from service.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _columns(store: Store, table: str) -> set[str]:
    from sqlalchemy import inspect

    with store.engine.connect() as conn:
        return {c["name"] for c in inspect(conn).get_columns(table)}


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
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    _migrate(store, "0001")
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO jobs (id, owner, name, spec, status, attempt, submission_id, iteration, iterations,"
            " rollout_workers, created_at, updated_at) VALUES ('job-old', 'ann', 'n', '{}', 'SUCCEEDED', 1,"
            " 'job-old', 10, 10, 2, '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
    assert "latest_metrics" not in _columns(store, "jobs")
    store.migrate()  # to head
    with store.engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    assert "latest_metrics" in _columns(store, "jobs") and version == HEAD
    with store.session() as s:
        job = s.get(Job, "job-old")
        assert job is not None and job.status == "SUCCEEDED" and job.iteration == 10 and job.latest_metrics is None


#: rows a 0002 store holds: jobs (one per way of knowing its algorithm), evaluations (the three RL
#: columns: all set, one NULL, all NULL), a key
MAML_SPEC = '{"name": "nav", "algorithm": {"name": "maml", "inner_lr": 0.1}, "task_family": {"name": "navigation2d"}}'
OLD_JOBS = {  # id -> (spec, latest_metrics)
    "job-maml": (MAML_SPEC, '{"meta/return_pre": -69.625, "meta/return_post": -41.7, "perf/env_steps_per_s": 1234.5}'),
    "job-mt": ('{"algorithm": {"name": "multitask-pg"}}', '{"meta/return_pre": -3.5, "meta/success_pre": 0.25}'),
    "job-bare": ("{}", None),  # no algorithm in the spec
    "job-gone": ('{"algorithm": {"name": "no-longer-registered"}}', "{}"),
}
OLD_EVALUATIONS = {  # id -> (return_pre, return_post, success_post)
    "eval-ml1": (-12.5, 30.1, 0.75),
    "eval-nav": (-50.0, -20.2, None),  # navigation: no success signal
    "eval-running": (None, None, None),
}


def _fill_0002(store: Store) -> None:
    """The rows above in a 0002 store, by portable SQL (SQLite and PostgreSQL)."""
    from sqlalchemy import text

    when = dt.datetime(2026, 1, 1)
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO api_keys (id, owner, key_hash, is_admin, created_at, revoked)"
                          " VALUES ('k1', 'ann', 'digest', :f, :when, :f)"), {"f": False, "when": when})
        for job_id, (spec, metrics) in OLD_JOBS.items():
            conn.execute(text(
                "INSERT INTO jobs (id, owner, name, spec, status, attempt, submission_id, run_id, iteration,"
                " iterations, rollout_workers, model_name, model_version, latest_metrics, created_at, updated_at)"
                " VALUES (:id, 'ann', :id, :spec, 'SUCCEEDED', 2, :sub, 'run-1', 10, 10, 3, 'nav', '4', :metrics,"
                " :when, :when)"),
                {"id": job_id, "spec": spec, "sub": f"{job_id}-r2", "metrics": metrics, "when": when})
        for eval_id, (pre, post, success) in OLD_EVALUATIONS.items():
            status = "RUNNING" if pre is None else "SUCCEEDED"
            conn.execute(text(
                "INSERT INTO evaluations (id, owner, model_name, model_version, request, status, submission_id,"
                " run_id, result, return_pre, return_post, success_post, created_at, updated_at)"
                " VALUES (:id, 'ann', 'nav', '4', :request, :status, :id, 'run-e', :result, :pre, :post, :success,"
                " :when, :when)"),
                {"id": eval_id, "request": '{"tasks": 3}', "status": status,
                 "result": None if pre is None else '{"tasks": 3}', "pre": pre, "post": post, "success": success,
                 "when": when})


def test_an_upgrade_from_0002_keeps_every_row_and_moves_evaluation_numbers_into_summary(tmp_path):
    check_upgrade_from_0002(Store(f"sqlite:///{tmp_path / 'jobs.db'}"))


def check_upgrade_from_0002(store: Store) -> None:
    """An empty store brought to 0002, filled with rows, then upgraded to head: every row kept and
    read as the service reads it (the topology tests run it on PostgreSQL)."""
    import json

    from service import evaluations, jobs
    from workers.contract import declared_metrics

    _migrate(store, "0002")
    _fill_0002(store)
    store.migrate()  # to head
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == HEAD
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    assert {"return_pre", "return_post", "success_post"}.isdisjoint(_columns(store, "evaluations"))
    assert "summary" in _columns(store, "evaluations") and "metric_names" in _columns(store, "jobs")
    with store.session() as s:
        key = s.get(ApiKey, "k1")
        assert key is not None
        assert (key.owner, key.key_hash, key.is_admin, key.revoked) == ("ann", "digest", False, False)
        for job_id, (spec, metrics) in OLD_JOBS.items():
            job = s.get(Job, job_id)
            assert job is not None and (job.spec, job.latest_metrics, job.metric_names) == (spec, metrics, None)
            assert (job.status, job.attempt, job.submission_id, job.run_id, job.iteration, job.rollout_workers,
                    job.model_name, job.model_version) == ("SUCCEEDED", 2, f"{job_id}-r2", "run-1", 10, 3, "nav", "4")
            public = jobs.to_public(job, latest_metrics=json.loads(metrics) if metrics else None)
            assert public.latest_metrics == (json.loads(metrics) if metrics else {})
            assert public.model_uri == "models:/nav/4" and public.spec == json.loads(spec)
            # an old row's declaration comes from its spec's algorithm (none when it is unknown)
            expected = {"job-maml": declared_metrics("maml"), "job-mt": declared_metrics("multitask-pg")}
            assert [m.model_dump() for m in public.metrics_declared] == expected.get(job_id, [])
        for eval_id, values in OLD_EVALUATIONS.items():
            row = s.get(Evaluation, eval_id)
            assert row is not None and row.model_name == "nav" and row.model_version == "4" and row.run_id == "run-e"
            named = zip(("return_pre", "return_post", "success_post"), values, strict=True)
            summary = {k: v for k, v in named if v is not None}
            assert (json.loads(row.summary) if row.summary else {}) == summary
            public = evaluations.to_public(row)
            assert (public.return_pre, public.return_post, public.success_post) == values
            assert public.summary == summary and public.request.tasks == 3
            assert public.status == ("RUNNING" if values[0] is None else "SUCCEEDED")


def test_a_downgrade_to_0002_puts_the_evaluation_numbers_back(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    _migrate(store, "0002")
    _fill_0002(store)
    store.migrate()
    _migrate(store, "0002", down=True)
    assert "summary" not in _columns(store, "evaluations") and "metric_names" not in _columns(store, "jobs")
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, return_pre, return_post, success_post FROM evaluations").all()
        assert {r[0]: tuple(r[1:]) for r in rows} == OLD_EVALUATIONS
        assert conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar() == len(OLD_JOBS)


def test_keys_are_hashed_checked_and_revocable(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    secret = auth.load_secret(home=tmp_path / "home")
    assert stat.S_IMODE((tmp_path / "home" / "key_secret").stat().st_mode) == 0o600
    assert auth.load_secret(home=tmp_path / "home") == secret  # generated once, then kept
    cache = auth.KeyCache()
    key_id, key = auth.create_key(store, owner="ann", secret=secret)
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT key_hash FROM api_keys").scalars().all()
    # a keyed hash: neither the key nor its plain SHA-256 is stored
    assert key not in stored and auth.hash_key(key, secret=secret) in stored
    assert hashlib.sha256(key.encode()).hexdigest() not in stored
    p = auth.authenticate(store, key, secret=secret, cache=cache)
    assert p is not None and p.owner == "ann" and not p.is_admin
    assert auth.authenticate(store, key, secret=b"another server", cache=cache) is None
    assert auth.authenticate(store, key + "x", secret=secret, cache=cache) is None
    assert auth.authenticate(store, "not-a-key", secret=secret, cache=cache) is None
    assert auth.cached_principal(key, secret=secret, cache=cache) == p  # checked once: cached for a few seconds
    assert auth.cached_principal(key, secret=secret, cache=auth.KeyCache()) is None  # in that cache only
    assert auth.revoke_key(store, key_id, cache=cache)
    assert auth.cached_principal(key, secret=secret, cache=cache) is None  # revocation empties the cache
    assert auth.authenticate(store, key, secret=secret, cache=cache) is None


def test_keys_stored_unkeyed_by_an_earlier_version_still_work_and_are_rehashed(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    secret = auth.load_secret(home=tmp_path, configured="s3cret")
    key = "mrl_0123456789ab_" + "x" * 43
    with store.session() as s:
        s.add(ApiKey(id="0123456789ab", owner="ann", key_hash=hashlib.sha256(key.encode()).hexdigest()))
    p = auth.authenticate(store, key, secret=secret, cache=auth.KeyCache())
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
    principal = auth.authenticate(store, key, secret=secret, cache=auth.KeyCache())
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
    """``GET /v1/jobs`` pages are served from memory (the app's state) while the caller's job set
    is unchanged; a second Store on the same file stands for another server process writing."""
    import json

    from sqlalchemy import delete, update

    from service import jobs
    from service.app import create_app
    from service.auth import Principal

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    here, other = Store(url), Store(url)
    here.migrate()
    caches = create_app(Settings(home=tmp_path / "home")).state.job_caches
    assert isinstance(caches, jobs.JobCaches)
    assert create_app(Settings(home=tmp_path / "home")).state.job_caches is not caches  # per app, not per process
    ann = Principal(owner="ann", is_admin=False, key_id="k-ann")
    admin = Principal(owner="admin", is_admin=True, key_id="k-admin")

    def add(job_id: str, owner: str = "ann") -> None:
        with other.session() as s:
            s.add(Job(id=job_id, owner=owner, name=job_id, spec="{}", status="RUNNING", attempt=1, submission_id=job_id,
                      iteration=0, iterations=10, rollout_workers=2))

    def page(who: Principal = ann, **kw) -> dict:
        args = {"status": None, "offset": 0, "limit": 20} | kw
        return json.loads(jobs.list_page(store=here, caches=caches, principal=who, **args))

    add("job-a")
    first = page()
    assert [j["id"] for j in first["data"]] == ["job-a"] and first["count"] == 1
    version = caches.pages.version(here, ann)
    assert caches.pages.cached(principal=ann, status=None, offset=0, limit=20, version=version) is not None
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


def test_cached_list_pages_stay_within_their_byte_budget(tmp_path):
    from service import jobs
    from service.auth import Principal

    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    with store.session() as s:
        for i in range(30):
            s.add(Job(id=f"job-{i:02d}", owner="ann", name="n", spec="{}", status="RUNNING", attempt=1,
                      submission_id=f"job-{i:02d}", iteration=0, iterations=10, rollout_workers=2))
    ann = Principal(owner="ann", is_admin=False, key_id="k")
    version = jobs.ListPages.version(store, ann)
    one = jobs.ListPages().build(store=store, principal=ann, status=None, offset=0, limit=5, version=version)
    pages = jobs.ListPages(max_bytes=3 * len(one))
    for offset in range(10):  # pages of 5 jobs each about the same size: at most 3 stay
        pages.build(store=store, principal=ann, status=None, offset=offset, limit=5, version=version)
    kept = [k for k in range(10)
            if pages.cached(principal=ann, status=None, offset=k, limit=5, version=version) is not None]
    assert kept == [7, 8, 9] and pages.size_bytes <= 3 * len(one)
    assert jobs.JobCaches().pages.max_bytes == jobs.ListPages.MAX_BYTES  # an app's default budget


def test_a_job_keeps_the_metrics_its_run_declares(tmp_path):
    """Submission stores the algorithm's declaration; a refresh keeps the one the run's driver tags
    (the engine's word on what it logs) and leaves the row alone when the tag is missing or bad."""
    import json
    from types import SimpleNamespace

    from service import jobs
    from service.auth import Principal
    from service.launcher import SubmissionInfo
    from service.tracking_view import RunState
    from workers.contract import METRICS_TAG, JobSpec, declared_metrics

    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    ann = Principal(owner="ann", is_admin=False, key_id="k")
    launcher = SimpleNamespace(submit_driver=lambda **kw: None,
                               info=lambda sid: SubmissionInfo(status="RUNNING", message=None, start_time=None,
                                                               end_time=None))
    tags: dict[str, str] = {}
    view = SimpleNamespace(find_run=lambda job_id: "run-1",
                           run_state=lambda run_id: RunState(run_id=run_id, status="RUNNING", iteration=1,
                                                             metrics={"x/loss": 0.5}, tags=tags))
    spec = JobSpec.model_validate({"name": "nav", "algorithm": {"name": "maml"},
                                   "task_family": {"name": "navigation2d"}})
    job, created = jobs.submit_job(store=store, launcher=launcher, principal=ann, spec=spec, idempotency_key=None)
    assert created and json.loads(job.metric_names or "") == declared_metrics("maml")

    def declared_now() -> list[dict]:
        refreshed = jobs.refresh(store=store, launcher=launcher, view=view, job_id=job.id)
        return [m.model_dump() for m in jobs.to_public(refreshed).metrics_declared]

    assert declared_now() == declared_metrics("maml")  # no tag yet
    tags[METRICS_TAG] = "not json"
    assert declared_now() == declared_metrics("maml")
    tags[METRICS_TAG] = json.dumps([{"key": "x/loss", "label": "loss", "fmt": ".3f"}])
    assert declared_now() == [{"key": "x/loss", "label": "loss", "fmt": ".3f"}]
