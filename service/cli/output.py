"""What the CLI prints: the consoles, tables, value formatting, and a job's metrics as its
algorithm declares them (``metrics_declared``: key, label, format, in display order)."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from workers.catalog import family_info

#: Width of output that is not a terminal (a pipe, a file, CI logs), where rich would assume 80
#: columns and cut table cells; ``COLUMNS`` overrides it.
PIPE_WIDTH = 200


def make_console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    columns = os.environ.get("COLUMNS", "")
    width = None if tty else int(columns) if columns.isdigit() else PIPE_WIDTH
    return Console(stderr=stderr, width=width)


console = make_console()
err_console = make_console(stderr=True)

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
STATUS_STYLE = {"PENDING": "yellow", "RUNNING": "cyan", "SUCCEEDED": "green", "FAILED": "red", "STOPPED": "magenta"}


def say(msg: str) -> None:
    """A dim progress line."""
    console.print(msg, style="dim", soft_wrap=True)


# ---- values ----------------------------------------------------------------------------------------
def fmt_num(v: Any, fmt: str = ".2f") -> str:
    if v is None:
        return "-"
    try:
        return format(float(v), fmt)
    except (TypeError, ValueError):
        return str(v)


def fmt_status(s: str | None) -> str:
    return f"[{STATUS_STYLE.get(s or '', 'white')}]{s or '-'}[/]"


def fmt_when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


def fmt_duration(job: dict[str, Any]) -> str:
    try:
        start = dt.datetime.fromisoformat(job["created_at"])
        end = dt.datetime.fromisoformat(job["finished_at"]) if job.get("finished_at") else None
    except (KeyError, TypeError, ValueError):
        return "-"
    if end is None:
        end = dt.datetime.now(start.tzinfo) if start.tzinfo else dt.datetime.now(dt.UTC).replace(tzinfo=None)
    s = max((end - start).total_seconds(), 0.0)
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.1f}s"


def fmt_progress(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    return f"{p.get('iteration', 0)}/{p.get('iterations', '?')}"


# ---- tables ----------------------------------------------------------------------------------------
def new_table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)


def kv_table(rows: list[tuple[str, str]], title: str | None = None) -> Table:
    t = Table(show_header=False, title=title, title_justify="left", box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in rows:
        t.add_row(k, v)
    return t


# ---- declared metrics ------------------------------------------------------------------------------
#: throughput, shown after the declared metrics when a job logs it
STEPS_PER_S = "perf/env_steps_per_s"


def declared(item: dict[str, Any]) -> list[dict[str, str]]:
    """The headline metrics a job or model version declares (``metrics_declared``), in order."""
    found = item.get("metrics_declared") or []
    return [m for m in found if isinstance(m, dict) and isinstance(m.get("key"), str)]


@dataclass(frozen=True)
class Headline:
    """One item of a one-line metrics report: a declared metric, or a before/after pair of them
    (``x_pre`` declared right before ``x_post``), shown as ``label pre → post``."""

    label: str
    keys: tuple[str, ...]
    fmt: str

    def present(self, m: dict[str, Any]) -> bool:
        return any(m.get(k) is not None for k in self.keys)

    def values(self, m: dict[str, Any], arrow: str = " → ") -> str:
        return arrow.join(fmt_num(m.get(k), self.fmt) for k in self.keys)


def _shared_words(a: str, b: str) -> str:
    words = []
    for x, y in zip(a.split(), b.split(), strict=False):
        if x != y:
            break
        words.append(x)
    return " ".join(words)


def headlines(metrics: Sequence[dict[str, str]]) -> list[Headline]:
    """The declared metrics as one-line items, before/after pairs joined."""
    out: list[Headline] = []
    i = 0
    while i < len(metrics):
        m, nxt = metrics[i], metrics[i + 1] if i + 1 < len(metrics) else None
        label, fmt = m.get("label") or m["key"], m.get("fmt") or ".2f"
        if nxt is not None and m["key"].endswith("_pre") and nxt["key"] == m["key"].removesuffix("_pre") + "_post":
            out.append(Headline(_shared_words(label, nxt.get("label") or "") or label, (m["key"], nxt["key"]), fmt))
            i += 2
        else:
            out.append(Headline(label, (m["key"],), fmt))
            i += 1
    return out


def throughput_unit(job: dict[str, Any]) -> str:
    """What a job's ``perf/env_steps_per_s`` counts: env ``steps``, or for a supervised task
    distribution the support and query ``examples`` drawn."""
    spec = job.get("spec") or {}
    family = spec.get("task_family") if isinstance(spec, dict) else None
    name = family.get("name") if isinstance(family, dict) else None
    try:
        kind = family_info(name).kind if isinstance(name, str) else "rl"
    except LookupError:
        kind = "rl"
    return "examples" if kind == "supervised" else "steps"


def metric_stats(m: dict[str, Any], metrics: Sequence[dict[str, str]], *, unit: str = "steps") -> str:
    """One iteration's declared metrics that it logged, and its throughput:
    ``return -69.6 → -41.7  success after adaptation 0.50  1,234 steps/s``."""
    parts = [f"{h.label} {h.values(m)}" for h in headlines(metrics) if h.present(m)]
    if m.get(STEPS_PER_S) is not None:
        parts.append(f"{fmt_num(m.get(STEPS_PER_S), ',.0f')} {unit}/s")
    return "  ".join(parts)


def bar_stats(m: dict[str, Any], metrics: Sequence[dict[str, str]], *, unit: str = "steps") -> str:
    """:func:`metric_stats` for the progress bar: ``-69.6→-41.7 succ 0.50 12k steps/s`` (the first
    item bare, the others by the first four letters of their label)."""
    parts: list[str] = []
    for h in (h for h in headlines(metrics) if h.present(m)):
        values = h.values(m, arrow="→")
        parts.append(values if not parts else f"{h.label.split()[0][:4]} {values}")
    sps = m.get(STEPS_PER_S)
    if sps is not None:
        parts.append(f"{float(sps) / 1000:,.0f}k {unit}/s")
    return " ".join(parts)


def first_to_last(history: Sequence[dict[str, Any]], metrics: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
    """``(label, "first → last")`` of each declared metric the history holds, in declared order."""
    rows = []
    for m in metrics:
        values = [h[m["key"]] for h in history if h.get(m["key"]) is not None]
        if values:
            fmt = m.get("fmt") or ".2f"
            rows.append((m.get("label") or m["key"], f"{fmt_num(values[0], fmt)} → {fmt_num(values[-1], fmt)}"))
    return rows


def latest_rows(latest: dict[str, Any], metrics: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
    """``(label, value)`` of each declared metric ``latest`` has a value for."""
    return [(m.get("label") or m["key"], fmt_num(latest[m["key"]], m.get("fmt") or ".2f"))
            for m in metrics if latest.get(m["key"]) is not None]
