"""What a hostile client tries: racing retries of one submission, numbers past what the database
holds, NaN and infinities in a job spec, registering into another owner's model name.  The real
app (its lifespan: migrations, keys, a real MLflow store in the test's temp dir) through
TestClient on the real SQLite job store; the only stand-in is the Ray launcher (no cluster: a
submission is recorded, not run)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from service import jobs
from service.app import create_app
from service.auth import Principal
from service.db import Job, Store
from service.settings import Settings
from tests.service.helpers import tiny_spec
from workers.contract import JobSpec

RACERS = 20


@dataclass
class RecordingLauncher:
    """Ray's job server as far as submission goes: records each submission, runs nothing; Ray
    knows none of them (``info`` is None, which the poller leaves alone for a minute)."""

    submitted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit_driver(self, *, submission_id: str, **_: Any) -> None:
        with self.lock:
            self.submitted.append(submission_id)

    def info(self, submission_id: str) -> None:
        return None


@dataclass
class App:
    client: TestClient
    store: Store
    launcher: RecordingLauncher
    admin: dict[str, str]
    bob: dict[str, str]


def _settings(home: Path) -> Settings:
    return Settings(home=home, database_url=f"sqlite:///{home / 'metarl.db'}",
                    mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_root=str(home / "mlartifacts"),
                    reconcile_on_start=False, adapt_servers=0, key_secret="test-secret")


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[App]:  # noqa: ANN001
    home = tmp_path_factory.mktemp("metarl-hostile")
    launcher = RecordingLauncher()
    with TestClient(create_app(_settings(home), launcher=launcher), raise_server_exceptions=False) as client:
        admin = {"Authorization": f"Bearer {(home / 'admin.key').read_text().strip()}"}
        r = client.post("/v1/keys", json={"owner": "bob"}, headers=admin)
        assert r.status_code == 201, r.text
        bob = {"Authorization": f"Bearer {r.json()['key']}"}
        yield App(client=client, store=client.app.state.store, launcher=launcher, admin=admin, bob=bob)


@pytest.fixture
def hold_inserts(app: App) -> Iterator[Any]:
    """``hold_inserts(n)``: the first ``n`` inserts into ``jobs`` wait until all ``n`` are waiting,
    so each of those racers has read the store (and found no prior job) before any of them
    writes: the race is lost every time rather than now and then.  Later inserts pass."""
    gates: list[Any] = []

    def arm(n: int) -> None:
        gate, lock, seen = threading.Barrier(n, timeout=60), threading.Lock(), [0]

        def hold(conn, cursor, statement: str, *args: Any) -> None:  # noqa: ANN001
            if statement.lstrip().upper().startswith("INSERT INTO JOBS"):
                with lock:
                    seen[0] += 1
                    first = seen[0] <= n
                if first:
                    gate.wait()

        event.listen(app.store.engine, "before_cursor_execute", hold)
        gates.append(hold)

    yield arm
    for hold in gates:
        event.remove(app.store.engine, "before_cursor_execute", hold)


def _race(fn: Any) -> list[Any]:
    """``fn()`` in ``RACERS`` threads at once; their results (or exceptions), in thread order."""
    out: list[Any] = [None] * RACERS

    def run(i: int) -> None:
        try:
            out[i] = fn()
        except Exception as exc:  # noqa: BLE001 - the assertion below names it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _jobs_with_key(store: Store, owner: str, key: str) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(Job).where(Job.owner == owner, Job.idempotency_key == key))


# ---- 1. racing retries with one Idempotency-Key ----------------------------------------------------
def test_racing_submissions_with_one_idempotency_key_make_one_job_and_all_get_it(app, hold_inserts):
    """The store's idempotent create: every racer but one loses the insert on the unique
    ``(owner, idempotency_key)`` and reads the winner's job back; one submission reaches Ray."""
    hold_inserts(RACERS)
    bob = Principal(owner="bob", is_admin=False, key_id="k-bob")
    spec = JobSpec.model_validate(tiny_spec("race-store"))
    before = len(app.launcher.submitted)
    results = _race(lambda: jobs.submit_job(store=app.store, launcher=app.launcher, principal=bob, spec=spec,
                                            idempotency_key="race-store"))
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert {job.id for job, _ in results} == {results[0][0].id}
    assert sorted(created for _, created in results) == [False] * (RACERS - 1) + [True]
    assert _jobs_with_key(app.store, "bob", "race-store") == 1
    assert app.launcher.submitted[before:] == [results[0][0].id]


def test_racing_posts_with_one_idempotency_key_all_answer_the_same_job(app, hold_inserts):
    """Over HTTP: the handlers run on the event loop's few worker threads (6 on 2 cores), so the
    first 4 inserts are made to race; the other requests come as they may."""
    hold_inserts(4)
    spec = tiny_spec("race-http")
    headers = {**app.bob, "Idempotency-Key": "race-http"}
    answers = _race(lambda: app.client.post("/v1/jobs", json=spec, headers=headers))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * (RACERS - 1) + [201], [(r.status_code, r.text[:200]) for r in answers]
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == 1 and _jobs_with_key(app.store, "bob", "race-http") == 1
    # the same key with another spec is still the existing 409, naming the job
    other = app.client.post("/v1/jobs", json={**spec, "seed": 1}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["details"]["job_id"] == ids.pop()


# ---- 2. integers past what the database holds ---------------------------------------------------------
@pytest.mark.parametrize(("query", "field_name"), [
    ("offset=10000000000000000000", "offset"),  # past SQLite's 64-bit integers: was an OverflowError, a 500
    ("offset=9223372036854775807", "offset"),
    ("offset=-1", "offset"),
    ("limit=10000000000000000000", "limit"),
    ("limit=0", "limit"),
])
def test_list_paging_past_the_database_integers_is_a_422_naming_the_parameter(app, query, field_name):
    r = app.client.get(f"/v1/jobs?{query}", headers=app.admin)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and field_name in err["message"]
    assert [d["field"] for d in err["details"]] == [field_name]
    assert app.client.get("/v1/jobs?offset=2147483647", headers=app.admin).json()["data"] == []  # the largest: empty


def test_a_log_tail_past_the_database_integers_is_a_422_naming_it(app):
    job = app.client.post("/v1/jobs", json=tiny_spec("tail-job"), headers=app.bob).json()
    r = app.client.get(f"/v1/jobs/{job['id']}/logs?tail=10000000000000000000", headers=app.bob)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "tail"


def test_a_last_event_id_that_no_event_had_is_a_422_naming_it(app):
    job = app.client.post("/v1/jobs", json=tiny_spec("sse-resume"), headers=app.bob).json()
    for value in ("abc", "-2", "99999999999999999999", "1.5"):
        r = app.client.get(f"/v1/jobs/{job['id']}/events", headers={**app.bob, "Last-Event-ID": value})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "Last-Event-ID", (value, r.text)


# ---- 3. NaN and infinities in a job spec --------------------------------------------------------------
def _post_raw(app: App, spec: dict[str, Any], token: str, where: str) -> Any:
    """POST a spec whose ``where`` value is the bare JSON token ``token`` (Python's json reads
    ``NaN``, ``Infinity`` and ``-Infinity``; a client's serializer may write them)."""
    text = json.dumps(spec).replace(f'"{where}": "@"', f'"{where}": {token}')
    assert token in text
    return app.client.post("/v1/jobs", content=text, headers={**app.bob, "content-type": "application/json"})


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize(("where", "spec", "field_name"), [
    ("inner_lr", tiny_spec("nan-job", algorithm={"name": "maml", "inner_lr": "@"}), "algorithm.maml.inner_lr"),
    ("init_std", tiny_spec("nan-job", policy={"hidden_sizes": [16], "init_std": "@"}), "policy.init_std"),
    ("meta_batch_size", tiny_spec("nan-job", meta_batch_size="@"), "meta_batch_size"),
])
def test_a_non_finite_number_in_a_spec_is_a_422_saying_it_must_be_finite(app, token, where, spec, field_name):
    before = len(app.launcher.submitted)
    r = _post_raw(app, spec, token, where)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request"
    assert [d["field"] for d in err["details"]] == [field_name]
    assert "finite number" in err["details"][0]["message"] and "finite number" in err["message"]
    assert field_name in err["message"]
    assert len(app.launcher.submitted) == before


def test_a_finite_number_out_of_bounds_still_names_the_bound(app):
    r = app.client.post("/v1/jobs", json=tiny_spec("big-lr", algorithm={"name": "maml", "inner_lr": 11.0}),
                        headers=app.bob)
    assert r.status_code == 422 and "less than or equal to 10" in r.json()["error"]["message"]


# ---- 4. another owner's model name ---------------------------------------------------------------------
def test_a_model_name_belongs_to_its_owner_and_an_admin_cannot_register_into_it(app):
    mine = app.client.post("/v1/jobs", json=tiny_spec("bob-model", iterations=1), headers=app.bob)
    assert mine.status_code == 201, mine.text
    before = len(app.launcher.submitted)
    r = app.client.post("/v1/jobs", json=tiny_spec("admin-into-bob", register_as="bob-model"), headers=app.admin)
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert "register_as" in err["message"] and err["details"] == {"field": "register_as", "owner": "bob"}
    assert len(app.launcher.submitted) == before  # nothing reached Ray
    # the admin still reads bob's job, and registers under a name of its own
    assert app.client.get(f"/v1/jobs/{mine.json()['id']}", headers=app.admin).json()["owner"] == "bob"
    own = app.client.post("/v1/jobs", json=tiny_spec("admin-own-model", iterations=1), headers=app.admin)
    assert own.status_code == 201 and own.json()["model_name"] == "admin-own-model"
    # and bob cannot register into the admin's name (an owner's refusal names no owner)
    theirs = app.client.post("/v1/jobs", json=tiny_spec("bob-into-admin", register_as="admin-own-model"),
                             headers=app.bob)
    assert theirs.status_code == 409 and theirs.json()["error"]["details"] == {"field": "register_as"}
