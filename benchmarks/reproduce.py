"""Reproduce the published meta-RL results through the real engine.

    python benchmarks/reproduce.py --suite navigation2d [--iterations N] [--seeds K] [--workdir DIR]
                                   [--train-hours H]
    python benchmarks/reproduce.py --suite rl2-ml10 [--env-steps N] [--seeds K] [--workdir DIR] [--train-hours H]
    python benchmarks/reproduce.py --table [--write-docs]

A suite is the paper's setting for one task family (the job spec, built from
``workers/presets/*.json`` where one exists, and the paper's meta-test protocol).  For every seed:

1. **meta-train** with the distributed engine, in this process: a local Ray is started once,
   MLflow points at a store in the work directory (``~/.metarl/reproduce/<suite>`` by default),
   and :func:`workers.driver.run_job` runs the job.  The work directory keeps ``state.json``
   (seed → MLflow run, finished or not): re-running the same command skips finished seeds and
   resumes unfinished ones from their last checkpoint (``checkpoint_every`` of the spec).
   ``--train-hours H`` bounds the training of one call: once spent, the running job stops at its
   next checkpoint, the latest checkpoints are meta-tested and written as a *partial* result
   (said so in the JSON and the table), and the same command goes on later.
2. **choose a checkpoint** (suites with a :class:`Selection`, 2D navigation): the MAML
   checkpoints are meta-tested on validation tasks (train split, their own seed) and the best by
   mean return after 1..n inner steps is meta-tested on the test tasks as ``maml-selected``,
   beside the final model; the choice never sees a test task.
3. **meta-test** on fresh test tasks with :func:`workers.evaluate.evaluate`, the code path of
   ``python -m workers.evaluate`` and of the service's evaluation endpoint: the return after
   ``k = 0..n`` inner steps (2D navigation and locomotion, Finn et al. 2017), or Meta-World's
   protocol (adaptation episodes, then 3 deterministic evaluation episodes per goal; success if
   ``success`` was 1 at any step) on the test and the train split.
4. For ML1 suites the same for two baselines: the multi-task policy-gradient policy (non-meta)
   trained with the same env-step budget and fine-tuned with the same adaptation budget, and the
   randomly initialised policy (:meth:`workers.model.MetaPolicy.initial`).
5. The ``rl2-*`` suites train RL² and MAML side by side on the same env steps (``--env-steps``,
   default the suite's budget): each variant's iterations are the budget over its env steps per
   iteration.  RL² is meta-tested by trials (K adaptation episodes build its hidden state, then
   the family's evaluation episodes), MAML with the suite's gradient protocol.  ``--set
   VARIANT:KEY=VALUE`` overrides one variant's job.  On Meta-World both are meta-tested a second
   time with sampled evaluation actions (variants ``rl2-sampled``, ``maml-sampled``): the protocol
   of garage's ``MetaEvaluator``, whose figures the Meta-World paper publishes.

``--prune-checkpoints`` (the default where no checkpoint is chosen) keeps only each run's newest
checkpoint, so a work directory (the MLflow SQLite store, the latest checkpoints and
``state.json``) stays small enough to commit; checked out again at the same absolute path, the
same command resumes from it on another machine.

Seeds are the unit of the reported intervals: each seed's evaluation is averaged over tasks, and
the figure is the mean over seeds with a 95% Student-t interval over seeds.  The result goes to
``benchmarks/results/reproduce_<suite>.json`` (command, versions, commit, wall clock, spec,
published numbers with citations, per-seed results, learning curves, targets, a convergence
note) with two PNGs beside it; ``--table`` renders the results table of ``docs/results.md`` from
the JSON files present and ``--write-docs`` writes it between that page's ``results`` markers.

The parts live in ``benchmarks/repro/`` (see its ``__init__``): the suites (data), training,
meta-testing, the result file and its plots, and the results table; this file is the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/reproduce.py``: sys.path[0] is benchmarks/
    sys.path.insert(0, str(ROOT))

from benchmarks.repro.pipeline import run  # noqa: E402
from benchmarks.repro.results import RESULTS_DIR, headline_json  # noqa: E402
from benchmarks.repro.suites import SUITES, split_override  # noqa: E402
from benchmarks.repro.table import render_results_table, write_docs  # noqa: E402

log = logging.getLogger("metarl.reproduce")


def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--suite", choices=list(SUITES), help="run (or resume) this suite")
    mode.add_argument("--table", action="store_true",
                      help="print the results table of docs/results.md from the JSON files")
    parser.add_argument("--write-docs", action="store_true", help="with --table: write it into docs/results.md")
    parser.add_argument("--write-readme", dest="write_docs", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=None,
                        help="meta-iterations (default: the suite's paper setting); suites with an env-step "
                             "budget take --env-steps instead")
    parser.add_argument("--env-steps", type=int, default=None,
                        help="env steps each variant of a suite that compares algorithms (rl2-*) trains on: its "
                             "iterations are this over its env steps per iteration (default: the suite's budget)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 (default 3)")
    parser.add_argument("--workdir", default=None,
                        help="MLflow store and state.json (default ~/.metarl/reproduce/<suite>)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR),
                        help="where the JSON and PNGs go (default benchmarks/results)")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1,
                        help="CPUs of the local Ray (default: all)")
    parser.add_argument("--eval-tasks", type=int, default=None,
                        help="override the suite's number of test tasks (smoke tests)")
    parser.add_argument("--eval-episodes", type=int, default=None,
                        help="override K, episodes per adaptation step (smoke tests)")
    parser.add_argument("--train-hours", type=float, default=None,
                        help="training budget of this call: runs stop at their next checkpoint once it is spent, the "
                             "latest checkpoints are meta-tested (a partial result), and the same command goes on")
    parser.add_argument("--set", action="append", default=[], metavar="[VARIANT:]KEY=VALUE",
                        help="override a job-spec field, e.g. --set meta_batch_size=4, of every variant or of one "
                             "(--set rl2:algorithm.lr=1e-4); recorded in the JSON")
    parser.add_argument("--prune-checkpoints", action=argparse.BooleanOptionalAction, default=None,
                        help="keep only the newest checkpoint of each run, so the work directory stays small "
                             "enough to commit (default: on, except for suites that choose a checkpoint)")
    return parser


def _suite_options_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options for ``args.suite``, or None."""
    suite = SUITES[args.suite]
    if suite.budget is not None and args.iterations is not None:
        return f"--suite {suite.name} trains every variant on the same env steps: set --env-steps, not --iterations"
    if suite.budget is None and args.env_steps is not None:
        return f"--env-steps goes with a suite that compares algorithms on an env-step budget, not {suite.name}"
    if args.prune_checkpoints and suite.protocol.selection is not None:
        return f"--suite {suite.name} chooses a checkpoint on validation tasks: it needs every checkpoint"
    for item in args.set:
        variant, rest = split_override(item)
        if variant is not None and variant not in suite.variants:
            return f"--set {item!r}: {suite.name} trains {', '.join(suite.variants)}, not {variant!r}"
        if suite.budget is not None and rest.partition("=")[0].strip() == "iterations":
            return f"--set {item!r}: the iterations of {suite.name} follow from --env-steps"
    if suite.budget is not None:
        env_steps = args.env_steps or suite.budget
        try:
            for variant in suite.variants:
                suite.iterations_for(variant, env_steps=env_steps, overrides=args.set)
        except ValueError as exc:
            return f"--env-steps {env_steps}: {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(stderr=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    # metarl.driver logs each iteration too; the progress line below says more (seconds, success)
    for noisy in ("mlflow", "alembic", "urllib3", "ray", "metarl.driver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.table:
        if args.write_docs:
            changed = write_docs(results_dir=Path(args.results_dir))
            log.info("docs/results.md %s", "updated" if changed else "already up to date")
        sys.stdout.write(render_results_table(Path(args.results_dir)) + "\n")
        return 0
    if args.write_docs:
        parser.error("--write-docs goes with --table")
    for name in ("iterations", "env_steps", "seeds", "eval_tasks", "eval_episodes", "num_cpus"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    problem = _suite_options_problem(args)
    if problem:
        parser.error(problem)
    if args.train_hours is not None and not (math.isfinite(args.train_hours) and args.train_hours > 0):
        parser.error(f"--train-hours must be a positive number of hours, got {args.train_hours}")
    from workers.driver import JobFailed

    try:
        result = run(args, console)
    except JobFailed as exc:
        log.error("job failed: %s; the state is kept: run the same command again to resume", exc)
        return 1
    sys.stdout.write(json.dumps(headline_json(result), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
