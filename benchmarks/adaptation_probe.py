"""What one inner step does, checkpoint by checkpoint, for a MAML run of ``reproduce.py``.

For each chosen checkpoint of a run it samples fresh training tasks of the run's own family
(``tasks`` × ``episodes``, one fixed seed, so checkpoints see the same draw), takes the run's inner
step, samples again with the adapted policies, and prints one JSON line:

- ``return_pre`` / ``return_post``: mean episode return before and after the step;
- ``step_norm``: ‖φ − θ‖ of the inner step (all parameters), mean over tasks;
- ``step_kl``: KL(π_θ ‖ π_φ) on the pre-update states, mean over steps and tasks: how far one
  inner step moves the policy;
- ``saturated``: for a Gaussian policy of a family whose actions are clipped to [−1, 1], the
  fraction of pre-update action means outside the bounds (what clipping throws away).

    python benchmarks/adaptation_probe.py --workdir ~/.metarl/reproduce/halfcheetah-dir \\
        --checkpoints 30,100,300,500 [--run maml/seed0] [--tasks 8] [--episodes 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True,
                        help="a reproduce.py --workdir (state.json, MLflow store)")
    parser.add_argument("--run", default="maml/seed0", help="the run's key in state.json")
    parser.add_argument("--checkpoints", required=True, help="comma-separated iterations with a checkpoint")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args(argv)

    state_file = args.workdir.expanduser() / "state.json"
    if not state_file.is_file():
        parser.error(f"{state_file} not found: --workdir must be a reproduce.py workdir")
    runs = json.loads(state_file.read_text())["runs"]
    if args.run not in runs:
        parser.error(f"--run {args.run!r} not in {state_file}; runs: {sorted(runs)}")
    entry = runs[args.run]
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{args.workdir.expanduser() / 'mlflow.db'}"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

    from algorithms.registry import make_learner
    from workers import tracking
    from workers.envs import make_family
    from workers.loop import TaskSchedule
    from workers.sampler import Sampler

    torch.set_num_threads(1)
    fam = entry["spec"]["task_family"]
    family = make_family(fam["name"], **({"env_name": fam["env_name"]} if fam.get("env_name") else {}),
                         **fam.get("params", {}))
    available = tracking.checkpoint_iterations(entry["run_id"])
    for it in (int(x) for x in args.checkpoints.split(",")):
        if it not in available:
            parser.error(f"no checkpoint of iteration {it}; the run has {available}")
        state = tracking.load_checkpoint(entry["run_id"], it)
        learner = make_learner(state.config, state.policy_spec, advantage=state.advantage)
        learner.load_state_dict(state)
        theta = {k: v.detach().clone() for k, v in learner.params.items()}
        tasks = TaskSchedule(family, args.tasks, args.seed).tasks(0)
        sampler = Sampler(family, state.policy_spec, envs_per_task=args.episodes, seed=args.seed)
        try:
            pre = sampler.sample(tasks, theta, episodes_per_task=args.episodes)
            phis = [{k: v.detach() for k, v in p.items()} for p in learner.adapt([theta] * len(tasks), pre)]
            post = sampler.sample(tasks, phis, episodes_per_task=args.episodes)
        finally:
            sampler.close()
        norms, kls, saturated = [], [], []
        policy = learner.policy
        for episodes, phi in zip(pre, phis, strict=True):
            norms.append(float(torch.sqrt(sum(((phi[k] - theta[k]) ** 2).sum() for k in theta))))
            mask = torch.as_tensor(episodes.mask, dtype=torch.bool).flatten()
            obs = torch.as_tensor(episodes.obs, dtype=torch.float32).reshape(mask.numel(), -1)[mask]
            with torch.no_grad():
                before = functional_call(policy, theta, (obs,))
                after = functional_call(policy, phi, (obs,))
                kls.append(float(policy.kl(before, after).mean()))
                if not state.policy_spec.discrete:
                    saturated.append(float((before[0].abs() > 1.0).float().mean()))
        print(json.dumps({
            "run": args.run, "iteration": it, "tasks": len(tasks), "episodes": args.episodes,
            "activation": state.policy_spec.activation,
            "return_pre": round(float(np.mean([e.returns.mean() for e in pre])), 2),
            "return_post": round(float(np.mean([e.returns.mean() for e in post])), 2),
            "step_norm": round(float(np.mean(norms)), 4),
            "step_kl": round(float(np.mean(kls)), 4),
            **({"saturated": round(float(np.mean(saturated)), 3)} if saturated else {}),
            "clips_actions": bool(getattr(family, "clips_actions", False)),
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
