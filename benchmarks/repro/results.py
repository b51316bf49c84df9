"""The result of a suite: per-seed evaluations aggregated over seeds (the seed is the unit of the
intervals), a convergence note, provenance, and the JSON file with its two PNGs."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .meta_test import evaluation_config, variant_config
from .plots import evaluation_png, learning_png
from .state import State, run_key
from .suites import EVAL_SEED_OFFSET, MAML_META_TEST, SELECTION_SEED_OFFSET, Suite, variant_iterations

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "benchmarks" / "results"
VERSIONED_PACKAGES = ("torch", "ray", "mlflow", "gymnasium", "metaworld", "numpy")

log = logging.getLogger("metarl.reproduce")

# ---- aggregation over seeds ---------------------------------------------------------------------


def seed_interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean over seeds with its 95% Student-t interval (``low``/``high`` None below 2 seeds)."""
    from workers.evaluate import Interval

    interval = Interval.of(list(values))
    return {"mean": interval.mean, "low": interval.low, "high": interval.high, "seeds": len(values),
            "values": [float(v) for v in values]}


def aggregate(per_seed: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """``per_seed[variant][seed][split]`` (report summaries) → ``summary[variant][split][metric]``:
    per inner step, the mean over seeds of each seed's mean over tasks, with a 95% interval over
    seeds."""
    out: dict[str, Any] = {}
    for variant, seeds in per_seed.items():
        splits = sorted({split for by_split in seeds.values() for split in by_split})
        for split in splits:
            reports = [by_split[split] for _, by_split in sorted(seeds.items()) if split in by_split]
            steps = min(len(r["return"]) for r in reports)
            out.setdefault(variant, {})[split] = {
                metric: [dict(step=k, **seed_interval([r[metric][k]["mean"] for r in reports])) for k in range(steps)]
                for metric in ("return", "success")
            }
    return out


def estimate(summary: dict[str, Any], *, variant: str, split: str, metric: str, step: int) -> dict[str, Any] | None:
    try:
        return summary[variant][split][metric][step]
    except (KeyError, IndexError):
        return None


def convergence(curves: Sequence[Sequence[float]], *, iterations: int, paper_iterations: int,
                setting: str = "the paper setting's") -> dict[str, Any]:
    """``stopped_early``: fewer iterations than the paper's setting (``setting``, in the note).
    ``converged``: not stopped early, and over seeds the mean of the last tenth of the
    post-adaptation curve moved by at most 5% of the mean curve's range from the tenth before it."""
    stopped_early = iterations < paper_iterations
    curves = [list(c) for c in curves if c]
    window = max(1, min(len(c) for c in curves) // 10) if curves else 0
    usable = [c for c in curves if len(c) >= 2 * window] if window else []
    if not usable:
        return {"converged": False, "stopped_early": stopped_early,
                "note": f"{'stopped early; ' if stopped_early else ''}too few iterations to judge convergence"}
    n = min(len(c) for c in usable)
    mean_curve = [sum(c[i] for c in usable) / len(usable) for i in range(n)]
    deltas = [sum(c[n - window:n]) / window - sum(c[n - 2 * window:n - window]) / window for c in usable]
    delta = sum(deltas) / len(deltas)
    span = max(mean_curve) - min(mean_curve)
    flat = abs(delta) <= 0.05 * span if span > 0 else True
    note = (f"{iterations} of {setting} {paper_iterations} iterations"
            f"{' (stopped early)' if stopped_early else ''}; post-adaptation curve: last {window} iterations "
            f"{'+' if delta >= 0 else ''}{delta:.4g} against the {window} before (mean over {len(usable)} seeds), "
            f"{abs(delta) / span * 100 if span > 0 else 0:.1f}% of the curve's range "
            f"({'flat' if flat else 'still moving'}: converged means <= 5% and not stopped early)")
    return {"converged": bool(flat and not stopped_early), "stopped_early": stopped_early, "note": note,
            "plateau_delta": delta, "curve_range": span, "window": window}


# ---- the result file ---------------------------------------------------------------------------


def provenance() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    return {"versions": versions, "python": platform.python_version(), "git_commit": git("rev-parse", "HEAD") or None,
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")), "cpu_count": os.cpu_count(),
            "machine": platform.machine()}


def curve_keys(suite: Suite, variant: str, algorithm: str) -> list[str]:
    """The per-iteration metrics kept for a trained variant: MAML's before/after (a suite without
    ``trained``, as its results always had); else the algorithm's declared headline metrics with
    the success before adaptation beside them (success suites), the iteration time and the env
    steps so far."""
    from algorithms import registry

    success = suite.protocol.metric == "success"
    if not suite.trained:
        return ["meta/return_pre", "meta/return_post", "time/iteration_s", "perf/env_steps_total",
                *(["meta/success_pre", "meta/success_post"] if success else [])]
    keys = [m.key for m in registry.get(algorithm).metrics]
    if success:
        keys += [BEFORE_KEYS[suite.variant(variant).adaptation].format(metric="success")]
    keys = [k for k in dict.fromkeys(keys) if success or "success" not in k]
    return [*keys, "time/iteration_s", "perf/env_steps_total"]


#: the logged metric of the return (success) before and after adaptation, by kind of adaptation
BEFORE_KEYS = {"gradient": "meta/{metric}_pre", "trial": "meta/{metric}_first_episode"}
AFTER_KEYS = {"gradient": "meta/{metric}_post", "trial": "meta/{metric}_last_episode"}


def learning_curves(suite: Suite, state: State, *, seeds: Sequence[int]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per trained variant and seed, the per-iteration metrics from the run's MLflow history."""
    from workers import tracking

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for variant in suite.variants:
        for seed in seeds:
            entry = state.runs[run_key(variant, seed)]
            assert entry.run_id is not None
            keys = curve_keys(suite, variant, entry.spec["algorithm"]["name"])
            history = {k: tracking.metric_history(entry.run_id, k) for k in keys}
            steps_of = "meta/return_post" if not suite.trained else "perf/env_steps_total"
            out.setdefault(variant, {})[f"seed{seed}"] = {
                "iteration": [step for step, _ in history[steps_of]],
                **{k: [v for _, v in history[k]] for k in keys},
            }
    return out


def budget_plan(suite: Suite, *, env_steps: int, overrides: Sequence[str]) -> dict[str, Any]:
    """A budget suite's env steps and, per trained variant, its iterations on them (the result
    file's ``budget``)."""
    from .suites import env_steps_per_iteration

    variants = {}
    for v in suite.variant_specs:
        per = env_steps_per_iteration(suite.job_spec(v.name, seed=0, iterations=None, overrides=overrides))
        its = suite.iterations_for(v.name, env_steps=env_steps, overrides=overrides)
        variants[v.name] = {"label": v.label, "iterations": its, "env_steps_per_iteration": per,
                            "env_steps": its * per}
    return {"env_steps": env_steps, "suite_env_steps": suite.budget, "variants": variants,
            "note": "iterations = env steps // env steps per iteration (phases x meta-batch x episodes per task "
                    "x horizon: every episode to the horizon)"}


def build_result(suite: Suite, state: State, *, seeds: Sequence[int], iterations: int | Mapping[str, int],
                 overrides: Sequence[str], config: dict[str, Any], command: str, train_seconds: float,
                 eval_seconds: float, selected: dict[int, dict[str, Any]] | None = None,
                 evaluated: Sequence[str] | None = None, done: dict[tuple[str, int], int] | None = None,
                 env_steps: int | None = None) -> dict[str, Any]:
    """Everything the JSON file holds (see ``benchmarks/reproduce.py``); ``done`` holds the iterations
    reached by each run of a partial result (training budget spent before ``iterations``);
    ``env_steps``: a budget suite's env steps per variant (``iterations`` are then per variant)."""
    curves = learning_curves(suite, state, seeds=seeds)
    per_seed: dict[str, dict[str, dict[str, Any]]] = {}
    for variant in evaluated or suite.evaluated:
        for seed in seeds:
            per_seed.setdefault(variant, {})[str(seed)] = {
                split: state.evaluations[f"{variant}/seed{seed}/{split}"]["report"]
                for split in suite.protocol_of(variant).splits
            }
    summary = aggregate(per_seed)
    targets = []
    for t in suite.targets:
        est = estimate(summary, variant=t.variant, split=t.split, metric=t.metric, step=t.step)
        targets.append({**asdict(t), "ours": None if est is None else est["mean"],
                        "met": t.met(None if est is None else est["mean"])})
    runs = _runs(suite, state, curves, seeds=seeds, iterations=iterations, done=done)
    first = "maml" if "maml" in suite.variants else suite.variants[0]
    spec = suite.job_spec(first, seed=seeds[0], iterations=variant_iterations(iterations, first), overrides=overrides)
    result = {
        "suite": suite.name,
        "title": suite.title,
        "command": command,
        **provenance(),
        "wall_clock_s": {"training": train_seconds, "evaluation": eval_seconds},
        "iterations": iterations if isinstance(iterations, int) else dict(iterations),
        # a budget suite: each variant's iterations on the suite's own budget
        "paper_iterations": suite.paper_iterations if suite.budget is None else {
            v: suite.iterations_for(v, env_steps=suite.budget, overrides=overrides) for v in suite.variants},
        "partial": None if not done else {
            "iterations_done": min(done.values()),
            **({} if not suite.trained else {"iterations_done_by_variant": {
                v: min(it for (variant, _), it in done.items() if variant == v) for v in suite.variants}}),
            "note": (f"training budget spent before {_iterations_text(iterations)} iterations; the latest checkpoint "
                     "of each run is meta-tested; the same command goes on training from the checkpoints"),
        },
        "seeds": list(seeds),
        "spec": json.loads(spec.model_dump_json()),
        "spec_overrides": list(overrides),
    }
    if suite.trained:
        result["specs"] = {v: json.loads(suite.job_spec(v, seed=seeds[0], iterations=variant_iterations(iterations, v),
                                                         overrides=overrides).model_dump_json())
                           for v in suite.variants}
        result["budget"] = None if env_steps is None else budget_plan(suite, env_steps=env_steps, overrides=overrides)
        result["variants"] = _variants(suite, result["specs"])
    else:
        result["baseline_specs"] = {
            v: json.loads(suite.job_spec(v, seed=seeds[0], iterations=variant_iterations(iterations, v),
                                         overrides=overrides).model_dump_json())
            for v in suite.variants if v != "maml"}
    result.update({
        "evaluation": _evaluation(suite, config, evaluated or suite.evaluated),
        "selection": None if suite.protocol.selection is None else {
            **asdict(suite.protocol.selection), "split": "train", "seed": f"training seed + {SELECTION_SEED_OFFSET}",
            "criterion": ("mean return after 1..n inner steps on the validation tasks "
                          "(the earliest checkpoint on a tie)"),
            "per_seed": {str(seed): chosen for seed, chosen in (selected or {}).items()},
        },
        "published": [asdict(p) for p in suite.published],
        "targets": targets,
        "headlines": [asdict(h) for h in suite.headlines],
        "summary": summary,
        "per_seed": per_seed,
        "runs": runs,
        "learning_curves": curves,
    })
    if not suite.trained:
        curve_key = "meta/success_post" if suite.protocol.metric == "success" else "meta/return_post"
        maml_curves = [c[curve_key] for c in curves["maml"].values()]
        reached = min(done.values()) if done else variant_iterations(iterations, "maml")
        result.update(convergence(maml_curves, iterations=reached,
                                  paper_iterations=suite.paper_iterations))
    else:
        result.update(_convergence_by_variant(suite, result, done=done))
    return result


def _iterations_text(iterations: int | Mapping[str, int]) -> str:
    if isinstance(iterations, int):
        return str(iterations)
    return "/".join(f"{its} ({v})" for v, its in iterations.items())


def _variants(suite: Suite, specs: dict[str, Any]) -> dict[str, Any]:
    """The result file's ``variants``: per trained variant what the plots and the table read (its
    label, algorithm, kind of adaptation, declared headline metrics and its after-adaptation curve)."""
    from algorithms import registry

    out = {}
    for v in suite.variant_specs:
        algorithm = specs[v.name]["algorithm"]["name"]
        metrics = [{"key": m.key, "label": m.label} for m in registry.get(algorithm).metrics]
        out[v.name] = {"label": v.label, "algorithm": algorithm, "adaptation": v.adaptation, "metrics": metrics,
                       "before_key": BEFORE_KEYS[v.adaptation].format(metric=suite.protocol.metric),
                       "after_key": AFTER_KEYS[v.adaptation].format(metric=suite.protocol.metric)}
    return out


def _convergence_by_variant(suite: Suite, result: dict[str, Any], *,
                            done: dict[tuple[str, int], int] | None) -> dict[str, Any]:
    """Convergence of each trained variant's after-adaptation curve against the iterations of
    the suite's budget; the suite converged if every variant did."""
    by_variant = {}
    for v, info in result["variants"].items():
        curves = [c[info["after_key"]] for c in result["learning_curves"][v].values()]
        its = variant_iterations(result["iterations"], v)
        reached = min(it for (variant, _), it in done.items() if variant == v) if done else its
        by_variant[v] = convergence(curves, iterations=reached,
                                    paper_iterations=variant_iterations(result["paper_iterations"], v),
                                    setting="the suite budget's")
    return {"converged": all(c["converged"] for c in by_variant.values()),
            "stopped_early": any(c["stopped_early"] for c in by_variant.values()),
            "note": "; ".join(f"{result['variants'][v]['label']}: {c['note']}" for v, c in by_variant.items()),
            "convergence": by_variant}


def _evaluation(suite: Suite, config: dict[str, Any], evaluated: Sequence[str]) -> dict[str, Any]:
    """The result file's ``evaluation``: the suite's settings, and each variant's where they differ
    (a suite with ``trained``)."""
    default = evaluation_config(suite, eval_tasks=None, eval_episodes=None)
    out = {**config, "splits": list(suite.protocol.splits), "metric": suite.protocol.metric,
           "sensitivity_later_lrs": list(suite.protocol.sensitivity_later_lrs),
           "eval_seed": f"training seed + {EVAL_SEED_OFFSET}",
           "protocol": _protocol_text(suite.protocol.metric, "gradient"),
           "deviates_from_suite": config != default}
    if suite.trained:
        out["per_variant"] = {}
        for v in evaluated:
            adaptation = suite.variant(v).adaptation
            settings = variant_config(suite, v, config)
            sampled = suite.samples_eval_actions(v)
            out["per_variant"][v] = {**settings, "splits": list(suite.protocol_of(v).splits), "adaptation": adaptation,
                                     "protocol": _protocol_text(suite.protocol.metric, adaptation, sampled=sampled),
                                     **({"sampled_eval": True} if sampled else {})}
            out["deviates_from_suite"] |= settings != variant_config(suite, v, default)
    return out


def _protocol_text(metric: str, adaptation: str, *, sampled: bool = False) -> str:
    # Meta-World's evaluation episodes: the mean action, or (garage's MetaEvaluator) sampled actions
    episodes = ("3 evaluation episodes with sampled actions (garage's MetaEvaluator)" if sampled
                else "3 deterministic evaluation episodes")
    if adaptation == "trial":
        if metric == "success":
            return ("Meta-World metalearning_evaluation for a recurrent policy: K adaptation episodes in one trial "
                    f"build the hidden state, then {episodes} per goal, each from that "
                    "state; success if success == 1 at any step; the curve is per episode of the trial, then the "
                    "evaluation episodes")
        return ("K episodes in one trial build the hidden state, then the evaluation episodes, each from that state; "
                "the curve is the return per episode of the trial, then the evaluation episodes")
    if metric == "return":
        return MAML_META_TEST
    return (f"Meta-World metalearning_evaluation: adaptation episodes, one inner step, then {episodes} "
            "per goal; success if success == 1 at any step")


def _runs(suite: Suite, state: State, curves: dict[str, dict[str, dict[str, Any]]], *, seeds: Sequence[int],
          iterations: int | Mapping[str, int], done: dict[tuple[str, int], int] | None) -> dict[str, dict[str, Any]]:
    """The result file's ``runs``: per trained variant and seed, its MLflow run and its cost."""
    runs = {}
    for variant in suite.variants:
        for seed in seeds:
            entry = state.runs[run_key(variant, seed)]
            c = curves[variant][f"seed{seed}"]
            runs[f"{variant}/seed{seed}"] = {
                "run_id": entry.run_id, "model_uri": entry.model_uri, "train_seconds": entry.train_seconds,
                "finished": entry.finished,
                "iterations_done": done[(variant, seed)] if done else variant_iterations(iterations, variant),
                "env_steps_total": (c["perf/env_steps_total"] or [None])[-1],
                "seconds_per_iteration": (sum(c["time/iteration_s"]) / len(c["time/iteration_s"])
                                          if c["time/iteration_s"] else None),
                "abandoned_runs": entry.abandoned_runs,
            }
    return runs


def headline_json(result: dict[str, Any]) -> dict[str, Any]:
    """What is printed: per estimate, the mean over seeds and its 95% interval, and the targets."""
    return {"suite": result["suite"], "seeds": result["seeds"], "iterations": result["iterations"],
            "summary": {v: {s: {m: [{k: p[k] for k in ("step", "mean", "low", "high")} for p in points]
                                for m, points in by_metric.items() if m == result["evaluation"]["metric"]}
                            for s, by_metric in by_split.items()}
                        for v, by_split in result["summary"].items()},
            "published": [{k: p[k] for k in ("variant", "split", "metric", "step", "value", "setting")}
                          for p in result["published"]],
            "targets": result["targets"], "converged": result["converged"], "stopped_early": result["stopped_early"],
            "note": result["note"], "wall_clock_s": result["wall_clock_s"]}


def write_result(result: dict[str, Any], out_dir: Path) -> None:
    """``reproduce_<suite>.json`` and its two PNGs in ``out_dir``."""
    name = result["suite"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"reproduce_{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / f"reproduce_{name}_learning.png").write_bytes(learning_png(result))
    (out_dir / f"reproduce_{name}_evaluation.png").write_bytes(evaluation_png(result))
    log.info("wrote %s and its two PNGs", out_dir / f"reproduce_{name}.json")
    if out_dir.resolve() == RESULTS_DIR.resolve():
        log.info("docs/results.md's results table is generated from these files: run "
                 "`python benchmarks/reproduce.py --table --write-docs` (tests/benchmarks checks it)")
