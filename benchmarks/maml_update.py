"""Time one whole MAML-TRPO outer update at the MAML paper's sizes: the project's default
(tasks stacked into one batched graph, Fisher/Gauss-Newton curvature-vector products on a 25%
subsample of episodes, full-batch gradient and line search) against the exact reference kept in
``algorithms/reference.py`` (per-task loop, full-batch double-backward KL Hessian-vector
products, the KL's first-order graph reused across CG iterations), on the same real batch.

Prints one JSON object per setting, then (unless ``--curve-iterations 0``) trains MAML-TRPO on
navigation2d with both and prints the two learning curves' summary, writing a PNG of both.

    python benchmarks/maml_update.py [--settings navigation2d,halfcheetah-vel] [--curve-iterations 30]

With ``--device cuda`` both updates run on the GPU, and the default update is also timed on the
CPU in the same run (``cpu_default_s``, ``cuda_vs_cpu``): the figure for a learner with
``resources.learner_gpus``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from algorithms import reference
from algorithms.base import MetaBatch, UpdateMetrics
from algorithms.maml import MAML, MAMLSpec, TRPOSpec
from algorithms.policies import PolicySpec
from workers.envs import make_family
from workers.loop import TaskSchedule, plan_of, train_in_process
from workers.runner import LocalLearner, SamplerSource, collect
from workers.sampler import Sampler

SETTINGS = {
    # MAML paper, App. C.2: meta-batch 20 / 40, 20 trajectories per task, horizon 100 / 200
    "navigation2d": {"family": {}, "meta_batch": 20, "episodes": 20},
    "halfcheetah-vel": {"family": {}, "meta_batch": 40, "episodes": 20},
}
RESULTS = Path(__file__).parent / "results"


class ReferenceMAML(MAML):
    """MAML whose TRPO step is the exact reference implementation."""

    name = "maml"

    def trpo_step(self, train, valid, *, watch=None) -> UpdateMetrics:  # noqa: ANN001
        assert isinstance(self.config.outer, TRPOSpec)
        new, metrics = reference.trpo_step(
            self.policy, self.params, train, valid,
            inner_lr=self.config.inner_lr, first_order=self.config.first_order, config=self.config.outer,
        )
        self._set_params(new)
        return metrics


def spec_for(family) -> PolicySpec:  # noqa: ANN001
    return PolicySpec(
        obs_dim=int(family.observation_space.shape[0]), act_dim=int(family.action_space.shape[0]),
        hidden_sizes=(100, 100), activation="relu",
    )


def _timed(fn):  # noqa: ANN001, ANN202
    """``fn()``'s result and wall time, the GPU's queued work included."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def time_update(setting: str, *, repeats: int, device: str = "cpu") -> dict:
    cfg = SETTINGS[setting]
    family = make_family(setting, **cfg["family"])
    spec = spec_for(family)
    config = MAMLSpec(inner_lr=0.1, outer=TRPOSpec(max_kl=0.01))
    learner = MAML(spec, config, seed=0, device=device)
    sampler = Sampler(family, spec, envs_per_task=10, seed=0)
    tasks = TaskSchedule(family, cfg["meta_batch"], 0).tasks(0)
    source = SamplerSource(sampler, cfg["episodes"])
    phases = collect(plan_of(learner), tasks, source=source, learner=LocalLearner(learner)).phases
    sample_s = source.seconds
    batch = MetaBatch(train=phases[:-1], valid=phases[-1])
    sampler.close()
    train = [learner.batch(s) for s in batch.train]
    valid = learner.batch(batch.valid)
    theta0 = learner.params

    def run(make, on: str = device, tr=train, va=valid) -> tuple[float, UpdateMetrics]:  # noqa: ANN001
        lrn = make(spec, config, seed=0, device=on)
        lrn._set_params({k: v.to(on) for k, v in theta0.items()})
        m, seconds = _timed(lambda: lrn.trpo_step(tr, va))
        return seconds, m

    run(MAML)  # warm-up (CUDA context, kernels, allocator)
    default_times, ref_times = [], []
    for _ in range(repeats):
        t, m_def = run(MAML)
        default_times.append(t)
        t, m_ref = run(ReferenceMAML)
        ref_times.append(t)
    ref_s, def_s = statistics.median(ref_times), statistics.median(default_times)
    extra = {}
    if device != "cpu":
        train_cpu, valid_cpu = [b.to("cpu") for b in train], valid.to("cpu")
        cpu_s = statistics.median(run(MAML, "cpu", train_cpu, valid_cpu)[0] for _ in range(repeats))
        extra = {"cpu_default_s": round(cpu_s, 3), "cuda_vs_cpu": round(cpu_s / def_s, 2),
                 "gpu": torch.cuda.get_device_name(0)}
    return {
        "device": device,
        "setting": setting,
        "meta_batch": cfg["meta_batch"],
        "episodes_per_task": cfg["episodes"],
        "horizon": family.max_episode_steps,
        "policy": "2x100 relu",
        "reference_s": round(ref_s, 3),
        "default_s": round(def_s, 3),
        "speedup": round(ref_s / def_s, 2),
        "sample_s": round(sample_s, 3),
        "default_kl": round(m_def["meta/kl"], 5),
        "reference_kl": round(m_ref["meta/kl"], 5),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        **extra,
    }


def learning_curves(iterations: int, seeds: list[int]) -> dict:
    family = make_family("navigation2d")
    spec = spec_for(family)
    config = MAMLSpec(inner_lr=0.1, outer=TRPOSpec(max_kl=0.01))
    curves: dict[str, dict[int, dict]] = {"default": {}, "reference": {}}
    for seed in seeds:
        for label, cls in (("default", MAML), ("reference", ReferenceMAML)):
            learner = cls(spec, replace(config), seed=seed)
            t0 = time.perf_counter()
            res = train_in_process(learner, family, meta_batch_size=20, episodes_per_task=20, iterations=iterations,
                                   seed=seed)
            curves[label][seed] = {
                "pre": [r.metrics["meta/return_pre"] for r in res],
                "post": [r.metrics["meta/return_post"] for r in res],
                "wall_s": time.perf_counter() - t0,
            }
    last = slice(max(0, iterations - 5), iterations)

    def mean_of(label: str, key: str, part: slice) -> float:
        return round(float(np.mean([np.mean(c[key][part]) for c in curves[label].values()])), 2)

    summary = {"curve": "navigation2d MAML-TRPO", "iterations": iterations, "seeds": seeds}
    for label in curves:
        summary[f"{label}_post_last5"] = mean_of(label, "post", last)
        summary[f"{label}_pre_last5"] = mean_of(label, "pre", last)
        summary[f"{label}_post_mean_all"] = mean_of(label, "post", slice(0, iterations))
        summary[f"{label}_wall_s"] = round(sum(c["wall_s"] for c in curves[label].values()), 1)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for label, style in (("default", "-"), ("reference", "--")):
            post = np.mean([c["post"] for c in curves[label].values()], axis=0)
            pre = np.mean([c["pre"] for c in curves[label].values()], axis=0)
            ax.plot(post, style, color="tab:blue", label=f"{label}: after 1 step")
            ax.plot(pre, style, color="tab:gray", label=f"{label}: before adaptation")
        ax.set_xlabel("meta-iteration")
        ax.set_ylabel("average return")
        ax.set_title(f"MAML-TRPO, navigation2d: default vs exact reference (mean of seeds {seeds})")
        ax.legend()
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / "maml_update_navigation2d_curves.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        summary["png"] = str(path.relative_to(Path(__file__).parent.parent))
    except ImportError:  # matplotlib is a dependency; keep the figures if it is missing anyway
        pass
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="navigation2d,halfcheetah-vel")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--curve-iterations", type=int, default=30)
    parser.add_argument("--curve-seeds", default="0,1", help="seeds of the learning-curve runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the learner runs: cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for setting in args.settings.split(","):
        print(json.dumps(time_update(setting, repeats=args.repeats, device=args.device)), flush=True)
    if args.curve_iterations > 0:
        summary = learning_curves(args.curve_iterations, [int(x) for x in args.curve_seeds.split(",")])
        summary["machine"] = platform.machine()
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
