"""The local stack and the cluster: ``metarl up / down / demo``, ``presets``, ``cluster``, ``keys``."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from service import local, presets, topology
from service.cli.core import CliError, Config, api, cfg, new_typer
from service.cli.jobs import load_spec, submit_job, summary, watch_job
from service.cli.output import console, new_table, say

keys_app = new_typer("API keys (admin only).")
DEMO_PRESET = "navigation2d-maml-demo"


# ---- presets, cluster, keys --------------------------------------------------------------------
def presets_cmd(name: Annotated[str | None, typer.Argument(help="show this preset's spec (JSON)")] = None) -> None:
    """List the job presets (workers/presets), or print one."""
    if name is not None:
        console.print_json(json.dumps(presets.load_preset(name).spec))
        return
    t = new_table("job presets (metarl jobs submit --preset NAME [--set key=value ...])")
    for col in ("name", "algorithm", "task family", "meta-batch × episodes", "iterations", "workers × envs",
                "registers as"):
        t.add_column(col, overflow="fold")
    for p in presets.presets():
        s = p.spec
        alg = s.get("algorithm", {})
        outer = (alg.get("outer") or {}).get("name")
        fam = s.get("task_family", {})
        res = s.get("resources", {})
        t.add_row(p.name, alg.get("name", "?") + (f"-{outer}" if outer else ""),
                  fam.get("name", "?") + (f" {fam['env_name']}" if fam.get("env_name") else ""),
                  f"{s.get('meta_batch_size', 20)} × {s.get('episodes_per_task', 10)}", str(s.get("iterations", 100)),
                  f"{res.get('rollout_workers', 2)} × {res.get('envs_per_worker', 10)}",
                  str(s.get("register_as") or "-"))
    console.print(t)


def cluster(ctx: typer.Context) -> None:
    """The Ray cluster: nodes, CPUs, GPUs, free capacity."""
    c = api(ctx).get("/v1/cluster")
    t = new_table(f"cluster: {c['cpus_free']:g}/{c['cpus']:g} CPUs free, {c['gpus_free']:g}/{c['gpus']:g} GPUs free")
    for col in ("node", "address", "role", "alive", "CPUs", "GPUs", "memory GB"):
        t.add_column(col)
    for n in c["nodes"]:
        t.add_row(n["node_id"][:12], n["address"], "head" if n["is_head"] else "worker",
                  "[green]yes[/]" if n["alive"] else "[red]no[/]", f"{n['cpus']:g}", f"{n['gpus']:g}",
                  f"{n['memory_gb']:.1f}")
    console.print(t)


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    owner: Annotated[str, typer.Option("--owner", help="who the key belongs to (jobs are private to their owner)")],
    admin: Annotated[bool, typer.Option("--admin", help="an admin key (sees every job, creates keys)")] = False,
) -> None:
    """Create an API key (shown once)."""
    k = api(ctx).post("/v1/keys", {"owner": owner, "admin": admin})
    console.print(f"API key for [bold]{k['owner']}[/bold]{' (admin)' if k['admin'] else ''}, id {k['id']}:")
    console.print(k["key"], soft_wrap=True, highlight=False)
    console.print("it is shown only now (the service keeps a hash); use it as METARL_API_KEY or --key", style="dim")


# ---- the local stack -------------------------------------------------------------------------------
def _components_table(components: list[local.Component], title: str) -> Table:
    t = new_table(title)
    t.add_column("component", no_wrap=True)
    t.add_column("state", no_wrap=True)
    t.add_column("address", overflow="fold")
    t.add_column("pid", no_wrap=True)
    for c in components:
        style = {"started": "green", "already running": "cyan", "stopped": "yellow"}.get(c.state, "dim")
        t.add_row(c.name, f"[{style}]{c.state}[/]", c.address, c.pid)
    return t


def _components_notes(components: list[local.Component]) -> None:
    for c in components:
        if c.note:
            console.print(f"  {c.name}: {escape(c.note)}", style="dim", soft_wrap=True, highlight=False)


def venv_tool(name: str) -> str:
    """How to call a tool of this environment: ``.venv/bin/NAME`` when it lies under the current
    directory (the repo), else plain ``NAME``."""
    exe = Path(sys.executable).parent / name
    try:
        rel = exe.relative_to(Path.cwd())
    except ValueError:
        return name
    return str(rel) if exe.is_file() else name


def _me(config: Config) -> str:
    """This CLI, with ``--home`` when the data dir is not the default one."""
    default = Path(os.environ.get("METARL_HOME") or Path.home() / ".metarl").expanduser()
    return venv_tool("metarl") + ("" if config.home == default else f" --home {config.home}")


def _up(config: Config, *, num_cpus: int | None, port: int | None, dashboard_port: int | None,
        ray_port: int | None, workers: int = 0, cpus_per_worker: int = 2) -> list[local.Component]:
    if num_cpus is None:  # with worker nodes the head keeps no CPUs: rollouts go to the workers
        num_cpus = 0 if workers else os.cpu_count() or 1
    comps = local.up(config.home, num_cpus=num_cpus, port=port, dashboard_port=dashboard_port,
                     ray_port=ray_port, workers=workers, cpus_per_worker=cpus_per_worker, say=say)
    console.print(_components_table(comps, f"metarl is up (data dir {config.home})"))
    _components_notes(comps)
    console.print(f"API key: {config.home / 'admin.key'} (the CLI reads it on this machine)\n"
                  f"stop everything: {_me(config)} down", soft_wrap=True)
    return comps


def _port(flag: str, help_: str) -> Any:
    return typer.Option(flag, min=1, max=65535, show_default=False, help=help_)


PortOpt = Annotated[int | None, _port("--port", "API port [default: 8000, or a free port when 8000 is busy]")]
DashOpt = Annotated[int | None, _port(
    "--dashboard-port", "Ray dashboard / job server port [default: 8265, or a free port when busy]")]
RayOpt = Annotated[int | None, _port("--ray-port", "Ray GCS port [default: 6379, or a free port when busy]")]
CpuOpt = Annotated[int | None, typer.Option(
    "--num-cpus", min=0, help="CPUs the Ray head may use [default: all; 0 with --workers]", show_default=False)]
WorkersOpt = Annotated[int, typer.Option(
    "--workers", min=0,
    help="Ray worker nodes to start beside the head (separate `ray start` processes on 127.0.0.1)")]
WorkerCpuOpt = Annotated[int, typer.Option("--cpus-per-worker", min=1, help="logical CPUs of each worker node")]


class Topology(StrEnum):
    local = "local"
    cluster = "cluster"


TopologyOpt = Annotated[Topology, typer.Option(
    "--topology", help="local: a Ray head (+ --workers), the API, SQLite stores in the data dir; cluster: the "
    "production topology on this machine (PostgreSQL, an S3 server, the MLflow server, a Ray head and "
    "--workers worker nodes [default 2], two API processes)")]
DevOpt = Annotated[bool, typer.Option(
    "--dev", help="cluster topology: accept .env.example's change-me secrets (never in production)")]


def up(ctx: typer.Context, num_cpus: CpuOpt = None, port: PortOpt = None, dashboard_port: DashOpt = None,
       ray_port: RayOpt = None, workers: WorkersOpt = 0, cpus_per_worker: WorkerCpuOpt = 2,
       topology_: TopologyOpt = Topology.local, dev: DevOpt = False) -> None:
    """Start a local Ray head (job server on 127.0.0.1, token auth), optional worker nodes and the API, detached
    (in sessions of their own: they keep running when this terminal closes; `metarl down` stops them);
    `--topology cluster`: the production topology, every part on 127.0.0.1."""
    config = cfg(ctx)
    if topology_ is Topology.local:
        _up(config, num_cpus=num_cpus, port=port, dashboard_port=dashboard_port, ray_port=ray_port, workers=workers,
            cpus_per_worker=cpus_per_worker)
        return
    if num_cpus not in (None, 0):
        raise CliError("--num-cpus: the cluster topology's Ray head has no CPUs (rollouts run on the worker nodes)")
    comps = topology.up(config.home, workers=workers or 2, cpus_per_worker=cpus_per_worker, port=port,
                        dashboard_port=dashboard_port, ray_port=ray_port, dev=dev, say=say)
    console.print(_components_table(comps, f"metarl cluster topology is up (data dir {config.home})"))
    _components_notes(comps)
    console.print(f"API key: {config.home / 'admin.key'}; secrets: {topology.TopologyPaths(config.home).secrets}\n"
                  f"stop everything: {_me(config)} down", soft_wrap=True)


def down(ctx: typer.Context) -> None:
    """Stop what `metarl up` started (only that): the API, the worker nodes and the Ray head; for the cluster
    topology also MLflow, the S3 server and PostgreSQL."""
    home = cfg(ctx).home
    comps = topology.down(home, say=say) if topology.is_cluster(home) else local.down(home, say=say)
    console.print(_components_table(comps, "metarl is down"))
    _components_notes(comps)


def demo(
    ctx: typer.Context,
    preset: Annotated[str, typer.Option("--preset", help="the job to run")] = DEMO_PRESET,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a field: KEY=VALUE")] = None,
    num_cpus: CpuOpt = None, port: PortOpt = None, dashboard_port: DashOpt = None, ray_port: RayOpt = None,
) -> None:
    """`make run`: metarl up, submit the demo job, watch it live, print how to load the model."""
    config = cfg(ctx)
    spec = load_spec(None, preset, set_ or [])
    comps = _up(config, num_cpus=num_cpus, port=port, dashboard_port=dashboard_port, ray_port=ray_port)
    url, store = comps[1].address, comps[2].address
    if config.api is None:
        config.api = url
    client = config.client()
    console.rule(f"meta-training {preset}")
    job = submit_job(client, spec)
    state = watch_job(client, job["id"])
    summary(state)
    me, final = _me(config), state.job
    if final["status"] != "SUCCEEDED" or not final.get("model_uri"):
        why = f": {final['message']}" if final.get("message") else ""
        raise CliError(f"the demo job {final['id']} ended {final['status']}{why}", hint=f"{me} jobs logs {final['id']}")
    console.rule("the trained meta-policy")
    console.print(demo_snippets(final["model_uri"], episodes=int(spec.get("episodes_per_task", 10)), home=config.home,
                                store=store, python=venv_tool("python")),
                  highlight=False, soft_wrap=True, markup=False)
    console.print(f"the service is still running: {me} jobs list, {me} models list, "
                  f"{url}/docs; stop it with: {me} down", soft_wrap=True)


def demo_snippets(uri: str, *, episodes: int, home: Path, store: str, python: str) -> str:
    """What ``metarl demo`` prints after training: how to load, adapt and run the model, as
    lines to paste (``MetaPolicy`` finds the service's store by ``METARL_HOME``; plain MLflow
    needs ``MLFLOW_TRACKING_URI``, else it looks in ``./mlflow.db``)."""
    env = "" if home == Path.home() / ".metarl" else f"METARL_HOME={home} "
    # two zero observations of the model's own input shape (its MLflow signature)
    example = "np.zeros((2, *m.metadata.get_input_schema().inputs[0].shape[1:]), np.float32)"
    return (
        f"load it, adapt it to a new task with {episodes} episodes and compare ({env}{python}):\n"
        "    import numpy as np; from workers.model import MetaPolicy\n"
        f'    policy = MetaPolicy.load("{uri}")\n'
        "    task = policy.family.sample_tasks(1, np.random.default_rng(0))[0]\n"
        f"    adapted = policy.adapt(task, episodes={episodes})\n"
        '    print(f"return before adaptation {policy.mean_return(task):.1f}, after {adapted.mean_return(task):.1f}")\n'
        "then adapted.act(obs) gives actions (clipped to the action space).\n"
        "as a plain MLflow pyfunc model (observations -> the meta-policy's actions, no adaptation):\n"
        f"    MLFLOW_TRACKING_URI={store} {python} -c 'import mlflow, numpy as np; "
        f'm = mlflow.pyfunc.load_model("{uri}"); print(m.predict({example}))\''
    )
