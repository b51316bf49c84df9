"""One ``--suite`` run: meta-train every seed (within the training budget), choose the checkpoints,
meta-test every variant, and write the result file and its plots."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from .meta_test import evaluate_all, evaluation_config, select_checkpoints, trained_models
from .results import build_result, write_result
from .state import State, run_key
from .suites import SELECTED, SUITES, format_steps, variant_iterations
from .train import LocalRay, train, use_workdir

log = logging.getLogger("metarl.reproduce")


def run(args: argparse.Namespace, console: Any) -> dict[str, Any]:
    """Run (or resume) ``args.suite`` with the command line's options; the result as written."""
    suite = SUITES[args.suite]
    env_steps = None if suite.budget is None else (getattr(args, "env_steps", None) or suite.budget)
    iterations: int | dict[str, int]
    if env_steps is not None:  # the same env steps for every variant: each its own iterations
        iterations = {v: suite.iterations_for(v, env_steps=env_steps, overrides=args.set) for v in suite.variants}
    else:
        iterations = args.iterations or suite.paper_iterations
    prune = getattr(args, "prune_checkpoints", None)
    prune = suite.protocol.selection is None if prune is None else prune
    seeds = list(range(args.seeds))
    workdir = Path(args.workdir or Path.home() / ".metarl" / "reproduce" / suite.name).expanduser().resolve()
    use_workdir(workdir)
    state = State.load(workdir / "state.json", suite.name)
    config = evaluation_config(suite, eval_tasks=args.eval_tasks, eval_episodes=args.eval_episodes)
    # fail on a bad spec before anything starts
    specs = [suite.job_spec(v, seed=0, iterations=variant_iterations(iterations, v), overrides=args.set)
             for v in suite.variants]
    ray_ = LocalRay(num_cpus=max(args.num_cpus, *(s.resources.rollout_workers for s in specs)))
    log.info("suite %s: %d seed(s) x %s iterations%s, work directory %s%s", suite.name, len(seeds),
             iterations if isinstance(iterations, int) else ", ".join(f"{n} ({v})" for v, n in iterations.items()),
             "" if env_steps is None else f" ({format_steps(env_steps)} env steps each)", workdir,
             " (only each run's newest checkpoint kept)" if prune else "")
    t0 = time.perf_counter()
    deadline = None if args.train_hours is None else time.monotonic() + args.train_hours * 3600
    try:
        train(suite, state, seeds=seeds, iterations=iterations, overrides=args.set, ray_=ray_, console=console,
              budget_spent=None if deadline is None else lambda: time.monotonic() >= deadline, prune=prune)
    finally:
        ray_.shutdown()
    t1 = time.perf_counter()
    models = trained_models(suite, state, seeds=seeds, prune=prune)
    reported = [s for s in seeds if all((v, s) in models for v in suite.variants)]
    if not reported:
        raise SystemExit("no seed has a checkpoint yet (training budget too short?): run the same command to go on")
    partial = len(reported) < len(seeds) or any(
        not state.runs[run_key(v, s)].finished for v in suite.variants for s in reported
    )
    if partial:
        log.info("partial result: %s; the same command goes on training", ", ".join(
            f"{v} seed {s} at iteration {models[(v, s)][1]}" for s in reported for v in suite.variants))
    # choosing a checkpoint needs the whole run
    evaluated = tuple(v for v in suite.evaluated if not (partial and v == SELECTED))
    selected = {} if partial else select_checkpoints(suite, state, seeds=seeds, config=config)
    evaluate_all(suite, state, seeds=reported, iterations=iterations, overrides=args.set, config=config, models=models,
                 evaluated=evaluated, selected=selected)
    eval_here = time.perf_counter() - t1
    train_seconds = sum(state.runs[run_key(v, s)].train_seconds for v in suite.variants for s in reported)
    eval_seconds = sum(state.evaluations[f"{v}/seed{s}/{split}"]["report"]["seconds"]
                       for v in evaluated for s in reported for split in suite.protocol_of(v).splits)
    eval_seconds += sum(c["seconds"] for chosen in selected.values() for c in chosen["candidates"])
    log.info("training %.0f s this call, evaluation %.0f s this call", t1 - t0, eval_here)
    command = "python benchmarks/reproduce.py " + shlex.join(sys.argv[1:])
    result = build_result(suite, state, seeds=reported, iterations=iterations, overrides=args.set, config=config,
                          command=command, train_seconds=train_seconds, eval_seconds=eval_seconds, selected=selected,
                          evaluated=evaluated, done={k: it for k, (_, it) in models.items()} if partial else None,
                          env_steps=env_steps)
    write_result(result, Path(args.results_dir))
    return result
