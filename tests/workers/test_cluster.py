"""Multi-node behaviour on one machine: a simulated two-node cluster in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.ray
@pytest.mark.slow
def test_actors_spread_over_two_nodes_and_job_survives_node_removal(tmp_path):
    ray_tmp = Path("/tmp") / f"rc{os.getpid()}"
    env = dict(os.environ)
    env.update({
        "RAY_TMPDIR": str(ray_tmp),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "METARL_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "METARL_HOME": str(tmp_path / "home"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    })
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(ROOT / "tests/workers/two_node_job.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "SUCCEEDED" and out["iterations"] == 4
    assert len(out["nodes_before_removal"]) == 2  # the placement group spread the actors over both nodes
    assert out["removed_node"] in out["nodes_before_removal"]
    assert out["nodes_per_iteration"]["0"] == 2.0
    assert out["model_uri"] == "models:/two-node/1"
