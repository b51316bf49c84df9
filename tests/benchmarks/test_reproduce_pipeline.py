"""``benchmarks/reproduce.py`` end to end on tiny settings: the real engine (the session's Ray, an
MLflow store in the test's temp dir).  2D navigation: a training budget that runs out mid-run (a
partial result from the latest checkpoint), the same call going on to the end, checkpoint
selection on validation tasks, and the meta-test of every variant.  RL² against MAML on ML1
reach: iterations from one env-step budget, only the newest checkpoint kept, the work directory
committed and checked out again at the same path and resumed from, RL²'s meta-test per episode of
its trial, and the results table."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from benchmarks.repro.meta_test import (
    choose_checkpoint,
    evaluate_all,
    select_checkpoints,
    selection_score,
    trained_models,
)
from benchmarks.repro.plots import _partial_suffix, evaluation_png, learning_png
from benchmarks.repro.results import build_result, write_result
from benchmarks.repro.state import State
from benchmarks.repro.suites import (
    AFTER_TRIAL,
    SELECTED,
    SELECTION_SEED_OFFSET,
    SUITES,
    Selection,
    split_override,
    variant_overrides,
)
from benchmarks.repro.table import render_results_table, table_rows
from benchmarks.repro.train import LocalRay, train, use_workdir
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
    assert rows[0][3] == f"1 × 4 (of {nav.paper_iterations}), checkpoints {chosen['iteration']}"
    assert learning_png(result)[:4] == b"\x89PNG" and evaluation_png(result)[:4] == b"\x89PNG"


# ---- RL² against MAML on the same env-step budget -------------------------------------------------

#: a tiny ML1 reach: horizon 20, 2 goals x 2 episodes; RL²'s trials of 2 episodes and a small GRU
RL2_OVERRIDES = ["meta_batch_size=2", "episodes_per_task=2", "checkpoint_every=1", "task_family.max_episode_steps=20",
                 "resources.rollout_workers=1", "resources.envs_per_worker=2", "rl2:algorithm.episodes_per_trial=2",
                 "rl2:algorithm.hidden_size=16", "rl2:algorithm.encoder_sizes=[16]", "rl2:algorithm.epochs=1",
                 "maml:policy.hidden_sizes=[16,16]"]
#: RL² samples 2 x 2 x 20 = 80 env steps an iteration, MAML twice that (before and after its inner step)
ENV_STEPS = 320
RL2_CONFIG = {"episodes": 2, "steps": 1, "tasks": 2, "later_lr": None}


def _use_workdir(monkeypatch, workdir: Path) -> None:
    """The pipeline's work directory, its environment restored after the test; every MLflow call
    on a fresh SQLite connection (so the store can be replaced on disk, as a checkout does)."""
    for key in ("MLFLOW_TRACKING_URI", "METARL_HOME", "METARL_ARTIFACT_ROOT", "MLFLOW_DISABLE_TELEMETRY"):
        monkeypatch.setenv(key, "")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    use_workdir(workdir)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")


def _commit_and_check_out(workdir: Path) -> dict[str, int]:
    """What a git commit and a checkout at the same path keep of ``workdir``: its regular files
    (not empty directories); their sizes by path."""
    files = {p.relative_to(workdir): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    shutil.rmtree(workdir)
    for rel, data in files.items():
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (workdir / rel).write_bytes(data)
    return {str(rel): len(data) for rel, data in files.items()}


def test_rl2_against_maml_on_one_env_step_budget(ray_session, tmp_path, monkeypatch, caplog):
    suite = SUITES["rl2-ml1-reach"]
    workdir = tmp_path / "benchmarks-runs" / "rl2-ml1-reach"
    _use_workdir(monkeypatch, workdir)
    iterations = {v: suite.iterations_for(v, env_steps=ENV_STEPS, overrides=RL2_OVERRIDES) for v in suite.variants}
    assert iterations == {"rl2": 4, "maml": 2}  # the same env steps: RL² samples one phase, MAML two
    rl2_spec = suite.job_spec("rl2", seed=0, iterations=4, overrides=RL2_OVERRIDES)
    assert rl2_spec.algorithm.episodes_per_trial == 2 and rl2_spec.task_family.env_name == "reach-v3"
    assert suite.job_spec("maml", seed=0, iterations=2, overrides=RL2_OVERRIDES).policy.hidden_sizes == (16, 16)
    common = dict(seeds=[0], iterations=iterations, overrides=RL2_OVERRIDES, ray_=LocalRay(num_cpus=2),
                  console=Console(quiet=True), prune=True)

    # one piece: the budget is spent after RL²'s second iteration; MAML does not start
    asked = []
    caplog.set_level(logging.INFO, logger="metarl.reproduce")
    state = State.load(workdir / "state.json", suite.name)
    train(suite, state, **common, budget_spent=lambda: asked.append(1) or len(asked) > 2)
    rl2 = state.runs["rl2/seed0"]
    assert not rl2.finished and "maml/seed0" not in state.runs
    assert tracking.checkpoint_iterations(rl2.run_id) == [2]  # iteration 1's deleted
    # the log line shows RL²'s declared headline metrics (it logs no meta/return_pre)
    assert any("rl2 seed 0 iteration 2/4: return, first episode of a trial" in r.getMessage()
               for r in caplog.records)

    # the work directory committed, and checked out at the same path in another session
    sizes = _commit_and_check_out(workdir)
    assert "mlflow.db" in sizes and "state.json" in sizes
    assert [f for f in sizes if f.endswith(".pt")] == [f for f in sizes if f.endswith("ckpt-000002.pt")]
    state = State.load(workdir / "state.json", suite.name)
    train(suite, state, **common)
    rl2, maml = state.runs["rl2/seed0"], state.runs["maml/seed0"]
    assert rl2.finished and maml.finished and rl2.abandoned_runs == []  # resumed, not started over
    assert [s for s, _ in tracking.metric_history(rl2.run_id, "meta/return_first_episode")] == [0, 1, 2, 3]
    assert tracking.checkpoint_iterations(rl2.run_id) == [4] and tracking.checkpoint_iterations(maml.run_id) == [2]
    assert any("maml seed 0 iteration 2/2: return before adaptation" in r.getMessage() for r in caplog.records)

    models = trained_models(suite, state, seeds=[0])
    assert {k: it for k, (_, it) in models.items()} == {("rl2", 0): 4, ("maml", 0): 2}
    evaluate_all(suite, state, seeds=[0], iterations=iterations, overrides=RL2_OVERRIDES, config=RL2_CONFIG,
                 models=models)
    result = build_result(suite, state, seeds=[0], iterations=iterations, overrides=RL2_OVERRIDES, config=RL2_CONFIG,
                          command="python benchmarks/reproduce.py --suite rl2-ml1-reach", train_seconds=1.0,
                          eval_seconds=1.0, env_steps=ENV_STEPS)
    budget = result["budget"]
    assert budget["env_steps"] == ENV_STEPS and budget["suite_env_steps"] == 2_000_000
    assert {v: (b["iterations"], b["env_steps_per_iteration"], b["env_steps"]) for v, b in budget["variants"].items()} \
        == {"rl2": (4, 80, 320), "maml": (2, 160, 320)}
    assert result["iterations"] == {"rl2": 4, "maml": 2}
    assert result["paper_iterations"] == {"rl2": 25_000, "maml": 12_500}  # the suite's 2M steps, these overrides
    # beside Meta-World's protocol (the mean action), each trained variant with sampled evaluation
    # actions (garage's MetaEvaluator): the same trained models, the same adaptation
    assert suite.evaluated == ("rl2", "maml", "rl2-sampled", "maml-sampled")
    assert set(result["summary"]) == {"rl2", "maml", "rl2-sampled", "maml-sampled"}
    assert result["stopped_early"] and not result["converged"]
    for v in ("rl2", "maml"):
        mean, sampled = result["per_seed"][v]["0"]["test"], result["per_seed"][f"{v}-sampled"]["0"]["test"]
        assert mean["deterministic_eval"] and not sampled["deterministic_eval"]
        assert mean["model_uri"] == sampled["model_uri"] and mean["success"][0] == sampled["success"][0]
    for split in ("test", "train"):
        # RL²: per episode of the 2-episode trial, then the evaluation episodes; MAML: before/after
        assert len(result["summary"]["rl2"][split]["success"]) == 3
        assert len(result["summary"]["maml"][split]["success"]) == 2
        assert result["per_seed"]["rl2"]["0"][split]["adaptation"] == "trial"
        assert result["per_seed"]["maml"]["0"][split]["adaptation"] == "gradient"
    assert result["evaluation"]["per_variant"]["rl2"]["adaptation"] == "trial"
    assert len(result["learning_curves"]["rl2"]["seed0"]["meta/success_last_episode"]) == 4
    assert len(result["learning_curves"]["maml"]["seed0"]["meta/success_post"]) == 2
    assert [m["key"] for m in result["variants"]["rl2"]["metrics"]][0] == "meta/return_first_episode"
    assert result["runs"]["rl2/seed0"]["iterations_done"] == 4

    rows = {row[1]: row for row in table_rows(result)}
    rl2_after, maml_after = rows["ML1 reach test success after adaptation (RL²)"], \
        rows["ML1 reach test success after adaptation (MAML)"]
    assert rl2_after[3] == "1 × 4 (320 env steps, of the suite's 2M)"
    assert maml_after[3] == "1 × 2 (320 env steps, of the suite's 2M)"
    assert rl2_after[5].endswith("(>= 90.0%)") and "ML1 reach train success on the trial's first episode, " \
        "before adaptation (RL²)" in rows
    assert rows["ML1 reach test success after adaptation, sampled actions (RL²)"][3] == rl2_after[3]
    assert rows["ML1 reach test success after adaptation, sampled actions (MAML)"][3] == maml_after[3]
    write_result(result, tmp_path / "results")
    table = render_results_table(tmp_path / "results")
    assert "| rl2-ml1-reach | ML1 reach test success after adaptation (RL²) |" in table
    assert "- `rl2-ml1-reach`: RL²: 4 of the suite budget's 25000 iterations (stopped early)" in table
    assert "evaluation off-protocol (RL²: 2 tasks, K = 2; MAML: 2 tasks, K = 2)" in table
    assert (tmp_path / "results" / "reproduce_rl2-ml1-reach_evaluation.png").read_bytes()[:4] == b"\x89PNG"


def test_the_command_line_refuses_what_a_budget_suite_cannot_take(capsys):
    from benchmarks import reproduce as R

    for argv, message in (
        (["--suite", "rl2-ml10", "--iterations", "3"], "set --env-steps, not --iterations"),
        (["--suite", "ml10", "--env-steps", "1000"], "--env-steps goes with a suite that compares algorithms"),
        (["--suite", "navigation2d", "--prune-checkpoints"], "it needs every checkpoint"),
        (["--suite", "rl2-ml10", "--set", "ppo:algorithm.lr=1"], "trains rl2, maml, not 'ppo'"),
        (["--suite", "rl2-ml10", "--set", "rl2:iterations=3"], "follow from --env-steps"),
        (["--suite", "rl2-ml10", "--env-steps", "1000"], "less than one iteration"),
    ):
        with pytest.raises(SystemExit):
            R.main(argv)
        assert message in capsys.readouterr().err
    assert split_override("rl2:algorithm.lr=1e-4") == ("rl2", "algorithm.lr=1e-4")
    assert split_override("name=a:b") == (None, "name=a:b")
    assert variant_overrides(["a=1", "rl2:b=2", "maml:c=3"], "rl2") == ["a=1", "b=2"]


def test_rl2_suites_give_both_variants_the_same_env_steps():
    """Each RL² suite's default budget, the iterations it gives each variant, and the MAML job of
    the family's MAML suite (ML10: the ``ml10`` suite's, but for its name)."""
    expected = {"rl2-ml1-reach": (2_000_000, 20, 10), "rl2-ml1-push": (2_000_000, 20, 10),
                "rl2-ml10": (20_000_000, 200, 100), "rl2-halfcheetah-vel": (16_000_000, 200, 50)}
    for name, (budget, rl2_its, maml_its) in expected.items():
        suite = SUITES[name]
        assert suite.budget == budget and suite.variants == ("rl2", "maml")
        # on Meta-World (mean-action evaluation) each trained variant is meta-tested with sampled
        # actions too; HalfCheetah's evaluation episodes are sampled already
        sampled = ("rl2-sampled", "maml-sampled") if name != "rl2-halfcheetah-vel" else ()
        assert suite.evaluated == ("rl2", "maml", *sampled)
        for v in sampled:
            assert suite.trained_of(v) == v.removesuffix("-sampled") and suite.samples_eval_actions(v)
            assert suite.protocol_of(v) == suite.protocol_of(v.removesuffix("-sampled"))
        assert not suite.samples_eval_actions("rl2") and not suite.samples_eval_actions("maml")
        its = {v: suite.iterations_for(v, env_steps=budget) for v in suite.variants}
        assert its == {"rl2": rl2_its, "maml": maml_its}
        rl2, maml = (suite.job_spec(v, seed=0, iterations=its[v]) for v in suite.variants)
        assert rl2.algorithm.name == "rl2" and maml.algorithm.name == "maml"
        assert rl2.task_family == maml.task_family and rl2.meta_batch_size == maml.meta_batch_size
        assert suite.protocol_of("rl2").steps == 1 and suite.protocol_of("rl2").later_lr is None
    ml10 = SUITES["ml10"].job_spec("maml", seed=0, iterations=100)
    rl2_ml10 = SUITES["rl2-ml10"].job_spec("maml", seed=0, iterations=100)
    assert rl2_ml10.model_copy(update={"name": ml10.name, "register_as": ml10.register_as}) == ml10
    push = SUITES["rl2-ml1-push"].job_spec("rl2", seed=0, iterations=1)
    assert push.task_family.env_name == "push-v3" and push.algorithm.episodes_per_trial == 10
    # RL² on Meta-World: K = 9 adaptation episodes (the evaluation episode is the 10th of the trial, as
    # in training), 50 tasks of each split (ML10: 100)
    assert (SUITES["rl2-ml1-reach"].protocol_of("rl2").episodes, SUITES["rl2-ml1-reach"].protocol_of("rl2").tasks,
            SUITES["rl2-ml1-reach"].protocol_of("rl2").splits) == (9, 50, ("test", "train"))
    for name in ("rl2-ml1-reach", "rl2-ml1-push", "rl2-ml10", "rl2-halfcheetah-vel"):
        suite = SUITES[name]
        trial = suite.job_spec("rl2", seed=0, iterations=1).algorithm.episodes_per_trial
        assert suite.protocol_of("rl2").episodes == trial - 1, name
    assert SUITES["rl2-ml10"].protocol_of("rl2").tasks == 100
    cheetah = SUITES["rl2-halfcheetah-vel"]
    assert cheetah.protocol_of("maml").steps == 3 and cheetah.later_lr("maml") == 0.05
    goal = [t for t in SUITES["rl2-ml10"].targets if t.source == "goal"]
    assert [(t.value, t.step) for t in goal] == [(0.358, AFTER_TRIAL)]
