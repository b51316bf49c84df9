"""``metarl models`` (the registry: versions, aliases, downloads, meta-test evaluations) and
``metarl evaluations``."""

from __future__ import annotations

import tarfile
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from service.cli.core import CliError, api, new_typer
from service.cli.output import (
    TERMINAL,
    console,
    declared,
    fmt_num,
    fmt_status,
    fmt_when,
    kv_table,
    new_table,
)
from service.client import ApiClient, ClientError

models_app = new_typer("The model registry: versions, aliases, downloads, meta-test evaluations.")
evals_app = new_typer("Meta-test evaluations of registered models.")


@models_app.command("list")
def models_list(ctx: typer.Context) -> None:
    """List registered models."""
    page = api(ctx).get("/v1/models")
    t = new_table(f"models ({page['count']})")
    for col in ("name", "versions", "latest", "aliases", "updated"):
        t.add_column(col, overflow="fold")
    for m in page["data"]:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted((m.get("aliases") or {}).items())) or "-"
        t.add_row(m["name"], str(m["versions"]), str(m.get("latest_version") or "-"), aliases,
                  fmt_when(m.get("updated_at")))
    console.print(t)


def version_metric(v: dict[str, Any], key: str) -> Any:
    """A version's final value of ``key`` (its run's metric, else the version tag of its last part:
    ``meta/return_post`` -> ``return_post``)."""
    metrics, tags = v.get("metrics") or {}, v.get("tags") or {}
    value = metrics.get(key)
    return value if value is not None else tags.get(key.rpartition("/")[2])


def _version_columns(versions: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The declared metrics of the versions (in order of first declaration) that any of them has."""
    out: dict[str, dict[str, str]] = {}
    for v in versions:
        for m in declared(v):
            out.setdefault(m["key"], m)
    return [m for m in out.values() if any(version_metric(v, m["key"]) is not None for v in versions)]


@models_app.command("versions")
def models_versions(ctx: typer.Context, name: str) -> None:
    """List a model's versions with their aliases and final metrics (those its algorithm declares)."""
    page = api(ctx).get(f"/v1/models/{name}/versions")
    columns = _version_columns(page["data"])
    t = new_table(f"{name}: {page['count']} versions (models:/{name}/VERSION)")
    for col in ("version", "aliases", *(m.get("label") or m["key"] for m in columns), "created", "run"):
        t.add_column(col, overflow="fold", no_wrap=col in ("created", "run"))
    for v in page["data"]:
        values = [fmt_num(version_metric(v, m["key"]), m.get("fmt") or ".2f") for m in columns]
        t.add_row(v["version"], ", ".join(v.get("aliases") or []) or "-", *values, fmt_when(v.get("created_at"))[5:16],
                  (v.get("run_id") or "-")[:8])
    console.print(t)


@models_app.command("show")
def models_show(ctx: typer.Context, name: str, version: str) -> None:
    """Show one version: aliases, tags, metrics."""
    v = api(ctx).get(f"/v1/models/{name}/versions/{version}")
    rows = [("model", f"{v['name']} v{v['version']}"), ("uri", v["uri"]),
            ("aliases", ", ".join(v.get("aliases") or []) or "-"), ("status", v.get("status") or "-"),
            ("MLflow run", v.get("run_id") or "-"), ("created", fmt_when(v.get("created_at")))]
    rows += [(f"tag {k}", escape(str(val))[:120]) for k, val in sorted((v.get("tags") or {}).items()) if k != "spec"]
    rows += [(k, fmt_num(val, ".4g")) for k, val in sorted((v.get("metrics") or {}).items())]
    console.print(kv_table(rows))


# ---- references, pull, aliases -------------------------------------------------------------------
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
    listed = f" (aliases: {known})" if known else " (no aliases set)"
    raise CliError(f"model {name!r} has no alias {alias!r}{listed}",
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
    client = api(ctx)
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
    api(ctx).put(f"/v1/models/{name}/aliases/{alias}", {"version": version})
    console.print(f"{name}@{alias} → version {version}  (models:/{name}@{alias})", soft_wrap=True)


# ---- evaluations ---------------------------------------------------------------------------------
def summary_rows(summary: dict[str, Any], metrics: list[dict[str, str]]) -> list[tuple[str, str]]:
    """An evaluation's headline numbers, labelled as the model's algorithm declares them (a summary
    key is the last part of a declared key: ``return_post`` of ``meta/return_post``), declared ones
    first; the others by their own name."""
    by_name = {m["key"].rpartition("/")[2]: m for m in metrics}
    ordered = [k for k in by_name if k in summary] + sorted(k for k in summary if k not in by_name)
    rows = []
    for k in ordered:
        m = by_name.get(k, {})
        rows.append((m.get("label") or k.replace("_", " "), fmt_num(summary[k], m.get("fmt") or ".2f")))
    return rows


def evaluation_metrics(client: ApiClient, e: dict[str, Any]) -> list[dict[str, str]]:
    """The declared metrics of the evaluated version ([] if it cannot be read)."""
    try:
        return declared(client.get(f"/v1/models/{e['model_name']}/versions/{e['model_version']}"))
    except ClientError:
        return []


def protocol_of(e: dict[str, Any]) -> str:
    """How the evaluation adapted, in the terms of its model's kind (once finished, its report
    says which: a supervised model's adapts on episodes' support sets, not on K rollouts)."""
    req, report = e.get("request") or {}, e.get("result") or {}
    split = req.get("split") or "test"
    steps = f"{req['steps']} inner step(s)" if req.get("steps") else "the model's default inner steps"
    if report.get("adaptation") == "supervised":
        taken = report.get("steps")
        steps = "no inner steps" if not taken else f"{taken} inner step(s)"
        return f"{req.get('tasks')} {split} episodes (support → query), {steps}, seed {req.get('seed')}"
    return f"{req.get('tasks')} {split} tasks, {steps} of {req.get('episodes')} episodes, seed {req.get('seed')}"


def show_evaluation(e: dict[str, Any], metrics: list[dict[str, str]]) -> None:
    protocol = protocol_of(e)
    rows = [("evaluation", e["id"]), ("model", f"{e['model_name']} v{e['model_version']}"),
            ("status", fmt_status(e["status"]) + (f"  {escape(e['message'])}" if e.get("message") else "")),
            ("protocol", protocol)]
    rows += summary_rows(e.get("summary") or {}, metrics)
    rows.append(("MLflow run", e.get("run_id") or "-"))
    console.print(kv_table(rows))


def wait_evaluation(client: ApiClient, evaluation_id: str, *, interval: float = 2.0) -> dict[str, Any]:
    with console.status(f"evaluating ({evaluation_id}) ..."):
        while True:
            e = client.get(f"/v1/evaluations/{evaluation_id}")
            if e["status"] in TERMINAL:
                return e
            time.sleep(interval)


def _opt(help_: str) -> Any:
    return typer.Option(help=help_, show_default=False)


@models_app.command("evaluate")
def models_evaluate(
    ctx: typer.Context, name: str, version: str,
    episodes: Annotated[int | None, _opt("K: episodes per inner step [default: 10]")] = None,
    steps: Annotated[int | None, _opt("inner steps [default: 1 for RL, the algorithm's own for supervised]")] = None,
    tasks: Annotated[int | None, _opt("held-out test tasks [default: 10]")] = None,
    seed: Annotated[int | None, _opt("[default: 0]")] = None,
    later_lr: Annotated[float | None, _opt("step size of inner steps 2..n [default: the model's inner_lr]")] = None,
    split: Annotated[str | None, _opt("test (held-out tasks), train, or val (a supervised distribution's "
                                      "meta-validation split) [default: test]")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="wait for the result")] = False,
) -> None:
    """Meta-test a version: adapt on held-out tasks, report the numbers its algorithm declares."""
    client = api(ctx)
    asked = {"episodes": episodes, "steps": steps, "tasks": tasks, "seed": seed, "later_lr": later_lr, "split": split}
    e = client.post(f"/v1/models/{name}/versions/{version}/evaluations",
                    {k: v for k, v in asked.items() if v is not None})
    if not wait:
        console.print(f"evaluation [bold]{e['id']}[/bold] of {name} v{version}: {fmt_status(e['status'])}")
        console.print(f"result: metarl evaluations show {e['id']}", style="dim")
        return
    e = wait_evaluation(client, e["id"])
    show_evaluation(e, evaluation_metrics(client, e))
    if e["status"] != "SUCCEEDED":
        raise CliError(f"evaluation {e['id']} ended {e['status']}" + (f": {e['message']}" if e.get("message") else ""))


def _arrays(path: Path) -> dict[str, Any]:
    """``support_x``, ``support_y``, ``query_x`` from an ``.npz`` or a ``.json`` file, as lists."""
    if not path.is_file():
        raise CliError(f"no file at {path}")
    if path.suffix == ".npz":
        import numpy as np

        with np.load(path) as f:
            data = {k: f[k].tolist() for k in f.files}
    else:
        import json

        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise CliError(f"{path} is not JSON: {exc}") from exc
    missing = [k for k in ("support_x", "support_y", "query_x") if k not in data]
    if missing:
        raise CliError(f"{path} needs the arrays support_x, support_y and query_x; missing {missing}")
    return {k: data[k] for k in ("support_x", "support_y", "query_x")}


@models_app.command("adapt")
def models_adapt(
    ctx: typer.Context, name: str,
    data: Annotated[Path, typer.Argument(help=".npz or .json holding support_x, support_y and query_x")],
    version: Annotated[str | None, _opt("version [default: the newest you own]")] = None,
    alias: Annotated[str | None, _opt("alias instead of a version")] = None,
    steps: Annotated[int | None, _opt("inner steps [default: the algorithm's meta-test setting]")] = None,
    probabilities: Annotated[bool, typer.Option("--probabilities", help="classifiers: class probabilities too")]
    = False,
) -> None:
    """Adapt a supervised model on a support set and predict a query set (on the server)."""
    body: dict[str, Any] = {**_arrays(data), "probabilities": probabilities}
    body.update({k: v for k, v in (("version", version), ("alias", alias), ("steps", steps)) if v is not None})
    out = api(ctx).post(f"/v1/models/{name}/adapt", body)
    taken = f"{out['steps']} inner step(s)" if out.get("steps") else "no inner steps"
    console.print(f"{out['model_name']} v{out['model_version']} ({out['algorithm']}, {out['problem']}): adapted on "
                  f"{len(body['support_x'])} support examples, {taken}", soft_wrap=True)
    t = new_table(f"predictions ({len(out['predictions'])} queries)")
    t.add_column("query", justify="right")
    t.add_column("prediction", overflow="fold")
    probs = out.get("probabilities")
    if probs:
        t.add_column("p", justify="right")
    for i, p in enumerate(out["predictions"]):
        shown = str(p) if not isinstance(p, list) else ", ".join(fmt_num(v, ".4g") for v in p)
        row = [str(i), shown] + ([fmt_num(max(probs[i]), ".3f")] if probs else [])
        t.add_row(*row)
    console.print(t)


@evals_app.command("show")
def evaluations_show(ctx: typer.Context, evaluation_id: Annotated[str, typer.Argument(metavar="ID")],
                     wait: Annotated[bool, typer.Option("--wait", "-w")] = False) -> None:
    """Show a meta-test evaluation."""
    client = api(ctx)
    e = wait_evaluation(client, evaluation_id) if wait else client.get(f"/v1/evaluations/{evaluation_id}")
    show_evaluation(e, evaluation_metrics(client, e))
