"""The README's two ways of using a registered model, run exactly as written, against a model
registered under the demo's name in a data dir laid out as `metarl up` lays out ``~/.metarl``
(``HOME`` points at the test's temp dir, so ``~`` and ``$HOME`` are that dir).

A snippet is the fenced block after an HTML comment ``<!-- snippet: NAME -->`` in README.md."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from workers.contract import JobSpec
from workers.envs import make_family
from workers.loop import train_in_process

ROOT = Path(__file__).resolve().parents[2]
DEMO = "navigation2d-maml-demo"


def snippet(name: str) -> tuple[str, str]:
    """``(language, code)`` of the README block marked ``<!-- snippet: name -->``."""
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- snippet: {re.escape(name)} -->\s*```(\w+)\n(.*?)```", text, re.S)
    assert m, f"README.md has no block marked <!-- snippet: {name} -->"
    return m[1], m[2]


@pytest.fixture(scope="module")
def home(tmp_path_factory):  # noqa: ANN201
    """A HOME whose ``~/.metarl`` holds an MLflow store with version 1 of the demo's model (MAML
    on navigation2d, trained for 2 iterations in process)."""
    from algorithms.maml import MAML
    from workers.model import log_meta_policy

    home = tmp_path_factory.mktemp("user")
    data = home / ".metarl"
    data.mkdir()
    uri = f"sqlite:///{data / 'mlflow.db'}"
    spec = JobSpec.model_validate({
        "name": DEMO, "algorithm": {"name": "maml", "inner_lr": 0.1}, "task_family": {"name": "navigation2d"},
        "policy": {"hidden_sizes": [16, 16]}, "meta_batch_size": 4, "episodes_per_task": 4, "iterations": 2, "seed": 0,
    })
    family = make_family("navigation2d", seed=0)
    obs_dim, act_dim, discrete = family.policy_dims()
    learner = MAML(spec.policy_spec(obs_dim=obs_dim, act_dim=act_dim, discrete=discrete), spec.algorithm,
                   advantage=spec.advantage, seed=0)
    results = train_in_process(learner, family, meta_batch_size=4, episodes_per_task=4, iterations=2, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.MlflowClient(uri).create_experiment("demo", artifact_location=str(data / "mlartifacts"))
        with mlflow.start_run(experiment_id=experiment):
            registered = log_meta_policy(state=learner.state_dict(), spec=spec, final_metrics=results[-1].metrics,
                                         register_as=DEMO, family=family)
        mlflow.set_tracking_uri(None)
    assert registered.uri == f"models:/{DEMO}/1"
    return home


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "METARL_"))}
    env.update(HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true")
    return env


def _run(args: list[str], *, home: Path, cwd: Path) -> str:
    before = set(os.listdir(cwd))
    r = subprocess.run(args, cwd=cwd, env=_env(home), capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(os.listdir(cwd)) - before == set(), "the snippet left files in the current directory"
    return r.stdout


def test_load_adapt_snippet_prints_the_return_before_and_after(home, tmp_path):  # noqa: ANN001
    lang, code = snippet("load-adapt")
    assert lang == "python" and f'MetaPolicy.load("models:/{DEMO}/1")' in code
    out = _run([sys.executable, "-c", code], home=home, cwd=tmp_path)
    m = re.search(r"return before adaptation (-?[\d.]+), after (-?[\d.]+)", out)
    assert m, out
    assert all(math.isfinite(float(x)) for x in m.groups())


def test_pyfunc_snippet_loads_the_model_as_written(home):  # noqa: ANN001
    lang, code = snippet("pyfunc")
    assert lang == "bash" and "MLFLOW_TRACKING_URI=" in code and f"models:/{DEMO}/1" in code
    python = ROOT / ".venv" / "bin" / "python"
    if not python.is_file() or Path(sys.executable).resolve() != python.resolve():
        code = code.replace(".venv/bin/python", sys.executable)  # this test runs from another environment
    # from the repository root, as the README says; no stray ./mlflow.db afterwards
    out = _run(["bash", "-c", code], home=home, cwd=ROOT)
    rows = re.findall(r"\[\s*(-?[\d.e+-]+)\s+(-?[\d.e+-]+)\s*\]", out)
    assert len(rows) == 2, out  # two observations -> two 2-d actions
    assert all(-1.0 <= float(x) <= 1.0 for row in rows for x in row), out  # clipped to the action space
