"""``benchmarks/supervised.py`` with tiny settings: every part runs end to end (training through
the engine's in-process job path, the meta-test through ``workers.evaluate``, the baselines, the
timings) and writes JSON with the expected keys and finite numbers, and the PNGs.  No wall-clock
assertions.  The actor-fed pipeline's measurement runs on the session's Ray (``ray_session``)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "supervised.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("supervised_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["supervised_bench"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("supervised_bench", None)


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # the benchmark runs on one thread


def read(path: Path) -> dict[str, Any]:
    def no_constant(name: str) -> float:
        raise AssertionError(f"{path.name} holds {name}: not valid JSON")

    return json.loads(path.read_text(), parse_constant=no_constant)


def finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def interval_ok(i: dict[str, Any], low: float = 0.0, high: float = math.inf) -> bool:
    """A mean in [low, high] inside its finite 95% interval (which, over a handful of episodes, may
    reach past the bounds)."""
    return finite(i["mean"], i["ci_low"], i["ci_high"]) and low <= i["mean"] <= high and \
        i["ci_low"] <= i["mean"] <= i["ci_high"]


def test_sinusoid_part(bench, tmp_path):
    bench.main(["--part", "sinusoid", "--results-dir", str(tmp_path), "--iterations", "4", "--curve-every", "2",
                "--shots", "5", "--test-tasks", "5", "--curve-tasks", "5", "--pretrain-iterations", "3"])
    data = read(tmp_path / "supervised_sinusoid.json")
    assert data["iterations"] == 4 and data["paper_iterations"] == 70_000 and data["test_tasks"] == 5
    assert {"paper", "results", "baselines", "curves", "targets", "pretrain", "wall_s"} <= data.keys()
    assert [(r["algorithm"], r["shots"]) for r in data["results"]] == [("sl-maml", 5), ("meta-sgd", 5)]
    for r in data["results"]:
        assert interval_ok(r["mse"]) and finite(r["paper_mse"], r["ratio_to_paper"], r["ratio_to_best_baseline"])
        assert r["paper_mse"] == bench.PAPER[r["algorithm"]][5] and isinstance(r["target_met"], bool)
        assert finite(r["ms_per_iteration"], r["train_mse_last100"], r["mse_pre"])
    assert interval_ok(data["results"][0]["mse_10_steps"])  # MAML's 10-step figure
    baselines = {(b["baseline"], b["steps"]) for b in data["baselines"]}
    assert baselines == {(b, s) for b in ("pretrained + fine-tune", "random init + fine-tune") for s in (1, 10)}
    assert all(interval_ok(b["mse"]) and b["lr"] in bench.FINETUNE_LRS for b in data["baselines"])
    assert set(data["curves"]) == {"sl-maml/K=5", "meta-sgd/K=5"}
    assert all([it for it, _ in c] == [0, 2, 4] and finite(*(v for _, v in c)) for c in data["curves"].values())
    assert (tmp_path / "supervised_sinusoid.png").stat().st_size > 0


def test_digits_part(bench, tmp_path):
    bench.main(["--part", "digits", "--results-dir", str(tmp_path), "--digits-shots", "1", "--digits-iterations", "2",
                "--test-episodes", "4", "--finetune-steps", "2"])
    data = read(tmp_path / "supervised_digits.json")
    assert data["test_episodes"] == 4 and set(data["settings"]) == set(bench.DIGITS_LEARNERS)
    assert [r["learner"] for r in data["results"]] == list(bench.DIGITS_LEARNERS)
    for r in data["results"]:
        assert r["shots"] == 1 and r["iterations"] == 2
        assert interval_ok(r["accuracy"], 0.0, 1.0) and finite(r["vs_finetune"], r["vs_pixel_nn"])
        assert isinstance(r["beats_both_baselines"], bool)
    assert {b["baseline"] for b in data["baselines"]} == {"fine-tune from scratch", "pixel 1-NN"}
    assert all(interval_ok(b["accuracy"], 0.0, 1.0) for b in data["baselines"])
    assert (tmp_path / "supervised_digits.png").stat().st_size > 0


def test_digits_part_on_the_glyphs(bench, tmp_path):
    bench.main(["--part", "digits", "--family", "glyphs", "--results-dir", str(tmp_path), "--digits-shots", "1",
                "--learners", "protonet", "--digits-iterations", "2", "--test-episodes", "4", "--finetune-steps", "2"])
    data = read(tmp_path / "supervised_glyphs.json")
    assert data["family"] == "glyphs" and [r["learner"] for r in data["results"]] == ["protonet"]
    assert interval_ok(data["results"][0]["accuracy"], 0.0, 1.0)
    assert {b["baseline"] for b in data["baselines"]} == {"fine-tune from scratch", "pixel 1-NN"}
    assert (tmp_path / "supervised_glyphs.png").stat().st_size > 0
    assert not (tmp_path / "supervised_digits.json").exists()


def test_speed_part_without_ray(bench, tmp_path):
    bench.main(["--part", "speed", "--results-dir", str(tmp_path), "--speed-repeats", "1", "--ray-workers", "0"])
    data = read(tmp_path / "supervised_speed.json")
    assert [r["meta_batch"] for r in data["outer_step"]] == [32, 25]
    for r in data["outer_step"]:
        assert r["second_order"] and finite(r["vmap_ms"], r["loop_ms"], r["ratio_loop_over_vmap"])
        assert r["vmap_ms"] > 0 and r["loop_ms"] > 0 and r["first_loss_equal"]
        assert finite(r["engine_ms"], r["ratio_loop_over_engine"]) and r["engine_ms"] > 0
    # the engine's default on a CPU: the loop for conv4, vmap for the MLP (what this part measured faster)
    assert [r["engine_mode"] for r in data["outer_step"]] == ["loop", "vmap"]
    assert data["pipeline"] == [] and "pipeline_skipped" in data


@pytest.mark.ray
def test_pipeline_measurement_on_the_sessions_ray(bench, ray_session):
    spec = bench.job(bench.preset("digits-maml"), algorithm={"name": "sl-maml"},
                     family_params={"ways": 5, "shots": 1, "queries": 2}, meta_batch_size=4, name="bench-smoke")
    rec = bench.time_pipeline("smoke", spec, calls=1, workers=1)
    assert rec["ray"] == "the caller's" and rec["meta_batch"] == 4
    assert finite(rec["actors_episodes_per_s"], rec["in_process_episodes_per_s"], rec["ratio_actors_over_in_process"])
    assert ray_session.is_initialized()  # the session's Ray is left running
