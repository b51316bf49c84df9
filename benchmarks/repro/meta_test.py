"""Meta-testing: the trained models (or the latest checkpoints) of every seed, the checkpoint chosen
on validation tasks (:class:`~.suites.Selection`), and the evaluation of every variant on fresh
test tasks with :func:`workers.evaluate.evaluate`; what is done is kept in the state."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast

from .state import State, run_key
from .suites import EVAL_SEED_OFFSET, SELECTED, SELECTION_SEED_OFFSET, Suite, variant_iterations

if TYPE_CHECKING:
    from workers.envs.base import Split

log = logging.getLogger("metarl.reproduce")


def evaluation_config(suite: Suite, *, eval_tasks: int | None, eval_episodes: int | None) -> dict[str, Any]:
    """The suite's meta-test settings (of every variant without its own protocol), with the
    command line's ``--eval-tasks``/``--eval-episodes``."""
    p = suite.protocol
    return {"episodes": eval_episodes or p.episodes, "steps": p.steps, "tasks": eval_tasks or p.tasks,
            "later_lr": p.later_lr}


def variant_config(suite: Suite, variant: str, config: dict[str, Any]) -> dict[str, Any]:
    """``variant``'s meta-test settings: ``config`` (the suite's, :func:`evaluation_config`) for a
    variant without its own protocol; else its protocol's, where ``config`` keeps the suite's (a
    smoke run's ``--eval-tasks``/``--eval-episodes`` shrink every variant)."""
    own = suite.protocol_of(variant)
    if own == suite.protocol:
        return config
    suite_p = suite.protocol
    return {"episodes": own.episodes if config["episodes"] == suite_p.episodes else config["episodes"],
            "steps": own.steps, "tasks": own.tasks if config["tasks"] == suite_p.tasks else config["tasks"],
            "later_lr": own.later_lr}


def checkpoint_model(state: State, variant: str, seed: int, iteration: int, *, prune: bool = False) -> str:
    """The directory of a model made from checkpoint ``iteration`` of ``variant``'s run for
    ``seed`` (written on first use); ``prune``: remove the run's models of other checkpoints (a
    work directory kept small enough to commit)."""
    from workers import tracking
    from workers.contract import JobSpec
    from workers.model import MetaPolicy

    entry = state.runs[run_key(variant, seed)]
    assert entry.run_id is not None
    run_dir = f"seed{seed}" if variant == "maml" else f"{variant}-seed{seed}"
    directory = state.path.parent / "checkpoints" / run_dir / f"it{iteration:06d}"
    if not (directory / "policy.json").is_file():
        checkpoint = tracking.load_checkpoint(entry.run_id, iteration)
        if checkpoint is None:
            raise SystemExit(f"{variant} seed {seed}: run {entry.run_id} has no checkpoint of iteration {iteration}")
        source = f"runs:/{entry.run_id}/{tracking.CHECKPOINT_DIR}/{tracking.checkpoint_name(iteration)}"
        MetaPolicy.from_learner_state(JobSpec.model_validate(entry.spec), checkpoint, source=source).save(directory)
    if prune:
        for other in directory.parent.glob("it*"):
            if other != directory:
                shutil.rmtree(other, ignore_errors=True)
    return str(directory)


def trained_models(suite: Suite, state: State, *, seeds: Sequence[int],
                   prune: bool = False) -> dict[tuple[str, int], tuple[str, int]]:
    """``(variant, seed) -> (model URI, iteration)`` of every trained variant: the registered
    model of a finished run, the latest checkpoint of an unfinished one (``prune``: the models of
    its earlier checkpoints removed); seeds where some variant has neither are left out."""
    from workers import tracking

    out: dict[tuple[str, int], tuple[str, int]] = {}
    for seed in seeds:
        found = {}
        for variant in suite.variants:
            entry = state.runs.get(run_key(variant, seed))
            if entry is None or entry.run_id is None:
                break
            if entry.finished and entry.model_uri is not None:
                found[variant] = (entry.model_uri, int(entry.spec["iterations"]))
                continue
            done = tracking.checkpoint_iterations(entry.run_id)
            if not done:
                break
            found[variant] = (checkpoint_model(state, variant, seed, done[-1], prune=prune), done[-1])
        else:
            out.update({(variant, seed): model for variant, model in found.items()})
    return out


def selection_score(report: dict[str, Any]) -> float:
    """What checkpoint selection maximises: the mean over k = 1..n of the return after k inner
    steps (an evaluation summary's per-step means over tasks)."""
    after = [p["mean"] for p in report["return"][1:]]
    if not after:
        raise ValueError("checkpoint selection needs an evaluation with at least one inner step")
    return sum(after) / len(after)


def choose_checkpoint(scores: dict[int, float]) -> int:
    """The iteration with the highest score; the earliest of equal ones."""
    if not scores:
        raise ValueError("no checkpoint to choose from")
    return max(sorted(scores), key=lambda it: scores[it])


def selection_candidates(available: Sequence[int], every: int) -> list[int]:
    """The checkpoints meta-tested for selection: multiples of ``every`` and the last one."""
    if not available:
        return []
    last = max(available)
    return sorted({it for it in available if it > 0 and (it % every == 0 or it == last)})


def select_checkpoints(
    suite: Suite, state: State, *, seeds: Sequence[int], config: dict[str, Any]
) -> dict[int, dict[str, Any]]:
    """Per seed, meta-test the candidate MAML checkpoints on validation tasks (skipping what
    ``state`` has) and choose one (:class:`Selection`): ``{seed: {"iteration", "model_uri",
    "candidates": [{"iteration", "score", "return"}]}}``; empty without a selection."""
    from workers import tracking
    from workers.evaluate import evaluate

    selection = suite.protocol.selection
    if selection is None:
        return {}
    # a smoke run's --eval-tasks shrinks the validation tasks too
    tasks = selection.tasks if config["tasks"] == suite.protocol.tasks else config["tasks"]
    out: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        entry = state.runs.get(run_key("maml", seed))
        if entry is None or not entry.finished or entry.run_id is None:
            raise SystemExit(f"maml seed {seed} has no finished training run to choose a checkpoint of")
        candidates = selection_candidates(tracking.checkpoint_iterations(entry.run_id), selection.every)
        if not candidates:
            raise SystemExit(f"maml seed {seed}: run {entry.run_id} has no checkpoints to choose from")
        scores: dict[int, float] = {}
        rows = []
        for it in candidates:
            key = f"selection/seed{seed}/it{it:06d}"
            wanted = {**config, "tasks": tasks, "later_lr": suite.protocol.later_lr, "split": "train",
                      "seed": seed + SELECTION_SEED_OFFSET, "run_id": entry.run_id, "iteration": it}
            done = state.evaluations.get(key)
            if done is None or done.get("config") != wanted:
                directory = checkpoint_model(state, "maml", seed, it)
                log.info("seed %d: meta-testing checkpoint %d on %d validation tasks", seed, it, tasks)
                report = evaluate(directory, episodes=config["episodes"], steps=config["steps"],
                                  tasks=tasks, seed=wanted["seed"], later_lr=wanted["later_lr"],
                                  split="train", log_to_mlflow=False)
                state.evaluations[key] = done = {"config": wanted, "report": report_summary(report)}
                state.save()
            scores[it] = selection_score(done["report"])
            rows.append({"iteration": it, "score": scores[it], "return": [p["mean"] for p in done["report"]["return"]],
                         "seconds": done["report"]["seconds"]})
        chosen = choose_checkpoint(scores)
        log.info("seed %d: checkpoint %d chosen (validation score %.2f; final %d: %.2f)", seed, chosen,
                 scores[chosen], candidates[-1], scores[candidates[-1]])
        out[seed] = {"iteration": chosen, "model_uri": checkpoint_model(state, "maml", seed, chosen), "tasks": tasks,
                     "candidates": rows}
    return out


def evaluate_all(suite: Suite, state: State, *, seeds: Sequence[int], iterations: int | Mapping[str, int],
                 overrides: Sequence[str], config: dict[str, Any], models: dict[tuple[str, int], tuple[str, int]],
                 evaluated: Sequence[str] | None = None, selected: dict[int, dict[str, Any]] | None = None) -> None:
    """Meta-test every variant (default ``suite.evaluated``) of every seed on each split of its
    protocol (skipping what ``state`` has), each with its own settings (:func:`variant_config`);
    ``models`` holds the trained models (:func:`trained_models`) and ``selected`` the chosen
    checkpoints (:func:`select_checkpoints`)."""
    from workers.evaluate import evaluate
    from workers.model import MetaPolicy

    workdir = state.path.parent
    for variant in evaluated or suite.evaluated:
        settings = variant_config(suite, variant, config)
        for seed in seeds:
            if variant == "random-init":
                spec = suite.job_spec("maml", seed=seed, iterations=variant_iterations(iterations, "maml"),
                                      overrides=overrides)
                directory = workdir / "initial" / f"seed{seed}"
                if not (directory / "policy.json").is_file():
                    MetaPolicy.initial(spec).save(directory)
                uri = str(directory)
            elif variant == SELECTED:
                if not selected or seed not in selected:
                    raise SystemExit(f"no checkpoint was chosen for seed {seed}")
                uri = selected[seed]["model_uri"]
            else:
                trained = suite.trained_of(variant)  # sensitivity: the MAML model; sampled: its trained one
                if (trained, seed) not in models:
                    raise SystemExit(f"{trained} seed {seed} has no trained model to evaluate")
                uri = models[(trained, seed)][0]
            for split in suite.protocol_of(variant).splits:
                key = f"{variant}/seed{seed}/{split}"
                sampled = suite.samples_eval_actions(variant)
                wanted = {**settings, "later_lr": suite.later_lr(variant), "seed": seed + EVAL_SEED_OFFSET,
                          "split": split, "model_uri": uri, **({"sampled_eval": True} if sampled else {})}
                done = state.evaluations.get(key)
                if done is not None and done.get("config") == wanted:
                    log.info("%s: evaluated earlier, skipped", key)
                    continue
                log.info("%s: meta-testing %s on %d %s tasks", key, uri, settings["tasks"], split)
                report = evaluate(uri, episodes=settings["episodes"], steps=settings["steps"],
                                  tasks=settings["tasks"], seed=seed + EVAL_SEED_OFFSET, later_lr=wanted["later_lr"],
                                  split=cast("Split", split), sampled_eval=sampled)
                state.evaluations[key] = {"config": wanted, "report": report_summary(report)}
                state.save()


def report_summary(report: Any) -> dict[str, Any]:
    """The part of an :class:`~workers.evaluate.EvaluationReport` kept per seed (per-task values
    stay in the evaluation's MLflow run).  ``adaptation``: ``trial`` for RL² (its per-step curve
    is per episode of the adaptation trial, then the evaluation episodes), else ``gradient``."""
    return {
        "adaptation": getattr(report, "adaptation", "gradient"),
        "run_id": report.run_id, "model_uri": report.model_uri, "split": report.split, "tasks": report.tasks,
        "episodes": report.episodes, "steps": report.steps, "eval_episodes": report.eval_episodes,
        "deterministic_eval": report.deterministic_eval, "inner_lr": report.inner_lr, "later_lr": report.later_lr,
        "seed": report.seed, "seconds": report.seconds,
        "return": [asdict(i) for i in report.return_steps],
        "success": [asdict(i) for i in report.success_steps],
    }
