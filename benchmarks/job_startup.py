"""Start-up: the time from ``POST /v1/jobs`` to the job's first finished meta-iteration, on a
running local cluster, against a driver started on its own.

Set-up: ``metarl up`` in a temp data dir (a local Ray head with its job server, the API on a free
port, SQLite stores), timed as ``up_s``; ``metarl down`` at the end whatever happens.

Measured, ``--jobs`` times one after the other (the first one right after ``up``: ``cold``):

* ``post_to_first_iteration_s`` -- the figure: from just before ``POST /v1/jobs`` (the
  ``--preset`` with ``iterations`` = ``--iterations`` and no model registration) until the
  driver logs iteration 0's metrics (its MLflow timestamp; the same machine's clock);
* its parts: ``to_run_start_s`` -- POST to the driver's MLflow run being created (the Ray job
  submission, the driver process, its imports, ``ray.init`` joining the cluster), and
  ``run_start_to_first_metric_s`` -- from there to iteration 0's metrics (the rollout and
  learner actors starting, the first iteration itself: ``first_iteration_s``);
* ``post_to_visible_s`` -- until ``GET /v1/jobs/{id}`` reports the iteration (polled every
  0.5 s; the API's poller refreshes an active job every ``METARL_POLL_INTERVAL_S``, 2 s).

Baseline in the same run: the same spec run by a driver started on its own
(``python -m workers.driver --spec PATH``: a fresh process with no cluster, so it starts its own
local Ray, and its own SQLite MLflow store), from the process's launch to iteration 0's metrics
being logged.  ``ratio`` = baseline / the median of the service's warm figures.

Prints one JSON line and writes ``--out`` (``benchmarks/results/job_startup.json``).

    python benchmarks/job_startup.py [--preset navigation2d-maml] [--jobs 4] [--iterations 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
METARL = str(Path(sys.executable).with_name("metarl"))
GOAL_S = 10.0


def isolated_env(home: Path) -> dict[str, str]:
    """This process's environment for a metarl process with its own data dir ``home``: nothing
    pointing at another store, API or cluster."""
    env = dict(os.environ, METARL_HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true")
    for var in ("MLFLOW_TRACKING_URI", "METARL_API_URL", "METARL_API_KEY", "RAY_ADDRESS", "METARL_DATABASE_URL"):
        env.pop(var, None)
    return env


def spec_for(preset: str, iterations: int) -> dict[str, Any]:
    from service import presets

    spec = dict(presets.load_preset(preset).spec)
    spec.update(iterations=iterations, register_as=None, checkpoint_every=iterations)
    return spec


def _first_metric(home: Path, run_id: str | None = None) -> tuple[float, float, float]:
    """In ``home``'s MLflow store, run ``run_id``'s (default: the store's one run) start, iteration
    0's ``time/iteration_s`` timestamp (both epoch seconds) and its value."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    if run_id is None:
        (found,) = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1)
        run_id = found.info.run_id
    run = client.get_run(run_id)
    first = min((m for m in client.get_metric_history(run_id, "time/iteration_s")), key=lambda m: m.step)
    return run.info.start_time / 1000, first.timestamp / 1000, float(first.value)


def through_the_service(home: Path, spec: dict[str, Any], *, jobs: int) -> dict[str, Any]:
    import httpx

    t0 = time.perf_counter()
    subprocess.run([METARL, "up"], env=isolated_env(home), check=True, capture_output=True, text=True, timeout=300)
    up_s = time.perf_counter() - t0
    url = (home / "api.url").read_text().strip()
    headers = {"Authorization": f"Bearer {(home / 'admin.key').read_text().strip()}"}
    runs = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        for i in range(jobs):
            posted = time.time()
            t0 = time.perf_counter()
            r = http.post("/v1/jobs", json={**spec, "name": f"startup-{i}"})
            r.raise_for_status()
            job_id = r.json()["id"]
            while True:
                job = http.get(f"/v1/jobs/{job_id}").json()
                if (job.get("progress") or {}).get("iteration", 0) >= 1:
                    visible = time.perf_counter() - t0
                    break
                if job["status"] in ("FAILED", "STOPPED"):
                    raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('message')}")
                if time.perf_counter() - t0 > 300:
                    raise TimeoutError(f"job {job_id}: no iteration after 300 s")
                time.sleep(0.5)
            while job["status"] not in ("SUCCEEDED", "FAILED", "STOPPED"):  # the next job meets an idle cluster
                time.sleep(0.5)
                job = http.get(f"/v1/jobs/{job_id}").json()
            created = dt.datetime.fromisoformat(job["created_at"].replace("Z", "+00:00")).timestamp()
            start, first, first_s = _first_metric(home, job["run_id"])
            runs.append({"job": job_id, "cold": i == 0, "post_to_first_iteration_s": round(first - posted, 2),
                         "to_run_start_s": round(start - posted, 2),
                         "run_start_to_first_metric_s": round(first - start, 2),
                         "first_iteration_s": round(first_s, 2), "post_to_visible_s": round(visible, 2),
                         "post_to_created_s": round(created - posted, 3)})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    return {"up_s": round(up_s, 2), "runs": runs}


def driver_on_its_own(home: Path, spec: dict[str, Any]) -> dict[str, Any]:
    path = home / "spec.json"
    path.write_text(json.dumps({**spec, "name": "startup-alone"}))
    env = isolated_env(home)
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    launched = time.time()
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "workers.driver", "--spec", str(path), "--job-id", "startup-alone"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"the driver failed ({out.returncode}): {out.stderr[-3000:]}")
    start, first, first_s = _first_metric(home)
    return {"launch_to_first_metric_s": round(first - launched, 2), "launch_to_run_start_s": round(start - launched, 2),
            "first_iteration_s": round(first_s, 2), "process_wall_s": round(wall, 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="navigation2d-maml")
    p.add_argument("--jobs", type=int, default=4, help="jobs submitted one after the other (the first is cold)")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "job_startup.json"))
    args = p.parse_args(argv)
    spec = spec_for(args.preset, args.iterations)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="metarl-startup-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        try:
            service = through_the_service(home, spec, jobs=args.jobs)
        finally:
            subprocess.run([METARL, "down"], env=isolated_env(home), capture_output=True, timeout=120)
        alone_home = Path(tmp) / "alone"
        alone_home.mkdir()
        alone = driver_on_its_own(alone_home, spec)
    warm = [r["post_to_first_iteration_s"] for r in service["runs"] if not r["cold"]] or \
        [r["post_to_first_iteration_s"] for r in service["runs"]]
    figure = statistics.median(warm)
    record = {
        "figure": "POST /v1/jobs to the first finished meta-iteration", "preset": args.preset,
        "post_to_first_iteration_s": figure, "cold_s": service["runs"][0]["post_to_first_iteration_s"],
        "goal_s": GOAL_S, "goal_met": figure <= GOAL_S, "up_s": service["up_s"], "runs": service["runs"],
        "baseline": "a driver started on its own (python -m workers.driver, its own local Ray and MLflow store)",
        "baseline_s": alone["launch_to_first_metric_s"], "baseline_detail": alone,
        "ratio": round(alone["launch_to_first_metric_s"] / figure, 2), "cpus": os.cpu_count(),
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "command": "python benchmarks/job_startup.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record), flush=True)
    return record


if __name__ == "__main__":
    main()
