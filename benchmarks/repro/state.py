"""The work directory's ``state.json``: which MLflow run trains each (variant, seed), whether it
finished, and the evaluations done, so that re-running the same command resumes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunState:
    """One training job of one seed."""

    run_id: str | None = None
    job_id: str | None = None
    finished: bool = False
    spec: dict[str, Any] = field(default_factory=dict)
    model_uri: str | None = None
    train_seconds: float = 0.0
    abandoned_runs: list[str] = field(default_factory=list)


@dataclass
class State:
    """``<workdir>/state.json``: what has been trained and evaluated, so a re-run resumes."""

    path: Path
    suite: str
    runs: dict[str, RunState] = field(default_factory=dict)
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, suite: str) -> State:
        if not path.is_file():
            return cls(path=path, suite=suite)
        data = json.loads(path.read_text())
        if data.get("suite") != suite:
            raise SystemExit(f"{path} belongs to suite {data.get('suite')!r}, not {suite!r}; pass another --workdir")
        return cls(path=path, suite=suite, runs={k: RunState(**v) for k, v in data.get("runs", {}).items()},
                   evaluations=data.get("evaluations", {}))

    def save(self) -> None:
        data = {"suite": self.suite, "runs": {k: asdict(v) for k, v in self.runs.items()},
                "evaluations": self.evaluations}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.path)  # atomic: an interrupted save never loses the previous state


def run_key(variant: str, seed: int) -> str:
    return f"{variant}/seed{seed}"
