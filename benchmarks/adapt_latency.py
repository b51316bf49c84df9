"""Adapt-as-a-service latency: ``POST /v1/models/{name}/adapt`` under load, against the same
adaptation in process (the floor: what the model itself costs).

Set-up: a temp data dir; three supervised models meta-trained here for a few iterations by the
engine's own learners and registered in a real MLflow SQLite store (owner ``bench``):
``digits-protonet`` (5-way 1-shot digits-rotations, conv4: 5 support examples, 75 queries),
``digits-maml`` (the same episodes, MAML with 3 inner steps at test) and ``sinusoid-maml``
(2x40 MLP, 10 shots, 10 inner steps at test, 100 queries) -- the presets' settings.  Then the
real API server (``python -m service`` under uvicorn, its own process) with
``METARL_ADAPT_SERVERS`` model servers.  Each request is a real test episode of its model's
distribution (a pool of 64 per model, drawn with fixed seeds), bodies encoded once beforehand.

Phases, each ``--seconds`` long after a warm-up that loads every model on every server:

* ``in_process``: ``model.adapt(support_x, support_y).predict(query_x)`` in this process, one
  thread, one request at a time (the floor);
* ``http_1``: one connection, closed loop (what a request costs end to end: JSON, auth, the
  registry lookup, the socket hop to the model server, the adaptation);
* ``http_load``: ``--connections`` concurrent connections (closed loop, no think time; more
  connections than model servers, so requests queue for a server: p99 includes the wait).

Each request picks its model uniformly at random (seeded).  Prints one JSON line (appended to
``benchmarks/results/adapt_latency.jsonl``) with p50/p99/max per phase and per model, the
request rate, error counts (any non-200), and ``ratio_p50_http_1`` = http_1 p50 / in-process
p50 per model (the service's overhead) and the machine's cores and load average.

    python benchmarks/adapt_latency.py [--seconds 20] [--connections 16] [--servers 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from api_load import create_key, free_port, start_service  # noqa: E402

OWNER = "bench"
WARMUP_S = 3.0
EPISODES = 64

#: name -> (job spec overrides, meta-training iterations here)
MODELS: dict[str, tuple[dict[str, Any], int]] = {
    "digits-protonet": ({"algorithm": {"name": "protonet"},
                         "task_family": {"name": "digits-rotations",
                                         "params": {"ways": 5, "shots": 1, "queries": 15}}}, 20),
    "digits-maml": ({"algorithm": {"name": "sl-maml", "inner_lr": 0.4, "test_inner_steps": 3},
                     "task_family": {"name": "digits-rotations", "params": {"ways": 5, "shots": 1, "queries": 15}}},
                    20),
    "sinusoid-maml": ({"algorithm": {"name": "sl-maml", "inner_lr": 0.01, "test_inner_steps": 10},
                       "task_family": {"name": "sinusoid", "params": {"shots": 10, "queries": 100}},
                       "policy": {"hidden_sizes": [40, 40], "activation": "relu"}}, 200),
}


@dataclass
class Request:
    model: str
    body: bytes
    support_x: Any
    support_y: Any
    query_x: Any


def register_models(home: Path) -> dict[str, list[Request]]:
    """Meta-train each model briefly, register it, and draw its request pool (test episodes)."""
    import mlflow
    import numpy as np
    import torch

    from algorithms import registry
    from workers.contract import JobSpec
    from workers.distributions import build_distribution
    from workers.loop import train_in_process
    from workers.model import log_meta_policy

    uri = f"sqlite:///{home / 'mlflow.db'}"
    os.environ.update(MLFLOW_TRACKING_URI=uri, METARL_HOME=str(home), METARL_ARTIFACT_ROOT=str(home / "mlartifacts"))
    mlflow.set_tracking_uri(uri)
    exp = mlflow.MlflowClient(uri).create_experiment("metarl-bench", artifact_location=str(home / "mlartifacts"))
    pools: dict[str, list[Request]] = {}
    for name, (over, iterations) in MODELS.items():
        torch.manual_seed(0)
        spec = JobSpec.model_validate({"name": name, "meta_batch_size": 8, "iterations": iterations, "seed": 0,
                                       **over})
        tf = spec.task_family
        dist = build_distribution(tf.name, seed=spec.seed, **tf.family_kwargs())
        learner = registry.make_learner(spec.algorithm, spec.model_spec(dist), seed=spec.seed)
        results = train_in_process(learner, dist, meta_batch_size=spec.meta_batch_size, episodes_per_task=1,
                                   iterations=iterations, seed=spec.seed)
        with mlflow.start_run(experiment_id=exp):
            log_meta_policy(state=learner.state_dict(), spec=spec, final_metrics=results[-1].metrics,
                            register_as=name, extra_tags={"owner": OWNER}, family=dist)
        rng = np.random.default_rng(1)
        pool = []
        for task in dist.sample_tasks(EPISODES, rng, split="test"):
            ep = dist.episode(task, rng)
            y = ep.y_support if ep.y_support.ndim == 1 else ep.y_support[:, 0]
            body = json.dumps({"support_x": ep.x_support.tolist(), "support_y": y.tolist(),
                               "query_x": ep.x_query.tolist()}).encode()
            pool.append(Request(name, body, ep.x_support, ep.y_support, ep.x_query))
        pools[name] = pool
    return pools


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else float("nan")


def summary(lat: dict[str, list[float]], seconds: float, errors: dict[str, int]) -> dict[str, Any]:
    every = [x for v in lat.values() for x in v]
    return {"requests": len(every), "requests_per_s": round(len(every) / seconds, 1),
            "p50_ms": pct(every, 0.5), "p99_ms": pct(every, 0.99), "max_ms": pct(every, 1.0),
            "errors": sum(errors.values()), "error_kinds": errors,
            "by_model": {k: {"p50_ms": pct(v, 0.5), "p99_ms": pct(v, 0.99), "requests": len(v)}
                         for k, v in sorted(lat.items())}}


def in_process(pools: dict[str, list[Request]], seconds: float) -> dict[str, Any]:
    import torch

    from workers.model import MetaPolicy

    torch.set_num_threads(1)  # as a model server (METARL_ADAPT_THREADS=1)
    models = {name: MetaPolicy.load(f"models:/{name}/1") for name in pools}
    rng = random.Random(0)
    lat: dict[str, list[float]] = {}
    start = time.perf_counter()
    while time.perf_counter() - start < WARMUP_S + seconds:
        name = rng.choice(sorted(pools))
        r = rng.choice(pools[name])
        t = time.perf_counter()
        models[name].adapt(r.support_x, r.support_y).predict(r.query_x)
        if t - start >= WARMUP_S:
            lat.setdefault(name, []).append(time.perf_counter() - t)
    return summary(lat, seconds, {})


async def http(url: str, key: str, pools: dict[str, list[Request]], *, connections: int,
               seconds: float) -> dict[str, Any]:
    import aiohttp

    lat: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(base_url=url, headers=headers, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as client:
        start = time.perf_counter()
        measure_from, stop_at = start + WARMUP_S, start + WARMUP_S + seconds

        async def worker(i: int) -> None:
            rng = random.Random(i)
            while True:
                name = rng.choice(sorted(pools))
                r = rng.choice(pools[name])
                t = time.perf_counter()
                if t >= stop_at:
                    return
                try:
                    async with client.post(f"/v1/models/{name}/adapt", data=r.body) as resp:
                        await resp.read()
                        bad = None if resp.status == 200 else f"{name}:{resp.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    bad = f"{name}:{type(exc).__name__}"
                done = time.perf_counter()
                if t >= measure_from and done <= stop_at:
                    lat.setdefault(name, []).append(done - t)
                    if bad is not None:
                        errors[bad] = errors.get(bad, 0) + 1

        await asyncio.gather(*(worker(i) for i in range(connections)))
    return summary(lat, seconds, errors)


def warm(url: str, key: str, pools: dict[str, list[Request]], servers: int) -> None:
    """Start every model server and load every model on each (concurrent requests, so each
    server gets some)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def one(name: str) -> None:
        r = httpx.post(f"{url}/v1/models/{name}/adapt", content=pools[name][0].body, timeout=300,
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        r.raise_for_status()

    with ThreadPoolExecutor(max_workers=servers) as ex:
        for _ in range(3):
            list(ex.map(one, [n for n in pools for _ in range(servers)]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--servers", type=int, default=2, help="model servers (METARL_ADAPT_SERVERS)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "adapt_latency.jsonl")
    args = ap.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="metarl-adapt-bench-") as tmp:
        home = Path(tmp)
        t = time.perf_counter()
        pools = register_models(home)
        setup_s = time.perf_counter() - t
        floor = in_process(pools, args.seconds)
        os.environ["METARL_ADAPT_SERVERS"] = str(args.servers)
        port = free_port()
        proc = start_service(home, port)
        try:
            url = f"http://127.0.0.1:{port}"
            key = create_key(url, home, OWNER)
            warm(url, key, pools, args.servers)
            one = asyncio.run(http(url, key, pools, connections=1, seconds=args.seconds))
            loaded = asyncio.run(http(url, key, pools, connections=args.connections, seconds=args.seconds))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    result = {
        "benchmark": "adapt_latency", "seconds": args.seconds, "connections": args.connections,
        "servers": args.servers, "models": {k: {"iterations": v[1], **v[0]} for k, v in MODELS.items()},
        "in_process": floor, "http_1": one, "http_load": loaded,
        "ratio_p50_http_1": {k: round(one["by_model"][k]["p50_ms"] / floor["by_model"][k]["p50_ms"], 2)
                             for k in floor["by_model"] if k in one["by_model"]},
        "setup_s": round(setup_s, 1), "cores": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    line = json.dumps(result)
    print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(line + "\n")
    return 0 if loaded["errors"] == 0 and one["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
