"""``metarl``: the command line of the service (typer + rich).

    metarl up [--workers N]                      # local Ray head (+ N worker nodes) + job server + API (data dir ~/.metarl)
    metarl jobs submit --preset navigation2d-maml-demo --set iterations=5 --watch
    metarl jobs list / show ID / watch ID / logs ID --follow / cancel ID / scale ID N / resume ID
    metarl models list / versions NAME / pull NAME@ALIAS -o DIR / alias NAME ALIAS V / evaluate NAME V --wait
    metarl cluster / keys create --owner NAME / presets / demo / down

The API is ``--api`` / ``METARL_API_URL`` (default: what ``metarl up`` started, else
http://127.0.0.1:8000); the key ``--key`` / ``METARL_API_KEY``, else the local admin key
``<METARL_HOME or ~/.metarl>/admin.key``.  Errors are one red line and a non-zero exit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from service import local, presets
from service.client import (
    ApiClient,
    ClientError,
    ConnectionFailed,
    default_home,
    default_url,
    local_admin_key,
)

#: Width of output that is not a terminal (a pipe, a file, CI logs), where rich would assume 80
#: columns and cut table cells; ``COLUMNS`` overrides it.
PIPE_WIDTH = 200


def _make_console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    columns = os.environ.get("COLUMNS", "")
    width = None if tty else int(columns) if columns.isdigit() else PIPE_WIDTH
    return Console(stderr=stderr, width=width)


console = _make_console()
err_console = _make_console(stderr=True)

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
STATUS_STYLE = {"PENDING": "yellow", "RUNNING": "cyan", "SUCCEEDED": "green", "FAILED": "red", "STOPPED": "magenta"}
DEMO_PRESET = "navigation2d-maml-demo"


# ---- errors: one red line, never a traceback ----------------------------------------------------
class CliError(Exception):
    """A failure the user can act on: printed as one red line (and a dim hint), exit code 1."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def _fail(message: str, hint: str | None) -> typer.Exit:
    err_console.print(f"[bold red]error:[/bold red] [red]{escape(message)}[/red]", soft_wrap=True, highlight=False)
    if hint:
        err_console.print(f"hint: {escape(hint)}", style="dim", soft_wrap=True, highlight=False)
    return typer.Exit(code=1)


class _Group(TyperGroup):
    """Prints the CLI's, the client's, the spec loader's and the local stack's errors as one red
    line and exits with 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (CliError, ClientError) as exc:
            raise _fail(exc.message, exc.hint) from None
        except (presets.SpecError, local.LocalError) as exc:
            raise _fail(str(exc), None) from None


def _typer(help_: str) -> typer.Typer:
    return typer.Typer(cls=_Group, help=help_, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode=None)


app = _typer("metarl: meta-RL training jobs on Ray, models in MLflow, over a REST API.")
jobs_app = _typer("Meta-training jobs: submit, follow, scale, stop, resume.")
models_app = _typer("The model registry: versions, aliases, downloads, meta-test evaluations.")
keys_app = _typer("API keys (admin only).")
evals_app = _typer("Meta-test evaluations of registered models.")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(evals_app, name="evaluations")


# ---- global options ----------------------------------------------------------------------------
@dataclass
class Config:
    api: str | None
    key: str | None
    home: Path
    _client: ApiClient | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return (self.api or default_url(self.home)).rstrip("/")

    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.url, self.key or local_admin_key(self.home))
        return self._client


@app.callback()
def _main(
    ctx: typer.Context,
    api: Annotated[str | None, typer.Option("--api", envvar="METARL_API_URL", help="API URL [default: the one `metarl up` started, else http://127.0.0.1:8000]", show_default=False)] = None,
    key: Annotated[str | None, typer.Option("--key", envvar="METARL_API_KEY", help="API key [default: <home>/admin.key]", show_default=False)] = None,
    home: Annotated[Path | None, typer.Option("--home", envvar="METARL_HOME", help="data dir [default: ~/.metarl]", show_default=False)] = None,
) -> None:
    ctx.obj = Config(api=api, key=key, home=(home or default_home()).expanduser())
    ctx.call_on_close(lambda: ctx.obj._client and ctx.obj._client.close())


def _cfg(ctx: typer.Context) -> Config:
    obj = ctx.find_root().obj
    assert isinstance(obj, Config)
    return obj


def _api(ctx: typer.Context) -> ApiClient:
    return _cfg(ctx).client()


# ---- formatting ------------------------------------------------------------------------------------
def _num(v: Any, fmt: str = ".2f") -> str:
    if v is None:
        return "-"
    try:
        return format(float(v), fmt)
    except (TypeError, ValueError):
        return str(v)


def _status(s: str | None) -> str:
    return f"[{STATUS_STYLE.get(s or '', 'white')}]{s or '-'}[/]"


def _when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


def _duration(job: dict[str, Any]) -> str:
    try:
        start = dt.datetime.fromisoformat(job["created_at"])
        end = dt.datetime.fromisoformat(job["finished_at"]) if job.get("finished_at") else None
    except (KeyError, TypeError, ValueError):
        return "-"
    if end is None:
        now = dt.datetime.now(start.tzinfo) if start.tzinfo else dt.datetime.now(dt.UTC).replace(tzinfo=None)
        end = now
    s = max((end - start).total_seconds(), 0.0)
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.1f}s"


def _progress(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    return f"{p.get('iteration', 0)}/{p.get('iterations', '?')}"


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)


def _kv_table(rows: list[tuple[str, str]], title: str | None = None) -> Table:
    t = Table(show_header=False, title=title, title_justify="left", box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in rows:
        t.add_row(k, v)
    return t


def _metric_stats(m: dict[str, Any]) -> str:
    parts = [f"return {_num(m.get('meta/return_pre'), '.1f')} → {_num(m.get('meta/return_post'), '.1f')}"]
    if m.get("meta/success_post") is not None:
        parts.append(f"success {_num(m.get('meta/success_post'), '.2f')}")
    if m.get("perf/env_steps_per_s") is not None:
        parts.append(f"{_num(m.get('perf/env_steps_per_s'), ',.0f')} steps/s")
    return "  ".join(parts)


def _bar_stats(m: dict[str, Any]) -> str:
    out = f"{_num(m.get('meta/return_pre'), '.1f')}→{_num(m.get('meta/return_post'), '.1f')}"
    if m.get("meta/success_post") is not None:
        out += f" succ {_num(m.get('meta/success_post'), '.2f')}"
    sps = m.get("perf/env_steps_per_s")
    if sps is not None:
        out += f" {float(sps) / 1000:,.0f}k steps/s"
    return out


# ---- presets ---------------------------------------------------------------------------------
@app.command("presets")
def presets_cmd(name: Annotated[str | None, typer.Argument(help="show this preset's spec (JSON)")] = None) -> None:
    """List the job presets (workers/presets), or print one."""
    if name is not None:
        console.print_json(json.dumps(presets.load_preset(name).spec))
        return
    t = _table("job presets (metarl jobs submit --preset NAME [--set key=value ...])")
    for col in ("name", "algorithm", "task family", "meta-batch × episodes", "iterations", "workers × envs", "registers as"):
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
                  f"{res.get('rollout_workers', 2)} × {res.get('envs_per_worker', 10)}", str(s.get("register_as") or "-"))
    console.print(t)


# ---- jobs ----------------------------------------------------------------------------------------
def _load_spec(file: Path | None, preset: str | None, overrides: list[str]) -> dict[str, Any]:
    if (file is None) == (preset is None):
        raise CliError("give a spec FILE or --preset NAME (one of them)", hint="`metarl presets` lists the presets")
    spec = presets.load_preset(preset).spec if preset else presets.load_spec_file(file)  # type: ignore[arg-type]
    return presets.validate(presets.apply_overrides(spec, overrides))


def submit_job(client: ApiClient, spec: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
    job = client.post("/v1/jobs", spec, headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex})
    console.print(f"submitted job [bold]{job['id']}[/bold] ({escape(job['name'])}): {_status(job['status'])}")
    return job


@jobs_app.command("submit")
def jobs_submit(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="job spec (JSON, or YAML)", show_default=False)] = None,
    preset: Annotated[str | None, typer.Option("--preset", "-p", help="a preset name (`metarl presets`)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a field: KEY=VALUE, dotted keys (resources.rollout_workers=2)")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="follow it live to the end")] = False,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key", help="resubmitting with the same key returns the same job")] = None,
) -> None:
    """Submit a meta-training job from a spec file or a preset."""
    spec = _load_spec(file, preset, set_ or [])
    client = _api(ctx)
    job = submit_job(client, spec, idempotency_key=idempotency_key)
    if watch:
        _finish(watch_job(client, job["id"]))
    else:
        console.print(f"follow it: metarl jobs watch {job['id']}", style="dim")


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500)] = 20,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
) -> None:
    """List jobs, newest first."""
    page = _api(ctx).get("/v1/jobs", status=status.upper() if status else None, limit=limit, offset=offset)
    t = _table(f"jobs ({len(page['data'])} of {page['count']})")
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
        t.add_row(j["id"], _status(j["status"]), _progress(j), escape(j["name"]), model, _when(j["created_at"])[5:16])
    console.print(t)


def _show(job: dict[str, Any]) -> None:
    rows = [("id", job["id"]), ("name", escape(job["name"])), ("owner", job["owner"]),
            ("status", _status(job["status"]) + (f"  {escape(job['message'])}" if job.get("message") else "")),
            ("progress", f"{_progress(job)} iterations"), ("attempt", str(job["attempt"])),
            ("rollout workers", str(job["rollout_workers"])), ("MLflow run", job.get("run_id") or "-"),
            ("model", job.get("model_uri") or "-"), ("created", _when(job["created_at"])),
            ("finished", _when(job.get("finished_at"))), ("duration", _duration(job))]
    console.print(_kv_table(rows, title=f"job {job['id']}"))
    metrics = job.get("latest_metrics") or {}
    if metrics:
        t = _table("latest metrics")
        t.add_column("metric")
        t.add_column("value", justify="right")
        for k in sorted(metrics):
            t.add_row(k, _num(metrics[k], ".4g"))
        console.print(t)


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")],
              as_json: Annotated[bool, typer.Option("--json", help="the raw JSON")] = False) -> None:
    """Show a job: status, progress, latest metrics, MLflow run, model."""
    job = _api(ctx).get(f"/v1/jobs/{job_id}")
    if as_json:
        console.print_json(json.dumps(job))
    else:
        _show(job)


@dataclass
class _Watch:
    job: dict[str, Any]
    history: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def watch_job(client: ApiClient, job_id: str, *, retries: int = 10) -> _Watch:
    """Follow a job's event stream with a live progress bar until it ends; reconnects when the
    stream breaks (a restarted service).  Returns the final job and its iteration metrics."""
    state = _Watch(job=client.get(f"/v1/jobs/{job_id}"))
    seen: set[int] = set()
    progress = Progress(
        SpinnerColumn(), BarColumn(bar_width=16), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
        console=console,
    )
    p0 = state.job["progress"]
    with progress:
        bar = progress.add_task(escape(state.job["name"]), total=p0["iterations"], completed=p0["iteration"],
                                status=_status(state.job["status"]), stats="")
        failures, ended = 0, False
        while not ended:
            try:
                for event, data in client.events(f"/v1/jobs/{job_id}/events"):
                    failures = 0
                    if event in ("status", "end") and isinstance(data, dict):
                        state.job = data
                        p = data["progress"]
                        progress.update(bar, total=p["iterations"], completed=max(p["iteration"], len(seen)),
                                        status=_status(data["status"]))
                        ended = event == "end"
                        if ended:
                            break
                    elif event == "metrics" and isinstance(data, dict):
                        step, m = int(data["step"]), data.get("metrics") or {}
                        if step in seen:
                            continue
                        seen.add(step)
                        state.history.append((step, m))
                        total = state.job["progress"]["iterations"]
                        progress.update(bar, completed=max(step + 1, len(seen)), stats=_bar_stats(m))
                        progress.console.print(f"  iteration {step + 1:>{len(str(total))}}/{total}  {_metric_stats(m)}"
                                               + (f"  {m['time/iteration_s']:.1f} s" if "time/iteration_s" in m else ""))
            except ConnectionFailed:
                if failures >= retries:
                    raise
            if not ended:
                failures += 1
                if failures > retries:
                    raise ClientError(f"the event stream of job {job_id} keeps closing; `metarl jobs show {job_id}` tells where it is")
                progress.update(bar, status="[dim]reconnecting[/dim]")
                time.sleep(min(1.0 * failures, 5.0))
    state.history.sort(key=lambda x: x[0])
    return state


def _summary(state: _Watch) -> None:
    job, hist = state.job, state.history
    rows = [("job", f"{job['id']} ({escape(job['name'])})"),
            ("status", _status(job["status"]) + (f"  {escape(job['message'])}" if job.get("message") else "")),
            ("iterations", _progress(job)), ("duration", _duration(job))]
    if hist:
        first, last = hist[0][1], hist[-1][1]
        rows.append(("return before adaptation", f"{_num(first.get('meta/return_pre'), '.1f')} → {_num(last.get('meta/return_pre'), '.1f')}"))
        rows.append(("return after adaptation", f"{_num(first.get('meta/return_post'), '.1f')} → {_num(last.get('meta/return_post'), '.1f')}"))
        if last.get("meta/success_post") is not None:
            rows.append(("success after adaptation", _num(last.get("meta/success_post"), ".2f")))
        sps = [m["perf/env_steps_per_s"] for _, m in hist if m.get("perf/env_steps_per_s") is not None]
        if sps:
            rows.append(("env steps/s (mean)", f"{sum(sps) / len(sps):,.0f}"))
    rows.append(("MLflow run", job.get("run_id") or "-"))
    console.print(_kv_table(rows, title="summary"))
    if job.get("model_uri"):
        console.print(f"model URI: [bold green]{job['model_uri']}[/bold green]", soft_wrap=True)
    else:
        console.print("model: -", style="dim")


def _finish(state: _Watch) -> None:
    _summary(state)
    job = state.job
    if job["status"] != "SUCCEEDED":
        raise CliError(f"job {job['id']} ended {job['status']}" + (f": {job['message']}" if job.get("message") else ""),
                       hint=f"metarl jobs logs {job['id']}")


@jobs_app.command("watch")
def jobs_watch(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Follow a job live (server-sent events) to the end; exit code 0 only when it succeeds."""
    _finish(watch_job(_api(ctx), job_id))


@jobs_app.command("logs")
def jobs_logs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    tail: Annotated[int | None, typer.Option("--tail", "-n", min=1, help="only the last N lines")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines until the job ends")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.2, hidden=True)] = 1.0,
) -> None:
    """Print the job driver's log."""
    client = _api(ctx)
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
def jobs_cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Stop a job; its rollout actors and learner are released."""
    job = _api(ctx).post(f"/v1/jobs/{job_id}/cancel")
    console.print(f"job [bold]{job['id']}[/bold]: {_status(job['status'])}")


@jobs_app.command("scale")
def jobs_scale(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")],
               workers: Annotated[int, typer.Argument(metavar="N", min=1, max=512, help="rollout workers")]) -> None:
    """Change the rollout workers of a running job (applied between iterations)."""
    job = _api(ctx).patch(f"/v1/jobs/{job_id}", {"rollout_workers": workers})
    console.print(f"job [bold]{job['id']}[/bold]: {job['rollout_workers']} rollout workers from the next iteration "
                  f"({_status(job['status'])})")


@jobs_app.command("resume")
def jobs_resume(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")],
                watch: Annotated[bool, typer.Option("--watch", "-w")] = False) -> None:
    """Start a new attempt of a stopped or failed job from its last checkpoint."""
    client = _api(ctx)
    job = client.post(f"/v1/jobs/{job_id}/resume")
    console.print(f"job [bold]{job['id']}[/bold]: attempt {job['attempt']} from iteration {_progress(job)}: {_status(job['status'])}")
    if watch:
        _finish(watch_job(client, job["id"]))


# ---- models ------------------------------------------------------------------------------------
@models_app.command("list")
def models_list(ctx: typer.Context) -> None:
    """List registered models."""
    page = _api(ctx).get("/v1/models")
    t = _table(f"models ({page['count']})")
    for col in ("name", "versions", "latest", "aliases", "updated"):
        t.add_column(col, overflow="fold")
    for m in page["data"]:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted((m.get("aliases") or {}).items())) or "-"
        t.add_row(m["name"], str(m["versions"]), str(m.get("latest_version") or "-"), aliases, _when(m.get("updated_at")))
    console.print(t)


def _version_metric(v: dict[str, Any], key: str) -> Any:
    metrics, tags = v.get("metrics") or {}, v.get("tags") or {}
    return metrics.get(f"meta/{key}", tags.get(key))


@models_app.command("versions")
def models_versions(ctx: typer.Context, name: str) -> None:
    """List a model's versions with their aliases and final metrics."""
    page = _api(ctx).get(f"/v1/models/{name}/versions")
    t = _table(f"{name}: {page['count']} versions (models:/{name}/VERSION)")
    for col in ("version", "aliases", "return pre", "return post", "success", "created", "run"):
        t.add_column(col, overflow="fold", no_wrap=col in ("created", "run"))
    for v in page["data"]:
        t.add_row(v["version"], ", ".join(v.get("aliases") or []) or "-", _num(_version_metric(v, "return_pre"), ".1f"),
                  _num(_version_metric(v, "return_post"), ".1f"), _num(_version_metric(v, "success_post"), ".2f"),
                  _when(v.get("created_at"))[5:16], (v.get("run_id") or "-")[:8])
    console.print(t)


@models_app.command("show")
def models_show(ctx: typer.Context, name: str, version: str) -> None:
    """Show one version: aliases, tags, metrics."""
    v = _api(ctx).get(f"/v1/models/{name}/versions/{version}")
    rows = [("model", f"{v['name']} v{v['version']}"), ("uri", v["uri"]), ("aliases", ", ".join(v.get("aliases") or []) or "-"),
            ("status", v.get("status") or "-"), ("MLflow run", v.get("run_id") or "-"), ("created", _when(v.get("created_at")))]
    rows += [(f"tag {k}", escape(str(val))[:120]) for k, val in sorted((v.get("tags") or {}).items()) if k != "spec"]
    rows += [(k, _num(val, ".4g")) for k, val in sorted((v.get("metrics") or {}).items())]
    console.print(_kv_table(rows))


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS`` -> (NAME, None, ALIAS); ``NAME/VERSION`` -> (NAME, VERSION, None);
    ``NAME`` -> the latest version; a ``models:/`` prefix is allowed."""
    ref = ref.removeprefix("models:/").strip("/")
    if "@" in ref:
        name, _, alias = ref.partition("@")
        if not name or not alias:
            raise CliError(f"bad model reference {ref!r}: expected NAME@ALIAS or NAME/VERSION")
        return name, None, alias
    name, _, version = ref.partition("/")
    if not name:
        raise CliError(f"bad model reference {ref!r}: expected NAME@ALIAS or NAME/VERSION")
    if version in ("", "latest"):
        return name, None, "latest"
    if not version.isdigit():
        raise CliError(f"bad model version {version!r} in {ref!r}: a number, or use NAME@ALIAS")
    return name, version, None


def resolve_version(client: ApiClient, name: str, version: str | None, alias: str | None) -> str:
    """The version number ``NAME@ALIAS`` points at (``latest``: the newest version)."""
    if version is not None:
        return version
    model = client.get(f"/v1/models/{name}")
    aliases = model.get("aliases") or {}
    if alias in aliases:
        return str(aliases[alias])
    if alias == "latest" and model.get("latest_version"):
        return str(model["latest_version"])
    known = ", ".join(sorted(aliases))
    raise CliError(f"model {name!r} has no alias {alias!r}" + (f" (aliases: {known})" if known else " (no aliases set)"),
                   hint=f"metarl models alias {name} {alias} VERSION")


def _safe_extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(dest, filter="data")


@models_app.command("pull")
def models_pull(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="NAME@ALIAS|NAME/VERSION")],
    out: Annotated[Path, typer.Option("--output", "-o", help="directory to extract the model into")] = Path("."),
) -> None:
    """Download a model version's files (one archive) and extract them into a directory."""
    client = _api(ctx)
    name, version, alias = parse_model_ref(ref)
    version = resolve_version(client, name, version, alias)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="metarl-pull-") as tmp:
        archive = Path(tmp) / "model.tar.gz"
        size = client.download(f"/v1/models/{name}/versions/{version}/download", archive)
        try:
            _safe_extract(archive, out)
        except (tarfile.TarError, OSError) as exc:
            raise CliError(f"the archive of {name} v{version} could not be extracted into {out}: {exc}") from exc
    cards = sorted(out.rglob("policy.json"), key=lambda p: len(p.parts))
    model_dir = cards[0].parent if cards else out
    if model_dir.name == "artifacts":
        model_dir = model_dir.parent
    console.print(f"pulled [bold]{name}[/bold] v{version} ({size / 1e6:.2f} MB) into {model_dir}", soft_wrap=True)
    console.print(f'load it: from workers.model import MetaPolicy; policy = MetaPolicy.load("{model_dir}")',
                  style="dim", soft_wrap=True)


@models_app.command("alias")
def models_alias(ctx: typer.Context, name: str, alias: str, version: str) -> None:
    """Point an alias (e.g. champion) at a version."""
    _api(ctx).put(f"/v1/models/{name}/aliases/{alias}", {"version": version})
    console.print(f"{name}@{alias} → version {version}  (models:/{name}@{alias})", soft_wrap=True)


def _show_evaluation(e: dict[str, Any]) -> None:
    req = e.get("request") or {}
    rows = [("evaluation", e["id"]), ("model", f"{e['model_name']} v{e['model_version']}"),
            ("status", _status(e["status"]) + (f"  {escape(e['message'])}" if e.get("message") else "")),
            ("protocol", f"{req.get('tasks')} held-out tasks, {req.get('steps')} inner step(s) of {req.get('episodes')} episodes, seed {req.get('seed')}"),
            ("return before adaptation", _num(e.get("return_pre"), ".2f")),
            ("return after adaptation", _num(e.get("return_post"), ".2f")),
            ("success after adaptation", _num(e.get("success_post"), ".2f")),
            ("MLflow run", e.get("run_id") or "-")]
    console.print(_kv_table(rows))


def wait_evaluation(client: ApiClient, evaluation_id: str, *, interval: float = 2.0) -> dict[str, Any]:
    with console.status(f"evaluating ({evaluation_id}) ..."):
        while True:
            e = client.get(f"/v1/evaluations/{evaluation_id}")
            if e["status"] in TERMINAL:
                return e
            time.sleep(interval)


@models_app.command("evaluate")
def models_evaluate(
    ctx: typer.Context, name: str, version: str,
    episodes: Annotated[int | None, typer.Option(help="K: episodes per inner step [default: 10]", show_default=False)] = None,
    steps: Annotated[int | None, typer.Option(help="inner policy-gradient steps [default: 1]", show_default=False)] = None,
    tasks: Annotated[int | None, typer.Option(help="held-out test tasks [default: 10]", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(help="[default: 0]", show_default=False)] = None,
    later_lr: Annotated[float | None, typer.Option(help="step size of inner steps 2..n [default: the model's inner_lr]",
                                                   show_default=False)] = None,
    split: Annotated[str | None, typer.Option(help="test (held-out tasks) or train [default: test]", show_default=False)] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="wait for the result")] = False,
) -> None:
    """Meta-test a version: adapt on held-out tasks, report return before/after and success."""
    client = _api(ctx)
    body = {k: v for k, v in {"episodes": episodes, "steps": steps, "tasks": tasks, "seed": seed, "later_lr": later_lr,
                              "split": split}.items() if v is not None}
    e = client.post(f"/v1/models/{name}/versions/{version}/evaluations", body)
    if not wait:
        console.print(f"evaluation [bold]{e['id']}[/bold] of {name} v{version}: {_status(e['status'])}")
        console.print(f"result: metarl evaluations show {e['id']}", style="dim")
        return
    e = wait_evaluation(client, e["id"])
    _show_evaluation(e)
    if e["status"] != "SUCCEEDED":
        raise CliError(f"evaluation {e['id']} ended {e['status']}" + (f": {e['message']}" if e.get("message") else ""))


@evals_app.command("show")
def evaluations_show(ctx: typer.Context, evaluation_id: Annotated[str, typer.Argument(metavar="ID")],
                     wait: Annotated[bool, typer.Option("--wait", "-w")] = False) -> None:
    """Show a meta-test evaluation."""
    client = _api(ctx)
    e = wait_evaluation(client, evaluation_id) if wait else client.get(f"/v1/evaluations/{evaluation_id}")
    _show_evaluation(e)


# ---- cluster and keys --------------------------------------------------------------------------
@app.command("cluster")
def cluster(ctx: typer.Context) -> None:
    """The Ray cluster: nodes, CPUs, GPUs, free capacity."""
    c = _api(ctx).get("/v1/cluster")
    t = _table(f"cluster: {c['cpus_free']:g}/{c['cpus']:g} CPUs free, {c['gpus_free']:g}/{c['gpus']:g} GPUs free")
    for col in ("node", "address", "role", "alive", "CPUs", "GPUs", "memory GB"):
        t.add_column(col)
    for n in c["nodes"]:
        t.add_row(n["node_id"][:12], n["address"], "head" if n["is_head"] else "worker",
                  "[green]yes[/]" if n["alive"] else "[red]no[/]", f"{n['cpus']:g}", f"{n['gpus']:g}", f"{n['memory_gb']:.1f}")
    console.print(t)


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    owner: Annotated[str, typer.Option("--owner", help="who the key belongs to (jobs are private to their owner)")],
    admin: Annotated[bool, typer.Option("--admin", help="an admin key (sees every job, creates keys)")] = False,
) -> None:
    """Create an API key (shown once)."""
    k = _api(ctx).post("/v1/keys", {"owner": owner, "admin": admin})
    console.print(f"API key for [bold]{k['owner']}[/bold]{' (admin)' if k['admin'] else ''}, id {k['id']}:")
    console.print(k["key"], soft_wrap=True, highlight=False)
    console.print("it is shown only now (the service keeps a hash); use it as METARL_API_KEY or --key", style="dim")


# ---- the local stack -------------------------------------------------------------------------------
def _components_table(components: list[local.Component], title: str) -> Table:
    t = _table(title)
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


def _venv_tool(name: str) -> str:
    """How to call a tool of this environment: ``.venv/bin/NAME`` when it lies under the current
    directory (the repo), else plain ``NAME``."""
    exe = Path(sys.executable).parent / name
    try:
        rel = exe.relative_to(Path.cwd())
    except ValueError:
        return name
    return str(rel) if exe.is_file() else name


def _self_command() -> str:
    return _venv_tool("metarl")


def _me(cfg: Config) -> str:
    """This CLI, with ``--home`` when the data dir is not the default one."""
    default = Path(os.environ.get("METARL_HOME") or Path.home() / ".metarl").expanduser()
    return _self_command() + ("" if cfg.home == default else f" --home {cfg.home}")


def _say(msg: str) -> None:
    console.print(msg, style="dim", soft_wrap=True)


def _up(cfg: Config, *, num_cpus: int | None, port: int | None, dashboard_port: int | None, ray_port: int | None,
        workers: int = 0, cpus_per_worker: int = 2) -> list[local.Component]:
    if num_cpus is None:  # with worker nodes the head keeps no CPUs: rollouts go to the workers
        num_cpus = 0 if workers else os.cpu_count() or 1
    comps = local.up(cfg.home, num_cpus=num_cpus, port=port, dashboard_port=dashboard_port,
                     ray_port=ray_port, workers=workers, cpus_per_worker=cpus_per_worker, say=_say)
    console.print(_components_table(comps, f"metarl is up (data dir {cfg.home})"))
    _components_notes(comps)
    console.print(f"API key: {cfg.home / 'admin.key'} (the CLI reads it on this machine)\n"
                  f"stop everything: {_me(cfg)} down", soft_wrap=True)
    return comps


_PortOpt = Annotated[int | None, typer.Option("--port", min=1, max=65535, show_default=False,
                                               help="API port [default: 8000, or a free port when 8000 is busy]")]
_DashOpt = Annotated[int | None, typer.Option("--dashboard-port", min=1, max=65535, show_default=False,
                                              help="Ray dashboard / job server port [default: 8265, or a free port when busy]")]
_RayOpt = Annotated[int | None, typer.Option("--ray-port", min=1, max=65535, show_default=False,
                                             help="Ray GCS port [default: 6379, or a free port when busy]")]
_CpuOpt = Annotated[int | None, typer.Option("--num-cpus", min=0, help="CPUs the Ray head may use [default: all; 0 with --workers]", show_default=False)]
_WorkersOpt = Annotated[int, typer.Option("--workers", min=0, help="Ray worker nodes to start beside the head (separate `ray start` processes on 127.0.0.1)")]
_WorkerCpuOpt = Annotated[int, typer.Option("--cpus-per-worker", min=1, help="logical CPUs of each worker node")]


@app.command("up")
def up(ctx: typer.Context, num_cpus: _CpuOpt = None, port: _PortOpt = None, dashboard_port: _DashOpt = None,
       ray_port: _RayOpt = None, workers: _WorkersOpt = 0, cpus_per_worker: _WorkerCpuOpt = 2) -> None:
    """Start a local Ray head (job server on 127.0.0.1, token auth), optional worker nodes and the API, detached
    (in sessions of their own: they keep running when this terminal closes; `metarl down` stops them)."""
    _up(_cfg(ctx), num_cpus=num_cpus, port=port, dashboard_port=dashboard_port, ray_port=ray_port, workers=workers,
        cpus_per_worker=cpus_per_worker)


@app.command("down")
def down(ctx: typer.Context) -> None:
    """Stop the API, the worker nodes and the Ray head that `metarl up` started (only those)."""
    comps = local.down(_cfg(ctx).home, say=_say)
    console.print(_components_table(comps, "metarl is down"))
    _components_notes(comps)


@app.command("demo")
def demo(
    ctx: typer.Context,
    preset: Annotated[str, typer.Option("--preset", help="the job to run")] = DEMO_PRESET,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a field: KEY=VALUE")] = None,
    num_cpus: _CpuOpt = None, port: _PortOpt = None, dashboard_port: _DashOpt = None, ray_port: _RayOpt = None,
) -> None:
    """`make run`: metarl up, submit the demo job, watch it live, print how to load the model."""
    cfg = _cfg(ctx)
    spec = _load_spec(None, preset, set_ or [])
    comps = _up(cfg, num_cpus=num_cpus, port=port, dashboard_port=dashboard_port, ray_port=ray_port)
    url, store = comps[1].address, comps[2].address
    if cfg.api is None:
        cfg.api = url
    client = cfg.client()
    console.rule(f"meta-training {preset}")
    job = submit_job(client, spec)
    state = watch_job(client, job["id"])
    _summary(state)
    me, final = _me(cfg), state.job
    if final["status"] != "SUCCEEDED" or not final.get("model_uri"):
        raise CliError(f"the demo job {final['id']} ended {final['status']}" + (f": {final['message']}" if final.get("message") else ""),
                       hint=f"{me} jobs logs {final['id']}")
    console.rule("the trained meta-policy")
    console.print(demo_snippets(final["model_uri"], episodes=int(spec.get("episodes_per_task", 10)), home=cfg.home,
                                store=store, python=_venv_tool("python")),
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
