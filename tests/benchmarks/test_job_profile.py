"""``benchmarks/job_profile.py``: a small navigation2d job profiled through the real driver on its
own local Ray (a subprocess); the parts of every iteration add up to its wall clock, the summary
and the chart are written.  No wall-clock assertions."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "job_profile.py"


def _bench():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("job_profile_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_breakdown_adds_up_to_the_iteration():
    bench = _bench()
    m = {"time/sample_train0_s": 2.0, "time/sample_valid_s": 1.5, "time/sample_s": 3.5, "time/adapt_s": 0.5,
         "time/learner_adapt_s": 0.4, "time/learn_s": 3.0, "time/learner_learn_s": 2.5, "time/outer_batch_s": 0.2,
         "time/outer_gradient_s": 0.8, "time/outer_curvature_s": 1.0, "time/outer_line_search_s": 0.3,
         "time/iteration_s": 7.25}
    parts = bench.breakdown(m, 0.5)
    assert parts == pytest.approx({
        "sample_train0": 2.0, "sample_valid": 1.5, "adapt_compute": 0.4, "adapt_transfer": 0.1, "outer_batch": 0.2,
        "outer_gradient": 0.8, "outer_curvature": 1.0, "outer_line_search": 0.3, "outer_other": 0.2,
        "learn_transfer": 0.5, "driver_other": 0.25, "bookkeeping": 0.5})
    assert sum(parts.values()) == pytest.approx(7.75)
    rows = [{"iteration": i, "wall_s": 7.75, "parts": parts, "env_steps": 1000.0, "rollout_busy_frac": 0.4,
             "learner_busy_frac": 0.5} for i in (1, 2)]
    s = bench.summarize(rows)
    assert s["env_steps_per_s_end_to_end"] == pytest.approx(1000 / 7.75)
    assert s["env_steps_per_s_sampling"] == pytest.approx(1000 / 3.5)
    assert s["e2e_over_sampling"] == pytest.approx(3.5 / 7.75)
    assert sum(s["parts_frac"].values()) == pytest.approx(1.0)


def test_baseline_spec_leaves_defaults_to_the_older_contract_and_differences_are_named():
    bench = _bench()
    full = {"name": "j", "algorithm": {"name": "maml", "inner_lr": 0.1, "new_knob": "x"}, "iterations": 5,
            "resources": {"rollout_workers": 2, "envs_per_worker": 200}}
    # pydantic's dump without defaults keeps a required sub-model, empty where all of it is defaults
    lean = {"name": "j", "algorithm": {}, "iterations": 5, "resources": {"envs_per_worker": 200}}
    # the discriminators stay (an older contract needs them to pick the model), defaults go
    assert bench._without_defaults(full, lean) == {"name": "j", "algorithm": {"name": "maml"}, "iterations": 5,
                                                   "resources": {"envs_per_worker": 200}}
    ran = {"name": "other", "algorithm": {"name": "maml", "inner_lr": 0.1}, "iterations": 6,
           "resources": {"rollout_workers": 2, "envs_per_worker": 200}}
    assert bench._differences(full, ran) == ["iterations: 5 != 6"]


def test_foreign_load_counts_processes_older_than_the_window_only():
    bench = _bench()
    meter = bench.ForeignLoad()
    # a process started inside the window is the measurement's own, however busy
    subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)
    load = meter.stop()
    assert set(load) == {"foreign_cpu_frac", "loadavg_1m_start", "seconds"}
    assert 0.0 <= load["foreign_cpu_frac"] <= 1.0


@pytest.mark.ray
@pytest.mark.slow
def test_profile_of_a_small_navigation_job(tmp_path):
    out = tmp_path / "profile.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--suite", "navigation2d", "--iterations", "3", "--checkpoint-every", "2",
         "--num-cpus", "2", "--out", str(out), "--set", "meta_batch_size=4", "--set", "episodes_per_task=4",
         "--set", "policy.hidden_sizes=[16, 16]", "--set", "resources.envs_per_worker=8"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1])["suite"] == "navigation2d"
    rows = record["per_iteration"]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert sum(r["parts"].values()) == pytest.approx(r["wall_s"], rel=1e-6)
        assert {"sample_train0", "sample_valid", "outer_curvature", "learn_transfer", "bookkeeping"} <= set(r["parts"])
        assert r["env_steps"] > 0
    assert [r["checkpointed"] for r in rows] == [False, True, True]  # every 2, and the last
    assert [r["bookkeeping_measured"] for r in rows] == [True, True, False]
    s = record["summary"]
    assert s["iterations"] == [1]  # after the warm-up, with its bookkeeping measured
    assert 0 < s["e2e_over_sampling"] <= 1 and s["env_steps_per_s_sampling"] > s["env_steps_per_s_end_to_end"]
    assert record["spec"]["meta_batch_size"] == 4
    assert record["baseline"] is None and 0.0 <= record["load"]["foreign_cpu_frac"] <= 1.0
    assert out.with_suffix(".png").stat().st_size > 0
