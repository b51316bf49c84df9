"""``benchmarks/job_startup.py`` with one job of one iteration: ``metarl up`` in a temp data dir,
the job through the REST API to its first finished iteration, the same spec by a driver on its own,
``metarl down``; the JSON has the figure, its parts and the baseline.  No wall-clock assertions."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "job_startup.py"


def test_startup_figure_its_parts_and_the_baseline(tmp_path):
    spec = importlib.util.spec_from_file_location("job_startup_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["job_startup_bench"] = bench
    try:
        spec.loader.exec_module(bench)
        out = tmp_path / "job_startup.json"
        record = bench.main(["--jobs", "1", "--iterations", "1", "--out", str(out)])
    finally:
        sys.modules.pop("job_startup_bench", None)
    assert json.loads(out.read_text()) == record
    (run,) = record["runs"]
    assert run["cold"] and run["job"].startswith("job-")
    parts = [run[k] for k in ("post_to_first_iteration_s", "to_run_start_s", "run_start_to_first_metric_s",
                              "first_iteration_s", "post_to_visible_s")]
    assert all(math.isfinite(x) and x > 0 for x in parts)
    # the figure is the sum of its parts (each rounded)
    assert abs(run["to_run_start_s"] + run["run_start_to_first_metric_s"] - run["post_to_first_iteration_s"]) <= 0.02
    assert record["post_to_first_iteration_s"] == run["post_to_first_iteration_s"] == record["cold_s"]
    assert record["baseline_s"] > 0 and record["baseline_detail"]["launch_to_run_start_s"] > 0
    assert record["ratio"] > 0 and isinstance(record["goal_met"], bool)
