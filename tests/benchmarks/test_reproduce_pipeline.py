"""``benchmarks/reproduce.py`` end to end on a tiny 2D-navigation setting: the real engine (the
session's Ray, an MLflow store in the test's temp dir), a training budget that runs out mid-run
(a partial result from the latest checkpoint), the same call going on to the end, checkpoint
selection on validation tasks, and the meta-test of every variant."""

from __future__ import annotations

import dataclasses

from rich.console import Console

from benchmarks.repro.meta_test import (
    choose_checkpoint,
    evaluate_all,
    select_checkpoints,
    selection_score,
    trained_models,
)
from benchmarks.repro.plots import _partial_suffix, evaluation_png, learning_png
from benchmarks.repro.results import build_result
from benchmarks.repro.state import State
from benchmarks.repro.suites import SELECTED, SELECTION_SEED_OFFSET, SUITES, Selection
from benchmarks.repro.table import table_rows
from benchmarks.repro.train import LocalRay, train
from workers import tracking
from workers.model import MetaPolicy

OVERRIDES = ["meta_batch_size=2", "episodes_per_task=2", "checkpoint_every=2", "resources.rollout_workers=1",
             "resources.envs_per_worker=4"]
CONFIG = {"episodes": 2, "steps": 3, "tasks": 2, "later_lr": 0.05}


def test_budget_partial_result_resume_and_checkpoint_selection(ray_session, mlflow_store, tmp_path):
    nav = SUITES["navigation2d"]
    suite = dataclasses.replace(nav, protocol=dataclasses.replace(nav.protocol, selection=Selection(every=2, tasks=2)))
    state = State.load(tmp_path / "work" / "state.json", suite.name)
    (tmp_path / "work").mkdir()
    common = dict(seeds=[0], iterations=4, overrides=OVERRIDES, ray_=LocalRay(num_cpus=2), console=Console(quiet=True))

    # the budget is spent after the first iteration: the run stops at its checkpoint of iteration 2
    asked = []
    train(suite, state, **common, budget_spent=lambda: asked.append(1) or len(asked) > 1)
    entry = state.runs["maml/seed0"]
    assert not entry.finished and entry.model_uri is None and entry.train_seconds > 0
    assert tracking.checkpoint_iterations(entry.run_id) == [2]
    models = trained_models(suite, state, seeds=[0])
    uri, done = models[("maml", 0)]
    assert done == 2 and MetaPolicy.load(uri).iteration == 2
    evaluate_all(suite, state, seeds=[0], iterations=4, overrides=OVERRIDES, config=CONFIG, models=models,
                 evaluated=("maml",))
    partial = build_result(suite, state, seeds=[0], iterations=4, overrides=OVERRIDES, config=CONFIG, command="c",
                           train_seconds=1.0, eval_seconds=1.0, evaluated=("maml",), done={("maml", 0): 2})
    assert partial["partial"]["iterations_done"] == 2 and partial["runs"]["maml/seed0"]["finished"] is False
    assert partial["learning_curves"]["maml"]["seed0"]["iteration"] == [0, 1]
    assert table_rows(partial)[0][3] == "1 × 2 of 4 (partial run)"
    assert learning_png(partial)[:4] == b"\x89PNG" and _partial_suffix(partial) == " (partial run: iteration 2 of 4)"
    assert len(partial["summary"]["maml"]["test"]["return"]) == 4  # after 0..3 inner steps

    # the same call goes on from the checkpoint to the end
    train(suite, state, **common)
    assert entry.finished and entry.model_uri == "models:/reproduce-navigation2d-maml-s0/1"
    assert tracking.checkpoint_iterations(entry.run_id) == [2, 4]
    assert tracking.metric_history(entry.run_id, "meta/return_post")[-1][0] == 3

    selected = select_checkpoints(suite, state, seeds=[0], config=CONFIG)
    chosen = selected[0]
    assert [c["iteration"] for c in chosen["candidates"]] == [2, 4]
    scores = {c["iteration"]: c["score"] for c in chosen["candidates"]}
    assert chosen["iteration"] == choose_checkpoint(scores)
    for c in chosen["candidates"]:
        report = state.evaluations[f"selection/seed0/it{c['iteration']:06d}"]
        assert report["config"]["split"] == "train" and report["config"]["seed"] == SELECTION_SEED_OFFSET
        assert report["config"]["tasks"] == 2 == chosen["tasks"]  # --eval-tasks shrinks the validation tasks too
        assert c["score"] == selection_score(report["report"]) and len(c["return"]) == 4
    assert MetaPolicy.load(chosen["model_uri"]).iteration == chosen["iteration"]
    assert select_checkpoints(suite, state, seeds=[0], config=CONFIG) == selected  # kept in the state

    models = trained_models(suite, state, seeds=[0])
    assert models[("maml", 0)] == (entry.model_uri, 4)
    evaluate_all(suite, state, seeds=[0], iterations=4, overrides=OVERRIDES, config=CONFIG, models=models,
                 selected=selected)
    assert state.evaluations[f"{SELECTED}/seed0/test"]["config"]["model_uri"] == chosen["model_uri"]
    result = build_result(suite, state, seeds=[0], iterations=4, overrides=OVERRIDES, config=CONFIG, command="c",
                          train_seconds=1.0, eval_seconds=1.0, selected=selected)
    assert result["partial"] is None and set(result["summary"]) == {"maml", SELECTED, "maml-later-lr-0.025"}
    assert result["selection"]["per_seed"]["0"]["iteration"] == chosen["iteration"]
    rows = table_rows(result)
    assert rows[0][3] == f"1 × 4 (of 500), checkpoints {chosen['iteration']}"
    assert learning_png(result)[:4] == b"\x89PNG" and evaluation_png(result)[:4] == b"\x89PNG"
