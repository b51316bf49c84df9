"""``metarl up`` / ``metarl down``: a local Ray head (with its job server, token auth on) and the
API server, both detached, their state in the data dir; with ``--workers N``, N Ray worker nodes
beside the head (separate ``ray start --address=127.0.0.1:<GCS port>`` processes, each with its own
CPUs, ports and temp dir): a real multi-node cluster on one machine.

``down`` stops only what ``up`` started: the API by its pid file, the worker nodes and the Ray head
by the processes that carry their own ``--temp-dir`` (and their children).  It never runs
``ray stop``, which stops every Ray process of the user (a test session's, another project's)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

Say = Callable[[str], None]


class LocalError(RuntimeError):
    """Starting or stopping the local stack failed (the message says what to do)."""


@dataclass(frozen=True)
class Paths:
    """Where the local stack keeps its state, all under the data dir ``home``."""

    home: Path

    @property
    def ray_dir(self) -> Path:
        return self.home / "ray"

    @property
    def token_file(self) -> Path:
        return self.ray_dir / "auth_token"

    @property
    def head_file(self) -> Path:
        """Written by ``up`` when it started the head: what ``down`` may stop."""
        return self.ray_dir / "head.json"

    @property
    def ray_log(self) -> Path:
        return self.ray_dir / "ray-start.log"

    @property
    def workers_file(self) -> Path:
        """Written by ``up`` for the worker nodes it started: what ``down`` may stop."""
        return self.ray_dir / "workers.json"

    def worker_log(self, index: int) -> Path:
        return self.ray_dir / f"worker-{index}.log"

    def worker_temp_dir(self, index: int) -> Path:
        """A worker node's own Ray temp dir (its sockets and logs), beside the head's."""
        return self.private_tmp / f"ray-w{index}"

    @property
    def api_pid(self) -> Path:
        return self.home / "api.pid"

    @property
    def api_log(self) -> Path:
        return self.home / "api.log"

    @property
    def api_url(self) -> Path:
        """The API's URL, for the CLI's default ``--api``."""
        return self.home / "api.url"

    @property
    def api_ray(self) -> Path:
        """The Ray dashboard URL the running API submits to (a restarted head may have moved)."""
        return self.home / "api.ray"

    @property
    def admin_key(self) -> Path:
        return self.home / "admin.key"

    @property
    def private_tmp(self) -> Path:
        """A 0700 dir of this user's in /tmp, one per data dir, holding the Ray temp dirs: Ray makes
        its own temp dirs 0777, so this one keeps other users out of their logs (which hold job
        specs) and sockets.  Short: Unix socket paths are limited to 107 bytes."""
        digest = hashlib.sha1(str(self.home.resolve()).encode()).hexdigest()[:8]
        return Path("/tmp") / f"metarl-{os.getuid()}-{digest}"

    @property
    def temp_dir(self) -> Path:
        """The Ray head's temp dir (its sockets and logs)."""
        return self.private_tmp / "ray"


@dataclass(frozen=True)
class Component:
    name: str
    address: str
    pid: str
    state: str  # "started", "already running", "stopped", "not running"
    note: str = ""


# ---- small helpers ------------------------------------------------------------------------------
def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    # Ray binds some ports on all interfaces
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free on every interface now (Ray binds some on the machine's address, not
    loopback); someone may take it before it is used, so what binds it must cope with that."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def private_dir(path: Path) -> Path:
    """``path`` as a directory of this user's alone (0700): created so, or an existing one
    tightened; one that is a symlink or another user's (in /tmp, anyone can create the name
    first) is an error."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise LocalError(f"{path} is not a directory of this user's (a symlink, or another user's): "
                         "remove it, or use another data dir (--home)")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


#: The file mode mask of the processes `up` starts (the Ray nodes, their job drivers, the API):
#: what they write (logs holding job specs, the stores, checkpoints) is the user's alone.
UMASK = 0o077


def ensure_token(paths: Paths) -> bool:
    """Create the Ray auth token file (0600) if missing; True when created."""
    private_dir(paths.ray_dir)
    if paths.token_file.is_file() and paths.token_file.read_text().strip():
        return False
    write_private(paths.token_file, secrets.token_hex(32))
    return True


def write_private(path: Path, value: str) -> None:
    """``value`` and a newline into ``path``, created 0600 (an existing file made 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)


def _ray_env(paths: Paths) -> dict[str, str]:
    """The environment of the Ray processes `up` starts (and of the API): token auth, and Ray
    keeping ``--node-ip-address=127.0.0.1`` as it is (it otherwise swaps a loopback address for the
    machine's), so every node's servers bind loopback only."""
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_TMPDIR", LOOPBACK_ENV):
        env.pop(k, None)
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(paths.token_file),
                "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"})
    env[LOOPBACK_ENV] = "0"
    return env


#: Ray's switch for multi-node clusters: "0" makes Ray use 127.0.0.1 as the node's address, and
#: then its GCS, raylet, agents, client server and autoscaler bind loopback only (its `ray start`
#: then refuses worker nodes: they start through ``service.ray_node``, which lifts that refusal).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def executable(name: str) -> str:
    """A command of this environment (``ray``, ``mlflow``, ``moto_server``): beside this Python,
    else on ``PATH``."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise LocalError(f"the `{name}` command is not installed next to this Python; install the project "
                         "(`make install`)")
    return found


def cmdline(pid: int) -> str | None:
    """A process's command line (``None`` when there is no ``/proc`` entry to read)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _dashboard_state(url: str, token: str) -> str:
    """'ours' (answers with our token), 'foreign' (a Ray dashboard refusing it), 'other'
    (something else answers) or 'none' (nothing listens)."""
    try:
        r = httpx.get(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"}, timeout=3.0)
    except httpx.HTTPError:
        return "none"
    if r.status_code == 200 and "ray_version" in r.text:
        return "ours"
    if r.status_code in (401, 403):
        return "foreign"
    return "other"


def _wait(predicate: Callable[[], bool], *, timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---- processes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    args: str


def _processes() -> list[Proc]:
    """This user's live processes (zombies left out)."""
    out: list[Proc] = []
    uid = os.getuid()
    proc = Path("/proc")
    if proc.is_dir():
        for d in proc.iterdir():
            if not d.name.isdigit():
                continue
            try:
                if d.stat().st_uid != uid:
                    continue
                stat = (d / "stat").read_text()
                state, ppid = stat.rsplit(")", 1)[1].split()[:2]
                if state in ("Z", "X"):
                    continue
                args = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except (OSError, ValueError, IndexError):
                continue
            out.append(Proc(int(d.name), int(ppid), args))
        return out
    ps = subprocess.run(["ps", "-A", "-ww", "-o", "pid=,ppid=,uid=,stat=,args="], capture_output=True, text=True,
                        check=False)
    for line in ps.stdout.splitlines():
        parts = line.split(None, 4)
        if len(parts) == 5 and int(parts[2]) == uid and not parts[3].startswith("Z"):
            out.append(Proc(int(parts[0]), int(parts[1]), parts[4]))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path("/proc").is_dir()


def head_processes(temp_dir: Path, gcs_port: int | None) -> list[Proc]:
    """The processes of the Ray head whose temp dir is ``temp_dir``: every process naming that
    dir in its command line, Ray's client server on its GCS port, and all their descendants
    (workers, job drivers)."""
    procs = _processes()
    t = str(temp_dir)
    client = re.compile(rf"--address=\S+:{gcs_port}(\s|$)") if gcs_port else None

    def own(p: Proc) -> bool:
        if f"{t}/" in p.args or f"={t} " in f"{p.args} " or f" {t} " in f" {p.args} ":
            return True
        return bool(client and "ray.util.client.server" in p.args and client.search(p.args))

    roots = {p.pid for p in procs if own(p)}
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    found, stack = set(roots), list(roots)
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in found:
                found.add(c)
                stack.append(c)
    found.discard(os.getpid())
    return [p for p in procs if p.pid in found]


def terminate(pids: list[int], *, grace_s: float = 8.0) -> int:
    """SIGTERM ``pids``, SIGKILL what is left after ``grace_s``; returns how many were signalled."""
    sent = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
            sent += 1
    _wait(lambda: not any(_alive(p) for p in pids), timeout=grace_s, every=0.2)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    _wait(lambda: not any(_alive(p) for p in pids), timeout=5.0, every=0.2)
    return sent


# ---- the Ray head ------------------------------------------------------------------------------
#: The ports ``up`` takes when they are free; a busy default is replaced by a free port.
DEFAULT_API_PORT = 8000
DEFAULT_DASHBOARD_PORT = 8265
DEFAULT_GCS_PORT = 6379
#: Ray's start is retried with fresh ports this often (a port picked free can be taken before
#: Ray binds it: another process, another Ray cluster on the machine).
START_ATTEMPTS = 3
#: How long a started head may take until its dashboard agent registers (job submission needs it).
AGENT_TIMEOUT_S = 90.0


def _read_head(paths: Paths) -> dict | None:
    try:
        return json.loads(paths.head_file.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _session_name(temp_dir: Path) -> str | None:
    """The Ray session of the head whose temp dir is ``temp_dir`` (``session_latest``'s target)."""
    try:
        return os.readlink(temp_dir / "session_latest")
    except OSError:
        return None


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _is_our_head(head: dict, token: str) -> bool:
    """The dashboard recorded in ``head`` answers with our token and is the session of the head's
    temp dir (not another Ray that took the port since)."""
    try:
        r = httpx.get(f"http://127.0.0.1:{head['dashboard_port']}/api/version", headers=_auth(token), timeout=3.0)
        session = r.json().get("session_name") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, AttributeError):
        return False
    expected = _session_name(Path(head["temp_dir"]))
    return session is not None and (expected is None or Path(expected).name == session)


def _head_node_id(url: str, token: str) -> str | None:
    for n in _ray_nodes(url, token):
        if n.get("is_head_node") and n.get("state") == "ALIVE":
            return str(n.get("node_id"))
    return None


def head_agent_ready(url: str, token: str) -> bool:
    """Whether the head's dashboard agent serves: job submission goes through it.  The job
    server's own routes (``GET /api/jobs/``) answer without it, so they prove nothing; listing
    the head's log files goes through the agent that registered itself (which it does only
    once its HTTP server, the one job submission uses, is bound)."""
    node = _head_node_id(url, token)
    if node is None:
        return False
    try:
        r = httpx.get(f"{url}/api/v0/logs", params={"node_id": node}, headers=_auth(token), timeout=10.0)
        return r.status_code == 200 and bool(r.json().get("result"))
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def _agent_failed(temp_dir: Path) -> bool:
    """The head's dashboard agent logged that its HTTP server could not start (a port clash)."""
    log = temp_dir / "session_latest" / "logs" / "dashboard_agent.log"
    try:
        return "Failed to start HTTP server" in log.read_text(errors="replace")
    except OSError:
        return False


def start_ray(paths: Paths, *, num_cpus: int, dashboard_port: int | None, ray_port: int | None,
              say: Say) -> Component:
    """Find this data dir's running head, or start one (every port it listens on bound to 127.0.0.1).

    ``dashboard_port`` / ``ray_port`` None: Ray's defaults (8265, 6379) when free, else free
    ports.  An explicit ``dashboard_port`` is used as given: a Ray dashboard there that takes
    this data dir's token is reused, anything else there is an error."""
    token = paths.token_file.read_text().strip()
    head = _read_head(paths)
    if head is not None:
        if _is_our_head(head, token):
            url = f"http://127.0.0.1:{head['dashboard_port']}"
            note = "started by metarl up"
            if dashboard_port is not None and dashboard_port != head["dashboard_port"]:
                note += (f" (on port {head['dashboard_port']}, not --dashboard-port {dashboard_port}: "
                         "`down` first to move it)")
            return Component("Ray head + job server", url, "-", "already running", note)
        # a head we started earlier died (or lost its port): clean up what is left of it
        leftovers = head_processes(Path(head["temp_dir"]), head.get("gcs_port"))
        if leftovers:
            terminate([p.pid for p in leftovers])
        paths.head_file.unlink(missing_ok=True)
    if dashboard_port is not None:
        url = f"http://127.0.0.1:{dashboard_port}"
        state = _dashboard_state(url, token)
        if state == "ours":
            return Component("Ray head + job server", url, "-", "already running",
                             "not started by metarl up: `down` leaves it running")
        if state == "foreign":
            raise LocalError(f"a Ray dashboard on port {dashboard_port} refuses this data dir's token "
                             f"({paths.token_file}): another Ray cluster runs there; stop it, or leave out "
                             "--dashboard-port to get a free port")
        if state == "other" or not _port_free(dashboard_port):
            raise LocalError(f"port {dashboard_port} is in use by something that is not a Ray dashboard; "
                             "pick --dashboard-port")

    failures: list[str] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        dash = dashboard_port or _default_or_free(DEFAULT_DASHBOARD_PORT, "Ray's dashboard", say)
        gcs = _default_or_free(ray_port or DEFAULT_GCS_PORT, "Ray's GCS", say)
        try:
            return _start_head(paths, num_cpus=num_cpus, dashboard_port=dash, gcs_port=gcs, token=token, say=say)
        except _StartFailed as exc:
            failures.append(str(exc))
            stop_ray(paths, say=lambda _: None)
            if attempt < START_ATTEMPTS:
                say(f"the Ray head did not come up ({exc}); trying again with fresh ports "
                    f"({attempt + 1}/{START_ATTEMPTS})")
    raise LocalError(f"the Ray head did not come up in {START_ATTEMPTS} attempts: " + "; ".join(failures)
                     + f"\nthe last `ray start` output ({paths.ray_log}):\n{_tail(paths.ray_log)}")


class _StartFailed(Exception):
    """One attempt at starting a Ray node failed (retried with fresh ports)."""


def _default_or_free(port: int, what: str, say: Say) -> int:
    if _port_free(port):
        return port
    chosen = free_port()
    say(f"port {port} is busy: {what} takes port {chosen}")
    return chosen


def _start_head(paths: Paths, *, num_cpus: int, dashboard_port: int, gcs_port: int, token: str,
                say: Say) -> Component:
    url = f"http://127.0.0.1:{dashboard_port}"
    private_dir(paths.private_tmp)
    temp_dir = paths.temp_dir
    client_port = _default_or_free(10001, "Ray's client server", say)
    args = [
        executable("ray"), "start", "--head", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}",
        # Ray binds the agent on a port of its own choosing and reports it (a port probed free
        # here could be taken before the agent binds it); its fixed default, 52365, would clash
        # with another Ray on this machine, as would the client server's 10001 and the workers'
        # 10002-19999 (0: each worker binds a port the OS gives it)
        "--dashboard-agent-listen-port=0", f"--ray-client-server-port={client_port}",
        "--min-worker-port=0", "--max-worker-port=0",
    ]
    say(f"starting a Ray head ({num_cpus} CPUs, temp dir {temp_dir}) ...")
    private_dir(paths.ray_dir)
    with paths.ray_log.open("w") as log:
        # its own session: the head's daemons (children of `ray start`) outlive the terminal
        # that ran `up` and the signals sent to that terminal's process group
        rc = subprocess.run(args, env=_ray_env(paths), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=paths.home, check=False, start_new_session=True,
                            umask=UMASK).returncode
    paths.head_file.write_text(json.dumps({"temp_dir": str(temp_dir), "gcs_port": gcs_port,
                                           "dashboard_port": dashboard_port, "started_at": time.time()}))
    if rc != 0:
        raise _StartFailed(f"`ray start` exited with {rc}")

    def ready() -> bool:
        return _agent_failed(temp_dir) or head_agent_ready(url, token)

    if not _wait(ready, timeout=AGENT_TIMEOUT_S, every=0.5) or _agent_failed(temp_dir):
        raise _StartFailed(f"its dashboard agent did not register within {AGENT_TIMEOUT_S:.0f} s "
                           f"(see {temp_dir}/session_latest/logs/dashboard_agent.log)")
    return Component("Ray head + job server", url, "-", "started", f"GCS port {gcs_port}, temp dir {temp_dir}")


def stop_ray(paths: Paths, *, say: Say) -> Component:
    head = _read_head(paths)
    if head is None:
        return Component("Ray head", "-", "-", "not running", "no head started by metarl up in this data dir")
    procs = head_processes(Path(head["temp_dir"]), head.get("gcs_port"))
    url = f"http://127.0.0.1:{head.get('dashboard_port')}"
    if procs:
        say(f"stopping the Ray head ({len(procs)} processes) ...")
        terminate([p.pid for p in procs])
    paths.head_file.unlink(missing_ok=True)
    state = "stopped" if procs else "not running"
    return Component("Ray head", url, "-", state, f"{len(procs)} processes" if procs else "")


# ---- worker nodes ------------------------------------------------------------------------------
NODE_LABEL = "metarl.io/node"


def _read_workers(paths: Paths) -> list[dict]:
    try:
        data = json.loads(paths.workers_file.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return data if isinstance(data, list) else []


def _write_workers(paths: Paths, workers: list[dict]) -> None:
    paths.workers_file.write_text(json.dumps(sorted(workers, key=lambda w: w["index"]), indent=1))


def worker_processes(paths: Paths, index: int) -> list[Proc]:
    """The processes of worker node ``index`` (its raylet, agents, workers): those naming its temp dir."""
    return head_processes(paths.worker_temp_dir(index), None)


def _ray_nodes(dashboard: str, token: str) -> list[dict]:
    """The nodes as the head's state API reports them ([] when it does not answer)."""
    try:
        r = httpx.get(f"{dashboard}/api/v0/nodes", params={"limit": 10_000},
                      headers={"Authorization": f"Bearer {token}"}, timeout=5.0)
        rows = r.json()["data"]["result"]["result"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return []
    return rows if isinstance(rows, list) else []


def _worker_node(dashboard: str, token: str, index: int) -> dict | None:
    """The alive Ray node carrying worker ``index``'s label."""
    for n in _ray_nodes(dashboard, token):
        if (n.get("labels") or {}).get(NODE_LABEL) == f"worker-{index}" and n.get("state") == "ALIVE":
            return n
    return None


def start_workers(paths: Paths, *, count: int, cpus_per_worker: int, say: Say) -> list[Component]:
    """Ensure worker nodes 1..``count`` run beside the head ``up`` started (each a ``ray start
    --address`` on 127.0.0.1 with its own ports and temp dir, labelled ``metarl.io/node=worker-i``);
    the ones already running are reported, never stopped."""
    head = _read_head(paths)
    recorded = {int(w["index"]): w for w in _read_workers(paths)}
    if count and head is None:
        raise LocalError("worker nodes join a Ray head started by `metarl up`; this data dir's head was not "
                         "(another Ray answers on --dashboard-port): stop it or pick other ports")
    if head is None:
        return []
    token = paths.token_file.read_text().strip()
    dashboard = f"http://127.0.0.1:{head['dashboard_port']}"
    comps: list[Component] = []
    for index in sorted(set(recorded) | set(range(1, count + 1))):
        rec = recorded.get(index)
        procs = worker_processes(paths, index)
        node = _worker_node(dashboard, token, index) if procs else None
        if node is not None and rec is not None:
            comps.append(_worker_component(index, rec, "already running"))
            continue
        if procs:  # what is left of a worker that lost its head (or never joined)
            terminate([p.pid for p in procs])
        if index > count:
            recorded.pop(index, None)
            continue
        recorded[index] = _start_worker(paths, index=index, gcs_port=int(head["gcs_port"]), dashboard=dashboard,
                                        token=token, cpus=cpus_per_worker, say=say)
        _write_workers(paths, list(recorded.values()))
        comps.append(_worker_component(index, recorded[index], "started"))
    _write_workers(paths, list(recorded.values()))
    return comps


def _worker_component(index: int, rec: dict, state: str) -> Component:
    return Component(f"Ray worker node {index}", f"{rec.get('node_ip', '?')} ({rec['num_cpus']:g} CPUs)", "-", state,
                     f"node {rec.get('node_id', '?')}, temp dir {rec['temp_dir']}")


def _start_worker(paths: Paths, *, index: int, gcs_port: int, dashboard: str, token: str, cpus: int,
                  say: Say) -> dict:
    temp_dir = paths.worker_temp_dir(index)
    log_path = paths.worker_log(index)
    args = [
        # Ray's CLI with loopback kept (service.ray_node): the node registers as 127.0.0.1 and its
        # servers bind loopback only, as the head's do
        sys.executable, "-m", "service.ray_node", "start", f"--address=127.0.0.1:{gcs_port}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={cpus}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
        f"--labels={NODE_LABEL}=worker-{index}",
        # every port Ray's own choice: its fixed defaults (agent 52365, worker ports
        # 10002-19999) would collide with the head's and the other workers' on this one machine
        "--dashboard-agent-listen-port=0", "--min-worker-port=0", "--max-worker-port=0",
    ]
    say(f"starting Ray worker node {index} ({cpus} CPUs, temp dir {temp_dir}) ...")
    private_dir(paths.private_tmp)
    with log_path.open("w") as log:
        rc = subprocess.run(args, env=_ray_env(paths), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=paths.home, check=False, start_new_session=True,
                            umask=UMASK).returncode
    rec = {"index": index, "temp_dir": str(temp_dir), "num_cpus": cpus, "started_at": time.time()}
    if rc != 0:
        terminate([p.pid for p in worker_processes(paths, index)])
        raise LocalError(f"`ray start` of worker node {index} failed (exit {rc}); its output ({log_path}):\n"
                         f"{_tail(log_path)}")
    node = _wait(lambda: _worker_node(dashboard, token, index) is not None, timeout=60)
    found = _worker_node(dashboard, token, index) if node else None
    if found is None:
        raise LocalError(f"Ray worker node {index} started but did not join the head within 60 s; "
                         f"see {log_path} and {temp_dir}/session_latest/logs")
    rec.update(node_id=str(found.get("node_id", "")), node_ip=str(found.get("node_ip", "")))
    return rec


def _worker_indices(paths: Paths) -> list[int]:
    """The worker nodes of this data dir: recorded ones, and any whose temp dir exists (a start
    that failed before it was recorded)."""
    found = {int(w["index"]) for w in _read_workers(paths)}
    prefix = f"{paths.temp_dir.name}-w"
    with contextlib.suppress(OSError):
        for d in paths.temp_dir.parent.iterdir():
            if d.name.startswith(prefix) and d.name[len(prefix):].isdigit():
                found.add(int(d.name[len(prefix):]))
    return sorted(found)


def stop_workers(paths: Paths, *, say: Say) -> list[Component]:
    comps = []
    recorded = {int(w["index"]) for w in _read_workers(paths)}
    for index in _worker_indices(paths):
        procs = worker_processes(paths, index)
        if not procs and index not in recorded:
            continue
        if procs:
            say(f"stopping Ray worker node {index} ({len(procs)} processes) ...")
            terminate([p.pid for p in procs])
        comps.append(Component(f"Ray worker node {index}", "-", "-", "stopped" if procs else "not running",
                               f"{len(procs)} processes" if procs else ""))
    paths.workers_file.unlink(missing_ok=True)
    return comps


# ---- the API ---------------------------------------------------------------------------------------
def _api_pid(paths: Paths) -> int | None:
    """The pid in the pid file when that process is alive and is the API server."""
    try:
        pid = int(paths.api_pid.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    args = cmdline(pid)
    if args is None:
        return pid  # no /proc: trust the pid file
    return pid if "-m service" in args else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _recorded_url(paths: Paths) -> str | None:
    return _read(paths.api_url)


def api_env(paths: Paths, *, port: int, dashboard_port: int) -> dict[str, str]:
    env = _ray_env(paths)
    env.update({
        "METARL_HOME": str(paths.home),
        "METARL_HOST": "127.0.0.1",
        "METARL_PORT": str(port),
        "METARL_RAY_DASHBOARD": f"http://127.0.0.1:{dashboard_port}",
        "METARL_RAY_TOKEN_FILE": str(paths.token_file),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _healthy(url: str) -> bool:
    """The API answers (``/healthz`` says 503 while Ray or MLflow is unreachable: still up)."""
    try:
        httpx.get(f"{url}/healthz", timeout=3.0)
    except httpx.HTTPError:
        return False
    return True


def start_api(paths: Paths, *, port: int | None, dashboard_port: int, say: Say) -> Component:
    """Find this data dir's running API, or start one (detached, its own session) on ``port``;
    ``port`` None: 8000 when free, else a free port."""
    pid = _api_pid(paths)
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    if pid is not None and _read(paths.api_ray) not in (None, dashboard):
        say(f"the API (pid {pid}) submits to a Ray head that is gone; restarting it for {dashboard}")
        stop_api(paths, say=say)
        pid = None
    if pid is not None:
        url = _recorded_url(paths) or f"http://127.0.0.1:{port or DEFAULT_API_PORT}"
        if not _wait(lambda: _healthy(url), timeout=30):
            raise LocalError(f"the API (pid {pid}) runs but does not answer at {url}; see {paths.api_log} "
                             "(`metarl down` stops it; `metarl up --port` must match the port it was started with)")
        return Component("API", url, str(pid), "already running", f"log {paths.api_log}")
    if port is None:
        port = _default_or_free(DEFAULT_API_PORT, "the API", say)
    elif not _port_free(port):
        raise LocalError(f"port {port} is in use (not by this data dir's API); pick another with --port")
    url = f"http://127.0.0.1:{port}"
    say(f"starting the API on {url} ...")
    with paths.api_log.open("a") as log:
        env = api_env(paths, port=port, dashboard_port=dashboard_port)
        proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=paths.home, start_new_session=True, umask=UMASK)
    paths.api_pid.write_text(f"{proc.pid}\n")
    paths.api_url.write_text(f"{url}\n")
    paths.api_ray.write_text(f"{dashboard}\n")
    if not _wait(lambda: proc.poll() is not None or _healthy(url), timeout=90):
        raise LocalError(f"the API did not answer at {url} within 90 s; its log ({paths.api_log}):\n"
                         f"{_tail(paths.api_log)}")
    if proc.poll() is not None:
        paths.api_pid.unlink(missing_ok=True)
        raise LocalError(f"the API exited with code {proc.returncode}; its log ({paths.api_log}):\n"
                         f"{_tail(paths.api_log)}")
    return Component("API", url, str(proc.pid), "started", f"log {paths.api_log}")


def stop_api(paths: Paths, *, say: Say) -> Component:
    pid = _api_pid(paths)
    if pid is None:
        for f in (paths.api_pid, paths.api_url, paths.api_ray):
            f.unlink(missing_ok=True)
        return Component("API", "-", "-", "not running")
    say(f"stopping the API (pid {pid}) ...")
    terminate([pid], grace_s=15.0)
    for f in (paths.api_pid, paths.api_url, paths.api_ray):
        f.unlink(missing_ok=True)
    return Component("API", "-", str(pid), "stopped")


# ---- both ------------------------------------------------------------------------------------------
def up(home: Path, *, num_cpus: int, port: int | None = None, dashboard_port: int | None = None,
       ray_port: int | None = None, workers: int = 0, cpus_per_worker: int = 2, say: Say) -> list[Component]:
    """Start (or find running) the Ray head, ``workers`` Ray worker nodes and the API for data dir
    ``home``.  A port left None is the default one (API 8000, dashboard 8265, GCS 6379) when
    free, else a free one."""
    if num_cpus == 0 and workers == 0:
        raise LocalError("a head with 0 CPUs needs worker nodes for rollouts: add --workers N or give the head CPUs")
    private_dir(home)  # the data dir is the user's alone: job store, MLflow store, keys, logs
    paths = Paths(home.resolve())
    if ensure_token(paths):
        say(f"Ray auth token written to {paths.token_file} (mode 0600)")
    ray = start_ray(paths, num_cpus=num_cpus, dashboard_port=dashboard_port, ray_port=ray_port, say=say)
    nodes = start_workers(paths, count=workers, cpus_per_worker=cpus_per_worker, say=say)
    api = start_api(paths, port=port, dashboard_port=int(ray.address.rsplit(":", 1)[1]), say=say)
    store = Component("MLflow store", os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.home / 'mlflow.db'}",
                      "-", "local" if not os.environ.get("MLFLOW_TRACKING_URI") else "remote",
                      f"artifacts {paths.home / 'mlartifacts'}")
    return [ray, api, store, *nodes]


def down(home: Path, *, say: Say) -> list[Component]:
    """Stop the API, the worker nodes and the Ray head that ``up`` started for ``home``; idempotent."""
    paths = Paths(home.expanduser().resolve())
    return [stop_api(paths, say=say), *stop_workers(paths, say=say), stop_ray(paths, say=say)]
