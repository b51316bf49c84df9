"""``metarl jobs``: submit, list, show, watch, logs, cancel, scale, resume."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from service import presets
from service.cli.core import CliError, api, new_typer
from service.cli.output import (
    STEPS_PER_S,
    TERMINAL,
    bar_stats,
    console,
    declared,
    first_to_last,
    fmt_duration,
    fmt_num,
    fmt_progress,
    fmt_status,
    fmt_when,
    kv_table,
    latest_rows,
    metric_stats,
    new_table,
    throughput_unit,
)
from service.client import ApiClient, ClientError, ConnectionFailed

jobs_app = new_typer("Meta-training jobs: submit, follow, scale, stop, resume.")
IdArg = Annotated[str, typer.Argument(metavar="ID")]


def load_spec(file: Path | None, preset: str | None, overrides: list[str]) -> dict[str, Any]:
    """A job spec from a file or a preset, with ``--set`` overrides, validated here first."""
    if file is not None and preset is None:
        spec = presets.load_spec_file(file)
    elif preset is not None and file is None:
        spec = presets.load_preset(preset).spec
    else:
        raise CliError("give a spec FILE or --preset NAME (one of them)", hint="`metarl presets` lists the presets")
    return presets.validate(presets.apply_overrides(spec, overrides))


def submit_job(client: ApiClient, spec: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
    job = client.post("/v1/jobs", spec, headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex})
    console.print(f"submitted job [bold]{job['id']}[/bold] ({escape(job['name'])}): {fmt_status(job['status'])}")
    return job


@jobs_app.command("submit")
def jobs_submit(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="job spec (JSON, or YAML)", show_default=False)] = None,
    preset: Annotated[str | None, typer.Option("--preset", "-p", help="a preset name (`metarl presets`)")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="override a field: KEY=VALUE, dotted keys (resources.rollout_workers=2)")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="follow it live to the end")] = False,
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", help="resubmitting with the same key returns the same job")] = None,
) -> None:
    """Submit a meta-training job from a spec file or a preset."""
    spec = load_spec(file, preset, set_ or [])
    client = api(ctx)
    job = submit_job(client, spec, idempotency_key=idempotency_key)
    if watch:
        finish(watch_job(client, job["id"]))
    else:
        console.print(f"follow it: metarl jobs watch {job['id']}", style="dim")


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(
        "--status", help="PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500)] = 20,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
) -> None:
    """List jobs, newest first."""
    page = api(ctx).get("/v1/jobs", status=status.upper() if status else None, limit=limit, offset=offset)
    t = new_table(f"jobs ({len(page['data'])} of {page['count']})")
    for col in ("id", "status", "progress"):
        t.add_column(col, no_wrap=True)
    t.add_column("name", overflow="fold", min_width=12)
    t.add_column("model", overflow="fold", min_width=5)
    t.add_column("created", no_wrap=True)
    for j in page["data"]:
        model = "-"
        if j.get("model_version"):
            same = j.get("model_name") == j["name"]
            model = f"v{j['model_version']}" if same else f"{j['model_name']}/{j['model_version']}"
        t.add_row(j["id"], fmt_status(j["status"]), fmt_progress(j), escape(j["name"]), model,
                  fmt_when(j["created_at"])[5:16])
    console.print(t)


def _status_line(job: dict[str, Any]) -> str:
    return fmt_status(job["status"]) + (f"  {escape(job['message'])}" if job.get("message") else "")


def show(job: dict[str, Any]) -> None:
    """A job's fields, its declared headline metrics, then every latest metric."""
    metrics = job.get("latest_metrics") or {}
    rows = [("id", job["id"]), ("name", escape(job["name"])), ("owner", job["owner"]), ("status", _status_line(job)),
            ("progress", f"{fmt_progress(job)} iterations"), ("attempt", str(job["attempt"])),
            ("rollout workers", str(job["rollout_workers"])), ("MLflow run", job.get("run_id") or "-"),
            ("model", job.get("model_uri") or "-"), ("created", fmt_when(job["created_at"])),
            ("finished", fmt_when(job.get("finished_at"))), ("duration", fmt_duration(job))]
    rows += latest_rows(metrics, declared(job))
    console.print(kv_table(rows, title=f"job {job['id']}"))
    if metrics:
        t = new_table("latest metrics")
        t.add_column("metric")
        t.add_column("value", justify="right")
        for k in sorted(metrics):
            t.add_row(k, fmt_num(metrics[k], ".4g"))
        console.print(t)


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, job_id: IdArg,
              as_json: Annotated[bool, typer.Option("--json", help="the raw JSON")] = False) -> None:
    """Show a job: status, progress, latest metrics, MLflow run, model."""
    job = api(ctx).get(f"/v1/jobs/{job_id}")
    if as_json:
        console.print_json(json.dumps(job))
    else:
        show(job)


# ---- watching ------------------------------------------------------------------------------------
@dataclass
class Watch:
    """A followed job: its latest state, and each finished iteration's metrics (by step)."""

    job: dict[str, Any]
    history: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    ended: bool = False


def _on_event(state: Watch, event: str, data: Any, progress: Progress, bar: TaskID) -> None:
    """Apply one server-sent event to ``state`` and the live display."""
    if event in ("status", "end") and isinstance(data, dict):
        state.job = data
        p = data["progress"]
        progress.update(bar, total=p["iterations"], completed=max(p["iteration"], len(state.seen)),
                        status=fmt_status(data["status"]))
        state.ended = event == "end"
    elif event == "metrics" and isinstance(data, dict):
        step, m = int(data["step"]), data.get("metrics") or {}
        if step in state.seen:
            return
        state.seen.add(step)
        state.history.append((step, m))
        metrics, total = declared(state.job), state.job["progress"]["iterations"]
        unit = throughput_unit(state.job)
        progress.update(bar, completed=max(step + 1, len(state.seen)), stats=bar_stats(m, metrics, unit=unit))
        took = f"  {m['time/iteration_s']:.1f} s" if "time/iteration_s" in m else ""
        line = metric_stats(m, metrics, unit=unit)
        progress.console.print(f"  iteration {step + 1:>{len(str(total))}}/{total}  {line}{took}")


def watch_job(client: ApiClient, job_id: str, *, retries: int = 10) -> Watch:
    """Follow a job's event stream with a live progress bar until it ends; reconnects when the
    stream breaks (a restarted service).  Returns the final job and its iteration metrics."""
    state = Watch(job=client.get(f"/v1/jobs/{job_id}"))
    progress = Progress(
        SpinnerColumn(), BarColumn(bar_width=16), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
        console=console,
    )
    p0 = state.job["progress"]
    with progress:
        bar = progress.add_task(escape(state.job["name"]), total=p0["iterations"], completed=p0["iteration"],
                                status=fmt_status(state.job["status"]), stats="")
        failures = 0
        while not state.ended:
            try:
                for event, data in client.events(f"/v1/jobs/{job_id}/events"):
                    failures = 0
                    _on_event(state, event, data, progress, bar)
                    if state.ended:
                        break
            except ConnectionFailed:
                if failures >= retries:
                    raise
            if not state.ended:
                failures += 1
                if failures > retries:
                    raise ClientError(f"the event stream of job {job_id} keeps closing; "
                                      f"`metarl jobs show {job_id}` tells where it is")
                progress.update(bar, status="[dim]reconnecting[/dim]")
                time.sleep(min(1.0 * failures, 5.0))
    state.history.sort(key=lambda x: x[0])
    return state


def summary(state: Watch) -> None:
    """The end of a watch: status, duration, each declared metric first → last, the model URI (once)."""
    job, hist = state.job, [m for _, m in state.history]
    rows = [("job", f"{job['id']} ({escape(job['name'])})"), ("status", _status_line(job)),
            ("iterations", fmt_progress(job)), ("duration", fmt_duration(job))]
    rows += first_to_last(hist, declared(job))
    sps = [m[STEPS_PER_S] for m in hist if m.get(STEPS_PER_S) is not None]
    if sps:
        unit = throughput_unit(job)
        rows.append((f"{'env steps' if unit == 'steps' else unit}/s (mean)", f"{sum(sps) / len(sps):,.0f}"))
    rows.append(("MLflow run", job.get("run_id") or "-"))
    console.print(kv_table(rows, title="summary"))
    if job.get("model_uri"):
        console.print(f"model URI: [bold green]{job['model_uri']}[/bold green]", soft_wrap=True)
    else:
        console.print("model: -", style="dim")


def finish(state: Watch) -> None:
    summary(state)
    job = state.job
    if job["status"] != "SUCCEEDED":
        raise CliError(f"job {job['id']} ended {job['status']}" + (f": {job['message']}" if job.get("message") else ""),
                       hint=f"metarl jobs logs {job['id']}")


@jobs_app.command("watch")
def jobs_watch(ctx: typer.Context, job_id: IdArg) -> None:
    """Follow a job live (server-sent events) to the end; exit code 0 only when it succeeds."""
    finish(watch_job(api(ctx), job_id))


# ---- logs and control ----------------------------------------------------------------------------
@jobs_app.command("logs")
def jobs_logs(
    ctx: typer.Context,
    job_id: IdArg,
    tail: Annotated[int | None, typer.Option("--tail", "-n", min=1, help="only the last N lines")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="keep printing new lines until the job ends")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.2, hidden=True)] = 1.0,
) -> None:
    """Print the job driver's log."""
    client = api(ctx)
    out = typer.get_text_stream("stdout")
    if not follow:
        out.write(client.get(f"/v1/jobs/{job_id}/logs", tail=tail)["logs"].rstrip("\n") + "\n")
        return
    printed: str | None = None
    while True:
        job = client.get(f"/v1/jobs/{job_id}")
        text = client.get(f"/v1/jobs/{job_id}/logs")["logs"]
        if printed is None:
            new = "\n".join(text.splitlines()[-tail:]) + ("\n" if text.endswith("\n") else "") if tail else text
        else:
            new = text[len(printed):] if text.startswith(printed) else text
        out.write(new)
        out.flush()
        printed = text
        if job["status"] in TERMINAL:
            break
        time.sleep(interval)


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: IdArg) -> None:
    """Stop a job; its rollout actors and learner are released."""
    job = api(ctx).post(f"/v1/jobs/{job_id}/cancel")
    console.print(f"job [bold]{job['id']}[/bold]: {fmt_status(job['status'])}")


@jobs_app.command("scale")
def jobs_scale(ctx: typer.Context, job_id: IdArg,
               workers: Annotated[int, typer.Argument(metavar="N", min=1, max=512, help="rollout workers")]) -> None:
    """Change the rollout workers of a running job (applied between iterations)."""
    job = api(ctx).patch(f"/v1/jobs/{job_id}", {"rollout_workers": workers})
    console.print(f"job [bold]{job['id']}[/bold]: {job['rollout_workers']} rollout workers from the next iteration "
                  f"({fmt_status(job['status'])})")


@jobs_app.command("resume")
def jobs_resume(ctx: typer.Context, job_id: IdArg,
                watch: Annotated[bool, typer.Option("--watch", "-w")] = False) -> None:
    """Start a new attempt of a stopped or failed job from its last checkpoint."""
    client = api(ctx)
    job = client.post(f"/v1/jobs/{job_id}/resume")
    console.print(f"job [bold]{job['id']}[/bold]: attempt {job['attempt']} from iteration {fmt_progress(job)}: "
                  f"{fmt_status(job['status'])}")
    if watch:
        finish(watch_job(client, job["id"]))
