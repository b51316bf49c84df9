"""`metarl up` as a newcomer meets it: another Ray cluster already holds Ray's default ports on
this machine (its dashboard agent unable to serve, so its job server answers ``GET /api/jobs/``
but cannot take a job), `up` runs in a terminal's process group, and that terminal goes away.

`up` must start its own head on free ports, report it ready only once its dashboard agent (what
job submission needs) serves, and leave the head and the API running when its process group is
killed; `down` then stops exactly what `up` started, never the other cluster."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service import local
from tests.service.helpers import tiny_spec, wait_for, wait_status

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: Ray's fixed defaults: dashboard, GCS, client server, dashboard agent; and the API's.
RAY_DEFAULTS = (8265, 6379, 10001, 52365)
METARL = str(Path(sys.executable).parent / "metarl")


def _listening(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, command) of every TCP socket these processes listen on (/proc/net/tcp{,6})."""
    listen: dict[str, tuple[str, int]] = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                f = line.split()
                if f[3] != "0A":  # LISTEN
                    continue
                ip, port = f[1].split(":")
                raw = bytes.fromhex(ip)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                listen[f[9]] = (socket.inet_ntop(family, raw), int(port, 16))
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in listen:
                        found.append((*listen[target[8:-1]], cmd))
    return found


LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _held(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen()
    return s


@pytest.fixture
def foreign_ray(tmp_path):  # noqa: ANN201
    """Another user's Ray head on Ray's default ports, with its own token, whose dashboard agent
    could not bind its HTTP port (held by another process): a head whose job server lists jobs
    but takes none."""
    busy = [p for p in RAY_DEFAULTS if not local._port_free(p)]
    if busy:
        pytest.skip(f"Ray's default ports {busy} are in use on this machine: this test needs them free")
    root = Path(f"/tmp/foreign-ray-{secrets.token_hex(3)}")
    root.mkdir()
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    blocker = _held(52365)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0")
    args = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--disable-usage-stats", "--num-cpus=1",
            "--port=6379", "--dashboard-host=127.0.0.1", "--dashboard-port=8265", "--ray-client-server-port=10001",
            "--dashboard-agent-listen-port=52365", f"--temp-dir={root / 'ray'}"]
    with (root / "start.log").open("w") as log:
        rc = subprocess.run(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            check=False).returncode
    try:
        assert rc == 0, (root / "start.log").read_text()[-3000:]
        yield {"url": "http://127.0.0.1:8265", "token": token.read_text(), "temp_dir": root / "ray"}
    finally:
        procs = local.head_processes(root / "ray", 6379)
        local.terminate([p.pid for p in procs], grace_s=5.0)
        blocker.close()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def test_up_beside_another_ray_detached_from_its_terminal(foreign_ray, tmp_path):  # noqa: ANN001
    auth = {"Authorization": f"Bearer {foreign_ray['token']}"}
    # what `up` used to take for ready: the job server answers ...
    wait_for(lambda: httpx.get(f"{foreign_ray['url']}/api/jobs/", headers=auth, timeout=5).status_code == 200,
             timeout=60, what="the other cluster's job server")
    # ... while its agent never registers, so no job can be submitted there
    time.sleep(5)
    assert not local.head_agent_ready(foreign_ray["url"], foreign_ray["token"])
    refused = httpx.post(f"{foreign_ray['url']}/api/jobs/", json={"entrypoint": "true"}, headers=auth, timeout=60)
    assert refused.status_code != 200, refused.text

    home = (tmp_path / "home").resolve()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "METARL_ARTIFACT_ROOT", "RAY_ADDRESS", "METARL_API_URL",
                        "METARL_API_KEY")}
    env.update(METARL_HOME=str(home), COLUMNS="200", METARL_POLL_INTERVAL_S="0.5")
    head: dict = {}
    try:
        # `up` with every port left to its default, in a process group of its own: a terminal
        up = subprocess.Popen([METARL, "up", "--num-cpus", "1"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
        out, _ = up.communicate(timeout=600)
        assert up.returncode == 0, out
        assert "port 8265 is busy" in out, out
        head = json.loads((home / "ray" / "head.json").read_text())
        assert head["dashboard_port"] != 8265 and head["gcs_port"] != 6379
        ours = f"http://127.0.0.1:{head['dashboard_port']}"
        token = (home / "ray" / "auth_token").read_text().strip()
        assert local.head_agent_ready(ours, token)  # `up` returned only once its agent served
        # every port of the head (GCS, raylet, dashboard and its agent, client server, autoscaler)
        # listens on loopback only, and its files are the user's alone
        procs = local.head_processes(Path(head["temp_dir"]), head["gcs_port"])
        listening = _listening({p.pid for p in procs})
        assert any(port == head["gcs_port"] for _, port, _ in listening), listening
        assert [x for x in listening if x[0] not in LOOPBACK] == [], listening
        private = Path(head["temp_dir"]).parent
        assert stat.S_IMODE(private.stat().st_mode) == 0o700 and private.stat().st_uid == os.getuid()
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE((home / "metarl.db").stat().st_mode) == 0o600
        logs = list((Path(head["temp_dir"]) / "session_latest" / "logs").glob("*.log"))
        assert logs and [p.name for p in logs if p.stat().st_mode & 0o077] == []

        # the terminal goes away: everything still in `up`'s process group is killed
        # (`up` led a new session, so its group's id is its pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.pid, signal.SIGHUP)
            os.killpg(up.pid, signal.SIGKILL)
        time.sleep(3)
        assert local.head_processes(Path(head["temp_dir"]), head["gcs_port"]), "the Ray head died with the terminal"
        url = (home / "api.url").read_text().strip()
        key = (home / "admin.key").read_text().strip()
        health = httpx.get(f"{url}/healthz", timeout=10).json()
        assert health["status"] == "ok" and health["ray"] is True, health

        # and it takes a job, end to end
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            created = c.post("/v1/jobs", json=tiny_spec("up-detached", iterations=2))
            assert created.status_code == 201, created.text
            final = wait_status(c, created.json()["id"], {"SUCCEEDED", "FAILED", "STOPPED"}, timeout=300)
            assert final["status"] == "SUCCEEDED", c.get(f"/v1/jobs/{final['id']}/logs").text[-3000:]
    finally:
        down = subprocess.run([METARL, "down"], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    if head:
        assert not local.head_processes(Path(head["temp_dir"]), head["gcs_port"])
    # the other cluster is untouched
    assert httpx.get(f"{foreign_ray['url']}/api/version", headers=auth, timeout=10).status_code == 200

