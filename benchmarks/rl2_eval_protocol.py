"""RL²'s meta-test with deterministic against stochastic evaluation episodes, from the same adapted
states: is Meta-World's deterministic evaluation (the policy's mean action) what holds a trained
RL² policy's success down?

Per test task, one adaptation trial of ``--episodes`` episodes (actions sampled, as in training),
then ``--eval-episodes`` evaluation episodes from the state it left, once with the policy's mean
action (Meta-World's protocol, what ``workers.evaluate`` reports) and once with sampled actions
(what the policy saw in training).  Prints one JSON line: success and return per episode index of
the adaptation trial, and of each evaluation mode, with 95% intervals over tasks.

    python benchmarks/rl2_eval_protocol.py --model models:/NAME/1 --store sqlite:///RUNDIR/mlflow.db \
        [--tasks 20] [--episodes 10] [--eval-episodes 3] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _interval(values: np.ndarray) -> dict[str, float]:
    m = float(values.mean())
    half = float(1.96 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return {"mean": round(m, 4), "ci95": round(half, 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--store", required=True, help="the MLflow tracking URI holding the model")
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--episodes", type=int, default=10, help="adaptation episodes (the trial)")
    ap.add_argument("--eval-episodes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = args.store

    from algorithms.rl2.trials import TrialState
    from workers.model import MetaPolicy
    from workers.trial_sampler import TrialPhaseSampler

    policy = MetaPolicy.load(args.model)
    family = policy.family
    tasks = family.sample_tasks(args.tasks, np.random.default_rng(args.seed), split="test")
    sampler = TrialPhaseSampler(family, policy.policy_spec, episodes_per_trial=args.episodes,
                                envs_per_task=args.eval_episodes, seed=args.seed)
    params = policy._params
    out: dict[str, object] = {"benchmark": "rl2_eval_protocol", "model": args.model, "family": family.name,
                              "tasks": args.tasks, "adaptation_episodes": args.episodes,
                              "eval_episodes": args.eval_episodes, "seed": args.seed}
    try:
        adaptation = sampler.trials(tasks, params, trials_per_task=1, episodes_per_trial=args.episodes)
        success = np.stack([t.success_per_episode()[0] for t in adaptation])  # [tasks, episodes]
        returns = np.stack([t.returns_per_episode()[0] for t in adaptation])
        out["adaptation_success_by_episode"] = [_interval(success[:, e]) for e in range(args.episodes)]
        out["adaptation_return_by_episode"] = [_interval(returns[:, e]) for e in range(args.episodes)]
        for mode, deterministic in (("deterministic", True), ("stochastic", False)):
            start = TrialState.concatenate([t.end for t in adaptation if t.end is not None]).repeat(
                args.eval_episodes)
            evaluation = sampler.trials(tasks, params, trials_per_task=args.eval_episodes, episodes_per_trial=1,
                                        deterministic=deterministic, start=start)
            ev_success = np.stack([t.success_per_episode()[:, 0] for t in evaluation]).mean(axis=1)
            ev_returns = np.stack([t.returns_per_episode()[:, 0] for t in evaluation]).mean(axis=1)
            out[f"eval_{mode}"] = {"success": _interval(ev_success), "return": _interval(ev_returns)}
    finally:
        sampler.close()
    line = json.dumps(out)
    print(line)
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
