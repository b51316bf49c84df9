"""Job specs for the CLI: presets by name (``workers/presets/NAME.json``), spec files, and
``--set key.path=value`` overrides, validated through :class:`workers.contract.JobSpec` before
anything is sent."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import workers

PRESETS_DIR = Path(workers.__file__).resolve().parent / "presets"


class SpecError(ValueError):
    """A spec file, preset or override that cannot become a valid job spec (the message says why)."""


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path
    spec: dict[str, Any]


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def presets() -> list[Preset]:
    return [load_preset(n) for n in preset_names()]


def load_preset(name: str) -> Preset:
    """The preset ``name`` (a file stem of ``workers/presets``)."""
    path = PRESETS_DIR / f"{name}.json"
    if "/" in name or not path.is_file():
        known = ", ".join(preset_names()) or "none"
        raise SpecError(f"no preset named {name!r}; known presets: {known}")
    return Preset(name=name, path=path, spec=_read_json(path))


def load_spec_file(path: Path) -> dict[str, Any]:
    """A job spec from a JSON file (or YAML when the name ends in .yaml/.yml)."""
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise SpecError(f"{path} is not valid YAML: {exc}") from exc
    else:
        data = _read_json(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path} must hold a JSON object (the job spec), not {type(data).__name__}")
    return data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from exc


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"resources.rollout_workers=2"`` -> ``(["resources", "rollout_workers"], 2)``.

    The value is read as JSON when it parses (numbers, true/false, null, lists, objects), else
    taken as a string (``name=my-job``)."""
    key, sep, raw = item.partition("=")
    path = key.strip().split(".")
    if not sep or not all(p.strip() for p in path):
        raise SpecError(f"--set {item!r}: expected KEY=VALUE with a dotted KEY, e.g. iterations=5 or "
                        "resources.rollout_workers=2")
    raw = raw.strip()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return [p.strip() for p in path], value


def apply_overrides(spec: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """A copy of ``spec`` with each ``KEY=VALUE`` of ``items`` set (nested objects created)."""
    out = copy.deepcopy(spec)
    for item in items:
        path, value = parse_override(item)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise SpecError(f"--set {item!r}: {'.'.join(path[:i + 1])} is {child!r}, not an object")
            node = child
        node[path[-1]] = value
    return out


def validate(spec: dict[str, Any]) -> dict[str, Any]:
    """Check ``spec`` against :class:`workers.contract.JobSpec`; returns it unchanged (the service
    fills in defaults itself).

    Raises:
        SpecError: naming every bad field, e.g. ``iterations: Input should be greater than or
            equal to 1``.
    """
    from pydantic import ValidationError

    from workers.contract import JobSpec

    try:
        JobSpec.model_validate(spec)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            field = ".".join(str(p) for p in e.get("loc", ())) or "spec"
            problems.append(f"{field}: {e.get('msg', 'invalid')}")
        raise SpecError("invalid job spec: " + "; ".join(problems)) from exc
    return spec
