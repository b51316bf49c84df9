"""RL² trial sampling throughput: :class:`~workers.trial_sampler.TrialSampler` (GRU policy) against
:class:`~workers.sampler.Sampler` (the 2x100 MLP policy) on the same family, tasks and number of
sub-envs, in the same run (calls interleaved, so both see the machine in the same state).

Prints one JSON object per family: ``mlp_steps_per_s`` and ``rl2_steps_per_s`` (median over the
measured calls of env steps / seconds of one ``sample`` call), ``ratio = rl2 / mlp`` (goal: >= 0.8) and
``ratio_paired_median`` (the median of each call pair's ratio),
and where the recurrent sampler's time goes (``rl2_profile``: the acting loop -- env steps plus
the numpy GRU -- and the torch policy's unroll that computes the log-probabilities and values).
One BLAS/OpenMP thread, as in the rollout actors (``ray`` gives each ``num_cpus=1``).

With ``--workers N`` the same comparison runs through the engine's rollout actors instead
(``workers.pool.WorkerPool`` on a private local Ray, N actors, the phase's data left in the object
store as in a job): an MLP job's episode sampler and an RL² job's trial sampler (what
``workers.sampling.make_sampler`` builds for each), the same tasks and ``envs_per_worker``, calls
interleaved; the figure is env steps over the wall time of the pool's ``sample`` call.

    python benchmarks/rl2_sampling.py [--families halfcheetah-vel,navigation2d,metaworld-ml1] [--calls 5]
                                      [--hidden 128] [--encoder 64] [--workers N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from algorithms.policies import PolicySpec, make_policy  # noqa: E402
from algorithms.rl2.policy import RecurrentPolicySpec, make_recurrent_policy  # noqa: E402
from workers.envs import make_family  # noqa: E402
from workers.sampler import Sampler  # noqa: E402
from workers.trial_sampler import TrialSampler  # noqa: E402

#: family -> (family kwargs, tasks, sub-envs per task, episodes per sub-env and call, MLP activation)
SETTINGS: dict[str, tuple[dict[str, Any], int, int, int, str]] = {
    # 10 tasks x 10 sub-envs x 2 episodes x 200 steps = 40,000 steps per call
    "halfcheetah-vel": ({"max_episode_steps": 200}, 10, 10, 2, "relu"),
    # 20 tasks x 20 sub-envs x 2 episodes x <= 100 steps = <= 80,000 steps per call
    "navigation2d": ({"action_bound": 1.0}, 20, 20, 2, "relu"),
    # 10 tasks x 5 sub-envs x 2 episodes x 500 steps = 50,000 steps per call (the presets' Meta-World horizon)
    "metaworld-ml1": ({"env_name": "reach-v3"}, 10, 5, 2, "tanh"),
}


def measure(name: str, *, calls: int, hidden: int, encoder: tuple[int, ...]) -> dict[str, Any]:
    kwargs, n_tasks, per_task, episodes, activation = SETTINGS[name]
    family = make_family(name, **kwargs)
    obs_dim, act_dim, discrete = family.policy_dims()
    tasks = family.sample_tasks(n_tasks, np.random.default_rng(0))
    mlp_spec = PolicySpec(obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=(100, 100), activation=activation,
                          discrete=discrete)
    rl2_spec = RecurrentPolicySpec(obs_dim, act_dim, discrete, encoder_sizes=encoder, hidden_size=hidden)
    mlp_params = make_policy(mlp_spec, seed=0).params()
    rl2_params = make_recurrent_policy(rl2_spec, seed=0).params()
    mlp = Sampler(family, mlp_spec, envs_per_task=per_task, seed=0)
    rl2 = TrialSampler(family, rl2_spec, trials_per_task=per_task, seed=0)
    unroll_s: list[float] = []
    original_finish = rl2._finish

    def timed_finish(*args: Any) -> Any:  # the torch unroll (log-probs, values) and the masking
        t0 = time.perf_counter()
        out = original_finish(*args)
        unroll_s.append(time.perf_counter() - t0)
        return out

    rl2._finish = timed_finish  # type: ignore[method-assign]
    mlp_rates, rl2_rates, rl2_seconds = [], [], []
    for call in range(calls + 1):  # the first call of each warms up (envs built, seeded)
        mlp.sample(tasks, mlp_params, episodes_per_task=per_task * episodes)
        rl2.sample(tasks, rl2_params, episodes_per_trial=episodes)
        if call:
            mlp_rates.append(mlp.last_stats.env_steps / mlp.last_stats.seconds)
            rl2_rates.append(rl2.last_stats.env_steps / rl2.last_stats.seconds)
            rl2_seconds.append(rl2.last_stats.seconds)
    mlp.close()
    rl2.close()
    mlp_rate, rl2_rate = statistics.median(mlp_rates), statistics.median(rl2_rates)
    unroll = statistics.median(unroll_s[1:])
    total = statistics.median(rl2_seconds)
    # multiply-accumulates per env step of the two policies' forward passes
    enc = (rl2_spec.input_dim, *encoder)
    rl2_macs = sum(a * b for a, b in zip(enc[:-1], enc[1:], strict=True)) + 3 * hidden * (enc[-1] + hidden) + \
        hidden * (act_dim + 1)
    mlp_macs = obs_dim * 100 + 100 * 100 + 100 * act_dim
    return {
        "family": name,
        "tasks": n_tasks,
        "sub_envs": n_tasks * per_task,
        "episodes_per_sub_env": episodes,
        "horizon": family.max_episode_steps,
        "steps_per_call": rl2.last_stats.env_steps,
        "mlp_policy": "2x100 " + activation,
        "rl2_policy": f"encoder {list(encoder)} tanh, GRU {hidden}",
        "mlp_steps_per_s": round(mlp_rate),
        "rl2_steps_per_s": round(rl2_rate),
        "ratio": round(rl2_rate / mlp_rate, 3),
        # each call's recurrent rate over the MLP rate of the call just before it (robust to drift)
        "ratio_paired_median": round(statistics.median(r / m for r, m in zip(rl2_rates, mlp_rates, strict=True)), 3),
        "mlp_runs": [round(r) for r in mlp_rates],
        "rl2_runs": [round(r) for r in rl2_rates],
        "rl2_profile": {
            "call_s": round(total, 4),
            "acting_loop_s": round(total - unroll, 4),
            "torch_unroll_s": round(unroll, 4),
        },
        "forward_macs_per_env_step": {"mlp": mlp_macs, "rl2": rl2_macs},
        "threads": torch.get_num_threads(),
    }


def measure_workers(name: str, *, calls: int, hidden: int, encoder: tuple[int, ...], workers: int) -> dict[str, Any]:
    """The comparison through ``workers`` rollout actors (see the module docstring)."""
    import tempfile

    import ray

    from algorithms.rl2.spec import RL2Spec
    from workers.pool import WorkerPool
    from workers.rollout import FamilyRef

    kwargs, n_tasks, per_task, episodes, activation = SETTINGS[name]
    family = make_family(name, **kwargs)
    obs_dim, act_dim, discrete = family.policy_dims()
    mlp_spec = PolicySpec(obs_dim=obs_dim, act_dim=act_dim, hidden_sizes=(100, 100), activation=activation,
                          discrete=discrete)
    rl2 = RL2Spec(episodes_per_trial=episodes, hidden_size=hidden, encoder_sizes=encoder)
    rl2_spec = RecurrentPolicySpec(obs_dim, act_dim, discrete, encoder_sizes=encoder, hidden_size=hidden)
    envs_per_worker = n_tasks * per_task // workers
    temp = tempfile.mkdtemp(prefix="ray-rl2bench-", dir="/tmp")
    # two pools of `workers` actors; only one samples at a time (calls alternate)
    ray.init(address="local", num_cpus=2 * workers, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    ref = FamilyRef(name, 0, dict(kwargs))
    pools = {
        "mlp": (WorkerPool(family=ref, policy_spec=mlp_spec, envs_per_worker=envs_per_worker, seed=0,
                           name_prefix="bench-mlp"), ray.put(make_policy(mlp_spec, seed=0).params())),
        "rl2": (WorkerPool(family=ref, policy_spec=rl2_spec, envs_per_worker=envs_per_worker, seed=0,
                           name_prefix="bench-rl2", algorithm=rl2),
                ray.put(make_recurrent_policy(rl2_spec, seed=0).params())),
    }
    rates: dict[str, list[float]] = {"mlp": [], "rl2": []}
    rng = np.random.default_rng(0)
    try:
        for pool, _ in pools.values():
            pool.resize(workers)
        for call in range(calls + 1):  # the first call warms up (envs built, seeded)
            tasks = family.sample_tasks(n_tasks, rng)
            for kind, (pool, params) in pools.items():
                t0 = time.perf_counter()
                res = pool.sample(params, tasks, episodes_per_task=per_task * episodes, label=f"{call}:{kind}")
                seconds = time.perf_counter() - t0
                if call:
                    rates[kind].append(sum(st.env_steps for st in res.stats) / seconds)
    finally:
        for pool, _ in pools.values():
            pool.shutdown()
        ray.shutdown()
    mlp_rate, rl2_rate = statistics.median(rates["mlp"]), statistics.median(rates["rl2"])
    return {
        "family": name,
        "through": f"{workers} rollout actors (WorkerPool), envs_per_worker {envs_per_worker}",
        "tasks": n_tasks,
        "episodes_per_task": per_task * episodes,
        "horizon": family.max_episode_steps,
        "mlp_policy": "2x100 " + activation,
        "rl2_policy": f"encoder {list(encoder)} tanh, GRU {hidden}, {episodes} episodes per trial",
        "mlp_steps_per_s": round(mlp_rate),
        "rl2_steps_per_s": round(rl2_rate),
        "ratio": round(rl2_rate / mlp_rate, 3),
        "ratio_paired_median": round(statistics.median(r / m for r, m in zip(rates["rl2"], rates["mlp"], strict=True)),
                                     3),
        "mlp_runs": [round(r) for r in rates["mlp"]],
        "rl2_runs": [round(r) for r in rates["rl2"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="halfcheetah-vel,navigation2d")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--encoder", default="64", help="comma-separated widths (empty: none)")
    parser.add_argument("--workers", type=int, default=0,
                        help="measure through this many rollout actors on a private local Ray (0: in this process)")
    args = parser.parse_args()
    encoder = tuple(int(w) for w in args.encoder.split(",") if w)
    torch.set_num_threads(1)
    for name in args.families.split(","):
        if args.workers:
            out = measure_workers(name, calls=args.calls, hidden=args.hidden, encoder=encoder, workers=args.workers)
        else:
            out = measure(name, calls=args.calls, hidden=args.hidden, encoder=encoder)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
