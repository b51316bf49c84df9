"""``metarl``: the command line of the service (typer + rich).

    metarl up [--workers N]                      # local Ray head (+ N worker nodes) + job server + API (~/.metarl)
    metarl jobs submit --preset navigation2d-maml-demo --set iterations=5 --watch
    metarl jobs list / show ID / watch ID / logs ID --follow / cancel ID / scale ID N / resume ID
    metarl models list / versions NAME / pull NAME@ALIAS -o DIR / alias NAME ALIAS V / evaluate NAME V --wait
    metarl cluster / keys create --owner NAME / presets / demo / down

The API is ``--api`` / ``METARL_API_URL`` (default: what ``metarl up`` started, else
http://127.0.0.1:8000); the key ``--key`` / ``METARL_API_KEY``, else the local admin key
``<METARL_HOME or ~/.metarl>/admin.key``.  Errors are one red line and a non-zero exit.

The commands live by role: :mod:`service.cli.jobs`, :mod:`service.cli.models` (models and
evaluations), :mod:`service.cli.stack` (up, down, demo, presets, cluster, keys); what they print
in :mod:`service.cli.output`, what they share in :mod:`service.cli.core`.  This module assembles
them into :data:`app`.  Like the API client, nothing here imports FastAPI, Ray or torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli import stack
from service.cli.core import CliError, Config, new_typer
from service.cli.jobs import jobs_app, submit_job, watch_job
from service.cli.models import evals_app, models_app, parse_model_ref, resolve_version
from service.cli.output import console, err_console
from service.cli.stack import demo_snippets, keys_app
from service.client import default_home

__all__ = ["CliError", "app", "console", "demo_snippets", "err_console", "main", "parse_model_ref",
           "resolve_version", "submit_job", "watch_job"]

app = new_typer("metarl: meta-RL training jobs on Ray, models in MLflow, over a REST API.")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(evals_app, name="evaluations")
app.command("presets")(stack.presets_cmd)
app.command("cluster")(stack.cluster)
app.command("up")(stack.up)
app.command("down")(stack.down)
app.command("demo")(stack.demo)


@app.callback()
def _main(
    ctx: typer.Context,
    api: Annotated[str | None, typer.Option(
        "--api", envvar="METARL_API_URL", show_default=False,
        help="API URL [default: the one `metarl up` started, else http://127.0.0.1:8000]")] = None,
    key: Annotated[str | None, typer.Option(
        "--key", envvar="METARL_API_KEY", help="API key [default: <home>/admin.key]", show_default=False)] = None,
    home: Annotated[Path | None, typer.Option(
        "--home", envvar="METARL_HOME", help="data dir [default: ~/.metarl]", show_default=False)] = None,
) -> None:
    config = Config(api=api, key=key, home=(home or default_home()).expanduser())
    ctx.obj = config
    ctx.call_on_close(config.close)


def main() -> None:
    """Console-script entry point."""
    app()
