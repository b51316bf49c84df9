"""Where a full meta-training job's time goes, per meta-iteration.

Runs the reproduce suite's job (``--suite``, default ``ml10``: MAML-TRPO on Meta-World ML10 with
the reproduce settings) for ``--iterations`` iterations through the real driver
(:func:`workers.driver.run_job`) on a local Ray of ``--num-cpus`` CPUs, its MLflow store in a temp
dir, and splits each iteration's wall clock into:

* ``sample_<phase>`` -- each sampling phase, from the driver submitting the shards until every
  shard is done (the rollout workers stepping envs and running the policy);
* ``adapt_compute`` / ``adapt_transfer`` -- the inner step: the learner actor's compute, and the
  rest of the driver's wait for it (episodes to the learner, adapted parameters back);
* ``outer_batch`` (episodes to tensors: baselines, advantages), ``outer_gradient`` (the adapted
  objective and its gradient), ``outer_curvature`` (the curvature operator and conjugate
  gradient), ``outer_line_search``, ``outer_other`` -- the learner actor's outer update, timed
  inside it;
* ``learn_transfer`` -- the rest of the driver's wait for the update (episodes to the learner);
* ``driver_other`` -- the rest of the iteration in the driver;
* ``bookkeeping`` -- the driver between this iteration's end and the next one's start: MLflow
  logging, the checkpoint (every ``--checkpoint-every``), the check for a resize request.

Also per iteration: the share of the time the rollout workers and the learner computed
(``perf/rollout_busy_frac``, ``perf/learner_busy_frac``), env steps per second end to end, and
the same steps over the sampling phases' time alone -- the sampler's throughput inside the job,
the ceiling a job could reach if nothing but sampling took time (``e2e_over_sampling``).
The summary averages the iterations after the first (which includes the actors' warm-up).

Baseline in the same run (``--baseline-commit REV``): the same spec run by the engine of an
earlier commit -- checked out with ``git worktree`` into a temp dir and started as that commit's
own driver (``python -m workers.driver --spec``, its own local Ray and MLflow store) -- and its
seconds per iteration over the same iterations; ``speedup`` is its mean over ours.  Both runs
record the CPU time that processes older than the run took meanwhile (``load``:
``foreign_cpu_frac``, a fraction of the machine, from ``/proc``; Ray's processes leave the
benchmark's process tree, so the run's own are told apart by being started during it), so a
figure measured on a busy machine shows as such.

Writes ``--out`` (``benchmarks/results/job_profile_<suite>.json``) and a stacked bar chart beside
it (``.png``), and prints one JSON line.

    python benchmarks/job_profile.py [--suite ml10] [--iterations 4] [--num-cpus 2] [--baseline-commit REV]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"

#: the parts of an iteration, in the order the chart stacks them (sampling phases go first)
LEARNER_PARTS = ("adapt_compute", "adapt_transfer", "outer_batch", "outer_gradient", "outer_curvature",
                 "outer_line_search", "outer_other", "learn_transfer", "driver_other", "bookkeeping")


def breakdown(metrics: dict[str, float], bookkeeping: float | None) -> dict[str, float]:
    """One iteration's parts (seconds) from its logged metrics (see the module docstring);
    ``bookkeeping`` is the driver's time after it (the next iteration's ``time/bookkeeping_s``)."""
    m = metrics
    out = {k[len("time/"):-2]: v for k, v in m.items()
           if k.startswith("time/sample_") and k.endswith("_s") and k != "time/sample_s"}
    out["adapt_compute"] = m.get("time/learner_adapt_s", 0.0)
    out["adapt_transfer"] = max(0.0, m["time/adapt_s"] - out["adapt_compute"])
    sections = ("outer_batch", "outer_gradient", "outer_curvature", "outer_line_search")
    for s in sections:
        out[s] = m.get(f"time/{s}_s", 0.0)
    compute = m.get("time/learner_learn_s", 0.0)
    out["outer_other"] = max(0.0, compute - sum(out[s] for s in sections))
    out["learn_transfer"] = max(0.0, m["time/learn_s"] - compute)
    out["driver_other"] = max(0.0, m["time/iteration_s"] - m["time/sample_s"] - m["time/adapt_s"] - m["time/learn_s"])
    out["bookkeeping"] = bookkeeping or 0.0
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over ``rows`` (the measured iterations) of the parts and the rates."""
    parts = {k: statistics.fmean(r["parts"][k] for r in rows) for k in rows[0]["parts"]}
    wall = statistics.fmean(r["wall_s"] for r in rows)
    steps = statistics.fmean(r["env_steps"] for r in rows)
    sampling = sum(v for k, v in parts.items() if k.startswith("sample_"))
    e2e, ceiling = steps / wall, steps / sampling
    return {
        "iterations": [r["iteration"] for r in rows],
        "wall_s": wall,
        "parts_s": parts,
        "parts_frac": {k: v / wall for k, v in parts.items()},
        "env_steps": steps,
        "env_steps_per_s_end_to_end": e2e,
        "env_steps_per_s_sampling": ceiling,
        "e2e_over_sampling": e2e / ceiling,
        "rollout_busy_frac": statistics.fmean(r["rollout_busy_frac"] for r in rows),
        "learner_busy_frac": statistics.fmean(r["learner_busy_frac"] for r in rows),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["per_iteration"]
    labels = [f"it {r['iteration']}" for r in rows] + ["mean"]
    series = [r["parts"] for r in rows] + [result["summary"]["parts_s"]]
    keys = [k for k in series[-1] if k.startswith("sample_")] + [k for k in LEARNER_PARTS if k in series[-1]]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(labels) + 2.2))
    left = [0.0] * len(labels)
    cmap = plt.get_cmap("tab20")
    for i, k in enumerate(keys):
        widths = [s.get(k, 0.0) for s in series]
        ax.barh(labels, widths, left=left, label=k, color=cmap(i % 20))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    s = result["summary"]
    ax.set_title(f"{result['suite']}: {s['wall_s']:.1f} s per meta-iteration, "
                 f"{s['env_steps_per_s_end_to_end']:.0f} env steps/s end to end "
                 f"({s['e2e_over_sampling']:.2f} of sampling alone)"
                 + (f"\nthe engine of {b['rev'][:7]} on the same spec: {b['seconds_per_iteration']:.1f} s per "
                    f"iteration: this engine is {b['speedup']:.2f}x as fast" if (b := result.get("baseline")) else ""),
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class ForeignLoad:
    """CPU seconds taken during a measurement by processes that were already running when it
    started (other than this one): the machine's other work.  Processes started during the
    window count as the measurement's own (Ray's raylet and workers detach from the process
    tree, so the tree cannot tell)."""

    @staticmethod
    def _cpu() -> dict[int, float]:
        from benchmarks.sampling import process_cpu

        return {pid: seconds for pid, (_, seconds) in process_cpu().items()}

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._before = self._cpu()
        self._before.pop(os.getpid(), None)
        self._load = os.getloadavg()[0]

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._start
        after = self._cpu()
        foreign = sum(max(0.0, after[pid] - cpu) for pid, cpu in self._before.items() if pid in after)
        return {"foreign_cpu_frac": round(foreign / (wall * (os.cpu_count() or 1)), 3),
                "loadavg_1m_start": round(self._load, 2), "seconds": round(wall, 1)}


def _without_defaults(full: Any, lean: Any) -> Any:
    """``full`` (a spec's dump) with only the fields ``lean`` (its dump without defaults) kept, and
    every ``name`` (the discriminators): the spec as an older contract reads it, the defaults --
    among them fields it may not know -- left to it."""
    if not isinstance(full, dict):
        return full
    lean = lean if isinstance(lean, dict) else {}
    return {k: _without_defaults(v, lean.get(k)) for k, v in full.items() if k in lean or k == "name"}


def _differences(ours: Any, theirs: Any, prefix: str = "") -> list[str]:
    """``key: ours != theirs`` for the fields both specs have (names aside) whose values differ."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return [d for k in ours.keys() & theirs.keys() if k not in ("name", "register_as") or prefix
                for d in _differences(ours[k], theirs[k], f"{prefix}{k}.")]
    return [] if ours == theirs else [f"{prefix.rstrip('.')}: {ours!r} != {theirs!r}"]


def run_baseline(spec: Any, commit: str, *, iterations: list[int]) -> dict[str, Any]:
    """``spec`` run by the driver of ``commit`` (see the module docstring); its per-iteration
    times and the mean over ``iterations``."""
    from benchmarks.job_startup import isolated_env

    with tempfile.TemporaryDirectory(prefix="metarl-baseline-") as tmp:
        tree, home = Path(tmp) / "tree", Path(tmp) / "home"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), commit], cwd=ROOT, check=True)
        try:
            rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True,
                                 check=True).stdout.strip()
            path = Path(tmp) / "spec.json"
            path.write_text(json.dumps(_without_defaults(spec.model_dump(mode="json"),
                                                         spec.model_dump(mode="json", exclude_defaults=True))))
            env = {**isolated_env(home), "PYTHONPATH": str(tree)}
            load = ForeignLoad()
            proc = subprocess.run([sys.executable, "-m", "workers.driver", "--spec", str(path)], cwd=tree, env=env,
                                  capture_output=True, text=True)
            used = load.stop()
            if proc.returncode != 0:
                raise RuntimeError(f"the baseline driver of {commit} failed:\n{proc.stderr[-3000:]}")
            with sqlite3.connect(home / "mlflow.db") as db:
                rows = db.execute("SELECT key, step, value FROM metrics WHERE key LIKE 'time/%'").fetchall()
                (ran,) = db.execute("SELECT value FROM tags WHERE key = 'metarl.spec'").fetchone()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    per: dict[int, dict[str, float]] = {}
    for key, step, value in rows:
        per.setdefault(int(step), {})[key] = float(value)
    seconds = [per[i]["time/iteration_s"] for i in iterations if i in per]
    ran_spec = json.loads(ran)
    return {"commit": commit, "rev": rev, "spec": ran_spec,
            # fields both contracts have whose values differ (none: the same job)
            "spec_differences": _differences(json.loads(spec.model_dump_json()), ran_spec),
            "per_iteration": [{"iteration": i, **per[i]} for i in sorted(per)],
            "seconds_per_iteration": statistics.fmean(seconds), "iterations": iterations, "load": used}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.repro.suites import SUITES

    suite = SUITES[args.suite]
    variant = args.variant or suite.variants[0]
    spec = suite.job_spec(variant, seed=args.seed, iterations=args.iterations, overrides=args.set)
    spec = spec.model_copy(update={"checkpoint_every": args.checkpoint_every, "name": f"profile-{args.suite}",
                                   "register_as": f"profile-{args.suite}"})
    with tempfile.TemporaryDirectory(prefix="metarl-profile-") as tmp:
        os.environ["METARL_HOME"] = tmp
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        import ray

        from workers.driver import DriverHooks, run_job

        ray.init(num_cpus=args.num_cpus, _temp_dir=str(Path(tmp) / "ray"), include_dashboard=False,
                 logging_level="ERROR")
        seen: list[dict[str, float]] = []
        start = time.perf_counter()
        load = ForeignLoad()
        try:
            run_job(spec, job_id=f"profile-{args.suite}",
                    hooks=DriverHooks(on_iteration=lambda it, m: seen.append(dict(m))))
        finally:
            ray.shutdown()
        used = load.stop()
        total = time.perf_counter() - start
    rows = []
    for i, m in enumerate(seen):
        after = seen[i + 1].get("time/bookkeeping_s") if i + 1 < len(seen) else None
        parts = breakdown(m, after)
        rows.append({
            "iteration": i,
            "wall_s": m["time/iteration_s"] + (after or 0.0),
            "parts": parts,
            "env_steps": m["perf/env_steps"],
            "rollout_busy_frac": m["perf/rollout_busy_frac"],
            "learner_busy_frac": m["perf/learner_busy_frac"],
            "checkpointed": (i + 1) % args.checkpoint_every == 0 or i + 1 == len(seen),
            "bookkeeping_measured": after is not None,
        })
    measured = [r for r in rows[1:] if r["bookkeeping_measured"]] or rows[1:] or rows
    summary = summarize(measured)
    baseline = None
    if args.baseline_commit:
        baseline = run_baseline(spec, args.baseline_commit, iterations=summary["iterations"])
        # ours over the same iterations, without the bookkeeping the baseline's time/iteration_s lacks
        ours = statistics.fmean(seen[i]["time/iteration_s"] for i in summary["iterations"])
        baseline["ours_seconds_per_iteration"] = ours
        baseline["speedup"] = baseline["seconds_per_iteration"] / ours
    import torch

    return {
        "benchmark": "job_profile",
        "suite": args.suite,
        "variant": variant,
        "command": "python benchmarks/job_profile.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "num_cpus_ray": args.num_cpus, "platform": platform.platform(),
                    "torch": torch.__version__},
        "spec": json.loads(spec.model_dump_json()),
        "job_wall_s": total,
        "load": used,
        "per_iteration": rows,
        "summary": summary,
        "baseline": baseline,
        "note": "summary: the iterations after the first whose following bookkeeping was measured; "
                f"a checkpoint every {args.checkpoint_every} iterations",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="ml10", help="reproduce suite whose job is profiled (default ml10)")
    p.add_argument("--variant", default=None, help="the suite's variant (default its first)")
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--checkpoint-every", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a job-spec field")
    p.add_argument("--baseline-commit", default=None, metavar="REV",
                   help="also run the same spec with the engine of this commit (the baseline)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/job_profile_<suite>.json)")
    args = p.parse_args(argv)
    if args.iterations < 2:
        p.error("--iterations must be at least 2 (the first is warm-up)")
    out = Path(args.out or RESULTS / f"job_profile_{args.suite}.json")
    result = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    line = {"suite": result["suite"], **{k: v for k, v in result["summary"].items() if not isinstance(v, dict | list)},
            "foreign_cpu_frac": result["load"]["foreign_cpu_frac"]}
    if result["baseline"] is not None:
        b = result["baseline"]
        line.update(baseline_commit=b["rev"], baseline_seconds_per_iteration=b["seconds_per_iteration"],
                    seconds_per_iteration=b["ours_seconds_per_iteration"], speedup=b["speedup"],
                    baseline_foreign_cpu_frac=b["load"]["foreign_cpu_frac"])
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
