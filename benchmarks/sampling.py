"""Sampling throughput: the env alone, our sampler in one process, our rollout actors driven
through Ray with episodes delivered to the learner's process, and RLlib's PPO env runners on the
same env -- all in one run, so the baselines share the machine's state.

Prints one JSON object per line (and writes them to ``benchmarks/results/sampling.jsonl``):

* our rows (``"env"``, ``"workers"``): ``raw_steps_per_s`` (the family's own single env --
  simulator plus the task wrapper -- stepped in a plain loop with actions drawn beforehand and a
  reset at the end of each episode, no policy), ``bare_steps_per_s`` (the simulator's env
  without our wrapper), ``sampler_steps_per_s`` (a :class:`~workers.sampler.Sampler` in this
  process, 2x100 policy included), ``system_steps_per_s`` (``workers.pool.WorkerPool`` actors in
  a local ``ray.init(num_cpus=N)``, from submitting a call until the learner actor holds the
  episodes), ``efficiency = system / (workers x raw)`` and ``ratio_vs_rllib``;
* peer rows (``"peer": "rllib"``): RLlib PPO (new API stack) with the same number of env
  runners on the same family env, ``num_env_steps_sampled_lifetime_throughput``.

The raw baseline is measured in chunks interleaved with the measured calls (the machine's speed
drifts by up to 10% over minutes), and each row's efficiency uses the chunks of its own phase.
Every row records the load: the CPU seconds used during its measurement by processes outside
this benchmark's process tree, as a fraction of the machine (``foreign_cpu_frac``), and the
hypervisor's steal time (``steal_frac``).

    python benchmarks/sampling.py [--envs halfcheetah-vel,reach-v3,navigation2d] [--workers 1,2]
                                  [--calls 3] [--no-rllib] [--out PATH]

The RLlib peer needs the ``rllib`` extra (``make bench`` installs it and runs this script);
without it every other figure is measured and each row says ``"rllib": "skipped: ..."``.
"""

from __future__ import annotations

import os

# one BLAS/OpenMP thread everywhere (the rollout actors get the same from Ray's num_cpus=1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from algorithms.policies import PolicySpec, make_policy  # noqa: E402
from workers.envs import TaskFamily, make_family  # noqa: E402
from workers.rollout import FamilyRef  # noqa: E402
from workers.sampler import Sampler  # noqa: E402

RESULTS = Path(__file__).parent / "results"
HIDDEN = (100, 100)


@dataclass(frozen=True)
class Setting:
    """One env of the benchmark and its batch per call."""

    name: str
    family: str
    kwargs: dict[str, Any]
    tasks: int
    episodes: int
    envs_per_worker: int
    bare: Callable[[TaskFamily], tuple[gym.Env, str]]
    raw_chunk: int
    rllib_batch_per_runner: int
    activation: str = "tanh"  # the preset's (workers/presets)
    rllib_envs_per_runner: int = 10
    notes: dict[str, Any] = field(default_factory=dict)


def _bare_cheetah(family: TaskFamily) -> tuple[gym.Env, str]:
    from workers.envs.mujoco import CHEETAH_CTRL_COST_WEIGHT

    env = gym.make("HalfCheetah-v5", ctrl_cost_weight=CHEETAH_CTRL_COST_WEIGHT,
                   max_episode_steps=family.max_episode_steps)
    return env, ("gymnasium.make('HalfCheetah-v5', ctrl_cost_weight=0.05) "
                 "(TimeLimit/OrderEnforcing/PassiveEnvChecker wrappers)")


def _bare_metaworld(family: TaskFamily) -> tuple[gym.Env, str]:
    import pickle

    task = family.sample_tasks(1, np.random.default_rng(0))[0]
    mw_task = pickle.loads(task.data)
    env = family.benchmark.train_classes[mw_task.env_name]()  # type: ignore[attr-defined]
    env.set_task(mw_task)
    return env, f"metaworld {mw_task.env_name} class instance with an ML1 train task set (no wrapper)"


def _bare_navigation(family: TaskFamily) -> tuple[gym.Env, str]:
    return (family.make_env(family.sample_tasks(1, np.random.default_rng(0))[0]),
            "Navigation2DEnv (the family env itself)")


SETTINGS = {
    # 10 tasks x 10 episodes x 200 steps = 20,000 steps per call
    "halfcheetah-vel": Setting("halfcheetah-vel", "halfcheetah-vel", {}, tasks=10, episodes=10, envs_per_worker=100,
                               bare=_bare_cheetah, raw_chunk=5_000, rllib_batch_per_runner=4000, activation="relu"),
    # 4 tasks x 5 episodes x 500 steps = 10,000 steps per call
    "reach-v3": Setting("reach-v3", "metaworld-ml1", {"env_name": "reach-v3"}, tasks=4, episodes=5, envs_per_worker=20,
                        bare=_bare_metaworld, raw_chunk=1_500, rllib_batch_per_runner=2000),
    # 20 tasks x 20 episodes x 100 steps = 40,000 steps per call (natively batched vector env)
    "navigation2d": Setting("navigation2d", "navigation2d", {}, tasks=20, episodes=20, envs_per_worker=400,
                            bare=_bare_navigation, raw_chunk=20_000, rllib_batch_per_runner=4000, activation="relu"),
}


# --- load ----------------------------------------------------------------------------------------
def process_cpu() -> dict[int, tuple[int, float]]:
    """Every process's parent and CPU seconds so far (user + system), from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tick)  # ppid, utime + stime
    return out


class LoadMeter:
    """CPU seconds used by processes outside this process tree during a measurement (from
    ``/proc``: the machine's busy time minus that of this process and its descendants)."""

    _TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self) -> None:
        self._t = time.perf_counter()
        self._busy = self._machine_busy()
        self._steal = self._machine_steal()
        self._ours = self._tree_cpu()
        self._load = os.getloadavg()[0]

    @classmethod
    def _machine_busy(cls) -> float:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...
        return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / cls._TICK

    @classmethod
    def _machine_steal(cls) -> float:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8]) / cls._TICK

    @classmethod
    def _tree_cpu(cls) -> dict[int, float]:
        procs = process_cpu()
        parent = {pid: ppid for pid, (ppid, _) in procs.items()}
        cpu = {pid: seconds for pid, (_, seconds) in procs.items()}
        me = os.getpid()
        ours = {}
        for pid in cpu:
            p, seen = pid, 0
            while p > 1 and seen < 64:
                if p == me:
                    ours[pid] = cpu[pid]
                    break
                p = parent.get(p, 0)
                seen += 1
        return ours

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._t
        busy = self._machine_busy() - self._busy
        ours_end = self._tree_cpu()
        # processes of our tree that started during the window count from 0
        ours = sum(v - self._ours.get(pid, 0.0) for pid, v in ours_end.items())
        ncpu = os.cpu_count() or 1
        return {
            "foreign_cpu_frac": round(max(0.0, busy - ours) / (wall * ncpu), 3),
            "own_cpu_frac": round(ours / (wall * ncpu), 3),
            "steal_frac": round((self._machine_steal() - self._steal) / (wall * ncpu), 3),
            "loadavg_1m_start": round(self._load, 2),
        }


# --- measurements ---------------------------------------------------------------------------------
def raw_loop(env: gym.Env, steps: int, horizon: int, seed: int = 0) -> float:
    """Steps/s of a plain loop of ``env.step`` (actions drawn beforehand, reset at episode end)."""
    rng = np.random.default_rng(seed)
    space = env.action_space
    actions = rng.uniform(space.low, space.high, size=(steps, *space.shape)).astype(space.dtype)
    env.reset(seed=seed)
    t = 0
    start = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[i])
        t += 1
        if terminated or truncated or t >= horizon:
            env.reset()
            t = 0
    return steps / (time.perf_counter() - start)


class RawProbe:
    """The raw baseline, measured in chunks interleaved with the measured calls, so that the
    baseline and the measurement see the machine in the same state (its speed drifts by up to
    10% over minutes here).  Keeps every chunk's rate, by phase."""

    def __init__(self, setting: Setting, family: TaskFamily) -> None:
        self.setting, self.family = setting, family
        self.env = family.make_env(family.sample_tasks(1, np.random.default_rng(0))[0])
        self.bare, self.bare_desc = setting.bare(family)
        raw_loop(self.env, 200, family.max_episode_steps)
        raw_loop(self.bare, 200, family.max_episode_steps)
        self.runs: dict[str, list[float]] = {}
        self.bare_runs: list[float] = []
        self._seed = 0

    def chunk(self, phase: str, *, bare: bool = False) -> float:
        self._seed += 1
        h = self.family.max_episode_steps
        rate = raw_loop(self.env, self.setting.raw_chunk, h, self._seed)
        self.runs.setdefault(phase, []).append(rate)
        if bare:
            self.bare_runs.append(raw_loop(self.bare, self.setting.raw_chunk, h, self._seed))
        return rate

    def rate(self, phase: str) -> float:
        return statistics.median(self.runs[phase])

    def all_runs(self) -> list[float]:
        return [x for runs in self.runs.values() for x in runs]

    def close(self) -> None:
        self.env.close()
        self.bare.close()


def policy_spec(family: TaskFamily, activation: str) -> PolicySpec:
    space = family.action_space
    discrete = isinstance(space, gym.spaces.Discrete)
    return PolicySpec(obs_dim=int(family.observation_space.shape[0]),
                      act_dim=int(space.n if discrete else space.shape[0]),
                      hidden_sizes=HIDDEN, activation=activation, discrete=discrete)


def measure_sampler(setting: Setting, family: TaskFamily, calls: int, probe: RawProbe, phase: str) -> dict[str, Any]:
    """The sampler in this process with the batch of one worker holding all tasks; a raw chunk
    (and a bare-env chunk) before every call."""
    spec = policy_spec(family, setting.activation)
    params = make_policy(spec, seed=0).params()
    envs_per_task = max(1, min(setting.episodes, setting.envs_per_worker // setting.tasks))
    sampler = Sampler(family, spec, envs_per_task=envs_per_task, seed=0)
    rng = np.random.default_rng(1)
    sampler.sample(family.sample_tasks(setting.tasks, rng), params, episodes_per_task=setting.episodes)
    meter = LoadMeter()
    steps, seconds, rates, raws = 0, 0.0, [], []
    for _ in range(calls):
        raws.append(probe.chunk(phase, bare=True))
        sampler.sample(family.sample_tasks(setting.tasks, rng), params, episodes_per_task=setting.episodes)
        steps += sampler.last_stats.env_steps
        seconds += sampler.last_stats.seconds
        rates.append(sampler.last_stats.env_steps / sampler.last_stats.seconds)
    raws.append(probe.chunk(phase, bare=True))
    load = meter.stop()
    sampler.close()
    return {"rate": steps / seconds, "envs_per_task": envs_per_task, "paired": paired(rates, raws, 1), "phase": phase,
            **load}


def _deliver(learner_self: Any, *shards: list[Any]) -> int:
    """Runs in the learner actor: the episodes arrived there (resolved by Ray); count steps."""
    return sum(e.num_steps for shard in shards for e in shard)


def _raw_in_actor(worker: Any, setting: Setting, steps: int, seed: int) -> float:
    """Runs inside a rollout actor (``__ray_call__``): a raw loop of one env of its family."""
    family = worker.family
    env = family.make_env(family.sample_tasks(1, np.random.default_rng(seed))[0])
    raw_loop(env, 200, family.max_episode_steps, seed)
    rate = raw_loop(env, steps, family.max_episode_steps, seed)
    env.close()
    return rate


def raw_parallel(setting: Setting, actors: list[Any], seed: int) -> float:
    """A raw loop in each rollout actor at once: the machine's ceiling for that many concurrent
    simulators (their steps/s summed), in the very processes that sample.  (Fresh Ray worker
    processes for these loops were measured to slow the calls after them: a new worker's start-up
    and clean-up run beside the rollout actors -- reach-v3 with 2 workers: 0.57 of raw with them
    between the calls, 0.78 without.)"""
    import ray

    refs = [a.__ray_call__.remote(_raw_in_actor, setting, setting.raw_chunk, seed * 10 + i)
            for i, a in enumerate(actors)]
    return sum(ray.get(refs))


def paired(rates: list[float], raws: list[float], workers: int) -> list[float]:
    """Call ``i``'s rate over ``workers`` x the mean of the raw chunks run just before and after it."""
    return [r / (workers * (a + b) / 2) for r, a, b in zip(rates, raws[:-1], raws[1:], strict=False)]


def measure_system(setting: Setting, family: TaskFamily, workers: int, calls: int, learner: Any, probe: RawProbe,
                   phase: str) -> dict[str, Any]:
    """WorkerPool actors, episodes delivered to the learner actor; a raw chunk in this process
    before every call (the actors are idle then)."""
    import ray

    from workers.pool import WorkerPool

    spec = policy_spec(family, setting.activation)
    params = make_policy(spec, seed=0).params()
    pool = WorkerPool(family=FamilyRef(setting.family, 0, dict(setting.kwargs)), policy_spec=spec,
                      envs_per_worker=setting.envs_per_worker, seed=0, name_prefix=f"bench-{setting.name}-{workers}")
    rng = np.random.default_rng(2)
    try:
        pool.resize(workers)
        omp = ray.get([a.__ray_call__.remote(lambda self: os.environ.get("OMP_NUM_THREADS")) for a in pool.actors])

        balance: list[float] = []  # mean / slowest shard time, per call
        in_shards: list[float] = []  # slowest shard time / call time (the rest is Ray and the learner)

        def one_call() -> tuple[int, int, float, list[float]]:
            tasks = family.sample_tasks(setting.tasks, rng)
            start = time.perf_counter()
            params_ref = ray.put(params)
            res = pool.sample(params_ref, tasks, episodes_per_task=setting.episodes)
            delivered = ray.get(learner.__ray_call__.remote(_deliver, *res.episode_refs))
            seconds = time.perf_counter() - start
            steps = sum(s.env_steps for s in res.stats)
            shard_s = [st.seconds for st in res.stats]
            balance.append(statistics.mean(shard_s) / max(shard_s))
            in_shards.append(max(shard_s) / seconds)
            return steps, delivered, seconds, [s.env_steps / s.seconds for s in res.stats]

        one_call()  # warm-up: envs built, code paths hot
        balance.clear()
        in_shards.clear()
        meter = LoadMeter()
        steps, delivered, seconds, worker_rates, call_rates, raws, par = 0, 0, 0.0, [], [], [], []

        def probes(i: int) -> None:
            raws.append(probe.chunk(phase))
            if workers > 1:
                par.append(raw_parallel(setting, pool.actors, i))

        for i in range(calls):
            probes(i)
            s, d, sec, rates = one_call()
            steps += s
            delivered += d
            seconds += sec
            worker_rates.extend(rates)
            call_rates.append(s / sec)
        probes(calls)
        load = meter.stop()
    finally:
        pool.shutdown()
    out = {"system": steps / seconds, "worker_rate": statistics.mean(worker_rates), "steps": steps,
           "delivered_steps": delivered, "seconds": seconds, "actor_omp_threads": omp, "phase": phase,
           "paired": paired(call_rates, raws, workers), "shard_balance": statistics.mean(balance),
           "time_in_shards": statistics.mean(in_shards), **load}
    if par:
        out["parallel"] = par
        out["paired_parallel"] = paired(call_rates, par, 1)
    return out


def _rllib_env_creator(config: dict[str, Any]) -> gym.Env:
    family = make_family(config["family"], **config.get("kwargs", {}))
    index = int(getattr(config, "worker_index", 0)) * 100 + int(getattr(config, "vector_index", 0))
    task = family.sample_tasks(1, np.random.default_rng(index))[0]
    return family.make_env(task)


def measure_rllib(setting: Setting, workers: int, iterations: int, probe: RawProbe, phase: str) -> dict[str, Any]:
    """RLlib PPO (new API stack), ``workers`` env runners on the family's single env.  Raw
    chunks run before the warm-up ``train()`` and after the last one, not between them: RLlib's
    throughput is the steps since its last reduce over the time since then, which would count
    them."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    register_env("metarl-family", _rllib_env_creator)
    batch = setting.rllib_batch_per_runner * workers
    config = (
        PPOConfig()
        .environment("metarl-family", env_config={"family": setting.family, "kwargs": dict(setting.kwargs)})
        .framework("torch")
        .env_runners(num_env_runners=workers, num_envs_per_env_runner=setting.rllib_envs_per_runner,
                     num_cpus_per_env_runner=1, rollout_fragment_length="auto")
        .resources(num_cpus_for_main_process=0)
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=batch, minibatch_size=batch, num_epochs=1)
        .rl_module(model_config={"fcnet_hiddens": list(HIDDEN), "fcnet_activation": setting.activation})
    )
    algo = config.build_algo()
    try:
        probe.chunk(phase)
        probe.chunk(phase)
        algo.train()  # warm-up
        meter = LoadMeter()
        throughputs, sampled, wall = [], 0.0, 0.0
        for _ in range(iterations):
            start = time.perf_counter()
            result = algo.train()
            wall += time.perf_counter() - start
            runners = result["env_runners"]
            tp = runners["num_env_steps_sampled_lifetime_throughput"]
            # in 2.60 a dict: {"throughput_since_last_reduce": .., "throughput_since_last_restore": ..}
            throughputs.append(float(tp["throughput_since_last_reduce"]) if isinstance(tp, dict) else float(tp))
            sampled += float(runners["num_env_steps_sampled"])
        load = meter.stop()
        probe.chunk(phase)
        probe.chunk(phase)
    finally:
        algo.stop()
    return {
        "lifetime_throughput": statistics.mean(throughputs),
        "lifetime_throughput_per_iteration": [round(x, 1) for x in throughputs],
        "steps_per_train_s": sampled / wall,
        "config": {"num_env_runners": workers, "num_envs_per_env_runner": setting.rllib_envs_per_runner,
                   "train_batch_size_per_learner": batch, "minibatch_size": batch, "num_epochs": 1,
                   "fcnet_hiddens": list(HIDDEN), "fcnet_activation": setting.activation, "api_stack": "new",
                   "measured_iterations": iterations},
        "phase": phase,
        **load,
    }


# --- main ---------------------------------------------------------------------------------------------
def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


LOAD_KEYS = ("foreign_cpu_frac", "own_cpu_frac", "steal_frac", "loadavg_1m_start")


def _rllib_missing() -> str | None:
    """Why the RLlib peer cannot run here, or None when it can (the ``rllib`` extra installed)."""
    import importlib.util

    for module in ("tree", "ray.rllib"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return (f"skipped: RLlib is not installed (no module {module!r}); `make bench` installs the rllib extra "
                    "(pip install -e '.[rllib]') and runs this benchmark with it")
    return None


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", default="halfcheetah-vel,reach-v3,navigation2d")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--rllib-iterations", type=int, default=3)
    parser.add_argument("--no-rllib", action="store_true")
    parser.add_argument("--max-foreign", type=float, default=0.05,
                        help="repeat a measurement during which other processes used more than this share of the CPUs")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--retry-wait", type=float, default=20.0)
    parser.add_argument("--out", default=str(RESULTS / "sampling.jsonl"))
    return parser.parse_args()


def _quiet(args: argparse.Namespace, label: str, fn: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """``fn(phase)``, repeated (up to ``--retries`` times) while other processes used more than
    ``--max-foreign`` of the machine during it; the attempts are recorded."""
    attempts = []
    for attempt in range(args.retries + 1):
        result = fn(f"{label}#{attempt}")
        attempts.append(result["foreign_cpu_frac"])
        if result["foreign_cpu_frac"] <= args.max_foreign:
            break
        time.sleep(args.retry_wait)
    result["attempts_foreign_cpu_frac"] = attempts
    return result


def _our_row(setting: Setting, family: Any, w: int, r: dict[str, Any], local: dict[str, Any], probe: RawProbe, *,
             ncpu: int, calls: int, batch: dict[str, Any], peer: dict[str, Any] | None, skipped: str | None
             ) -> dict[str, Any]:
    raw = probe.rate(r["phase"])
    sampler_raw = probe.rate(local["phase"])
    row: dict[str, Any] = {
        "env": setting.name, "family": setting.family, "workers": w,
        "raw_steps_per_s": round(raw, 1),
        "raw_env": "the family's own env (simulator + task reward wrapper), one process, actions drawn "
                   "beforehand, reset at episode end; median of chunks run between this row's calls",
        "raw_runs": [round(x, 1) for x in probe.runs[r["phase"]]],
        "raw_median_all_phases": round(statistics.median(probe.all_runs()), 1),
        "bare_steps_per_s": round(statistics.median(probe.bare_runs), 1), "bare_env": probe.bare_desc,
        "bare_vs_raw": round(statistics.median(probe.bare_runs) / sampler_raw, 3),
        "sampler_steps_per_s": round(local["rate"], 1),
        "sampler_efficiency": round(local["rate"] / sampler_raw, 3),
        "sampler_efficiency_paired": _spread(local["paired"]),
        "sampler_raw_steps_per_s": round(sampler_raw, 1),
        "system_steps_per_s": round(r["system"], 1),
        "efficiency": round(r["system"] / (w * raw), 3),
        "efficiency_paired": _spread(r["paired"]),
        "worker_steps_per_s": round(r["worker_rate"], 1),
        "worker_efficiency": round(r["worker_rate"] / raw, 3),
        "shard_balance": round(r["shard_balance"], 3),
        "time_in_slowest_shard": round(r["time_in_shards"], 3),
        "delivered_steps": r["delivered_steps"], "simulated_steps": r["steps"],
        "batch": batch, "calls": calls, "policy": f"{len(HIDDEN)}x{HIDDEN[0]} {setting.activation}",
        "system": f"WorkerPool actors in a local ray.init(num_cpus={ncpu}); time from submit until the "
                  "learner actor holds the episodes",
        "actor_omp_threads": r["actor_omp_threads"],
        **{k: r[k] for k in LOAD_KEYS},
        "sampler_foreign_cpu_frac": local["foreign_cpu_frac"],
        "attempts_foreign_cpu_frac": r["attempts_foreign_cpu_frac"],
    }
    if "parallel" in r:
        par = statistics.median(r["parallel"])
        row["raw_parallel_steps_per_s"] = round(par, 1)
        row["raw_parallel_runs"] = [round(x, 1) for x in r["parallel"]]
        row["raw_parallel_scaling"] = round(par / (w * raw), 3)
        row["efficiency_vs_raw_parallel"] = round(r["system"] / par, 3)
        row["efficiency_vs_raw_parallel_paired"] = _spread(r["paired_parallel"])
    if peer is not None:
        row["rllib_steps_per_s"] = round(peer["lifetime_throughput"], 1)
        row["ratio_vs_rllib"] = round(r["system"] / peer["lifetime_throughput"], 2)
    else:
        row["rllib"] = skipped
    return row


def _peer_row(setting: Setting, w: int, p: dict[str, Any], probe: RawProbe) -> dict[str, Any]:
    raw = probe.rate(p["phase"])
    return {
        "env": setting.name, "peer": "rllib", "workers": w,
        "system_steps_per_s": round(p["lifetime_throughput"], 1),
        "metric": "result['env_runners']['num_env_steps_sampled_lifetime_throughput']"
                  "['throughput_since_last_reduce'], mean over the measured train() calls",
        "lifetime_throughput_per_iteration": p["lifetime_throughput_per_iteration"],
        "steps_per_train_s": round(p["steps_per_train_s"], 1),
        "raw_steps_per_s": round(raw, 1),
        "efficiency": round(p["lifetime_throughput"] / (w * raw), 3),
        "env_creator": "ray.tune.registry.register_env with the family's single env (same wrapper as raw)",
        "config": p["config"],
        **{k: p[k] for k in LOAD_KEYS},
        "attempts_foreign_cpu_frac": p["attempts_foreign_cpu_frac"],
    }


def _measure_env(name: str, args: argparse.Namespace, worker_counts: list[int], skipped: str | None,
                 ncpu: int) -> list[dict[str, Any]]:
    """Every row of one env: ours for each worker count, then the RLlib peer's."""
    import ray

    from algorithms.maml import MAMLSpec
    from workers.learner import remote_learner

    setting = SETTINGS[name]
    family = make_family(setting.family, **setting.kwargs)
    spec = policy_spec(family, setting.activation)
    learner = remote_learner(gpus=0).remote(MAMLSpec(), spec, seed=0, gpus=0)
    ray.get(learner.get_iteration.remote())
    probe = RawProbe(setting, family)
    local = _quiet(args, "sampler", functools.partial(measure_sampler, setting, family, args.calls, probe))
    ours: dict[int, dict[str, Any]] = {}
    peers: dict[int, dict[str, Any]] = {}
    for w in worker_counts:
        ours[w] = _quiet(args, f"system-{w}",
                         functools.partial(measure_system, setting, family, w, args.calls, learner, probe))
        if skipped is None:
            peers[w] = _quiet(args, f"rllib-{w}",
                              functools.partial(measure_rllib, setting, w, args.rllib_iterations, probe))
    ray.kill(learner)
    probe.close()
    batch = {"tasks": setting.tasks, "episodes_per_task": setting.episodes, "horizon": family.max_episode_steps,
             "steps_per_call": setting.tasks * setting.episodes * family.max_episode_steps,
             "envs_per_worker": setting.envs_per_worker}
    rows = [_our_row(setting, family, w, ours[w], local, probe, ncpu=ncpu, calls=args.calls, batch=batch,
                     peer=peers.get(w), skipped=skipped) for w in worker_counts]
    return rows + [_peer_row(setting, w, p, probe) for w, p in peers.items()]


def main() -> None:
    args = _parse()
    skipped = "skipped: --no-rllib" if args.no_rllib else _rllib_missing()
    if skipped:
        print(f"RLlib peer {skipped}", file=sys.stderr, flush=True)
    names = [n for n in args.envs.split(",") if n]
    worker_counts = [int(w) for w in args.workers.split(",") if w]
    torch.set_num_threads(1)
    logging.getLogger("ray").setLevel(logging.WARNING)

    import ray

    ncpu = max(worker_counts)
    tmp = tempfile.mkdtemp(prefix="metarl-bench-")
    ray.init(num_cpus=ncpu, include_dashboard=False, _temp_dir=tmp, logging_level=logging.WARNING)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        for name in names:
            for row in _measure_env(name, args, worker_counts, skipped, ncpu):
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()
        with out_path.open("w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
