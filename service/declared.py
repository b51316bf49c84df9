"""The headline metrics an algorithm declares (:func:`workers.contract.declared_metrics`): what a
job, a model version and the CLI show first, as JSON-ready ``{key, label, fmt}`` dicts.

The job store keeps a job's declaration (``jobs.metric_names``); a row older than that column, or a
model version, falls back to its algorithm's registered declaration, and to none when the algorithm
is not registered in this process."""

from __future__ import annotations

import json
from typing import Any

from workers.contract import declared_metrics

FIELDS = ("key", "label", "fmt")


def parse(value: Any) -> list[dict[str, str]] | None:
    """``value`` as a declaration (a list of ``{key, label, fmt}`` strings), or None if it is not one."""
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        return None
    if not all(isinstance(m.get(f), str) for m in value for f in FIELDS):
        return None
    return [{f: m[f] for f in FIELDS} for m in value]


def parse_json(text: str | None) -> list[dict[str, str]] | None:
    """A declaration stored as JSON (a job row's column, a run's tag), or None."""
    if not text:
        return None
    try:
        return parse(json.loads(text))
    except ValueError:
        return None


def for_algorithm(name: Any) -> list[dict[str, str]]:
    """The declaration of the algorithm registered as ``name``; [] for an unknown one."""
    if not isinstance(name, str):
        return []
    try:
        return declared_metrics(name)
    except LookupError:
        return []


def of_job(metric_names: str | None, spec: dict[str, Any]) -> list[dict[str, str]]:
    """A job's declaration: the one stored with it (at submission, or from its run's tag), else
    -- a row older than that column -- its stored spec's algorithm's."""
    stored = parse_json(metric_names)
    if stored is not None:
        return stored
    algorithm = spec.get("algorithm")
    return for_algorithm(algorithm.get("name") if isinstance(algorithm, dict) else algorithm)
