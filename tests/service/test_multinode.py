"""A real multi-node Ray cluster on one machine (`metarl up --workers 2`: a head and two worker
nodes, each its own `ray start` on 127.0.0.1 with its own ports and temp dir), a job through the
REST API whose rollout actors spread over both worker nodes, and the loss of one worker node
mid-job (SIGKILL of everything of its `ray start`): the job still completes every iteration.

The cluster under test is not the session's Ray head: it has its own data dir, token, ports and
temp dirs, and this process talks to it only over HTTP (never ``ray.init``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from service import local
from service.cli import app
from tests.ports import free_port
from tests.service.helpers import job, tiny_spec, wait_for, wait_status

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ITERATIONS = 12



def _metarl(*args: str, home: Path):  # noqa: ANN202
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "METARL_HOME": str(home),
                                                      "METARL_API_URL": None, "METARL_API_KEY": None})
    assert "Traceback" not in result.output, result.output
    return result


def _leftovers(paths: local.Paths, head: dict, workers: list[dict]) -> list[local.Proc]:
    procs = local.head_processes(Path(head["temp_dir"]), head["gcs_port"]) if head else []
    for w in workers:
        procs += local.worker_processes(paths, int(w["index"]))
    return procs


def test_job_spreads_over_worker_nodes_and_survives_losing_one(tmp_path, monkeypatch):  # noqa: ANN001
    home = (tmp_path / "home").resolve()
    paths = local.Paths(home)
    for var in ("MLFLOW_TRACKING_URI", "METARL_ARTIFACT_ROOT", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("METARL_POLL_INTERVAL_S", "0.5")  # the API (started by `up`) inherits it
    port, dash = free_port(), free_port()
    head: dict = {}
    workers: list[dict] = []
    logs = ""
    try:
        # ---- the cluster: a head without CPUs and two worker nodes with 4 logical CPUs each
        r = _metarl("up", "--workers", "2", "--cpus-per-worker", "4", "--num-cpus", "0", "--port", str(port),
                    "--dashboard-port", str(dash), "--ray-port", str(free_port()), home=home)
        assert r.exit_code == 0, r.output
        assert "Ray worker node 1" in r.output and "Ray worker node 2" in r.output, r.output
        head = json.loads(paths.head_file.read_text())
        workers = json.loads(paths.workers_file.read_text())
        assert [w["index"] for w in workers] == [1, 2] and all(w["node_id"] for w in workers)
        pids = [{p.pid for p in local.worker_processes(paths, w["index"])} for w in workers]
        assert all(pids) and not pids[0] & pids[1], "each worker node is its own set of processes"
        url = paths.api_url.read_text().strip()
        key = paths.admin_key.read_text().strip()
        c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

        cluster = c.get("/v1/cluster").json()
        alive = [n for n in cluster["nodes"] if n["alive"]]
        assert len(alive) == 3 and sum(n["is_head"] for n in alive) == 1, cluster
        # every node registers, and listens, on loopback (service.ray_node keeps 127.0.0.1 for worker nodes)
        assert {n["address"] for n in alive} == {"127.0.0.1"} and cluster["cpus"] == 8, cluster
        assert {w["node_id"] for w in workers} == {n["node_id"] for n in alive if not n["is_head"]}

        # ---- a job with 4 rollout workers (2 CPUs of each worker node)
        spec = tiny_spec("multinode-nav", meta_batch_size=8, episodes_per_task=4, iterations=ITERATIONS,
                         checkpoint_every=1, resources={"rollout_workers": 4, "envs_per_worker": 8})
        r = c.post("/v1/jobs", json=spec)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]

        def progressed() -> dict | None:
            j = job(c, job_id)
            return j if j["progress"]["iteration"] >= 2 or j["status"] in ("SUCCEEDED", "FAILED", "STOPPED") else None

        running = wait_for(progressed, timeout=240, what="iteration 2 of the job", every=0.2)
        assert running["status"] == "RUNNING", running
        assert running["latest_metrics"]["perf/nodes"] >= 2, running["latest_metrics"]
        assert running["latest_metrics"]["perf/rollout_workers"] == 4

        # ---- lose worker node 2 mid-job: SIGKILL its raylet, agents and rollout actors
        victim = workers[1]
        procs = local.worker_processes(paths, 2)
        assert any("raylet" in p.args for p in procs), [p.args for p in procs]
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
        at_kill = job(c, job_id)
        assert at_kill["status"] == "RUNNING" and at_kill["progress"]["iteration"] < ITERATIONS, at_kill
        killed_at = time.monotonic()
        wait_for(lambda: not local.worker_processes(paths, 2), timeout=30, what="worker node 2's processes to exit")
        wait_for(lambda: any(n["node_id"] == victim["node_id"] and not n["alive"]
                             for n in c.get("/v1/cluster").json()["nodes"]),
                 timeout=120, what="Ray to mark worker node 2 dead")
        dead_after = time.monotonic() - killed_at

        # once the job has moved on, its live rollout actors are all on the surviving worker node
        wait_for(lambda: (j := job(c, job_id))["progress"]["iteration"] > at_kill["progress"]["iteration"] + 1
                 or j["status"] != "RUNNING", timeout=240, what="the job to go on after the node loss")
        rows = httpx.get(f"http://127.0.0.1:{head['dashboard_port']}/api/v0/actors", params={"limit": 10_000},
                         headers={"Authorization": f"Bearer {paths.token_file.read_text().strip()}"},
                         timeout=30).json()["data"]["result"]["result"]
        rollout = [a for a in rows if (a.get("name") or "").startswith(f"metarl-{job_id}-rollout-")]
        live_nodes = {a["node_id"] for a in rollout if a["state"] == "ALIVE"}
        assert victim["node_id"] not in live_nodes, rollout

        done = wait_status(c, job_id, {"SUCCEEDED", "FAILED", "STOPPED"}, timeout=300)
        logs = c.get(f"/v1/jobs/{job_id}/logs", params={"tail": 400}).json()["logs"]
        assert done["status"] == "SUCCEEDED", (done.get("message"), logs[-3000:])
        assert done["progress"]["iteration"] == ITERATIONS and done["model_uri"]
        hist = c.get(f"/v1/jobs/{job_id}/metrics",
                     params={"key": ["perf/nodes", "fault/resampled_shards", "time/iteration_s"]}).json()["metrics"]
        assert [p["step"] for p in hist["perf/nodes"]] == list(range(ITERATIONS))
        assert f"iteration {ITERATIONS}/{ITERATIONS}" in logs

        # the run's tag names the nodes the rollout actors ran on: both worker nodes, not the head
        import mlflow

        run = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}").get_run(done["run_id"])
        ran_on = set(run.data.tags["metarl.nodes"].split(","))
        assert ran_on == {w["node_id"] for w in workers}, (ran_on, workers)
        resampled = sum(p["value"] for p in hist["fault/resampled_shards"])
        its = ", ".join(f"{p['value']:.1f}" for p in hist["time/iteration_s"])
        print(f"\nkilled worker node 2 at iteration {at_kill['progress']['iteration']}; "
              f"marked dead after {dead_after:.0f} s; shards re-sampled: {resampled:g}; "
              f"rollout actors alive afterwards on {sorted(live_nodes)}; "
              f"ran on {sorted(ran_on)}; iteration seconds: {its}")
    finally:
        r = _metarl("down", home=home)
        assert r.exit_code == 0, r.output
        for d in [head.get("temp_dir"), *(w["temp_dir"] for w in workers)]:
            if d:
                shutil.rmtree(d, ignore_errors=True)
    assert "Ray worker node 1" in r.output and "stopped" in r.output, r.output
    assert not _leftovers(paths, head, workers)
    assert not paths.api_pid.exists() and not paths.workers_file.exists() and not paths.head_file.exists()
