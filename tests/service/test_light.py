"""The control plane is light: the API app and the CLI import no engine stack (torch, gymnasium,
MuJoCo, Meta-World).  Each check runs in a fresh interpreter, whose ``sys.modules`` holds only
what that import pulled in; a spy on the import system records who first asked for a forbidden
module, so a failure names the chain of imports to cut."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = ("torch", "gymnasium", "mujoco", "metaworld")

#: run first in the fresh interpreter: records the import stack of each forbidden module's first import
SPY = textwrap.dedent("""
    import json, sys, traceback

    FORBIDDEN = %r
    chains = {}

    class Spy:
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top in FORBIDDEN and top not in chains:
                frames = traceback.extract_stack()[:-1]
                chains[top] = [f"{f.filename}:{f.lineno} ({f.line})" for f in frames
                               if not f.filename.startswith("<frozen")]
            return None  # the real finders import it

    sys.meta_path.insert(0, Spy())

    def report():
        loaded = [m for m in FORBIDDEN if m in sys.modules]
        print(json.dumps({"loaded": loaded, "chains": {m: chains.get(m, []) for m in loaded}}))
""") % (FORBIDDEN,)


def _imports(code: str) -> dict:
    """Run ``code`` after the spy in a fresh interpreter; its report of forbidden modules."""
    out = subprocess.run([sys.executable, "-c", SPY + textwrap.dedent(code) + "\nreport()\n"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _explain(report: dict) -> str:
    lines = [f"imported {report['loaded']}:"]
    for module, chain in report["chains"].items():
        lines.append(f"  {module}, first asked for by:")
        lines += [f"    {frame}" for frame in chain] or ["    (no record)"]
    return "\n".join(lines)


def test_the_api_app_imports_no_engine_stack(tmp_path):
    report = _imports(f"""
        from service.app import create_app
        from service.settings import Settings

        app = create_app(Settings(home={str(tmp_path / "home")!r}))  # built, not started: no Ray, no MLflow
        assert app.state.job_caches is not None and app.routes
        from workers.contract import JobSpec  # what the app validates job specs with
        spec = {{"name": "n", "algorithm": {{"name": "maml"}}, "task_family": {{"name": "navigation2d"}}}}
        JobSpec.model_validate(spec)
    """)
    assert report["loaded"] == [], _explain(report)


@pytest.mark.parametrize("module", ["service.cli", "service.cli.jobs", "service.cli.models", "service.cli.stack"])
def test_the_cli_imports_no_engine_stack(module):
    report = _imports(f"""
        import importlib

        importlib.import_module({module!r})
        from service import presets
        presets.validate(presets.load_preset("navigation2d-maml-demo").spec)  # what `metarl jobs submit` runs
    """)
    assert report["loaded"] == [], _explain(report)


def test_the_spy_names_the_chain():
    """The report is worth reading: a forbidden import comes with the frames that asked for it (a
    module's file and line, with its source), e.g. the service's old import of workers.tracking."""
    report = _imports("""
        import workers.tracking  # noqa: F401 - the engine's MLflow side: imports torch
    """)
    assert report["loaded"][:1] == ["torch"]
    chain = report["chains"]["torch"]
    assert chain[0].startswith("<string>:"), chain
    assert any("workers/tracking.py" in frame and "import torch" in frame for frame in chain), chain
