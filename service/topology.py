"""``metarl up --topology cluster``: the production topology of ``docker-compose.yml`` on one
machine, without containers, every part a real server started by this module:

- **PostgreSQL 16** (the server binaries of the ``pgserver`` wheel, so ``pip install`` brings it,
  no system package and no root needed), one role and one database for the job store (``metarl``)
  and one for MLflow (``mlflow``), as ``deploy/docker/postgres-init`` creates them;
- an **S3 API server** (moto's server mode) holding MLflow's artifact bucket, with the credentials
  the compose file gives MinIO;
- the **MLflow tracking server** on PostgreSQL, proxying artifacts to S3 (``--serve-artifacts``:
  drivers and the API need no S3 credentials);
- a **Ray head** (no CPUs, job server, token auth) and **worker nodes**, each a ``ray start`` on
  127.0.0.1 (``service.local``);
- **two API processes** on their own ports sharing the PostgreSQL job store.

Every port binds 127.0.0.1.  Secrets use the compose file's settings names (``POSTGRES_PASSWORD``,
``JOBS_DB_PASSWORD``, ``MLFLOW_DB_PASSWORD``, ``MINIO_ROOT_USER``, ``MINIO_ROOT_PASSWORD``;
``NAME_FILE`` for a file holding it), else a generated value kept in ``<home>/cluster/secrets``
(0600); the ``.env.example`` placeholders are refused unless ``dev`` says so.  State (ports, pids)
lives in ``<home>/cluster/topology.json``: ``up`` again restarts only what is not running, on the
same ports; ``down`` stops what ``up`` started.  The S3 server keeps its objects in memory: a
``down`` loses the artifacts (runs, checkpoints, models) that MLflow stored there (MinIO in the
compose file keeps them on a volume)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from service import local
from service.local import Component, LocalError, Paths, private_dir
from service.settings import is_placeholder

Say = Callable[[str], None]

#: the compose file's settings names of the topology's secrets, and what each is
SECRETS = {
    "POSTGRES_PASSWORD": "the PostgreSQL superuser's password",
    "JOBS_DB_PASSWORD": "the job store role's (metarl) password",
    "MLFLOW_DB_PASSWORD": "the MLflow role's (mlflow) password",
    "MINIO_ROOT_USER": "the S3 access key",
    "MINIO_ROOT_PASSWORD": "the S3 secret key",
}
BUCKET_ENV = "MLFLOW_BUCKET"
DEFAULT_PORTS = {"postgres": 5432, "s3": 9000, "mlflow": 5000, "api-1": 8000, "api-2": 8001}
API_NAMES = ("api-1", "api-2")
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class TopologyPaths:
    home: Path

    @property
    def root(self) -> Path:
        return self.home / "cluster"

    @property
    def state(self) -> Path:
        return self.root / "topology.json"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"


# ---- secrets ---------------------------------------------------------------------------------------
def _generated(tp: TopologyPaths, name: str) -> str:
    path = tp.secrets / name.lower()
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    value = "metarl" if name == "MINIO_ROOT_USER" else secrets.token_hex(24)
    local.write_private(path, value)
    return value


def load_secrets(tp: TopologyPaths, *, dev: bool, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The topology's secrets: ``NAME`` or the file named by ``NAME_FILE`` from the environment, else
    generated once into ``<home>/cluster/secrets`` (0600).  A ``change-me`` placeholder is refused
    unless ``dev``."""
    env = os.environ if environ is None else environ
    private_dir(tp.secrets)
    out: dict[str, str] = {}
    for name, what in SECRETS.items():
        if env.get(f"{name}_FILE"):
            try:
                value = Path(env[f"{name}_FILE"]).read_text().strip()
            except OSError as exc:
                raise LocalError(f"{name}_FILE: cannot read {what} from {env[f'{name}_FILE']}: {exc}") from exc
        elif env.get(name):
            value = env[name].strip()
        else:
            value = _generated(tp, name)
        if not value:
            raise LocalError(f"{name}: {what} is empty")
        if is_placeholder(value) and not dev:
            raise LocalError(f"{name} is the example value {value!r} of .env.example: set a real secret, or leave "
                             f"it unset to have one generated (--dev accepts the example values)")
        out[name] = value
    out[BUCKET_ENV] = env.get(BUCKET_ENV) or "mlflow"
    return out


# ---- state -------------------------------------------------------------------------------------------
def read_state(tp: TopologyPaths) -> dict:
    try:
        return json.loads(tp.state.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(tp: TopologyPaths, state: dict) -> None:
    tmp = tp.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(tp.state)


def running_pid(state: dict, name: str) -> int | None:
    """The recorded pid of component ``name`` when that process is alive and still carries the
    marker recorded with it (a reused pid is not ours)."""
    rec = (state.get("components") or {}).get(name) or {}
    pid, marker = rec.get("pid"), rec.get("marker", "")
    if not pid or not local._alive(int(pid)):
        return None
    return int(pid) if marker in (local.cmdline(int(pid)) or "") else None


def _port(state: dict, name: str, say: Say) -> int:
    rec = (state.get("components") or {}).get(name) or {}
    if rec.get("port"):
        return int(rec["port"])
    return local._default_or_free(DEFAULT_PORTS[name], name, say)


def _record(tp: TopologyPaths, name: str, **rec: object) -> None:
    state = read_state(tp)
    state.setdefault("components", {})[name] = rec
    _write_state(tp, state)


def _spawn(args: list[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path) -> subprocess.Popen:
    with log.open("a") as f:
        return subprocess.Popen(args, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, start_new_session=True, umask=local.UMASK)


def _wait_up(name: str, proc: subprocess.Popen, ready: Callable[[], bool], log: Path,
             timeout: float = START_TIMEOUT_S) -> None:
    if not local._wait(lambda: proc.poll() is not None or ready(), timeout=timeout, every=0.2):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise LocalError(f"{name} did not come up within {timeout:.0f} s; its log ({log}):\n{local._tail(log)}")
    if proc.poll() is not None:
        raise LocalError(f"{name} exited with code {proc.returncode}; its log ({log}):\n{local._tail(log)}")


def stop_component(home: Path, name: str, *, sig: int = signal.SIGTERM, grace_s: float = 20.0) -> int | None:
    """Stop component ``name`` (its whole process group) with ``sig``, SIGKILL after ``grace_s``;
    the pid it had, or None when it was not running."""
    tp = TopologyPaths(home.resolve())
    pid = running_pid(read_state(tp), name)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    if not local._wait(lambda: not local._alive(pid), timeout=grace_s, every=0.1):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        local._wait(lambda: not local._alive(pid), timeout=10, every=0.1)
    return pid


# ---- PostgreSQL --------------------------------------------------------------------------------------
def pg_bin(tool: str) -> Path:
    """A PostgreSQL server program from the ``pgserver`` wheel (the ``cluster`` extra)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise LocalError("the cluster topology needs the PostgreSQL server of the `pgserver` package: "
                         "pip install -e '.[cluster]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin" / tool
    if not path.is_file():
        raise LocalError(f"{path} is missing: reinstall the `pgserver` package")
    return path


def _as_unprivileged(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as uid 1000 of a user namespace of its own
    (the files stay root's on disk and in 0700 dirs; the network is the machine's)."""
    if os.geteuid() != 0:
        return args
    return ["unshare", "--user", "--map-user=1000", "--map-group=1000", *args]


def pg_url(user: str, password: str, port: int, db: str, *, driver: str = "postgresql+psycopg") -> str:
    from urllib.parse import quote

    return f"{driver}://{user}:{quote(password, safe='')}@127.0.0.1:{port}/{db}"


def _pg_ready(port: int, password: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres",
                             connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def start_postgres(tp: TopologyPaths, sec: dict[str, str], *, say: Say) -> Component:
    state = read_state(tp)
    log = tp.log("postgres")
    port = _port(state, "postgres", say)
    pid = running_pid(state, "postgres")
    if pid is None:
        if not (tp.pgdata / "PG_VERSION").is_file():
            say(f"initialising a PostgreSQL cluster in {tp.pgdata} ...")
            private_dir(tp.pgdata)
            pw = tp.root / ".initdb-pw"
            local.write_private(pw, sec["POSTGRES_PASSWORD"])
            try:
                with log.open("a") as f:
                    rc = subprocess.run(_as_unprivileged([
                        str(pg_bin("initdb")), "-D", str(tp.pgdata), "-U", "postgres", "--auth=scram-sha-256",
                        f"--pwfile={pw}", "-E", "UTF8", "--locale=C"]), stdout=f, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, check=False, umask=local.UMASK).returncode
            finally:
                pw.unlink(missing_ok=True)
            if rc != 0:
                raise LocalError(f"initdb failed (exit {rc}); its output ({log}):\n{local._tail(log)}")
        say(f"starting PostgreSQL on 127.0.0.1:{port} ...")
        proc = _spawn(_as_unprivileged([
            str(pg_bin("postgres")), "-D", str(tp.pgdata), "-p", str(port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "max_connections=200", "-c", "password_encryption=scram-sha-256"]), log=log, cwd=tp.root)
        _wait_up("PostgreSQL", proc, lambda: _pg_ready(port, sec["POSTGRES_PASSWORD"]), log)
        _record(tp, "postgres", pid=proc.pid, port=port, marker=str(tp.pgdata))
        pid, how = proc.pid, "started"
    else:
        how = "already running"
    _ensure_databases(port, sec)
    return Component("PostgreSQL", f"127.0.0.1:{port}", str(pid), how, f"data {tp.pgdata}, log {log}")


def _ensure_databases(port: int, sec: dict[str, str]) -> None:
    """The job store's and MLflow's roles and databases (created once; the passwords set each time,
    so a changed secret takes effect)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=sec["POSTGRES_PASSWORD"],
                         dbname="postgres", autocommit=True) as c:
        for role, key in (("metarl", "JOBS_DB_PASSWORD"), ("mlflow", "MLFLOW_DB_PASSWORD")):
            exists = c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            c.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role),
                                                                          sql.Literal(sec[key])))
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (role,)).fetchone():
                c.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(role), sql.Identifier(role)))
                c.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(role)))


# ---- S3 ------------------------------------------------------------------------------------------------
def _s3_env(sec: dict[str, str], port: int) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": sec["MINIO_ROOT_USER"], "AWS_SECRET_ACCESS_KEY": sec["MINIO_ROOT_PASSWORD"],
            "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}


def _s3_client(sec: dict[str, str], port: int):  # noqa: ANN202 - a boto3 S3 client
    import boto3

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id=sec["MINIO_ROOT_USER"], aws_secret_access_key=sec["MINIO_ROOT_PASSWORD"])


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code < 500
    except httpx.HTTPError:
        return False


def start_s3(tp: TopologyPaths, sec: dict[str, str], *, say: Say) -> Component:
    state = read_state(tp)
    log = tp.log("s3")
    port = _port(state, "s3", say)
    pid = running_pid(state, "s3")
    how = "already running"
    if pid is None:
        say(f"starting the S3 API server (moto) on 127.0.0.1:{port} ...")
        env = {**os.environ, **_s3_env(sec, port)}
        proc = _spawn([local.executable("moto_server"), "-H", "127.0.0.1", "-p", str(port)], log=log, env=env,
                      cwd=tp.root)
        _wait_up("the S3 server", proc, lambda: _http_ok(f"http://127.0.0.1:{port}/moto-api/"), log)
        _record(tp, "s3", pid=proc.pid, port=port, marker="moto_server")
        pid, how = proc.pid, "started"
    s3 = _s3_client(sec, port)
    bucket = sec[BUCKET_ENV]
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)
    return Component("S3 (moto)", f"http://127.0.0.1:{port}", str(pid), how, f"bucket s3://{bucket}, in memory")


# ---- MLflow ----------------------------------------------------------------------------------------------
def start_mlflow(tp: TopologyPaths, sec: dict[str, str], *, say: Say) -> Component:
    state = read_state(tp)
    log = tp.log("mlflow")
    port = _port(state, "mlflow", say)
    pg_port, s3_port = state["components"]["postgres"]["port"], state["components"]["s3"]["port"]
    pid = running_pid(state, "mlflow")
    how = "already running"
    url = f"http://127.0.0.1:{port}"
    if pid is None:
        say(f"starting the MLflow tracking server on {url} (PostgreSQL store, S3 artifacts) ...")
        env = {**os.environ, **_s3_env(sec, s3_port), "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        proc = _spawn([
            local.executable("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
            "--backend-store-uri", pg_url("mlflow", sec["MLFLOW_DB_PASSWORD"], pg_port, "mlflow"),
            "--serve-artifacts", "--artifacts-destination", f"s3://{sec[BUCKET_ENV]}/",
            "--allowed-hosts", f"localhost,localhost:{port},127.0.0.1,127.0.0.1:{port}"], log=log, env=env,
            cwd=tp.root)
        # the first start creates MLflow's tables in PostgreSQL (tens of seconds)
        _wait_up("the MLflow server", proc, lambda: _http_ok(f"{url}/health"), log, timeout=240)
        _record(tp, "mlflow", pid=proc.pid, port=port, marker=f"--port {port}")
        pid, how = proc.pid, "started"
    return Component("MLflow server", url, str(pid), how, f"artifacts s3://{sec[BUCKET_ENV]}/ (proxied), log {log}")


# ---- the API processes -------------------------------------------------------------------------------------
def api_environment(tp: TopologyPaths, sec: dict[str, str], *, port: int, dashboard_port: int) -> dict[str, str]:
    """The environment of one API process of the topology (``METARL_*`` as the compose file's ``api``)."""
    state = read_state(tp)["components"]
    env = local.api_env(Paths(tp.home), port=port, dashboard_port=dashboard_port)
    env.update({
        "METARL_DATABASE_URL": pg_url("metarl", sec["JOBS_DB_PASSWORD"], state["postgres"]["port"], "metarl"),
        "METARL_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{state['mlflow']['port']}",
    })
    for k in ("MLFLOW_TRACKING_URI", "METARL_ARTIFACT_ROOT", "METARL_DEV"):
        env.pop(k, None)
    if read_state(tp).get("dev"):
        env["METARL_DEV"] = "1"
    return env


def start_api(tp: TopologyPaths, sec: dict[str, str], name: str, *, dashboard_port: int, say: Say,
              port: int | None = None) -> Component:
    state = read_state(tp)
    log = tp.log(name)
    rec = (state.get("components") or {}).get(name) or {}
    port = int(rec.get("port") or port or local._default_or_free(DEFAULT_PORTS[name], f"API {name}", say))
    url = f"http://127.0.0.1:{port}"
    pid = running_pid(state, name)
    if pid is not None:
        return Component(f"API ({name})", url, str(pid), "already running", f"log {log}")
    if not local._port_free(port):
        raise LocalError(f"port {port} of {name} is taken by another program")
    say(f"starting API process {name} on {url} ...")
    env = api_environment(tp, sec, port=port, dashboard_port=dashboard_port)
    proc = _spawn([sys.executable, "-m", "service"], log=log, env=env, cwd=tp.home)
    _wait_up(f"API process {name}", proc, lambda: local._healthy(url), log)
    _record(tp, name, pid=proc.pid, port=port, marker="-m service")
    return Component(f"API ({name})", url, str(proc.pid), "started", f"log {log}")


# ---- up / down ----------------------------------------------------------------------------------------------
def up(home: Path, *, workers: int = 2, cpus_per_worker: int = 2, port: int | None = None,
       dashboard_port: int | None = None, ray_port: int | None = None, dev: bool = False,
       say: Say) -> list[Component]:
    """Start (or find running) every part of the cluster topology for data dir ``home``."""
    if workers < 1:
        raise LocalError("the cluster topology runs rollouts on worker nodes: --workers must be at least 1")
    private_dir(home)
    home = home.resolve()
    tp, paths = TopologyPaths(home), Paths(home)
    private_dir(tp.root)
    sec = load_secrets(tp, dev=dev)
    state = read_state(tp)
    state["dev"] = dev
    _write_state(tp, state)
    if local.ensure_token(paths):
        say(f"Ray auth token written to {paths.token_file} (mode 0600)")
    comps = [start_postgres(tp, sec, say=say), start_s3(tp, sec, say=say), start_mlflow(tp, sec, say=say)]
    ray = local.start_ray(paths, num_cpus=0, dashboard_port=dashboard_port, ray_port=ray_port, say=say)
    nodes = local.start_workers(paths, count=workers, cpus_per_worker=cpus_per_worker, say=say)
    dash = int(ray.address.rsplit(":", 1)[1])
    apis = [start_api(tp, sec, name, dashboard_port=dash, say=say, port=port if name == "api-1" else None)
            for name in API_NAMES]
    paths.api_url.write_text(f"{apis[0].address}\n")  # the CLI's default --api
    return [*comps, ray, *nodes, *apis]


def down(home: Path, *, say: Say) -> list[Component]:
    """Stop the API processes, the Ray nodes, MLflow, S3 and PostgreSQL that ``up`` started."""
    home = home.expanduser().resolve()
    tp, paths = TopologyPaths(home), Paths(home)
    comps: list[Component] = []
    for name in API_NAMES:
        label = f"API ({name})"
        pid = stop_component(home, name)
        comps.append(Component(label, "-", str(pid or "-"), "stopped" if pid else "not running"))
        if pid:
            say(f"stopped {label} (pid {pid})")
    paths.api_url.unlink(missing_ok=True)
    local.stop_api(paths, say=say)  # a `metarl up` (local topology) API of the same data dir
    comps += [*local.stop_workers(paths, say=say), local.stop_ray(paths, say=say)]
    for name, label, sig in (("mlflow", "MLflow server", signal.SIGTERM), ("s3", "S3 (moto)", signal.SIGTERM),
                             ("postgres", "PostgreSQL", signal.SIGINT)):  # SIGINT: PostgreSQL's fast shutdown
        pid = stop_component(home, name, sig=sig)
        comps.append(Component(label, "-", str(pid or "-"), "stopped" if pid else "not running"))
        if pid:
            say(f"stopped {label} (pid {pid})")
    state = read_state(tp)
    for rec in (state.get("components") or {}).values():
        rec.pop("pid", None)  # the ports stay: the next `up` reuses them
    if state:
        _write_state(tp, state)
    return comps


def is_cluster(home: Path) -> bool:
    """Whether ``home`` holds a cluster topology (``up --topology cluster`` ran there)."""
    return TopologyPaths(home.expanduser().resolve()).state.is_file()
