"""What every command shares: the global options (``Config``: API URL, key, data dir), the API
client they make, and errors printed as one red line (never a traceback)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from service import local, presets
from service.cli.output import err_console
from service.client import ApiClient, ClientError, default_url, local_admin_key


# ---- errors: one red line, never a traceback ----------------------------------------------------
class CliError(Exception):
    """A failure the user can act on: printed as one red line (and a dim hint), exit code 1."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def fail(message: str, hint: str | None) -> typer.Exit:
    err_console.print(f"[bold red]error:[/bold red] [red]{escape(message)}[/red]", soft_wrap=True, highlight=False)
    if hint:
        err_console.print(f"hint: {escape(hint)}", style="dim", soft_wrap=True, highlight=False)
    return typer.Exit(code=1)


class Group(TyperGroup):
    """Prints the CLI's, the client's, the spec loader's and the local stack's errors as one red
    line and exits with 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (CliError, ClientError) as exc:
            raise fail(exc.message, exc.hint) from None
        except (presets.SpecError, local.LocalError) as exc:
            raise fail(str(exc), None) from None


def new_typer(help_: str) -> typer.Typer:
    return typer.Typer(cls=Group, help=help_, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode=None)


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

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def cfg(ctx: typer.Context) -> Config:
    obj = ctx.find_root().obj
    assert isinstance(obj, Config)
    return obj


def api(ctx: typer.Context) -> ApiClient:
    return cfg(ctx).client()
