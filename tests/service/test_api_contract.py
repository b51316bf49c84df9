"""The API's contract: a table of bad inputs (each a 4xx naming the field or resource, the store
unchanged), and schemathesis against the served OpenAPI document (no 5xx, responses as
documented).  A live uvicorn server, a real Ray head and MLflow store."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.service.conftest import LiveService, service_env
from tests.service.helpers import tiny_spec, wait_status

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def contract_service(tmp_path_factory, ray_head) -> Iterator[LiveService]:  # noqa: ANN001
    """A server that lets an owner have one active job (so generated specs cannot flood Ray)."""
    home = tmp_path_factory.mktemp("metarl-contract")
    env = service_env(home=home, ray_head=ray_head, extra={"METARL_MAX_ACTIVE_JOBS": "1"})
    svc = LiveService(home=home, env=env, port=int(env["METARL_PORT"]))
    svc.start()
    yield svc
    with svc.client() as c:  # whatever the generated requests started is stopped
        for j in c.get("/v1/jobs", params={"limit": 500}).json()["data"]:
            if j["status"] in ("PENDING", "RUNNING"):
                c.post(f"/v1/jobs/{j['id']}/cancel")
    svc.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def world(contract_service) -> dict[str, Any]:  # noqa: ANN001
    """A finished job of the admin's, and a second owner."""
    with contract_service.client() as c:
        done = c.post("/v1/jobs", json=tiny_spec("contract-done", iterations=1)).json()
        wait_status(c, done["id"], {"SUCCEEDED"})
        bob = c.post("/v1/keys", json={"owner": "bob"}).json()["key"]
    return {"done": done["id"], "bob": bob}


def _snapshot(svc: LiveService) -> Any:
    with svc.client() as c:
        jobs = c.get("/v1/jobs", params={"limit": 500}).json()
        models = c.get("/v1/models").json()
        keys = c.get("/v1/keys").json()
    return ([(j["id"], j["status"], j["rollout_workers"], j["attempt"]) for j in jobs["data"]], jobs["count"],
            [(m["name"], m["aliases"], m["versions"]) for m in models["data"]], sorted(k["id"] for k in keys))


BIG = "x" * (2 << 20)

# (case, method, path, body-or-None, raw-content-or-None, key: admin|bob|none|bad, status, must-appear-in-message)
CASES: list[tuple[str, str, str, Any, bytes | None, str, int, str]] = [
    ("unknown algorithm", "POST", "/v1/jobs", tiny_spec(algorithm={"name": "dqn"}), None, "admin", 422, "algorithm"),
    ("unknown task family", "POST", "/v1/jobs",
     tiny_spec(task_family={"name": "atari"}), None, "admin", 422, "task_family"),
    ("unknown Meta-World env", "POST", "/v1/jobs",
     tiny_spec(task_family={"name": "metaworld-ml1", "env_name": "fly-v3"}), None, "admin", 422, "task_family"),
    ("env name on a family without one", "POST", "/v1/jobs",
     tiny_spec(task_family={"name": "navigation2d", "env_name": "reach-v3"}), None, "admin", 422, "task_family"),
    ("negative meta-batch", "POST", "/v1/jobs", tiny_spec(meta_batch_size=-4), None, "admin", 422, "meta_batch_size"),
    ("huge iterations", "POST", "/v1/jobs", tiny_spec(iterations=10**9), None, "admin", 422, "iterations"),
    ("huge rollout workers", "POST", "/v1/jobs",
     tiny_spec(resources={"rollout_workers": 10**6}), None, "admin", 422, "resources.rollout_workers"),
    ("too many episodes per phase", "POST", "/v1/jobs",
     tiny_spec(meta_batch_size=1000, episodes_per_task=1000), None, "admin", 422, "episodes"),
    ("wrong type", "POST", "/v1/jobs", tiny_spec(episodes_per_task="ten"), None, "admin", 422, "episodes_per_task"),
    ("extra top-level field", "POST", "/v1/jobs",
     {**tiny_spec(), "entrypoint": "sh -c id"}, None, "admin", 422, "entrypoint"),
    ("extra nested field", "POST", "/v1/jobs",
     tiny_spec(resources={"rollout_workers": 1, "runtime_env": {"pip": ["x"]}}), None, "admin", 422, "runtime_env"),
    ("bad name", "POST", "/v1/jobs", tiny_spec("../../etc"), None, "admin", 422, "name"),
    ("missing field", "POST", "/v1/jobs",
     {k: v for k, v in tiny_spec().items() if k != "algorithm"}, None, "admin", 422, "algorithm"),
    ("bad JSON", "POST", "/v1/jobs", None, b'{"name": "x",', "admin", 422, "body"),
    ("oversized body", "POST", "/v1/jobs", None, b'{"name": "' + BIG.encode() + b'"}', "admin", 413, "bytes"),
    ("bad status filter", "GET", "/v1/jobs?status=DONE", None, None, "admin", 422, "status"),
    ("page size zero", "GET", "/v1/jobs?limit=0", None, None, "admin", 422, "limit"),
    ("offset past any page", "GET", "/v1/jobs?offset=949489839360212629259812864", None, None, "admin", 422, "offset"),
    ("unknown job", "GET", "/v1/jobs/job-000000000000", None, None, "admin", 404, "job-000000000000"),
    ("another owner's job", "GET", "/v1/jobs/{done}", None, None, "bob", 404, "{done}"),
    ("another owner's job cancelled", "POST", "/v1/jobs/{done}/cancel", None, None, "bob", 404, "{done}"),
    ("missing key", "GET", "/v1/jobs", None, None, "none", 401, "API key"),
    ("invalid key", "GET", "/v1/jobs", None, None, "bad", 401, "API key"),
    ("cancel a finished job", "POST", "/v1/jobs/{done}/cancel", None, None, "admin", 409, "SUCCEEDED"),
    ("resume a finished job", "POST", "/v1/jobs/{done}/resume", None, None, "admin", 409, "SUCCEEDED"),
    ("scale a finished job", "PATCH", "/v1/jobs/{done}", {"rollout_workers": 2}, None, "admin", 409, "SUCCEEDED"),
    ("scale to zero workers", "PATCH", "/v1/jobs/{done}",
     {"rollout_workers": 0}, None, "admin", 422, "rollout_workers"),
    ("scale with an extra field", "PATCH", "/v1/jobs/{done}",
     {"rollout_workers": 2, "gpus": 8}, None, "admin", 422, "gpus"),
    ("alias on a missing version", "PUT", "/v1/models/contract-done/aliases/prod",
     {"version": "99"}, None, "admin", 404, "contract-done/99"),
    ("alias on a missing model", "PUT", "/v1/models/nope/aliases/prod", {"version": "1"}, None, "admin", 404, "nope"),
    ("reserved alias", "PUT", "/v1/models/contract-done/aliases/latest", {"version": "1"}, None, "admin", 422, "alias"),
    ("bad alias version", "PUT", "/v1/models/contract-done/aliases/prod",
     {"version": "one"}, None, "admin", 422, "version"),
    ("another owner's model", "GET", "/v1/models/contract-done", None, None, "bob", 404, "contract-done"),
    ("download of a missing version", "GET", "/v1/models/contract-done/versions/7/download",
     None, None, "admin", 404, "contract-done/7"),
    ("evaluation with zero episodes", "POST", "/v1/models/contract-done/versions/1/evaluations",
     {"episodes": 0}, None, "admin", 422, "episodes"),
    ("evaluation of another owner's model", "POST", "/v1/models/contract-done/versions/1/evaluations",
     {}, None, "bob", 404, "contract-done"),
    ("unknown evaluation", "GET", "/v1/evaluations/eval-000000000000", None, None, "admin", 404, "eval-000000000000"),
    ("key for a bad owner name", "POST", "/v1/keys", {"owner": "a b"}, None, "admin", 422, "owner"),
    ("key created by a non-admin", "POST", "/v1/keys", {"owner": "mallory"}, None, "bob", 403, "admin"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(contract_service, world, case):
    name, method, path, body, raw, who, status, needle = case
    path, needle = path.format(**world), needle.format(**world)
    key = {"admin": contract_service.admin_key, "bob": world["bob"], "none": None, "bad": "mrl_0000_nothing"}[who]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        headers["content-type"] = "application/json"
    before = _snapshot(contract_service)
    r = httpx.request(method, f"{contract_service.url}{path}", json=body, content=raw, headers=headers, timeout=60)
    assert r.status_code == status, (name, r.status_code, r.text[:500])
    err = r.json()["error"]
    assert set(err) == {"code", "message", "details"}
    assert needle in err["message"], (name, err)
    assert _snapshot(contract_service) == before, name


def test_a_second_active_job_over_the_quota_gets_429(contract_service, world):
    with contract_service.client() as c:
        first = c.post("/v1/jobs", json=tiny_spec("contract-quota", iterations=40))
        assert first.status_code == 201
        second = c.post("/v1/jobs", json=tiny_spec("contract-quota", iterations=40, seed=1))
        assert second.status_code == 429 and "METARL_MAX_ACTIVE_JOBS" in second.json()["error"]["message"]
        assert c.post(f"/v1/jobs/{first.json()['id']}/cancel").json()["status"] == "STOPPED"


def test_every_operation_answers_as_documented_and_never_5xx(contract_service, world):
    """schemathesis over every operation of the served OpenAPI document (bounded: 12 generated
    cases each, derandomized): no 5xx, and every response matches its documented schema."""
    schema = schemathesis.openapi.from_url(f"{contract_service.url}/openapi.json")
    headers = {"Authorization": f"Bearer {contract_service.admin_key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:  # noqa: ANN001
            case.call_and_validate(headers=headers, timeout=60,
                                   checks=[not_a_server_error, response_schema_conformance])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report all
            failures.append(f"{op.method.upper()} {op.path}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
