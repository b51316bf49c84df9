"""API latency under load: 50 concurrent connections, closed loop (each connection sends its next
request as soon as the previous answer is read, no think time), against the real API server
(``python -m service`` under uvicorn, in its own process) with 100 stored jobs and their metrics.

Set-up: a temp data dir; 100 SUCCEEDED jobs written to the job store through ``service.db`` and
their MLflow runs (tagged with the job id, as the driver tags them) in a real MLflow SQLite store,
each with ``--metrics`` metrics x ``--iterations`` iterations (20 x 50 by default, the marker
metric included) and a registered-model tag.  No Ray is needed: every job is terminal, start-up
reconciliation is off and the dashboard address points at a closed port, so the poller has
nothing to refresh.

Load: a separate process (asyncio + ``aiohttp``, one pooled keep-alive connection per worker;
httpx's pool could not drive more than ~75 requests/s here even against a bare ASGI app)
with an owner's API key, the mix in equal parts

* ``GET /v1/jobs?limit=20`` (a page of the owner's jobs, with a random offset),
* ``GET /v1/jobs/{id}`` (status, progress, latest metrics, model),
* ``GET /v1/jobs/{id}/metrics?key=meta/return_post`` (one metric's history).

Baseline, in the same run and with the same generator, connections and duration:
``GET /v1/keys`` with the admin key -- an authenticated request that does the least the API does
(the key check and one small query), i.e. the floor of this server and client on this machine.
``ratio_p99`` = mix p99 / baseline p99 and ``ratio_rps`` = mix rate / baseline rate.

Prints one JSON line (and appends it to ``benchmarks/results/api_load.jsonl``): ``p50_ms``,
``p99_ms``, ``requests_per_s``, ``errors`` (non-200 answers and failed requests), per-route p99,
the server's CPU time per request, the baseline's figures, the ratios, the machine's cores and
its load average (before the seeding, and around the load).

    python benchmarks/api_load.py [--seconds 30] [--connections 50] [--jobs 100] [--server-workers N]
                                  [--client aiohttp|wrk] [--profile PATH] [--out PATH]
                                  [--topology single|cluster]

``--profile PATH`` records the server during the mix with py-spy (collapsed stacks, every
worker process): where a request's time goes.

Cluster mode (``--topology cluster``): the production topology of ``service.topology`` on this
machine instead of one bare server -- ``topology.up`` in a temp data dir (PostgreSQL job store,
the MLflow tracking server on PostgreSQL with S3 (moto) artifacts, a Ray head and 2 worker nodes of
2 CPUs, two API processes ``api-1`` / ``api-2`` sharing the job store), and ``topology.down`` at the
end whatever happens (the Ray temp dirs, in the data dir's private /tmp dir, removed too).  The
same 100 SUCCEEDED jobs go into the PostgreSQL job store and their runs into the
MLflow server over HTTP (``log_batch``, a few requests per run).  The load splits the connections
evenly between the two API processes, and the mix has a fourth, equal part:

* ``POST /v1/jobs`` with a 1-iteration MAML spec (``SUBMIT_SPEC``, ``tiny_spec``'s shape) under an
  ``Idempotency-Key`` drawn from 8 fixed keys: the first POST per key creates a job (8 real Ray
  jobs in all), every later one is answered from the job store (200, the same job) --
  validation, auth and the idempotency lookup in PostgreSQL under load, without flooding Ray (8
  stays under the owner's default ``max_active_jobs`` of 16).  200 and 201 count as success.  By
  default the 8 jobs are created before the measured mix and run to completion on the worker nodes,
  so the mix meets the cluster at rest as the baseline does; ``--jobs-during-load`` creates them
  inside the measured load instead, where they train on the same 2 cores as the API processes
  (the figure with a training cluster beside the API).

The baseline is ``GET /v1/keys`` on both processes.  The JSON line has the same keys plus
``"topology": "cluster"``, ``"api_processes": 2``, ``"job_store": "postgresql"``,
``"tracking": "mlflow-server"``, ``"jobs_created"`` (distinct job ids the POSTs returned, warm-up
included: 8), ``"up_s"``, and in ``detail`` the ``submit`` route's p99 and ``submit_statuses``
(answers per status code, warm-up included); ``server_cpu_ms_per_request`` sums both API
processes.  Only the aiohttp client (wrk would need a Lua POST mix over two hosts and the answers'
job ids): ``--client wrk`` is refused.  ``--server-workers N`` sets METARL_WORKERS of each API
process; ``--profile PATH`` writes ``PATH.api-1`` and ``PATH.api-2``.  It needs the ``cluster``
extra (``pip install -e '.[cluster]'``: pgserver, moto)::

    python benchmarks/api_load.py --topology cluster --connections 50
    python benchmarks/api_load.py --topology cluster --connections 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

OWNER = "bench"
METRIC_KEY = "meta/return_post"
WARMUP_S = 3.0


# ---- set-up ------------------------------------------------------------------------------------
def seed(home: Path, *, n_jobs: int, n_metrics: int, n_iterations: int, db_url: str | None = None,
         tracking_uri: str | None = None) -> list[str]:
    """``n_jobs`` finished jobs in the job store and their runs in MLflow; returns the job ids.

    ``db_url`` / ``tracking_uri`` None: the SQLite job store and MLflow store in ``home`` (what
    the single API server of the default mode reads); else that job store (the cluster's
    PostgreSQL) and that tracking server (``http://...``: the server picks the artifact location,
    as ``workers.tracking.ensure_experiment`` lets it).  Every run's points go in ``log_batch``
    calls of 1000 (MLflow's REST limit), so a server takes a few requests per run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    from service.db import Job, Store
    from service.tracking_view import MARKER
    from workers.tracking import EXPERIMENT, JOB_ID_TAG, STATUS_TAG

    remote = tracking_uri is not None and tracking_uri.startswith(("http://", "https://"))
    client = MlflowClient(tracking_uri or f"sqlite:///{home / 'mlflow.db'}")
    found = client.get_experiment_by_name(EXPERIMENT) if remote else None
    exp = found.experiment_id if found is not None else client.create_experiment(
        EXPERIMENT, artifact_location=None if remote else str(home / "mlartifacts"))
    names = [MARKER, METRIC_KEY, "meta/return_pre", "meta/success_post"]
    names += [f"train/metric_{i:02d}" for i in range(n_metrics - len(names))]
    store = Store(db_url or f"sqlite:///{home / 'metarl.db'}")
    store.migrate()
    rng = random.Random(0)
    spec = {"name": "bench", "algorithm": "maml", "iterations": n_iterations, "resources": {"rollout_workers": 2}}
    ids, t0 = [], dt.datetime(2026, 1, 1)
    for j in range(n_jobs):
        job_id = f"job-bench{j:05d}"
        run = client.create_run(exp, run_name=f"bench-{j}", tags={JOB_ID_TAG: job_id, STATUS_TAG: "FINISHED"})
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        points = [Metric(k, float(s) if k == MARKER else rng.gauss(s / 10, 1.0), now + s, s)
                  for s in range(n_iterations) for k in names]
        for i in range(0, len(points), 1000):
            client.log_batch(run_id, metrics=points[i:i + 1000])
        client.log_batch(run_id, tags=[RunTag("metarl.model_uri", f"models:/bench-{j}/1")])
        client.set_terminated(run_id)
        with store.session() as s:
            s.add(Job(id=job_id, owner=OWNER, name=f"bench-{j}", spec=json.dumps(spec), status="SUCCEEDED",
                      attempt=1, submission_id=job_id, run_id=run_id, iteration=n_iterations,
                      iterations=n_iterations, rollout_workers=2, model_name=f"bench-{j}", model_version="1",
                      created_at=t0 + dt.timedelta(minutes=j), updated_at=t0 + dt.timedelta(minutes=j + 1),
                      finished_at=t0 + dt.timedelta(minutes=j + 1)))
        ids.append(job_id)
    store.dispose()
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(home: Path, port: int, workers: int = 1) -> subprocess.Popen:
    import httpx

    env = dict(os.environ, METARL_HOME=str(home), METARL_PORT=str(port), METARL_RECONCILE_ON_START="false",
               METARL_WORKERS=str(workers), METARL_RAY_DASHBOARD=f"http://127.0.0.1:{free_port()}",
               MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("METARL_DATABASE_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(home / "service.log", "a")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((home / "service.log").read_text()[-3000:])
        key_file = home / "admin.key"
        if key_file.is_file():
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/keys", timeout=5,
                              headers={"Authorization": f"Bearer {key_file.read_text().strip()}"})
                if r.status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the service did not start: {(home / 'service.log').read_text()[-3000:]}")


def create_key(url: str, home: Path, owner: str) -> str:
    """A new API key for ``owner``, made with the server's admin key (``home/admin.key``)."""
    import httpx

    admin = (home / "admin.key").read_text().strip()
    r = httpx.post(f"{url}/v1/keys", json={"owner": owner}, headers={"Authorization": f"Bearer {admin}"})
    r.raise_for_status()
    return str(r.json()["key"])


# ---- the load generator (its own process) ----------------------------------------------------
#: cluster mode's job submission: ``tests/service/helpers.py::tiny_spec``'s shape, one iteration
SUBMIT_SPEC: dict[str, Any] = {
    "name": "bench-submit",
    "algorithm": {"name": "maml", "inner_lr": 0.1},
    "task_family": {"name": "navigation2d"},
    "policy": {"hidden_sizes": [16, 16]},
    "meta_batch_size": 4,
    "episodes_per_task": 4,
    "iterations": 1,
    "checkpoint_every": 1,
    "resources": {"rollout_workers": 1, "envs_per_worker": 16},
}
#: the Idempotency-Keys of cluster mode's submissions: the first POST per key creates a job (8 in
#: all, under the owner's default max_active_jobs of 16), every later one is answered from the store
SUBMIT_KEYS = [f"bench-submit-{i}" for i in range(8)]


def create_and_settle(url: str, key: str, *, timeout_s: float = 600.0) -> list[str]:
    """POST the submissions' jobs once (one per key of ``SUBMIT_KEYS``) and wait until each has
    finished: the measured mix then meets a cluster at rest, its POSTs answered from the job store."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    ids = []
    for idem in SUBMIT_KEYS:
        r = httpx.post(f"{url}/v1/jobs", json=SUBMIT_SPEC, headers={**headers, "Idempotency-Key": idem}, timeout=60)
        r.raise_for_status()
        ids.append(str(r.json()["id"]))
    deadline = time.monotonic() + timeout_s
    for job_id in ids:
        while True:
            status = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=60).json()["status"]
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                if status != "SUCCEEDED":
                    raise RuntimeError(f"job {job_id} ended {status}")
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish within {timeout_s:.0f} s")
            time.sleep(1.0)
    return ids


async def load(*, urls: list[str], key: str, phase: str, job_ids: list[str], n_jobs: int, connections: int,
               seconds: float, submit: bool = False) -> dict[str, Any]:
    """Closed-loop load on ``urls`` (connection ``i`` on ``urls[i % len(urls)]``); ``submit``: the
    mix has a fourth part, ``POST /v1/jobs`` of ``SUBMIT_SPEC`` under one of ``SUBMIT_KEYS``
    (200 or 201 is a success), and the result adds the job ids those POSTs returned."""
    import aiohttp

    kinds = ("list", "show", "metrics", "submit") if submit else ("list", "show", "metrics")
    created: set[str] = set()
    submit_statuses: dict[str, int] = {}

    def next_request(rng: random.Random) -> tuple[str, str]:
        if phase == "baseline":
            return "keys", "/v1/keys"
        kind = rng.choice(kinds)
        if kind == "submit":
            return kind, "/v1/jobs"
        if kind == "list":
            return kind, f"/v1/jobs?limit=20&offset={rng.randrange(0, max(n_jobs - 20, 1))}"
        job = rng.choice(job_ids)
        return kind, f"/v1/jobs/{job}" if kind == "show" else f"/v1/jobs/{job}/metrics?key={METRIC_KEY}"

    lat: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    sent = 0
    per_url = -(-connections // len(urls))
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(aiohttp.ClientSession(
            base_url=u, headers={"Authorization": f"Bearer {key}"},
            connector=aiohttp.TCPConnector(limit=per_url, force_close=False),
            timeout=aiohttp.ClientTimeout(total=30))) for u in urls]
        start = time.perf_counter()
        measure_from, stop_at = start + WARMUP_S, start + WARMUP_S + seconds

        async def worker(i: int) -> None:
            nonlocal sent
            rng = random.Random(i)
            client = clients[i % len(clients)]
            while True:
                kind, path = next_request(rng)
                t = time.perf_counter()
                if t >= stop_at:
                    return
                try:
                    if kind == "submit":
                        async with client.post(path, json=SUBMIT_SPEC,
                                               headers={"Idempotency-Key": rng.choice(SUBMIT_KEYS)}) as r:
                            body = await r.read()
                            submit_statuses[str(r.status)] = submit_statuses.get(str(r.status), 0) + 1
                            bad = None if r.status in (200, 201) else f"{kind}:{r.status}"
                            if bad is None:
                                created.add(json.loads(body)["id"])
                    else:
                        async with client.get(path) as r:
                            await r.read()
                            bad = None if r.status == 200 else f"{kind}:{r.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    bad = f"{kind}:{type(exc).__name__}"
                done = time.perf_counter()
                sent += 1
                if t >= measure_from and done <= stop_at:
                    lat.setdefault(kind, []).append(done - t)
                    if bad is not None:
                        errors[bad] = errors.get(bad, 0) + 1

        await asyncio.gather(*(worker(i) for i in range(connections)))
    every = sorted(x for v in lat.values() for x in v)
    n = len(every)

    def pct(xs: list[float], q: float) -> float:
        return round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else float("nan")

    out = {"sent": sent, "requests": n, "p50_ms": pct(every, 0.50), "p99_ms": pct(every, 0.99),
           "max_ms": pct(every, 1.0),
           "requests_per_s": round(n / seconds, 1), "errors": sum(errors.values()), "error_kinds": errors,
           "p99_ms_by_route": {k: pct(sorted(v), 0.99) for k, v in sorted(lat.items())},
           "requests_by_route": {k: len(v) for k, v in sorted(lat.items())}}
    if submit:  # warm-up included: the first POST per key usually falls in it
        out["submit_statuses"] = dict(sorted(submit_statuses.items()))
        out["created_job_ids"] = sorted(created)
    return out


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants (the
    uvicorn workers when METARL_WORKERS > 1)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += cpu_s(int(child))
            except FileNotFoundError:
                pass
    return total


WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {["Authorization"] = "Bearer %s"})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, "duration_us": %%d, '
    .. '"status": %%d, "connect": %%d, "read": %%d, "write": %%d, "timeout": %%d}\\n',
    summary.requests, latency:percentile(50), latency:percentile(99), latency.max, summary.duration,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def wrk_load(*, url: str, key: str, phase: str, job_ids: list[str], connections: int, seconds: float) -> dict[str, Any]:
    """The same mix from ``wrk`` (C, one thread, Debian's package): a 3 s warm-up run, then the
    measured one; wrk counts non-2xx answers and socket errors."""
    rng = random.Random(0)
    paths = []
    for _ in range(3000):
        if phase == "baseline":
            paths.append("/v1/keys")
            continue
        kind = rng.choice(("list", "show", "metrics"))
        job = rng.choice(job_ids)
        paths.append(f"/v1/jobs?limit=20&offset={rng.randrange(0, max(len(job_ids) - 20, 1))}" if kind == "list"
                     else f"/v1/jobs/{job}" if kind == "show" else f"/v1/jobs/{job}/metrics?key={METRIC_KEY}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % (", ".join(json.dumps(p) for p in paths), key))
    try:
        base = ["wrk", "-t1", f"-c{connections}", "--timeout", "10s", "-s", f.name, url]
        subprocess.run(base[:1] + [f"-d{int(WARMUP_S)}s"] + base[1:], capture_output=True, check=True)
        out = subprocess.run(base[:1] + [f"-d{int(seconds)}s"] + base[1:], capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.unlink(f.name)
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    r = json.loads(line.removeprefix("WRKJSON "))
    errors = r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    return {"sent": r["requests"], "requests": r["requests"], "p50_ms": round(r["p50_us"] / 1000, 2),
            "p99_ms": round(r["p99_us"] / 1000, 2), "max_ms": round(r["max_us"] / 1000, 2),
            "requests_per_s": round(r["requests"] / (r["duration_us"] / 1e6), 1), "errors": errors,
            "error_kinds": {k: r[k] for k in ("status", "connect", "read", "write", "timeout") if r[k]}}


def run_load(*, url: str | list[str], key: str, phase: str, job_ids: list[str], connections: int, seconds: float,
             server_pid: int | list[int], client: str = "aiohttp", submit: bool = False) -> dict[str, Any]:
    """The load phase in a fresh process (so the generator does not share the server's or the
    seeding's interpreter); adds the servers' CPU time per request (warm-up included).  ``url`` /
    ``server_pid``: one server, or several (cluster mode: the connections split evenly across them,
    aiohttp only)."""
    urls = [url] if isinstance(url, str) else list(url)
    pids = [server_pid] if isinstance(server_pid, int) else list(server_pid)
    args = json.dumps({"urls": urls, "key": key, "phase": phase, "job_ids": job_ids, "n_jobs": len(job_ids),
                       "connections": connections, "seconds": seconds, "submit": submit})
    before = sum(cpu_s(p) for p in pids)
    if client == "wrk":
        assert len(urls) == 1 and not submit, "wrk drives one server's GET mix"
        result = wrk_load(url=urls[0], key=key, phase=phase, job_ids=job_ids, connections=connections,
                          seconds=seconds)
        used = sum(cpu_s(p) for p in pids) - before
        result["server_cpu_ms_per_request"] = round(1000 * used / max(result.pop("sent"), 1), 3)
        return result
    out = subprocess.run([sys.executable, __file__, "--load-worker"], input=args, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    used = sum(cpu_s(p) for p in pids) - before
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["server_cpu_ms_per_request"] = round(1000 * used / max(result.pop("sent"), 1), 3)
    return result


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--metrics", type=int, default=20, help="metrics per run")
    ap.add_argument("--iterations", type=int, default=50, help="iterations (steps) per metric")
    ap.add_argument("--server-workers", type=int, default=1, help="API server processes (METARL_WORKERS)")
    ap.add_argument("--client", choices=("aiohttp", "wrk"), default="aiohttp",
                    help="load generator: an async Python client, or wrk (Debian package `wrk`, far lighter)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "api_load.jsonl")
    ap.add_argument("--profile", type=Path, default=None, metavar="PATH",
                    help="record the server during the mix with py-spy (collapsed stacks written to PATH)")
    ap.add_argument("--jobs-during-load", action="store_true",
                    help="cluster mode: the submissions' 8 jobs are created inside the measured load and train on "
                         "the same cores while it runs (default: created and finished before it)")
    ap.add_argument("--topology", choices=("single", "cluster"), default="single",
                    help="single: one API server on SQLite stores (the default); cluster: service.topology's "
                         "PostgreSQL + MLflow server + S3 + Ray head and 2 worker nodes + 2 API processes, "
                         "the mix adding POST /v1/jobs (aiohttp only)")
    ap.add_argument("--load-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.topology == "cluster" and args.client != "aiohttp":
        ap.error("--topology cluster drives two API processes with a POST mix: --client aiohttp only")
    return args


def run_single(args: argparse.Namespace, load_start: tuple[float, float, float]) -> dict[str, Any]:
    """The default mode: one API server on SQLite stores in a temp data dir, no Ray."""
    with tempfile.TemporaryDirectory(prefix="metarl-api-load-") as tmp:
        home = Path(tmp)
        t = time.perf_counter()
        job_ids = seed(home, n_jobs=args.jobs, n_metrics=args.metrics, n_iterations=args.iterations)
        seed_s = time.perf_counter() - t
        port = free_port()
        proc = start_service(home, port, args.server_workers)
        try:
            url = f"http://127.0.0.1:{port}"
            admin = (home / "admin.key").read_text().strip()
            owner_key = create_key(url, home, OWNER)
            load_before = os.getloadavg()
            base = run_load(url=url, key=admin, phase="baseline", job_ids=job_ids, connections=args.connections,
                            seconds=args.seconds, server_pid=proc.pid, client=args.client)
            spy = None
            if args.profile is not None:
                spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(proc.pid),
                                        "--subprocesses", "--nonblocking", "-r", "200", "--format", "raw", "-o",
                                        str(args.profile), "-d", str(int(WARMUP_S + args.seconds))],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            mix = run_load(url=url, key=owner_key, phase="mix", job_ids=job_ids, connections=args.connections,
                           seconds=args.seconds, server_pid=proc.pid, client=args.client)
            load_after = os.getloadavg()
            if spy is not None:
                spy.wait(timeout=60)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return _row(args, mix, base, seed_s=seed_s, load_start=load_start, load_before=load_before,
                load_after=load_after)


def run_cluster(args: argparse.Namespace, load_start: tuple[float, float, float]) -> dict[str, Any]:
    """``--topology cluster``: bring ``service.topology`` up in a temp data dir, seed it, load both
    API processes; always ``down`` (and the Ray temp dirs removed) at the end."""
    from service import local, topology

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    os.environ["METARL_WORKERS"] = str(args.server_workers)  # the API processes inherit this environment
    with tempfile.TemporaryDirectory(prefix="metarl-api-load-", ignore_cleanup_errors=True) as tmp:
        home = Path(tmp).resolve()
        tp = topology.TopologyPaths(home)
        try:
            t = time.perf_counter()
            topology.up(home, workers=2, cpus_per_worker=2, say=say)
            up_s = time.perf_counter() - t
            comps = topology.read_state(tp)["components"]
            sec = topology.load_secrets(tp, dev=False)
            db_url = topology.pg_url("metarl", sec["JOBS_DB_PASSWORD"], comps["postgres"]["port"], "metarl")
            tracking = f"http://127.0.0.1:{comps['mlflow']['port']}"
            say(f"seeding {args.jobs} jobs into PostgreSQL and their runs into {tracking} ...")
            t = time.perf_counter()
            # a tracking server makes MLflow write a "View run ..." line per run to stdout: keep
            # stdout to the one JSON line
            with contextlib.redirect_stdout(io.StringIO()):
                job_ids = seed(home, n_jobs=args.jobs, n_metrics=args.metrics, n_iterations=args.iterations,
                               db_url=db_url, tracking_uri=tracking)
            seed_s = time.perf_counter() - t
            urls = [f"http://127.0.0.1:{comps[n]['port']}" for n in topology.API_NAMES]
            pids = [int(comps[n]["pid"]) for n in topology.API_NAMES]
            admin = (home / "admin.key").read_text().strip()
            owner_key = create_key(urls[0], home, OWNER)
            settled: list[str] = []
            if not args.jobs_during_load:  # before the baseline: both phases meet the cluster at rest
                say(f"creating the {len(SUBMIT_KEYS)} jobs of the submissions and waiting for them to finish ...")
                settled = create_and_settle(urls[0], owner_key)
                time.sleep(10)  # their drivers and actors exit
            load_before = os.getloadavg()
            say(f"baseline: GET /v1/keys on {urls} ...")
            base = run_load(url=urls, key=admin, phase="baseline", job_ids=job_ids, connections=args.connections,
                            seconds=args.seconds, server_pid=pids)
            spies = []
            if args.profile is not None:
                for name, pid in zip(topology.API_NAMES, pids, strict=True):
                    spies.append(subprocess.Popen(
                        [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(pid), "--subprocesses",
                         "--nonblocking", "-r", "200", "--format", "raw", "-o", f"{args.profile}.{name}",
                         "-d", str(int(WARMUP_S + args.seconds))],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            say("mix: list / show / metrics / POST /v1/jobs ...")
            mix = run_load(url=urls, key=owner_key, phase="mix", job_ids=job_ids, connections=args.connections,
                           seconds=args.seconds, server_pid=pids, submit=True)
            load_after = os.getloadavg()
            for spy in spies:
                spy.wait(timeout=60)
        finally:
            say("bringing the cluster topology down ...")
            topology.down(home, say=say)
            # the Ray nodes' temp dirs (Ray leaves them behind), all in the data dir's private /tmp dir
            shutil.rmtree(local.Paths(home).private_tmp, ignore_errors=True)
    created = set(mix.pop("created_job_ids")) | set(settled)
    row = _row(args, mix, base, seed_s=seed_s, load_start=load_start, load_before=load_before,
               load_after=load_after)
    row.update({
        "mix": "1/4 GET /v1/jobs?limit=20, 1/4 GET /v1/jobs/{id}, 1/4 GET /v1/jobs/{id}/metrics?key=meta/return_post, "
               f"1/4 POST /v1/jobs (1-iteration maml spec, Idempotency-Key one of {len(SUBMIT_KEYS)}: 201 "
               "creates a Ray job, 200 answers from the job store)",
        "jobs_during_load": bool(args.jobs_during_load),
        "topology": "cluster", "api_processes": len(urls), "job_store": "postgresql", "tracking": "mlflow-server",
        "jobs_created": len(created), "ray_worker_nodes": 2, "cpus_per_worker": 2, "up_s": round(up_s, 1),
        "server": f"{len(urls)} x python -m service (uvicorn, METARL_WORKERS={args.server_workers}), "
                  "service.topology cluster, connections split evenly",
    })
    return row


def _row(args: argparse.Namespace, mix: dict[str, Any], base: dict[str, Any], *, seed_s: float,
         load_start: tuple[float, float, float], load_before: tuple[float, float, float],
         load_after: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "benchmark": "api_load", "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "p50_ms": mix["p50_ms"], "p99_ms": mix["p99_ms"], "requests_per_s": mix["requests_per_s"],
        "errors": mix["errors"], "target": {"p99_ms_below": 100, "errors": 0},
        "meets_target": mix["p99_ms"] < 100 and mix["errors"] == 0,
        "mix": "1/3 GET /v1/jobs?limit=20, 1/3 GET /v1/jobs/{id}, 1/3 GET /v1/jobs/{id}/metrics?key=meta/return_post",
        "detail": mix,
        "baseline": {"what": "GET /v1/keys with the admin key (key check + one small query), same generator, "
                             "connections and duration", **base},
        "ratio_p99": round(mix["p99_ms"] / base["p99_ms"], 2),
        "ratio_rps": round(mix["requests_per_s"] / base["requests_per_s"], 2),
        "connections": args.connections, "seconds": args.seconds, "warmup_s": WARMUP_S,
        "jobs": args.jobs, "metrics_per_run": args.metrics, "iterations_per_metric": args.iterations,
        "seed_s": round(seed_s, 1),
        "client": ("aiohttp (uvloop), separate process" if args.client == "aiohttp"
                   else "wrk 4.1 (-t1), separate process"),
        "server": f"python -m service (uvicorn, METARL_WORKERS={args.server_workers})", "cpus": os.cpu_count(),
        "loadavg_1m_at_start": round(load_start[0], 2), "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(load_after[0], 2),
    }


def main() -> int:
    args = _parse()
    if args.load_worker:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        print(json.dumps(asyncio.run(load(**json.loads(sys.stdin.read())))))
        return 0

    load_start = os.getloadavg()
    row = run_cluster(args, load_start) if args.topology == "cluster" else run_single(args, load_start)
    print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
