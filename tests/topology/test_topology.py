"""The production topology run for real on this machine (``metarl up --topology cluster``):
PostgreSQL (job store and MLflow), an S3 server, the MLflow server, a Ray head with two worker
nodes, two API processes.  Its security (loopback only, token auth, no example secrets), the job
store on PostgreSQL (migrations, concurrent submissions through both API processes), and five
faults injected mid-job, each test ending with the job's final state, its registered model and the
job store's rows checked.  The tests run in order on one topology: each fault test leaves it whole
again (what it stopped is started by ``up`` once more)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from service import local, topology
from service.db import Base, Store
from tests.service.helpers import job, sse_events, tiny_spec, wait_for, wait_status
from tests.topology.conftest import CPUS_PER_NODE, MAX_ACTIVE, Cluster

pytestmark = [pytest.mark.topology, pytest.mark.ray, pytest.mark.slow]

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _spec(name: str, iterations: int, **over: object) -> dict:
    fields: dict = {"checkpoint_every": 1, "meta_batch_size": 4, "episodes_per_task": 4,
                    "resources": {"rollout_workers": 2, "envs_per_worker": 8}, **over}
    return tiny_spec(name, iterations=iterations, **fields)


#: the jobs the running test created (the fixture below cancels what is left of them)
_JOBS: list[str] = []


def _submit(c: httpx.Client, spec: dict) -> str:
    r = c.post("/v1/jobs", json=spec)
    assert r.status_code == 201, r.text
    _JOBS.append(r.json()["id"])
    return r.json()["id"]


@pytest.fixture(autouse=True)
def whole_and_idle(cluster: Cluster) -> Iterator[None]:
    """Each test starts on the whole topology with every CPU free, and whatever it leaves (a job a
    failed assertion left running, a part it stopped) is cancelled or restarted after it: a failure
    stays the one test's."""
    cluster.up()

    def idle(c: httpx.Client) -> bool:
        cl = c.get("/v1/cluster").json()
        return cl["cpus"] == 2 * CPUS_PER_NODE and cl["cpus_free"] == cl["cpus"]

    with cluster.client() as c:
        wait_for(lambda: idle(c), timeout=180, what="every CPU of both worker nodes to be free")
    yield
    cluster.up()
    with cluster.client() as c:
        for job_id in _JOBS:
            if job(c, job_id)["status"] not in TERMINAL:
                c.post(f"/v1/jobs/{job_id}/cancel")
        _JOBS.clear()


def _at_iteration(c: httpx.Client, job_id: str, n: int) -> dict:
    got = wait_for(lambda: (j := job(c, job_id))["progress"]["iteration"] >= n or j["status"] in TERMINAL and j,
                   timeout=300, what=f"iteration {n} of {job_id}", every=0.2)
    j = job(c, job_id)
    assert j["status"] == "RUNNING" and j["progress"]["iteration"] < j["progress"]["iterations"], (got, j)
    return j


def _finished(c: httpx.Client, job_id: str) -> dict:
    try:
        final = wait_status(c, job_id, TERMINAL, timeout=420)
    except AssertionError as exc:
        logs = c.get(f"/v1/jobs/{job_id}/logs", params={"tail": 300}).json()["logs"]
        raise AssertionError(f"{exc}\n{logs[-4000:]}") from None
    logs = c.get(f"/v1/jobs/{job_id}/logs", params={"tail": 300}).json()["logs"]
    assert final["status"] == "SUCCEEDED", (final.get("message"), logs[-3000:])
    assert final["progress"]["iteration"] == final["progress"]["iterations"]
    return final


def _steps(c: httpx.Client, job_id: str, key: str = "perf/env_steps_total") -> list[int]:
    points = c.get(f"/v1/jobs/{job_id}/metrics", params={"key": [key]}).json()["metrics"][key]
    return [p["step"] for p in points]


def _model_registered(cluster: Cluster, final: dict) -> None:
    """The model is in MLflow's registry (PostgreSQL) with its files in S3, and the API serves it."""
    import mlflow

    name, version = final["model_uri"].removeprefix("models:/").rsplit("/", 1)
    mv = mlflow.MlflowClient(tracking_uri=cluster.tracking_uri).get_model_version(name, version)
    assert mv.run_id == final["run_id"] and mv.status == "READY"
    with cluster.client("api-2") as c:
        r = c.get(f"/v1/models/{name}/versions/{version}")
        assert r.status_code == 200 and r.json()["run_id"] == final["run_id"], r.text
    s3 = topology._s3_client(cluster.secrets, cluster.port("s3"))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=cluster.secrets[topology.BUCKET_ENV]).get("Contents", [])]
    assert any(final["run_id"] in k and k.endswith(".pt") for k in keys), "checkpoints in S3"


def _job_rows(cluster: Cluster, job_id: str) -> list[tuple]:
    return cluster.rows("SELECT id, status, iteration, attempt FROM jobs WHERE id = %s", job_id)


def _count(cluster: Cluster) -> int:
    return cluster.rows("SELECT count(*) FROM jobs")[0][0]


# ---- security ------------------------------------------------------------------------------------------
def _topology_pids(cluster: Cluster) -> set[int]:
    state = topology.read_state(cluster.tp)
    roots = [topology.running_pid(state, name) for name in state["components"]]
    head = local._read_head(cluster.paths) or {}
    ray = local.head_processes(Path(head["temp_dir"]), head.get("gcs_port"))
    ray += [p for i in (1, 2) for p in local.worker_processes(cluster.paths, i)]
    pids: set[int] = set()
    for pid in [*(p for p in roots if p), *(p.pid for p in ray)]:
        try:
            proc = psutil.Process(pid)
            pids |= {pid, *(ch.pid for ch in proc.children(recursive=True))}
        except psutil.NoSuchProcess:
            pass
    return pids


def test_every_listening_socket_is_on_loopback_and_ray_wants_its_token(cluster: Cluster):
    pids = _topology_pids(cluster)
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    ports = {c.laddr.port for c in listening}
    named = {name: cluster.port(name) for name in ("postgres", "s3", "mlflow", "api-1", "api-2")}
    head = local._read_head(cluster.paths)
    assert head is not None
    named |= {"ray gcs": int(head["gcs_port"]), "ray dashboard": int(head["dashboard_port"])}
    assert set(named.values()) <= ports, (named, sorted(ports))
    wide = [(c.laddr, psutil.Process(c.pid).name()) for c in listening if c.laddr.ip not in LOOPBACK]
    assert not wide, f"listening beyond loopback: {wide}"
    assert len(listening) >= 15, len(listening)  # the Ray nodes' raylets, agents and workers too
    print(f"\n{len(listening)} listening sockets of {len(pids)} topology processes, all on 127.0.0.1")

    dashboard = f"http://127.0.0.1:{head['dashboard_port']}/api/version"
    assert httpx.get(dashboard, timeout=10).status_code in (401, 403)
    token = cluster.paths.token_file.read_text().strip()
    assert httpx.get(dashboard, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    with cluster.client(key="not-a-key") as c:
        assert c.get("/v1/jobs").status_code == 401

    import psycopg

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=cluster.port("postgres"), user="metarl", password="change-me-metarl-db",
                        dbname="metarl", connect_timeout=5)
    for name in topology.SECRETS:  # generated, private
        f = cluster.tp.secrets / name.lower()
        assert f.is_file() and (f.stat().st_mode & 0o077) == 0, f


def test_the_example_secrets_are_refused_outside_dev_mode(cluster: Cluster, tmp_path: Path):
    env = {"POSTGRES_PASSWORD": "change-me-postgres"}
    with pytest.raises(local.LocalError, match="POSTGRES_PASSWORD is the example value"):
        topology.load_secrets(topology.TopologyPaths(tmp_path), dev=False, environ=env)
    assert topology.load_secrets(topology.TopologyPaths(tmp_path), dev=True, environ=env)["POSTGRES_PASSWORD"] == \
        env["POSTGRES_PASSWORD"]
    # an API process given the example password of .env.example refuses to start
    example = topology.pg_url("metarl", "change-me-metarl-db", cluster.port("postgres"), "metarl")
    proc = subprocess.run([sys.executable, "-m", "service"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "METARL_HOME": str(tmp_path / "h"), "METARL_DATABASE_URL": example,
                               "METARL_PORT": "1"})
    assert proc.returncode != 0 and "METARL_DATABASE_URL's password: an example value" in proc.stdout + proc.stderr


# ---- the job store on PostgreSQL ---------------------------------------------------------------------------
def _fresh_database(cluster: Cluster) -> str:
    name = f"mig_{uuid.uuid4().hex[:8]}"
    with cluster.db("postgres") as c:
        c.execute(f"CREATE DATABASE {name} OWNER metarl")
    return topology.pg_url("metarl", cluster.secrets["JOBS_DB_PASSWORD"], cluster.port("postgres"), name)


def test_migrations_on_postgresql_empty_racing_and_with_rows(cluster: Cluster):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tests.service.test_store import HEAD, check_upgrade_from_0002

    # an empty database, migrated by three API processes starting at once (advisory lock)
    url = _fresh_database(cluster)
    stores = [Store(url) for _ in range(3)]
    errors: list[BaseException] = []

    def migrate(s: Store) -> None:
        try:
            s.migrate()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with stores[0].engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == HEAD
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    for s in stores:
        s.dispose()
    # a database with rows of an older schema, upgraded: every row kept
    store = Store(_fresh_database(cluster))
    try:
        check_upgrade_from_0002(store)
    finally:
        store.dispose()


def test_concurrent_submissions_through_both_api_processes(cluster: Cluster):
    before = _count(cluster)
    spec = _spec("topo-race", 200)
    clients = [cluster.client("api-1"), cluster.client("api-2")]
    key = f"race-{uuid.uuid4().hex[:8]}"
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(24)

    def post(i: int, idem: str) -> None:
        barrier.wait()
        answers.append(clients[i % 2].post("/v1/jobs", json=spec, headers={"Idempotency-Key": idem}))

    threads = [threading.Thread(target=post, args=(i, key)) for i in range(20)]
    threads += [threading.Thread(target=post, args=(i, f"{key}-{i}")) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code in (200, 201) and r.headers["content-type"] == "application/json" for r in answers), \
        [(r.status_code, r.text[:200]) for r in answers if r.status_code not in (200, 201)]
    same = {r.json()["id"] for r in answers if r.request.headers["Idempotency-Key"] == key}
    assert len(same) == 1
    ids = {r.json()["id"] for r in answers if r.status_code in (200, 201)}
    _JOBS.extend(ids)
    assert len(ids) == 5 and sum(r.status_code == 201 for r in answers) == 5
    rows = cluster.rows("SELECT id, idempotency_key FROM jobs WHERE name = 'topo-race'")
    assert len(rows) == 5 and {r[0] for r in rows} == ids and len({r[1] for r in rows}) == 5
    assert _count(cluster) == before + 5
    # both processes list all five; cancelling frees the cluster for the fault tests
    for c in clients:
        listed = {j["id"] for j in c.get("/v1/jobs", params={"limit": 100}).json()["data"]}
        assert ids <= listed
    for i, job_id in enumerate(sorted(ids)):
        r = clients[i % 2].post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code in (200, 409), r.text
    for job_id in ids:
        assert wait_status(clients[0], job_id, TERMINAL, timeout=120)["status"] in ("STOPPED", "FAILED")
    assert wait_for(lambda: (cl := clients[0].get("/v1/cluster").json())["cpus_free"] == cl["cpus"], timeout=120,
                    what="the cancelled jobs' CPUs to be free")
    for c in clients:
        c.close()


def test_racing_owners_and_an_owners_racing_submissions_stay_within_the_rules(cluster: Cluster):
    """Check-then-insert under concurrency, through both API processes: a new model name goes to
    exactly one of two owners racing for it, and an owner's racing submissions stop at
    METARL_MAX_ACTIVE_JOBS (advisory locks per owner and per model name on PostgreSQL)."""
    with cluster.client() as admin:
        keys = {o: admin.post("/v1/keys", json={"owner": o}).json()["key"] for o in ("ann", "bob")}
    clients = {(o, api): cluster.client(api, key=k) for o, k in keys.items() for api in ("api-1", "api-2")}
    name = f"contested-{uuid.uuid4().hex[:6]}"
    answers: list[tuple[str, httpx.Response]] = []
    barrier = threading.Barrier(2 * (MAX_ACTIVE + 3))

    def post(owner: str, api: str, spec: dict) -> None:
        barrier.wait()
        answers.append((owner, clients[(owner, api)].post("/v1/jobs", json=spec)))

    threads = []
    for i in range(MAX_ACTIVE + 3):  # ann: more than her limit, all into the contested name
        threads.append(threading.Thread(target=post, args=("ann", ("api-1", "api-2")[i % 2], _spec(name, 200))))
        threads.append(threading.Thread(target=post, args=("bob", ("api-2", "api-1")[i % 2], _spec(name, 200))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _JOBS.extend(r.json()["id"] for _, r in answers if r.status_code == 201)
    codes = {o: sorted(r.status_code for who, r in answers if who == o) for o in keys}
    winner = next(o for o in keys if 201 in codes[o])
    loser = "bob" if winner == "ann" else "ann"
    assert codes[loser] == [409] * (MAX_ACTIVE + 3), codes  # the name is the winner's
    assert codes[winner] == [201] * MAX_ACTIVE + [429] * 3, codes  # and the winner's limit holds
    rows = cluster.rows("SELECT owner, count(*) FROM jobs WHERE model_name = %s GROUP BY owner", name)
    assert rows == [(winner, MAX_ACTIVE)], rows
    created = [r.json()["id"] for o, r in answers if r.status_code == 201]
    for job_id in created:
        clients[(winner, "api-1")].post(f"/v1/jobs/{job_id}/cancel")
    for job_id in created:
        assert wait_status(clients[(winner, "api-2")], job_id, TERMINAL, timeout=120)["status"] in ("STOPPED", "FAILED")
    for c in clients.values():
        c.close()


# ---- faults ----------------------------------------------------------------------------------------------
def _rollout_actors(cluster: Cluster, job_id: str) -> list[dict]:
    head = local._read_head(cluster.paths) or {}
    token = cluster.paths.token_file.read_text().strip()
    rows = httpx.get(f"http://127.0.0.1:{head['dashboard_port']}/api/v0/actors",
                     params={"limit": 10_000, "detail": "true"}, headers={"Authorization": f"Bearer {token}"},
                     timeout=30).json()["data"]["result"]["result"]
    return [a for a in rows if (a.get("name") or "").startswith(f"metarl-{job_id}-rollout-")]


def test_a_worker_node_killed_mid_job(cluster: Cluster):
    c = cluster.client("api-1")
    before = _count(cluster)
    job_id = _submit(c, _spec("topo-node", 12, resources={"rollout_workers": 4, "envs_per_worker": 8}))
    at = _at_iteration(c, job_id, 2)
    assert at["latest_metrics"]["perf/nodes"] == 2, at["latest_metrics"]  # actors on both worker nodes
    victim = local.worker_processes(cluster.paths, 2)
    assert any("raylet" in p.args for p in victim)
    lost_node = next(w["node_id"] for w in json.loads(cluster.paths.workers_file.read_text()) if w["index"] == 2)
    for p in victim:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
    killed_at = job(c, job_id)["progress"]["iteration"]
    wait_for(lambda: any(n["node_id"] == lost_node and not n["alive"] for n in c.get("/v1/cluster").json()["nodes"]),
             timeout=120, what="Ray to mark worker node 2 dead")
    # Ray restarts the lost rollout actors on the surviving node (their placement group bundles move)
    # and retries their sampling tasks; once the job has moved on, every live one is on the survivor
    dead_at = job(c, job_id)["progress"]["iteration"]
    wait_for(lambda: (j := job(c, job_id))["progress"]["iteration"] > dead_at + 1 or j["status"] in TERMINAL,
             timeout=300, what="the job to go on after the node loss")
    actors = _rollout_actors(cluster, job_id)
    alive = [a for a in actors if a["state"] == "ALIVE"]
    assert len(alive) == 4 and lost_node not in {a["node_id"] for a in alive}, actors
    restarts = sum(int(a.get("num_restarts") or 0) for a in actors)
    assert restarts >= 1, actors
    final = _finished(c, job_id)
    assert sorted(_steps(c, job_id)) == list(range(12))  # every iteration once: no episode lost
    resampled = sum(p["value"] for p in c.get(f"/v1/jobs/{job_id}/metrics", params={"key": [
        "fault/resampled_shards"]}).json()["metrics"]["fault/resampled_shards"])
    print(f"\nworker node 2 killed at iteration {killed_at}: {restarts} rollout actor restarts on the other node, "
          f"{resampled:g} shards re-sampled by the driver (the rest retried by Ray)")
    _model_registered(cluster, final)
    assert _job_rows(cluster, job_id) == [(job_id, "SUCCEEDED", 12, 1)] and _count(cluster) == before + 1
    comps = cluster.up()  # the node back for the next tests
    assert {x.name: x.state for x in comps}["Ray worker node 2"] == "started"
    c.close()


def test_an_api_process_killed_and_restarted_mid_job(cluster: Cluster):
    before = _count(cluster)
    one, two = cluster.client("api-1"), cluster.client("api-2")
    job_id = _submit(one, _spec("topo-api", 14))
    seen: list[tuple[str | None, str, object]] = []
    for ident, event, data in sse_events(one, f"/v1/jobs/{job_id}/events"):
        seen.append((ident, event, data))
        if sum(e == "metrics" for _, e, _ in seen) == 3:
            break
    last_id = seen[-1][0]
    assert last_id is not None and int(last_id) == seen[-1][2]["step"]  # type: ignore[index]
    killed = topology.stop_component(cluster.home, "api-1", sig=signal.SIGKILL)
    assert killed is not None
    with pytest.raises(httpx.TransportError):
        one.get("/healthz")
    listed = two.get("/v1/jobs", params={"limit": 100}).json()["data"]
    assert [j["status"] for j in listed if j["id"] == job_id] in (["RUNNING"], ["SUCCEEDED"])
    comps = {x.name: x for x in cluster.up()}
    assert comps["API (api-1)"].state == "started" and comps["API (api-1)"].pid != str(killed)
    # the stream resumes on the restarted process from the last event id: every later iteration, once
    resumed = list(sse_events(one, f"/v1/jobs/{job_id}/events", last_event_id=last_id))
    steps = [d["step"] for _, e, d in resumed if e == "metrics"]  # type: ignore[index]
    before_kill = [d["step"] for _, e, d in seen if e == "metrics"]  # type: ignore[index]
    assert steps and steps[0] == int(last_id) + 1
    assert before_kill + steps == list(range(14))
    assert resumed[-1][1] == "end" and resumed[-1][2]["status"] == "SUCCEEDED"  # type: ignore[index]
    final = _finished(two, job_id)
    _model_registered(cluster, final)
    assert _job_rows(cluster, job_id) == [(job_id, "SUCCEEDED", 14, 1)] and _count(cluster) == before + 1
    one.close()
    two.close()


def test_postgresql_restarted_mid_job(cluster: Cluster):
    before = _count(cluster)
    c1, c2 = cluster.client("api-1"), cluster.client("api-2")
    job_id = _submit(c1, _spec("topo-pg", 14))
    _at_iteration(c1, job_id, 2)
    assert topology.stop_component(cluster.home, "postgres", sig=signal.SIGINT) is not None  # fast shutdown
    down_at = time.monotonic()
    for c in (c1, c2):
        r = c.get("/v1/jobs", params={"limit": 5})
        assert r.status_code == 503 and r.headers["content-type"] == "application/json", r.text
        assert r.json()["error"]["code"] == "store_unavailable" and "job store is unreachable" in r.text
        assert r.headers["retry-after"] == "5"
    r = c2.post("/v1/jobs", json=_spec("topo-pg-lost", 2))
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
    health = c1.get("/healthz")
    assert health.status_code == 503 and health.json()["database"] is False
    time.sleep(max(0.0, 4 - (time.monotonic() - down_at)))
    comps = {x.name: x.state for x in cluster.up()}
    assert comps["PostgreSQL"] == "started"
    for c in (c1, c2):  # the pools reconnect by themselves
        wait_for(lambda c=c: c.get("/v1/jobs", params={"limit": 5}).status_code == 200, timeout=60,
                 what="the API to answer again")
    final = _finished(c1, job_id)
    assert sorted(_steps(c1, job_id)) == list(range(14))
    _model_registered(cluster, final)
    assert _job_rows(cluster, job_id) == [(job_id, "SUCCEEDED", 14, 1)]
    assert _count(cluster) == before + 1  # the submission refused during the outage left nothing
    assert not cluster.rows("SELECT id FROM jobs WHERE name = 'topo-pg-lost'")
    c1.close()
    c2.close()


def test_the_mlflow_server_restarted_mid_job(cluster: Cluster):
    import mlflow

    before = _count(cluster)
    c = cluster.client("api-2")
    job_id = _submit(c, _spec("topo-mlflow", 14))
    _at_iteration(c, job_id, 2)
    assert topology.stop_component(cluster.home, "mlflow") is not None
    time.sleep(5)  # the driver logs into the outage (MLflow's client retries)
    assert {x.name: x.state for x in cluster.up()}["MLflow server"] == "started"
    final = _finished(c, job_id)
    client = mlflow.MlflowClient(tracking_uri=cluster.tracking_uri)
    for key in ("perf/env_steps_total", "meta/return_post"):
        steps = sorted(m.step for m in client.get_metric_history(final["run_id"], key))
        assert steps == list(range(14)), (key, steps)
    ckpts = [f.path for f in client.list_artifacts(final["run_id"], "checkpoints")]
    assert {f"checkpoints/ckpt-{i:06d}.pt" for i in range(1, 15)} <= set(ckpts), ckpts
    _model_registered(cluster, final)
    assert _job_rows(cluster, job_id) == [(job_id, "SUCCEEDED", 14, 1)] and _count(cluster) == before + 1
    c.close()


def _driver_pid(job_id: str) -> int | None:
    for p in psutil.process_iter(["pid", "cmdline"]):
        args = " ".join(p.info["cmdline"] or [])
        if "workers.driver" in args and job_id in args:
            return int(p.info["pid"])
    return None


def test_the_driver_killed_then_resumed_from_its_checkpoint(cluster: Cluster):
    before = _count(cluster)
    c = cluster.client("api-1")
    job_id = _submit(c, _spec("topo-driver", 14))
    at = _at_iteration(c, job_id, 4)
    pid = wait_for(lambda: _driver_pid(job_id), timeout=30, what="the job's driver process")
    os.kill(pid, signal.SIGKILL)
    failed = wait_status(c, job_id, {"FAILED", "SUCCEEDED", "STOPPED"}, timeout=120)
    assert failed["status"] == "FAILED", failed
    done_before = failed["progress"]["iteration"]
    assert at["progress"]["iteration"] <= done_before < 14
    r = c.post(f"/v1/jobs/{job_id}/resume")
    assert r.status_code == 200 and r.json()["attempt"] == 2, r.text
    final = _finished(c, job_id)
    assert final["progress"]["iteration"] == 14 and final["run_id"] == failed["run_id"]
    logs = c.get(f"/v1/jobs/{job_id}/logs", params={"tail": 400}).json()["logs"]
    assert "resumed run" in logs
    steps = _steps(c, job_id)
    assert sorted(set(steps)) == list(range(14)) and len(steps) - 14 <= 1  # the iteration in flight, again
    _model_registered(cluster, final)
    assert _job_rows(cluster, job_id) == [(job_id, "SUCCEEDED", 14, 2)] and _count(cluster) == before + 1
    c.close()
