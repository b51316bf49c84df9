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

Writes ``--out`` (``benchmarks/results/job_profile_<suite>.json``) and a stacked bar chart beside
it (``.png``), and prints one JSON line.

    python benchmarks/job_profile.py [--suite ml10] [--iterations 4] [--num-cpus 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
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
                 f"({s['e2e_over_sampling']:.2f} of sampling alone)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        stamps: list[float] = []
        start = time.perf_counter()
        try:
            run_job(spec, job_id=f"profile-{args.suite}",
                    hooks=DriverHooks(on_iteration=lambda it, m: (seen.append(dict(m)),
                                                                  stamps.append(time.perf_counter()))))
        finally:
            ray.shutdown()
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
        "per_iteration": rows,
        "summary": summarize(measured),
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
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/job_profile_<suite>.json)")
    args = p.parse_args(argv)
    if args.iterations < 2:
        p.error("--iterations must be at least 2 (the first is warm-up)")
    out = Path(args.out or RESULTS / f"job_profile_{args.suite}.json")
    result = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps({"suite": result["suite"], **{k: v for k, v in result["summary"].items()
                                                   if not isinstance(v, dict | list)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
