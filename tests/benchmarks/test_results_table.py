"""The results section of docs/results.md and the reproduction script's aggregation over seeds.

The section must be exactly what ``benchmarks/reproduce.py --table`` renders from the
``benchmarks/results/reproduce_*.json`` files present (none yet is fine), so a number edited by
hand, or a result file added without regenerating docs/results.md, fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from benchmarks import reproduce as R
from benchmarks.repro.meta_test import choose_checkpoint, selection_candidates, selection_score
from benchmarks.repro.results import aggregate, convergence, estimate, seed_interval
from benchmarks.repro.suites import SELECTED, SUITES, Selection, Suite
from benchmarks.repro.table import (
    BEGIN_MARKER,
    END_MARKER,
    RESULTS_DOC,
    _restates_suite,
    render_results_table,
    results_section,
    table_rows,
)

ROOT = Path(__file__).resolve().parents[2]


def test_docs_results_section_is_generated_from_the_result_files():
    assert RESULTS_DOC == ROOT / "docs" / "results.md"
    section = results_section(RESULTS_DOC.read_text())
    assert section == render_results_table(ROOT / "benchmarks" / "results"), (
        "docs/results.md's results section differs from the result files: run "
        "`python benchmarks/reproduce.py --table --write-docs`"
    )


def test_write_docs_option_writes_the_results_page(tmp_path, monkeypatch):
    page = tmp_path / "results.md"
    page.write_text(f"# Results\n\nintro\n\n{BEGIN_MARKER}\nold\n{END_MARKER}\n\nexplanations\n")
    write_docs = R.write_docs
    monkeypatch.setattr(R, "write_docs", lambda *, results_dir: write_docs(page, results_dir))
    for option in ("--write-docs", "--write-readme"):  # the latter a hidden alias
        assert R.main(["--table", option, "--results-dir", str(tmp_path)]) == 0
        text = page.read_text()
        assert text.startswith("# Results\n\nintro\n") and text.endswith("\nexplanations\n")
        assert results_section(text) == render_results_table(tmp_path)
        page.write_text(text.replace(render_results_table(tmp_path), "old"))
    with pytest.raises(SystemExit):
        R.main(["--suite", "navigation2d", "--write-docs"])  # --write-docs goes with --table


def test_no_result_files_says_so(tmp_path):
    assert "No reproduction runs are recorded yet" in render_results_table(tmp_path)


def test_seed_interval_is_the_student_t_interval_over_seeds():
    values = [-12.0, -10.5, -13.2]
    got = seed_interval(values)
    mean = sum(values) / 3
    low, high = stats.t.interval(0.95, df=2, loc=mean, scale=stats.sem(values))
    assert got["mean"] == pytest.approx(mean)
    assert (got["low"], got["high"]) == pytest.approx((low, high))
    # by hand: t_{0.975, 2} = 4.302653, s = sample standard deviation
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert got["high"] - mean == pytest.approx(4.302653 * s / math.sqrt(3), rel=1e-6)
    assert got["seeds"] == 3 and got["values"] == values
    one = seed_interval([5.0])
    assert one["mean"] == 5.0 and one["low"] is None and one["high"] is None


def _report(returns: list[float], successes: list[float]) -> dict:
    """A per-seed evaluation summary with the given per-step means over tasks."""
    return {"return": [{"mean": r, "low": r - 1, "high": r + 1} for r in returns],
            "success": [{"mean": s, "low": None, "high": None} for s in successes]}


def test_aggregate_takes_seeds_as_the_unit():
    per_seed = {
        "maml": {
            "0": {"test": _report([-40.0, -12.0, -4.0], [0.0, 0.1, 0.2])},
            "1": {"test": _report([-38.0, -11.0, -3.5], [0.0, 0.3, 0.2])},
            "2": {"test": _report([-42.0, -13.0, -3.0], [0.0, 0.2, 0.5])},
        }
    }
    summary = aggregate(per_seed)
    curve = summary["maml"]["test"]["return"]
    assert [p["step"] for p in curve] == [0, 1, 2]
    for k, expected in enumerate([[-40.0, -38.0, -42.0], [-12.0, -11.0, -13.0], [-4.0, -3.5, -3.0]]):
        low, high = stats.t.interval(0.95, df=2, loc=np.mean(expected), scale=stats.sem(expected))
        assert curve[k]["mean"] == pytest.approx(np.mean(expected))
        assert (curve[k]["low"], curve[k]["high"]) == pytest.approx((low, high))
        assert curve[k]["values"] == expected  # the per-task intervals play no part
    assert summary["maml"]["test"]["success"][2]["mean"] == pytest.approx(0.3)
    assert estimate(summary, variant="maml", split="test", metric="return", step=1)["mean"] == pytest.approx(-12.0)
    assert estimate(summary, variant="maml", split="train", metric="return", step=1) is None


def test_convergence_note():
    flat = [[-80.0 + min(i, 50) for i in range(100)] for _ in range(3)]
    judged = convergence(flat, iterations=100, paper_iterations=100)
    assert judged["converged"] and not judged["stopped_early"] and judged["plateau_delta"] == pytest.approx(0.0)
    rising = [[float(i) for i in range(100)]]
    assert not convergence(rising, iterations=100, paper_iterations=100)["converged"]
    early = convergence(flat, iterations=100, paper_iterations=500)
    assert early["stopped_early"] and not early["converged"] and "stopped early" in early["note"]


def _result(suite: Suite, means: dict[int, list[float]], *,
            command: str = "python benchmarks/reproduce.py --suite navigation2d",
            variants: dict[str, float] | None = None) -> dict:
    """A result file as ``build_result`` writes it, reduced to what the table reads; ``variants``
    adds other evaluated variants, their per-seed means shifted by the given amount."""
    def seeds(shift: float) -> dict:
        return {str(i): {"test": _report([means[k][i] + shift for k in sorted(means)], [0.0] * len(means))}
                for i in range(len(means[0]))}

    per_seed = {"maml": seeds(0.0), **{v: seeds(shift) for v, shift in (variants or {}).items()}}
    summary = aggregate(per_seed)
    targets = []
    for t in suite.targets:
        est = estimate(summary, variant=t.variant, split=t.split, metric=t.metric, step=t.step)
        targets.append({**t.__dict__, "ours": est["mean"], "met": t.met(est["mean"])})
    return {
        "suite": suite.name, "title": suite.title, "command": command, "seeds": list(range(len(means[0]))),
        "iterations": 100, "paper_iterations": suite.paper_iterations, "stopped_early": False, "converged": True,
        "note": "converged", "git_commit": "0123456789abcdef", "git_dirty": False, "cpu_count": 2,
        "wall_clock_s": {"training": 3600.0, "evaluation": 60.0}, "spec_overrides": [],
        "evaluation": {"deviates_from_suite": False, "tasks": 40, "episodes": 40},
        "published": [p.__dict__ for p in suite.published], "targets": targets,
        "headlines": [h.__dict__ for h in suite.headlines], "summary": summary, "selection": None,
    }


def test_table_rows_and_a_hand_edited_number(tmp_path):
    suite = SUITES["navigation2d"]
    means = {0: [-41.0, -39.0, -40.0], 1: [-12.0, -11.0, -13.0], 2: [-4.0, -3.0, -3.5], 3: [-3.0, -3.2, -3.4]}
    result = _result(suite, means, variants={SELECTED: 0.5, "maml-later-lr-0.025": -1.0})
    result["selection"] = {"every": 10, "tasks": 40, "split": "train", "seed": "training seed + 20000",
                           "criterion": "mean return after 1..n inner steps",
                           "per_seed": {"0": {"iteration": 50}, "1": {"iteration": 70}, "2": {"iteration": 40}}}
    (tmp_path / "reproduce_navigation2d.json").write_text(json.dumps(result))
    table = render_results_table(tmp_path)
    rows = [line for line in table.splitlines() if line.startswith("| navigation2d")]
    # steps 0-3 of the chosen checkpoint and of the final model, steps 2-3 under the sensitivity step size
    assert len(rows) == 10
    selected, final, sensitivity = rows[:4], rows[4:8], rows[8:]
    assert all("checkpoint chosen on validation tasks" in r and "| 3 × 100, checkpoints 50/70/40 |" in r
               for r in selected)
    assert "| -11.50 [" in selected[1] and "yes (>= -12.85)" in selected[1] and "yes (>= -4.50)" in selected[3]
    assert all("final iteration" in r and "| 3 × 100 |" in r for r in final)
    assert all("later α = 0.025" in r and "| — | — |" in r for r in sensitivity)  # no paper number, no target
    assert "| -12.00 [" in final[1] and "| -11.68 (Finn et al. 2017, Table 4) |" in final[1]
    assert "| -11.68 (Finn et al. 2017, Table 4) |" in selected[1]  # the paper's number beside both MAML models
    assert "yes (>= -12.85)" in final[1] and "yes (>= -4.50)" in final[3]
    assert "`python benchmarks/reproduce.py --suite navigation2d`" in rows[0]
    assert "checkpoint chosen per seed among every 10th iteration" in table

    page = tmp_path / "results.md"
    page.write_text(f"# x\n\nintro\n\n{BEGIN_MARKER}\nold\n{END_MARKER}\n\n## Reading the table\nkept\n")
    assert R.write_docs(page, tmp_path) and not R.write_docs(page, tmp_path)
    text = page.read_text()
    assert results_section(text) == table and text.endswith("## Reading the table\nkept\n")
    assert text.startswith("# x\n\nintro\n")
    page.write_text(text.replace("-12.00", "-10.00", 1))  # a number edited by hand
    assert results_section(page.read_text()) != render_results_table(tmp_path)
    page.write_text("# no markers\n")
    with pytest.raises(ValueError, match="results:begin"):
        R.write_docs(page, tmp_path)


def test_target_missed_and_success_formatting(tmp_path):
    suite = SUITES["ml10"]
    result = _result(suite, {0: [0.0, 0.0], 1: [0.1, 0.12]})
    result["summary"]["maml"]["test"]["success"] = result["summary"]["maml"]["test"]["return"]
    result["targets"] = [{**t.__dict__, "met": t.met(0.11)} for t in suite.targets]
    rows = {row[1]: row for row in table_rows(result)}
    post = rows["ML10 test success after adaptation (MAML)"]
    assert post[2].startswith("11.0% [") and post[5] == "no (> 13.2%)"
    assert post[4] == "13.2% (v3 envs, MAML-TRPO); 31.6% (v1 envs, garage)"  # ML45 is context only


def test_suite_specs_are_the_papers_settings():
    nav = SUITES["navigation2d"].job_spec("maml", seed=2, iterations=100)
    assert (nav.meta_batch_size, nav.episodes_per_task, nav.seed, nav.iterations) == (20, 20, 2, 100)
    assert (nav.algorithm.inner_lr == 0.1 and nav.algorithm.outer.max_kl == 0.01
            and nav.policy.hidden_sizes == (100, 100))
    assert nav.policy.activation == "relu" and nav.register_as == "reproduce-navigation2d-maml-s2"
    cheetah = SUITES["halfcheetah-dir"].job_spec("maml", seed=0, iterations=1)
    assert cheetah.task_family.name == "halfcheetah-dir" and cheetah.meta_batch_size == 40
    # the paper's rllab cheetah: one 0.01 s simulator step per env step, the torso's position observed
    assert cheetah.task_family.params == {"observe_position": True, "frame_skip": 1}
    # its one departure from the paper (ReLU there), stated with the suite
    assert cheetah.policy.activation == "tanh" and cheetah.policy.hidden_sizes == (100, 100)
    (departure,) = SUITES["halfcheetah-dir"].departures
    assert (departure.field, departure.value, departure.paper) == ("policy.activation", "tanh", "ReLU")
    assert SUITES["navigation2d"].departures == () and SUITES["ml10"].departures == ()
    ml10 = SUITES["ml10"].job_spec("maml", seed=0, iterations=SUITES["ml10"].paper_iterations)
    assert ml10.task_family.name == "metaworld-ml10" and ml10.task_family.env_name is None
    horizon = 500
    budget = ml10.iterations * (ml10.inner_steps + 1) * ml10.meta_batch_size * ml10.episodes_per_task * horizon
    assert budget == 20_000_000
    push = SUITES["ml1-push"]
    maml, mtpg = (push.job_spec(v, seed=1, iterations=3) for v in ("maml", "multitask-pg"))
    assert maml.task_family.env_name == "push-v3" and mtpg.algorithm.name == "multitask-pg"
    same_budget = ("meta_batch_size", "episodes_per_task", "iterations", "task_family", "seed")
    assert all(getattr(maml, k) == getattr(mtpg, k) for k in same_budget)
    # multi-task PG samples only the phase it learns from (θ's episodes): no inner step, so half
    # MAML's env steps per iteration
    assert (maml.inner_steps, mtpg.inner_steps) == (1, 0)
    assert mtpg.algorithm.inner_lr == maml.algorithm.inner_lr  # the same adaptation step
    assert push.evaluated == ("maml", "multitask-pg", "random-init")
    navigation = SUITES["navigation2d"]
    assert navigation.evaluated == ("maml", SELECTED, "maml-later-lr-0.025")
    assert (navigation.later_lr("maml"), navigation.later_lr("maml-later-lr-0.025")) == (0.05, 0.025)
    assert navigation.later_lr(SELECTED) == 0.05 and navigation.protocol.selection == Selection(every=10, tasks=40)
    assert SUITES["halfcheetah-dir"].evaluated == ("maml",)
    assert nav.task_family.params == {"action_bound": 1.0}  # rllab's normalize: the policy acts in [-1, 1]
    over = SUITES["navigation2d"].job_spec("maml", seed=0, iterations=2, overrides=["meta_batch_size=4"])
    assert over.meta_batch_size == 4


def test_checkpoint_selection_rule():
    """The chosen checkpoint maximises the mean return after 1..n steps; ties go to the earliest;
    the return before adaptation plays no part."""
    def report(curve: list[float]) -> dict:
        return _report(curve, [0.0] * len(curve))

    assert selection_score(report([-40.0, -12.0, -4.0, -5.0])) == pytest.approx(-7.0)
    assert selection_score(report([-10.0, -30.0])) == pytest.approx(-30.0)
    with pytest.raises(ValueError, match="at least one inner step"):
        selection_score(report([-40.0]))
    scores = {10: selection_score(report([-50.0, -13.0, -8.0, -7.0])),
              50: selection_score(report([-38.0, -11.7, -4.0, -4.1])),
              500: selection_score(report([-37.0, -12.1, -9.2, -10.5]))}
    assert choose_checkpoint(scores) == 50
    assert choose_checkpoint({30: -5.0, 20: -5.0, 40: -6.0}) == 20
    with pytest.raises(ValueError):
        choose_checkpoint({})
    assert selection_candidates([10, 20, 25, 30, 35], every=10) == [10, 20, 30, 35]  # and the last one
    assert selection_candidates([0, 10], every=10) == [10] and selection_candidates([], every=10) == []


def test_overrides_that_change_training_are_flagged_and_bookkeeping_ones_are_not(tmp_path):
    suite = SUITES["ml10"]
    result = _result(suite, {0: [0.05], 1: [0.22]})
    result["spec_overrides"] = ["checkpoint_every=5"]
    (tmp_path / "reproduce_ml10.json").write_text(json.dumps(result))
    note = [line for line in render_results_table(tmp_path).splitlines() if line.startswith("- `ml10`")][0]
    assert "NOT the paper setting" not in note and "set without changing the training: `checkpoint_every=5`" in note
    result["spec_overrides"] = ["checkpoint_every=5", "meta_batch_size=4"]
    (tmp_path / "reproduce_ml10.json").write_text(json.dumps(result))
    note = [line for line in render_results_table(tmp_path).splitlines() if line.startswith("- `ml10`")][0]
    assert "NOT the paper setting: spec overrides `meta_batch_size=4`" in note
    assert "set without changing the training: `checkpoint_every=5`" in note


def test_overrides_that_restate_the_suite_are_not_deviations(tmp_path):
    assert _restates_suite("halfcheetah-dir", "task_family.params.frame_skip=1")
    assert not _restates_suite("halfcheetah-dir", "task_family.params.frame_skip=5")
    assert not _restates_suite("halfcheetah-dir", "task_family.params.velocity_high=3")
    suite = SUITES["ml10"]
    result = _result(suite, {0: [0.05], 1: [0.22]})
    result["spec_overrides"] = ["meta_batch_size=20", "iterations=7"]  # the preset's 20; not its 100
    (tmp_path / "reproduce_ml10.json").write_text(json.dumps(result))
    note = [line for line in render_results_table(tmp_path).splitlines() if line.startswith("- `ml10`")][0]
    assert "NOT the paper setting: spec overrides `iterations=7`" in note
    assert "set to the suite's own values (its defaults): `meta_batch_size=20`" in note


def test_a_suites_departures_from_the_paper_are_in_its_note(tmp_path):
    suite = SUITES["halfcheetah-dir"]
    result = _result(suite, {0: [-55.0], 1: [280.0], 2: [300.0], 3: [305.0]})
    result["spec_overrides"] = ["policy.activation=tanh"]  # the suite's own value: restated, not a deviation
    result["spec"] = json.loads(suite.job_spec("maml", seed=0, iterations=100).model_dump_json())

    def note() -> str:
        (tmp_path / "reproduce_halfcheetah-dir.json").write_text(json.dumps(result))
        return [line for line in render_results_table(tmp_path).splitlines()
                if line.startswith("- `halfcheetah-dir`")][0]

    text = note()
    assert "NOT the paper setting" not in text
    assert "set to the suite's own values (its defaults): `policy.activation=tanh`" in text
    assert "the suite departs from the paper: `policy.activation=tanh` where the paper has ReLU (" in text
    result["spec"]["policy"]["activation"] = "relu"  # a run made with the paper's ReLU departs from nothing
    result["spec_overrides"] = []
    assert "departs from the paper" not in note()
