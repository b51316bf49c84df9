"""The results table of ``docs/results.md``: rendered from the ``reproduce_*.json`` result files
and written between the page's ``results`` markers (``reproduce.py --table --write-docs``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .results import RESULTS_DIR, ROOT, estimate
from .suites import SAMPLED, SELECTED, SUITES, _holds, format_steps, paper_variant, split_override

RESULTS_DOC = ROOT / "docs" / "results.md"
BEGIN_MARKER = "<!-- results:begin -->"
END_MARKER = "<!-- results:end -->"


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.1f}%" if metric == "success" else f"{value:.2f}"


def _cell(est: dict[str, Any] | None, metric: str) -> str:
    if est is None:
        return "—"
    if est["low"] is None:
        return _fmt(est["mean"], metric)
    return f"{_fmt(est['mean'], metric)} [{_fmt(est['low'], metric)}, {_fmt(est['high'], metric)}]"


def _budget_cell(result: dict[str, Any], variant: str) -> str:
    """Seeds × iterations of a budget suite's ``variant`` (its trained one's), with the env steps
    they come to, the same for every variant of the suite."""
    budget = result["budget"]
    trained = variant.removesuffix(SAMPLED)  # a sampled-actions variant evaluates its trained one
    trained = trained if trained in budget["variants"] else "maml"
    info = budget["variants"][trained]
    seeds, its = len(result["seeds"]), info["iterations"]
    steps = f"{format_steps(info['env_steps'])} env steps"
    if budget["env_steps"] < budget["suite_env_steps"]:
        steps += f", of the suite's {format_steps(budget['suite_env_steps'])}"
    if result.get("partial"):
        done = result["partial"]["iterations_done_by_variant"][trained]
        return f"{seeds} × {done} of {its} ({steps}; partial run)"
    return f"{seeds} × {its} ({steps})"


def _target_text(t: dict[str, Any], metric: str) -> str:
    """``yes (>= 90.0%)``; a target from another source than the acceptance targets names it."""
    met = "yes" if t["met"] else "no" if t["met"] is False else "—"
    source = "" if t.get("source", "acceptance target") == "acceptance target" else f", {t['source']}"
    return f"{met} ({t['op']} {_fmt(t['value'], metric)}{source})"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """The results-table rows of one result file (one per headline)."""
    rows = []
    budget = f"{len(result['seeds'])} × {result['iterations']}"
    if result.get("budget"):
        budget = ""  # per row: the variant's iterations on the suite's env steps
    elif result.get("partial"):
        done = result["partial"]["iterations_done"]
        budget = f"{len(result['seeds'])} × {done} of {result['iterations']} (partial run)"
    elif result.get("stopped_early"):
        budget += f" (of {result['paper_iterations']})"
    for i, h in enumerate(result["headlines"]):
        metric = h["metric"]
        est = estimate(result["summary"], variant=h["variant"], split=h["split"], metric=metric, step=h["step"])
        published = "; ".join(
            f"{_fmt(p['value'], metric)} ({p['setting']})" for p in result["published"]
            if p["comparable"] and (p["variant"], p["split"], p["metric"], p["step"])
            == (paper_variant(h["variant"]), h["split"], metric, h["step"])
        ) or "—"
        met = [t for t in result["targets"]
               if (t["variant"], t["split"], t["metric"], t["step"]) == (h["variant"], h["split"], metric, h["step"])]
        target = "; ".join(_target_text(t, metric) for t in met) or "—"
        command = f"`{result['command']}`" if i == 0 else ""
        cell = _budget_cell(result, h["variant"]) if result.get("budget") else budget
        chosen = (result.get("selection") or {}).get("per_seed") or {}
        if h["variant"] == SELECTED and chosen:
            cell += f", checkpoints {'/'.join(str(c['iteration']) for _, c in sorted(chosen.items()))}"
        rows.append([result["suite"], h["label"], _cell(est, metric), cell, published, target, command])
    return rows


# Job-spec fields an override may change without changing what is trained or measured: how often
# the driver writes a checkpoint (nothing else reads it).
BOOKKEEPING_FIELDS = frozenset({"checkpoint_every"})


def _restates_suite(suite: str, override: str) -> bool:
    """Whether ``[VARIANT:]KEY=VALUE`` sets what the suite's own spec (its preset and its
    settings) has, in every variant it applies to."""
    from service.presets import parse_override

    if suite not in SUITES:
        return False
    variant, item = split_override(override)
    s = SUITES[suite]
    if variant is not None and variant not in s.variants:
        return False
    path, value = parse_override(item)
    return all(_holds(s.merged_spec(v), path, value) for v in ([variant] if variant else s.variants))


def render_results_table(results_dir: Path = RESULTS_DIR) -> str:
    """The results section of docs/results.md (between the markers) from ``reproduce_*.json`` in
    ``results_dir``; a line saying that none are recorded when there are none."""
    files = sorted(results_dir.glob("reproduce_*.json"))
    if not files:
        return ("No reproduction runs are recorded yet (no `benchmarks/results/reproduce_*.json`). Run "
                "`python benchmarks/reproduce.py --suite SUITE`, then "
                "`python benchmarks/reproduce.py --table --write-docs`.")
    order = list(SUITES)
    results = sorted((json.loads(f.read_text()) for f in files),
                     key=lambda r: (order.index(r["suite"]) if r["suite"] in order else len(order), r["suite"]))
    header = ["suite", "metric", "ours: mean [95% CI over seeds]", "seeds × iterations", "published", "target met?",
              "command"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    return "\n".join([*lines, "", *(result_note(result) for result in results)])


def result_note(result: dict[str, Any]) -> str:
    """The note under the table on one result: its convergence, how it departs from the paper's
    setting (overrides, off-protocol evaluation, the suite's own departures), a partial run, the
    checkpoint selection, and where and how long it ran."""
    commit = (result.get("git_commit") or "?")[:10] + (" (dirty)" if result.get("git_dirty") else "")
    deviations, bookkeeping, restated = [], [], []
    for override in result["spec_overrides"]:
        if split_override(override)[1].split("=", 1)[0].strip() in BOOKKEEPING_FIELDS:
            bookkeeping.append(f"`{override}`")
        elif _restates_suite(result["suite"], override):
            restated.append(f"`{override}`")
        else:
            deviations.append(f"`{override}`")
    if deviations:
        deviations = ["spec overrides " + ", ".join(deviations)]
    if result["evaluation"]["deviates_from_suite"]:
        e = result["evaluation"]
        if e.get("per_variant"):
            labels = {v: info["label"] for v, info in (result.get("variants") or {}).items()}
            deviations.append("evaluation off-protocol (" + "; ".join(
                f"{labels.get(v, v)}: {c['tasks']} tasks, K = {c['episodes']}" for v, c in e["per_variant"].items()
                if not c.get("sampled_eval"))  # a trained variant's settings again, its actions sampled
                + ")")
        else:
            deviations.append(f"evaluation off-protocol ({e['tasks']} tasks, K = {e['episodes']})")
    deviation = f"; NOT the paper setting: {'; '.join(deviations)}" if deviations else ""
    suite = SUITES.get(result["suite"])
    departed = [d.describe() for d in (suite.departures if suite else ()) if d.applies_to(result.get("spec"))]
    if departed:
        deviation += f"; the suite departs from the paper: {'; '.join(departed)}"
    if bookkeeping:
        deviation += f"; set without changing the training: {', '.join(bookkeeping)}"
    if restated:
        deviation += f"; set to the suite's own values (its defaults): {', '.join(restated)}"
    if result.get("partial"):
        deviation += f"; PARTIAL RUN: {result['partial']['note']}"
    sel = result.get("selection")
    if sel and sel.get("per_seed"):
        deviation += (f"; checkpoint chosen per seed among every {sel['every']}th iteration by the "
                      f"{sel['criterion']} ({sel['tasks']} tasks of the {sel['split']} split, seed {sel['seed']})")
    return (f"- `{result['suite']}`: {result['note']}{deviation}; commit {commit}, {result['cpu_count']} cores, "
            f"training {result['wall_clock_s']['training'] / 3600:.2f} h, evaluation "
            f"{result['wall_clock_s']['evaluation'] / 60:.1f} min "
            f"(`benchmarks/results/reproduce_{result['suite']}.json`, `_learning.png`, `_evaluation.png`).")


def results_section(text: str) -> str:
    """The text between the results markers of a page."""
    start, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN_MARKER} ... {END_MARKER} section")
    return text[start + len(BEGIN_MARKER):end].strip("\n")


def write_docs(page: Path = RESULTS_DOC, results_dir: Path = RESULTS_DIR) -> bool:
    """Replace the results section of ``page`` (docs/results.md); True if it changed."""
    text = page.read_text()
    results_section(text)  # raises without the markers
    start, end = text.find(BEGIN_MARKER) + len(BEGIN_MARKER), text.find(END_MARKER)
    new = text[:start] + "\n" + render_results_table(results_dir) + "\n" + text[end:]
    if new != text:
        page.write_text(new)
    return new != text
