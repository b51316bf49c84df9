"""Supervised few-shot meta-learning: the engine's learners against the papers and simple baselines.

Three parts (``--part sinusoid|digits|speed|all``); each prints one JSON object per measurement and
writes one JSON file (and, for the first two, a PNG) to ``--results-dir`` (``benchmarks/results``).

**sinusoid** (``supervised_sinusoid.json``, ``supervised_sinusoid.png``).  K-shot sine regression,
K = 5, 10, 20, for MAML (``sl-maml``, second order) and Meta-SGD, in the papers' setting, and the
query MSE after adaptation against Li et al. 2017 (Meta-SGD), Table 1.  What Table 1 reports (as
far as we can reconstruct the protocol without the paper at hand; see ``PAPER``): MAML and
Meta-SGD both adapt with **one** inner step (in meta-training and at meta-test), MAML with the
fixed α = 0.01, Meta-SGD with its learned per-parameter α; the mean squared error over 100 test
tasks with a 95% interval: MAML 0.686 / 0.435 / 0.228 and Meta-SGD 0.482 / 0.26 / 0.127 for
K = 5 / 10 / 20 (the targets: ours must be at most these).  Setting used here, from the MAML paper
(Finn et al. 2017, sec. 5.1; the ``sinusoid-maml`` preset): amplitude U[0.1, 5], phase U[0, π],
x U[-5, 5]; a 1-40-40-1 ReLU MLP; meta-batch 25 tasks of K support and K query points; Adam with
step 1e-3; α = 0.01 and one inner step for MAML; Meta-SGD's α initialised to 0.01 everywhere (Li
et al. draw it from [0.005, 0.1]: a difference).  ``--iterations`` meta-iterations, default
20,000, not the MAML paper's 70,000 (``paper_iterations`` in the JSON): an iteration takes 3 ms
on an idle core but 14-38 ms on the shared 2-core machine this was measured on, so the paper's
count for the 6 runs would take 1.5-3 hours; the learning curves show where 20,000 stands.
Training is the engine's in-process path of a job (a :class:`JobSpec` built from
the preset, ``registry.make_learner(spec.algorithm, spec.model_spec(dist))``,
:func:`workers.loop.train_in_process`: the same plan, phase runner and episode sampler a job
runs); the learning curve is the query MSE after one step on 100 fixed *validation* tasks every
``--curve-every`` iterations.  The meta-test is the engine's own (``workers.evaluate.evaluate`` on
the trained model saved as a job registers it): ``--test-tasks`` (600) test tasks, one step, the
MSE per task over 100 query points (more than K query points only sharpens each task's figure;
the expectation is the same) with a 95% Student-t interval.  MAML's figure after 10 steps (the
MAML paper's Fig. 2 protocol) is reported too.  Baselines on the same 600 test tasks, measured in
the same run: the MAML paper's "pretrained on all tasks" (the same MLP regressing pooled points of
random sinusoids, Adam 1e-3, ``--pretrain-iterations``, then fine-tuned on the K points with 1 or
10 SGD steps whose step size is picked on validation tasks from 0.001..0.1) and the same
fine-tuning from a random initialisation.

**digits** (``supervised_digits.json``, ``supervised_digits.png``).  ``digits-rotations`` 5-way
1-shot and 5-shot (8x8 scikit-learn digits times 4 rotations; the conv4 network, 64 channels):
the eight learners trained through the same in-process job path, each meta-tested by
``workers.evaluate.evaluate`` on the **same** ``--test-episodes`` (600) test episodes (15 queries
per class, one seed for every learner; the benchmark checks the episodes' tasks are the same),
accuracy with a 95% interval.  Baselines on those episodes: (a) fine-tuning from scratch -- a fresh
conv4 of the same architecture trained on each support set with Adam for ``--finetune-steps``
(100) steps, its step size picked on 100 validation episodes from {1e-3, 1e-2}; (b) nearest
neighbour on the raw pixels (1-NN; for 5-shot also the nearest class mean; the better of the two is
the baseline to beat).  Settings: the presets' (``digits-maml``: α = 0.4, one inner step in
training, 3 at test, Adam 1e-3, second order; ``digits-protonet``: Adam 1e-3, meta-batch 8, 15
queries per class) with the gradient-based learners' meta-batch 8 and 5 training queries per class
instead of the preset's 32 and 15 (the preset's MAML step takes 0.73 s here: 2,000 iterations of
it would take the whole budget), and the iteration counts of ``DIGITS_LEARNERS`` (300, Reptile
200: sized for about 40 minutes on the shared 2 cores, where other jobs left this benchmark an
eighth to a quarter of a core -- a digits MAML step took 0.46 s instead of 55 ms; far fewer than
the presets' 2,000).  Reptile: Nichol et al.'s Omniglot inner loop (Adam 1e-3, β1 = 0, 5 steps,
meta-batch 5), ε = 1 constant, 20 steps at meta-test instead of their 50 (time).  The LSTM
meta-learner: the ``digits-meta-lstm`` preset (12 updates in training and at test, Adam 1e-3,
clipped to 0.25).  The learned LSTM optimizer (``digits-lstm-optimizer``): its optimizee is the
paper's one-hidden-layer MLP (20 units) on the flattened image, trained from a fresh random
initialisation on each support set for T = 100 steps (truncations of 20) -- an optimizer, not a
few-shot learner: it is here to show what a learned update rule on a small network reaches from
scratch on the same episodes.  Meta-SGD: α
initialised to MAML's 0.4.  Matching Networks without full-context embeddings.  The two shot
settings can run as two processes (``--digits-shots 1`` and ``--digits-shots 5`` into two
directories) whose files ``--merge-digits DIR1,DIR2`` joins.  Caveat from the data set: the test classes are
the digits 8 and 1, which a 180° turn maps onto about themselves, so a test task can hold
near-twin classes; the accuracies are below what the same learners reach on Omniglot.

**digits on the glyphs** (``--family glyphs``: ``supervised_glyphs.json``, ``supervised_glyphs.png``).
The same part on ``glyphs`` (:mod:`workers.supervised.glyphs`): procedurally drawn characters
with Omniglot's shape -- 1,623 characters of 1-3 pen strokes, 20 drawings each, Omniglot's
1100/100/423 character split, 16x16 images (the conv4 pools them to 1x1 without rounding) -- so
the test tasks are characters never seen in training, which the 8x8 digits' six training digits
cannot give.  Same learners, settings, iteration counts, test protocol and baselines.

**speed** (``supervised_speed.json``).  (a) One MAML outer step (second order, 5-way 1-shot
digits, conv4, meta-batch 32, 15 queries per class; and the sinusoid MLP, K = 10, meta-batch 25):
the engine's default path (``task_batching="auto"``: vmap on a GPU and for MLPs, the loop for
conv4 on a CPU) and the learner's batched path (``"vmap"``: ``torch.func.vmap`` over the tasks of a
per-task ``torch.func.grad``) against the plain per-task loop (``"loop"``, ``torch.autograd.grad``
with ``create_graph`` task by task), the same model and batch, calls interleaved; ms per step and
the ratios loop / engine (goal >= 1 on CPU) and loop / vmap.  (b) Episodes per second of the actor-fed pipeline: a
meta-batch's episodes drawn by the job's rollout actors (``workers.pool.WorkerPool`` over
``workers.episode_sampler.EpisodeSampler``, on a private local Ray with ``num_cpus=2`` and its temp
dir under a temp directory, or the caller's Ray if one is running) and fetched by the caller,
against the same ``EpisodeSampler`` in this process; ratio = actors / in process.

One torch thread (the machine's other benchmark holds the cores: with 2 threads a digits MAML step
took 3 s instead of 55 ms).  Fixed seeds throughout.

    python benchmarks/supervised.py --part all
    python benchmarks/supervised.py --part sinusoid [--iterations 70000] [--shots 5,10,20] [--test-tasks 600]
    python benchmarks/supervised.py --part digits [--family glyphs] [--digits-iterations N] [--test-episodes 600]
    python benchmarks/supervised.py --part speed [--speed-repeats 5] [--ray-workers 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from algorithms import registry  # noqa: E402
from algorithms.supervised.data import SupportQuery  # noqa: E402
from algorithms.supervised.learner import SupervisedLearner  # noqa: E402
from algorithms.supervised.nets import NetSpec, make_net  # noqa: E402
from workers.contract import JobSpec  # noqa: E402
from workers.distributions import build_distribution  # noqa: E402
from workers.evaluate import EvaluationReport, Interval, evaluate  # noqa: E402
from workers.loop import IterationResult, train_in_process  # noqa: E402
from workers.model.policy import BaseMetaPolicy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = ROOT / "workers" / "presets"

#: Li et al. 2017 (Meta-SGD), Table 1: query MSE after one step, mean over 100 test tasks (95%
#: intervals in the paper), K = 5 / 10 / 20 -- the targets
PAPER = {
    "source": "Li, Zhou, Chen & Li 2017, Meta-SGD: Learning to Learn Quickly for Few-Shot Learning, Table 1 "
              "(sinusoid regression, 1 inner step in training and at meta-test, MSE over 100 test tasks)",
    "sl-maml": {5: 0.686, 10: 0.435, 20: 0.228},
    "meta-sgd": {5: 0.482, 10: 0.26, 20: 0.127},
}
PAPER_ITERATIONS = 70_000  # Finn et al. 2017's sinusoid runs (the sinusoid-maml preset)
SINE_EVAL_QUERIES = 100
CURVE_TASKS = 100
FINETUNE_LRS = (0.001, 0.003, 0.01, 0.03, 0.1)

#: digits learners: algorithm spec, meta-batch, training queries per class, default iterations
#: (the gradient-based ones: the digits-maml preset's algorithm; ProtoNets: the digits-protonet preset)
DIGITS_LEARNERS: dict[str, tuple[dict[str, Any], int, int, int]] = {
    "sl-maml": ({"name": "sl-maml", "inner_lr": 0.4, "inner_steps": 1, "test_inner_steps": 3, "first_order": False,
                 "outer_lr": 0.001}, 8, 5, 300),
    "anil": ({"name": "anil", "inner_lr": 0.4, "inner_steps": 1, "test_inner_steps": 3, "first_order": False,
              "outer_lr": 0.001}, 8, 5, 300),
    "meta-sgd": ({"name": "meta-sgd", "inner_lr": 0.4, "outer_lr": 0.001}, 8, 5, 300),
    "sl-reptile": ({"name": "sl-reptile", "inner_optimizer": "adam", "inner_lr": 0.001, "inner_steps": 5,
                    "test_inner_steps": 20, "outer_lr": 1.0}, 5, 5, 200),
    "protonet": ({"name": "protonet", "lr": 0.001}, 8, 15, 300),
    "matching": ({"name": "matching", "lr": 0.001}, 8, 15, 300),
    "meta-lstm": ({"name": "meta-lstm", "inner_steps": 12, "test_inner_steps": 12, "outer_lr": 0.001,
                   "max_grad_norm": 0.25}, 8, 15, 300),
    "lstm-optimizer": ({"name": "lstm-optimizer", "steps": 100, "unroll": 20, "test_steps": 100,
                        "meta_lr": 0.001}, 8, 15, 300),
}
#: the preset each learner's job starts from (network and resources): conv4 but for the learned
#: optimizer, whose optimizee is the paper's one-hidden-layer MLP (20 units) on the flattened image
DIGITS_PRESETS = {"protonet": "digits-protonet", "matching": "digits-protonet", "meta-lstm": "digits-meta-lstm",
                  "lstm-optimizer": "digits-lstm-optimizer"}
DIGITS_TEST_QUERIES = 15
#: the digits part's data sets and the stem of their result files
CLASSIFICATION_FILES = {"digits-rotations": "supervised_digits", "glyphs": "supervised_glyphs"}


# ---- shared ---------------------------------------------------------------------------------------
def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def preset(name: str) -> dict[str, Any]:
    return json.loads((PRESETS / f"{name}.json").read_text())


def job(base: dict[str, Any], *, algorithm: dict[str, Any], family_params: dict[str, Any], **over: Any) -> JobSpec:
    """A job spec: ``base`` (a preset) with the algorithm, the family's parameters and ``over``."""
    spec = dict(base)
    spec["algorithm"] = algorithm
    spec["task_family"] = {"name": base["task_family"]["name"], "params": dict(family_params)}
    spec.update(over)
    return JobSpec.model_validate(spec)


def with_family_params(spec: JobSpec, **params: Any) -> JobSpec:
    data = json.loads(spec.model_dump_json())
    data["task_family"]["params"] = {**data["task_family"].get("params", {}), **params}
    return JobSpec.model_validate(data)


def distribution(spec: JobSpec) -> Any:
    tf = spec.task_family
    return build_distribution(tf.name, seed=spec.seed, **tf.family_kwargs())


def train(spec: JobSpec, *, iterations: int, on_iteration: Callable[[SupervisedLearner, IterationResult], None]
          | None = None) -> tuple[SupervisedLearner, dict[str, Any]]:
    """Meta-train ``spec``'s learner in process, as a job does (the driver's plan, runner and
    episode sampler); returns the learner and the run's timing."""
    dist = distribution(spec)
    learner = registry.make_learner(spec.algorithm, spec.model_spec(dist), seed=spec.seed)
    torch.manual_seed(spec.seed)
    t0 = time.perf_counter()
    results = train_in_process(
        learner, dist, meta_batch_size=spec.meta_batch_size, episodes_per_task=1, iterations=iterations,
        seed=spec.seed, on_iteration=None if on_iteration is None else (lambda r: on_iteration(learner, r)),
    )
    wall = time.perf_counter() - t0
    last = results[-min(len(results), 100):]
    train_metric = "meta/mse" if "meta/mse" in results[-1].metrics else "meta/accuracy"
    info = {
        "iterations": iterations,
        "train_wall_s": round(wall, 1),
        "ms_per_iteration": round(1000 * wall / max(1, iterations), 2),
        f"train_{train_metric.split('/')[1]}_last100": round(float(np.mean([r.metrics[train_metric]
                                                                              for r in last])), 4),
    }
    return learner, info


def meta_test(spec: JobSpec, learner: SupervisedLearner, *, tasks: int, seed: int, steps: int | None = None,
              **family_params: Any) -> EvaluationReport:
    """The engine's meta-test of ``learner``'s model: saved as a job registers it (with
    ``family_params`` overriding the distribution's, e.g. more query points) and evaluated by
    :func:`workers.evaluate.evaluate` on ``tasks`` test episodes drawn with ``seed``."""
    eval_spec = with_family_params(spec, **family_params) if family_params else spec
    model = BaseMetaPolicy.from_learner_state(eval_spec, learner.state_dict(), source="benchmarks/supervised.py")
    with tempfile.TemporaryDirectory(prefix="sl-bench-model-") as d:
        model.save(Path(d))
        return evaluate(d, tasks=tasks, steps=steps, seed=seed, log_to_mlflow=False)


def interval_dict(i: Interval | None, digits: int = 4) -> dict[str, float | None]:
    if i is None:
        return {"mean": None, "ci_low": None, "ci_high": None}

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {"mean": r(i.mean), "ci_low": r(i.low), "ci_high": r(i.high)}


def test_episodes(dist: Any, n: int, seed: int, split: str = "test") -> tuple[list[Any], list[SupportQuery]]:
    """The tasks and episodes :func:`workers.evaluate.evaluate` draws for ``n`` tasks and ``seed``
    (one generator for the tasks, then each task's episode in order)."""
    rng = np.random.default_rng(seed)
    tasks = dist.sample_tasks(n, rng, split=split)
    return tasks, [dist.episode(t, rng) for t in tasks]


def machine() -> dict[str, Any]:
    return {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "torch": torch.__version__, "loadavg_1m": round(os.getloadavg()[0], 2)}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---- sinusoid -------------------------------------------------------------------------------------
def sine_algorithm(name: str) -> dict[str, Any]:
    if name == "sl-maml":  # the sinusoid-maml preset, one step at meta-test (Meta-SGD's Table 1)
        return {**preset("sinusoid-maml")["algorithm"], "test_inner_steps": 1}
    return {"name": "meta-sgd", "inner_lr": 0.01, "first_order": False, "outer_lr": 0.001}


def sine_spec(algorithm: dict[str, Any], shots: int, *, iterations: int, seed: int) -> JobSpec:
    return job(preset("sinusoid-maml"), algorithm=algorithm, family_params={"shots": shots, "queries": shots},
               iterations=iterations, seed=seed, name=f"bench-sine-{algorithm['name']}-{shots}")


def pretrain_sine(spec: JobSpec, *, iterations: int, seed: int) -> dict[str, torch.Tensor]:
    """The MAML paper's "pretrained" baseline: the network regressing the pooled points of random
    training sinusoids (25 tasks x 20 points per step, Adam 1e-3)."""
    dist = build_distribution("sinusoid", shots=10, queries=10)
    net_spec = spec.model_spec(dist)
    net = make_net(net_spec, seed=seed)
    params = dict(net.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    rng = np.random.default_rng([seed, 7])
    for _ in range(iterations):
        eps = [dist.episode(t, rng) for t in dist.sample_tasks(25, rng, split="train")]
        x = torch.as_tensor(np.concatenate([np.concatenate([e.x_support, e.x_query]) for e in eps]))
        y = torch.as_tensor(np.concatenate([np.concatenate([e.y_support, e.y_query]) for e in eps]))
        loss = (net(params, x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in params.items()}


def finetuner(spec: JobSpec, params: dict[str, torch.Tensor] | None, *, lr: float, steps: int,
              seed: int) -> tuple[JobSpec, SupervisedLearner]:
    """An sl-maml learner holding ``params`` (None: its random initialisation) that adapts with
    ``steps`` SGD steps of size ``lr``: fine-tuning, measured by the same meta-test."""
    algorithm = {"name": "sl-maml", "inner_lr": lr, "inner_steps": 1, "test_inner_steps": steps, "outer_lr": 0.001}
    ft_spec = sine_spec(algorithm, spec.task_family.family_kwargs()["shots"], iterations=1, seed=seed)
    learner = registry.make_learner(ft_spec.algorithm, ft_spec.model_spec(distribution(ft_spec)), seed=seed)
    if params is not None:
        with torch.no_grad():
            for k, p in learner.policy.named_parameters():
                p.copy_(params[k])
    return ft_spec, learner


def run_sinusoid(args: argparse.Namespace) -> dict[str, Any]:
    shots_list = [int(s) for s in args.shots.split(",")]
    out_path = Path(args.results_dir) / "supervised_sinusoid.json"
    data: dict[str, Any] = {
        "part": "sinusoid",
        "iterations": args.iterations,
        "paper_iterations": PAPER_ITERATIONS,
        "meta_batch": 25,
        "test_tasks": args.test_tasks,
        "test_seed": args.test_seed,
        "eval_query_points": SINE_EVAL_QUERIES,
        "curve_every": args.curve_every,
        "curve_tasks": args.curve_tasks,
        "protocol": "1 inner step in meta-training and at meta-test (Meta-SGD Table 1); MAML alpha 0.01; Meta-SGD "
                    "alpha learned, initialised to 0.01; 40-40 ReLU MLP; meta-batch 25 tasks of K support + K query "
                    "points; Adam 1e-3; meta-test: workers.evaluate on test tasks, 100 query points each",
        "paper": {"source": PAPER["source"], "sl-maml": PAPER["sl-maml"], "meta-sgd": PAPER["meta-sgd"]},
        "results": [],
        "baselines": [],
        "curves": {},
        **machine(),
    }
    t_all = time.perf_counter()
    # the pretrained baseline's network: trained once, fine-tuned for every K
    t0 = time.perf_counter()
    pretrained = pretrain_sine(sine_spec(sine_algorithm("sl-maml"), 10, iterations=1, seed=args.seed),
                               iterations=args.pretrain_iterations, seed=args.seed)
    data["pretrain"] = {"iterations": args.pretrain_iterations, "wall_s": round(time.perf_counter() - t0, 1),
                        "what": "the same MLP regressing pooled points of 25 random training sinusoids per step, "
                                "Adam 1e-3 (Finn et al. 2017's 'pretrained' baseline)"}
    for shots in shots_list:
        val_dist = build_distribution("sinusoid", shots=shots, queries=SINE_EVAL_QUERIES)
        _, val_eps = test_episodes(val_dist, args.curve_tasks, seed=args.seed + 1, split="val")
        for name in ("sl-maml", "meta-sgd"):
            spec = sine_spec(sine_algorithm(name), shots, iterations=args.iterations, seed=args.seed)
            curve: list[list[float]] = []

            def on_iteration(learner: SupervisedLearner, r: IterationResult, curve: list[list[float]] = curve,
                             val_eps: list[SupportQuery] = val_eps, shots: int = shots) -> None:
                it = r.iteration + 1
                if it % args.curve_every == 0 or it == args.iterations:
                    curve.append([it, round(learner.evaluate(val_eps, steps=1)["meta/mse"], 4)])
                    print(f"# {learner.name} K={shots} iteration {it}: validation MSE {curve[-1][1]} "
                          f"({time.perf_counter() - t_all:.0f} s)", file=sys.stderr, flush=True)

            dist = distribution(spec)
            learner0 = registry.make_learner(spec.algorithm, spec.model_spec(dist), seed=spec.seed)
            curve.append([0, round(learner0.evaluate(val_eps, steps=1)["meta/mse"], 4)])
            learner, info = train(spec, iterations=args.iterations, on_iteration=on_iteration)
            t0 = time.perf_counter()
            report = meta_test(spec, learner, tasks=args.test_tasks, seed=args.test_seed, steps=1,
                               queries=SINE_EVAL_QUERIES)
            assert report.steps == 1 and report.tasks == args.test_tasks
            target = PAPER[name][shots]
            rec: dict[str, Any] = {
                "figure": "sinusoid MSE after 1 step", "algorithm": name, "shots": shots,
                "mse": interval_dict(report.mse), "mse_pre": round(report.mse_pre.mean, 4) if report.mse_pre else None,
                "paper_mse": target, "target_met": bool(report.mse.mean <= target),
                "ratio_to_paper": round(report.mse.mean / target, 3), **info,
            }
            if name == "sl-maml":  # the MAML paper's protocol: 10 steps at meta-test
                ten = meta_test(spec, learner, tasks=args.test_tasks, seed=args.test_seed, steps=10,
                                queries=SINE_EVAL_QUERIES)
                rec["mse_10_steps"] = interval_dict(ten.mse)
            rec["eval_wall_s"] = round(time.perf_counter() - t0, 1)
            data["results"].append(rec)
            data["curves"][f"{name}/K={shots}"] = curve
            emit(rec)
            write_json(out_path, data)
        # baselines on the same test tasks: fine-tuning the pretrained network and a random one,
        # the step size picked on the validation tasks
        spec = sine_spec(sine_algorithm("sl-maml"), shots, iterations=1, seed=args.seed)
        for label, params in (("pretrained + fine-tune", pretrained), ("random init + fine-tune", None)):
            for steps in (1, 10):
                val = {lr: finetuner(spec, params, lr=lr, steps=steps, seed=args.seed)[1].evaluate(val_eps)["meta/mse"]
                       for lr in FINETUNE_LRS}
                lr = min(val, key=lambda k: val[k] if math.isfinite(val[k]) else math.inf)  # 0.1 x 10 steps diverges
                ft_spec, ft = finetuner(spec, params, lr=lr, steps=steps, seed=args.seed)
                report = meta_test(ft_spec, ft, tasks=args.test_tasks, seed=args.test_seed, steps=steps,
                                   queries=SINE_EVAL_QUERIES)
                rec = {"figure": "sinusoid baseline MSE", "baseline": label, "shots": shots, "steps": steps,
                       "lr": lr, "val_mse_by_lr": {str(k): round(v, 4) if math.isfinite(v) else None
                                                   for k, v in val.items()},
                       "mse": interval_dict(report.mse)}
                data["baselines"].append(rec)
                emit(rec)
        # the ratio each learner's MSE is of the best baseline's (measured in this run)
        best = min(b["mse"]["mean"] for b in data["baselines"] if b["shots"] == shots and b["steps"] == 1)
        for r in data["results"]:
            if r["shots"] == shots:
                r["best_1step_baseline_mse"] = best
                r["ratio_to_best_baseline"] = round(r["mse"]["mean"] / best, 3)
        write_json(out_path, data)
    data["wall_s"] = round(time.perf_counter() - t_all, 1)
    data["targets"] = {f"{r['algorithm']}/K={r['shots']}": {"ours": r["mse"]["mean"], "paper": r["paper_mse"],
                                                            "met": r["target_met"]} for r in data["results"]}
    png = Path(args.results_dir) / "supervised_sinusoid.png"
    plot_sinusoid(data, png)
    data["png"] = str(png)
    write_json(out_path, data)
    emit({"part": "sinusoid", "json": str(out_path), "png": str(png), "wall_s": data["wall_s"],
          "targets": data["targets"]})
    return data


def plot_sinusoid(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"sl-maml": "tab:blue", "meta-sgd": "tab:orange"}
    labels = {"sl-maml": "MAML", "meta-sgd": "Meta-SGD"}
    for name, color in colors.items():
        rows = sorted((r for r in data["results"] if r["algorithm"] == name), key=lambda r: r["shots"])
        if not rows:
            continue
        k = np.array([r["shots"] for r in rows])
        m = np.array([r["mse"]["mean"] for r in rows])
        lo = np.array([r["mse"]["ci_low"] if r["mse"]["ci_low"] is not None else r["mse"]["mean"] for r in rows])
        hi = np.array([r["mse"]["ci_high"] if r["mse"]["ci_high"] is not None else r["mse"]["mean"] for r in rows])
        ax.errorbar(k, m, yerr=[m - lo, hi - m], fmt="o-", color=color, capsize=4, label=f"{labels[name]} (ours)")
        ax.plot(k, [PAPER[name][int(s)] for s in k], "s--", color=color, alpha=0.6,
                label=f"{labels[name]} (Li et al. 2017, Table 1)")
    for label, style in (("pretrained + fine-tune", ":"), ("random init + fine-tune", "-.")):
        rows = sorted((b for b in data["baselines"] if b["baseline"] == label and b["steps"] == 1),
                      key=lambda b: b["shots"])
        if rows:
            ax.plot([b["shots"] for b in rows], [b["mse"]["mean"] for b in rows], style, color="gray",
                    label=f"{label} (1 step, tuned lr)")
    ax.set_xlabel("K (support points)")
    ax.set_ylabel(f"test MSE after 1 step ({data['test_tasks']} tasks, 95% CI)")
    ax.set_yscale("log")
    ax.set_title(f"Sinusoid regression, {data['iterations']} meta-iterations")
    ax.legend(fontsize=8)
    for key, curve in data["curves"].items():
        name, k = key.split("/")
        c = np.array(curve)
        ls = {"K=5": ":", "K=10": "--", "K=20": "-"}.get(k, "-")
        bx.plot(c[:, 0], c[:, 1], ls, color=colors[name], label=f"{labels[name]} {k}")
    bx.set_xlabel("meta-iteration")
    bx.set_ylabel(f"validation MSE after 1 step ({data['curve_tasks']} tasks)")
    bx.set_yscale("log")
    bx.set_title("Learning curves")
    bx.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- digits ---------------------------------------------------------------------------------------
def digits_spec(name: str, shots: int, *, iterations: int, seed: int, family: str = "digits-rotations") -> JobSpec:
    """``name``'s job on ``family`` (``digits-rotations`` or ``glyphs``): its digits preset (network,
    resources) with the learner's settings of :data:`DIGITS_LEARNERS` and the family swapped in."""
    algorithm, meta_batch, queries, _ = DIGITS_LEARNERS[name]
    base = dict(preset(DIGITS_PRESETS.get(name, "digits-maml")))
    base["task_family"] = {"name": family}
    short = CLASSIFICATION_FILES[family].removeprefix("supervised_")
    return job(base, algorithm=algorithm, family_params={"ways": 5, "shots": shots, "queries": queries},
               iterations=iterations, meta_batch_size=meta_batch, seed=seed, name=f"bench-{short}-{name}-{shots}")


def finetune_accuracy(net_spec: NetSpec, episode: SupportQuery, *, lr: float, steps: int, seed: int) -> float:
    """Baseline (a): a fresh network of the learners' architecture trained on the support set alone
    (Adam, ``steps`` full-batch steps), scored on the query set (predicted together, as the
    learners' are: the same transductive batch norm)."""
    net = make_net(net_spec, seed=seed)
    params = dict(net.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=lr)
    xs, ys = torch.as_tensor(episode.x_support), torch.as_tensor(episode.y_support)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(params, xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(params, torch.as_tensor(episode.x_query)).argmax(-1).numpy()
    return float(np.mean(pred == episode.y_query))


def pixel_accuracy(episode: SupportQuery, *, rule: str) -> float:
    """Baseline (b): nearest neighbour on raw pixels (Euclidean): ``"1nn"`` the nearest support
    example's class, ``"mean"`` the nearest class mean of the support examples."""
    xs = episode.x_support.reshape(len(episode.x_support), -1)
    xq = episode.x_query.reshape(len(episode.x_query), -1)
    if rule == "mean":
        labels = np.unique(episode.y_support)
        xs = np.stack([xs[episode.y_support == c].mean(0) for c in labels])
        ys = labels
    else:
        ys = episode.y_support
    d = ((xq[:, None, :] - xs[None, :, :]) ** 2).sum(-1)
    return float(np.mean(ys[d.argmin(1)] == episode.y_query))


def run_digits(args: argparse.Namespace) -> dict[str, Any]:
    shots_list = [int(s) for s in args.digits_shots.split(",")]
    names = [n for n in args.learners.split(",") if n]
    stem = CLASSIFICATION_FILES[args.family]
    out_path = Path(args.results_dir) / f"{stem}.json"
    data: dict[str, Any] = {
        "part": "digits",
        "family": args.family,
        "distribution": f"{args.family} 5-way, 15 test queries per class",
        "test_episodes": args.test_episodes,
        "test_seed": args.test_seed,
        "settings": {n: {"algorithm": a, "meta_batch": mb, "train_queries_per_class": q,
                         "iterations": args.digits_iterations or it} for n, (a, mb, q, it) in DIGITS_LEARNERS.items()
                     if n in names},
        "results": [],
        "baselines": [],
        **machine(),
    }
    t_all = time.perf_counter()
    for shots in shots_list:
        test_dist = build_distribution(args.family, ways=5, shots=shots, queries=DIGITS_TEST_QUERIES)
        tasks, episodes = test_episodes(test_dist, args.test_episodes, args.test_seed)
        described = [t.describe() for t in tasks]
        for name in names:
            iterations = args.digits_iterations or DIGITS_LEARNERS[name][3]
            spec = digits_spec(name, shots, iterations=iterations, seed=args.seed, family=args.family)
            learner, info = train(spec, iterations=iterations)
            t0 = time.perf_counter()
            report = meta_test(spec, learner, tasks=args.test_episodes, seed=args.test_seed,
                               queries=DIGITS_TEST_QUERIES)
            # the same episodes for every learner and baseline: the same tasks, in order
            assert [r.task for r in report.results] == described, "the meta-test drew other episodes"
            rec = {"figure": "digits accuracy", "shots": shots, "learner": name,
                   "accuracy": interval_dict(report.accuracy),
                   "accuracy_pre": round(report.accuracy_pre.mean, 4) if report.accuracy_pre else None,
                   "test_steps": report.steps, **info, "eval_wall_s": round(time.perf_counter() - t0, 1)}
            data["results"].append(rec)
            emit(rec)
            write_json(out_path, data)
        if args.skip_baselines:
            continue
        # baseline (a): fine-tuning a fresh conv4; its step size picked on validation episodes
        net_spec = digits_spec("sl-maml", shots, iterations=1, seed=args.seed,
                               family=args.family).model_spec(test_dist)
        _, val_eps = test_episodes(test_dist, min(20, args.test_episodes), args.test_seed + 1, split="val")
        t0 = time.perf_counter()
        val = {lr: float(np.mean([finetune_accuracy(net_spec, e, lr=lr, steps=args.finetune_steps, seed=i)
                                  for i, e in enumerate(val_eps)])) for lr in (1e-3, 1e-2)}
        lr = max(val, key=lambda k: val[k])
        acc = [finetune_accuracy(net_spec, e, lr=lr, steps=args.finetune_steps, seed=i) for i, e in enumerate(episodes)]
        rec = {"figure": "digits baseline accuracy", "shots": shots, "baseline": "fine-tune from scratch",
               "what": f"fresh conv4 (64 ch), Adam lr {lr} (picked on {len(val_eps)} val episodes from "
                       f"{sorted(val)}), {args.finetune_steps} full-batch steps on the support set",
               "lr": lr, "val_accuracy_by_lr": {str(k): round(v, 4) for k, v in val.items()},
               "accuracy": interval_dict(Interval.of(acc)), "wall_s": round(time.perf_counter() - t0, 1)}
        data["baselines"].append(rec)
        emit(rec)
        # baseline (b): nearest neighbour on pixels
        rules = ("1nn",) if shots == 1 else ("1nn", "mean")
        for rule in rules:
            acc = [pixel_accuracy(e, rule=rule) for e in episodes]
            rec = {"figure": "digits baseline accuracy", "shots": shots,
                   "baseline": "pixel 1-NN" if rule == "1nn" else "pixel nearest class mean",
                   "accuracy": interval_dict(Interval.of(acc))}
            data["baselines"].append(rec)
            emit(rec)
        add_ratios(data, shots)
        write_json(out_path, data)
    data["wall_s"] = round(time.perf_counter() - t_all, 1)
    png = Path(args.results_dir) / f"{stem}.png"
    plot_digits(data, png)
    data["png"] = str(png)
    write_json(out_path, data)
    emit({"part": "digits", "family": args.family, "json": str(out_path), "png": str(png), "wall_s": data["wall_s"]})
    return data


def add_ratios(data: dict[str, Any], shots: int) -> None:
    """Each ``shots`` result's ratios to the baselines measured on the same episodes (where the
    data has them) and whether its interval clears both."""
    base = {b["baseline"]: b["accuracy"]["mean"] for b in data["baselines"] if b["shots"] == shots}
    if "fine-tune from scratch" not in base:
        return
    pixel = max(v for k, v in base.items() if k.startswith("pixel"))
    for r in data["results"]:
        if r["shots"] == shots:
            a = r["accuracy"]
            r["vs_finetune"] = round(a["mean"] / base["fine-tune from scratch"], 3)
            r["vs_pixel_nn"] = round(a["mean"] / pixel, 3)
            lo = a["ci_low"] if a["ci_low"] is not None else a["mean"]
            r["beats_both_baselines"] = bool(lo > max(pixel, base["fine-tune from scratch"]))


def merge_digits(args: argparse.Namespace) -> dict[str, Any]:
    """Join the digits files of runs made side by side (one shot setting each) into one."""
    stem = CLASSIFICATION_FILES[args.family]
    parts = [read_json(Path(d) / f"{stem}.json") for d in args.merge_digits.split(",")]
    data = dict(parts[0])
    for key in ("results", "baselines"):
        data[key] = sorted((x for p in parts for x in p[key]), key=lambda x: x["shots"])
    data["settings"] = {k: v for p in parts for k, v in p["settings"].items()}
    data["wall_s"] = max(p["wall_s"] for p in parts)
    for shots in sorted({r["shots"] for r in data["results"]}):
        add_ratios(data, shots)
    data["runs"] = [{"dir": d, "shots": sorted({r["shots"] for r in p["results"]}), "wall_s": p["wall_s"],
                     "loadavg_1m": p["loadavg_1m"]} for d, p in zip(args.merge_digits.split(","), parts, strict=True)]
    out_path = Path(args.results_dir) / f"{stem}.json"
    png = Path(args.results_dir) / f"{stem}.png"
    plot_digits(data, png)
    data["png"] = str(png)
    write_json(out_path, data)
    emit({"part": "digits", "merged": args.merge_digits, "json": str(out_path), "png": str(png)})
    return data


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def plot_digits(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    shots_list = sorted({r["shots"] for r in data["results"]} | {b["shots"] for b in data["baselines"]})
    fig, axes = plt.subplots(1, len(shots_list), figsize=(6.5 * len(shots_list), 4.5), squeeze=False)
    for ax, shots in zip(axes[0], shots_list, strict=True):
        rows = [(r["learner"], r["accuracy"], "tab:blue") for r in data["results"] if r["shots"] == shots]
        rows += [(b["baseline"], b["accuracy"], "tab:gray") for b in data["baselines"] if b["shots"] == shots]
        labels = [r[0] for r in rows]
        m = np.array([r[1]["mean"] for r in rows])
        lo = np.array([r[1]["ci_low"] if r[1]["ci_low"] is not None else r[1]["mean"] for r in rows])
        hi = np.array([r[1]["ci_high"] if r[1]["ci_high"] is not None else r[1]["mean"] for r in rows])
        ax.bar(range(len(rows)), m, yerr=[m - lo, hi - m], capsize=4, color=[r[2] for r in rows])
        for i, v in enumerate(m):
            ax.text(i, v + 0.02, f"{v:.3f}", ha="center", fontsize=7)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        ax.axhline(0.2, color="k", lw=0.5, ls=":")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"test accuracy ({data['test_episodes']} episodes, 95% CI)")
        ax.set_title(f"{data.get('family', 'digits-rotations')} 5-way {shots}-shot")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- speed ----------------------------------------------------------------------------------------
def time_outer_step(label: str, spec: JobSpec, *, repeats: int) -> dict[str, Any]:
    """ms per MAML outer step (``learn``: the meta-gradient through the inner step and Adam's step)
    of the engine's default path (``task_batching="auto"``, which resolves to vmap or the loop by
    device and network), the vmap path and the plain per-task loop: the same model and batch,
    calls interleaved."""
    dist = distribution(spec)
    net_spec = spec.model_spec(dist)
    rng = np.random.default_rng(0)
    episodes = [dist.episode(t, rng) for t in dist.sample_tasks(spec.meta_batch_size, rng, split="train")]
    learners = {}
    for mode in ("auto", "vmap", "loop"):
        algo = spec.algorithm.model_copy(update={"task_batching": mode})
        learners[mode] = registry.make_learner(algo, net_spec, seed=0)
    engine_mode = learners["auto"].task_batching
    times: dict[str, list[float]] = {mode: [] for mode in learners}
    losses = {}
    for call in range(repeats + 1):  # the first call of each warms up
        for mode, learner in learners.items():
            t0 = time.perf_counter()
            m = learner.learn([episodes])
            if call:
                times[mode].append(time.perf_counter() - t0)
            else:
                losses[mode] = m["loss/query"]
    e, v, lp = (statistics.median(times[m]) for m in ("auto", "vmap", "loop"))
    return {
        "figure": "MAML outer step", "setting": label, "meta_batch": spec.meta_batch_size,
        "second_order": not spec.algorithm.first_order, "engine_mode": engine_mode,
        "engine_ms": round(1000 * e, 2), "vmap_ms": round(1000 * v, 2), "loop_ms": round(1000 * lp, 2),
        "ratio_loop_over_engine": round(lp / e, 3),
        "ratio_loop_over_vmap": round(lp / v, 3),
        "ratio_paired_median": round(statistics.median(a / b for a, b in zip(times["loop"], times["vmap"],
                                                                              strict=True)), 3),
        "first_loss_equal": all(abs(losses[m] - losses["loop"]) <= 1e-4 * max(1.0, abs(losses["loop"]))
                                for m in ("auto", "vmap")),
        "repeats": repeats, "engine_runs_ms": [round(1000 * t, 1) for t in times["auto"]],
        "vmap_runs_ms": [round(1000 * t, 1) for t in times["vmap"]],
        "loop_runs_ms": [round(1000 * t, 1) for t in times["loop"]],
    }


def time_pipeline(label: str, spec: JobSpec, *, calls: int, workers: int) -> dict[str, Any]:
    """Episodes per second of the rollout actors (the job's ``WorkerPool`` sampling one meta-batch
    and the caller fetching the episodes) against the same ``EpisodeSampler`` in this process."""
    import ray

    from workers.episode_sampler import EpisodeSampler
    from workers.pool import WorkerPool
    from workers.rollout import FamilyRef

    dist = distribution(spec)
    net_spec = spec.model_spec(dist)
    own = not ray.is_initialized()
    temp = None
    if own:
        temp = tempfile.mkdtemp(prefix="ray-slbench-", dir="/tmp")
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False,
                 logging_level="ERROR")
    tf = spec.task_family
    pool = WorkerPool(family=FamilyRef(tf.name, spec.seed, tf.family_kwargs()), policy_spec=net_spec,
                      envs_per_worker=spec.resources.envs_per_worker, seed=spec.seed,
                      name_prefix=f"slbench-{label}-{os.getpid()}", algorithm=spec.algorithm)
    local = EpisodeSampler(dist, seed=spec.seed)
    n = spec.meta_batch_size
    rates: dict[str, list[float]] = {"actors": [], "local": []}
    rng = np.random.default_rng(0)
    try:
        pool.resize(workers)
        params = ray.put(make_net(net_spec, seed=0).state_dict())
        for call in range(calls + 1):  # the first call warms up (actors build the distribution)
            tasks = dist.sample_tasks(n, rng, split="train")
            t0 = time.perf_counter()
            res = pool.sample(params, tasks, episodes_per_task=1, label=f"{call}:bench")
            got = [e for shard in ray.get(res.episode_refs) for e in shard]
            actors_s = time.perf_counter() - t0
            assert len(got) == n
            t0 = time.perf_counter()
            local.sample(tasks)
            local_s = time.perf_counter() - t0
            if call:
                rates["actors"].append(n / actors_s)
                rates["local"].append(n / local_s)
    finally:
        pool.shutdown()
        if own:
            ray.shutdown()
    a, loc = statistics.median(rates["actors"]), statistics.median(rates["local"])
    return {
        "figure": "episodes per second", "setting": label, "meta_batch": n, "rollout_actors": workers,
        "ray": "private local, num_cpus=2" if own else "the caller's",
        "actors_episodes_per_s": round(a, 1), "in_process_episodes_per_s": round(loc, 1),
        "ratio_actors_over_in_process": round(a / loc, 3), "calls": calls,
        "actors_runs": [round(r, 1) for r in rates["actors"]], "local_runs": [round(r, 1) for r in rates["local"]],
    }


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    out_path = Path(args.results_dir) / "supervised_speed.json"
    maml = {"name": "sl-maml", "inner_lr": 0.4, "inner_steps": 1, "test_inner_steps": 3, "first_order": False,
            "outer_lr": 0.001}
    digits = job(preset("digits-maml"), algorithm=maml, family_params={"ways": 5, "shots": 1, "queries": 15},
                 meta_batch_size=32, name="bench-speed-digits")
    sine = sine_spec(sine_algorithm("sl-maml"), 10, iterations=1, seed=0)
    data: dict[str, Any] = {"part": "speed", "outer_step": [], "pipeline": [], **machine(),
                            "note": "no GPU on this machine; one torch thread"}
    for label, spec, reps in (("digits 5-way 1-shot conv4", digits, args.speed_repeats),
                              ("sinusoid K=10 MLP 40-40", sine, 10 * args.speed_repeats)):
        rec = time_outer_step(label, spec, repeats=reps)
        data["outer_step"].append(rec)
        emit(rec)
        write_json(out_path, data)
    if args.ray_workers > 0:
        sine_pipe = job(preset("sinusoid-maml"), algorithm=sine_algorithm("sl-maml"),
                        family_params={"shots": 10, "queries": 10}, name="bench-speed-sine")
        for label, spec in (("digits-rotations 5-way 1-shot, 15 queries", digits), ("sinusoid K=10", sine_pipe)):
            rec = time_pipeline(label.split()[0], spec, calls=args.pipeline_calls, workers=args.ray_workers)
            rec["setting"] = label
            data["pipeline"].append(rec)
            emit(rec)
            write_json(out_path, data)
    else:
        data["pipeline_skipped"] = "--ray-workers 0"
    write_json(out_path, data)
    emit({"part": "speed", "json": str(out_path)})
    return data


# ---- main -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="all", choices=["sinusoid", "digits", "speed", "all"])
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--seed", type=int, default=0, help="training seed (tasks, initialisation)")
    p.add_argument("--test-seed", type=int, default=100, help="seeds the test tasks/episodes (the same for all)")
    # sinusoid
    p.add_argument("--iterations", type=int, default=20_000,
                   help=f"sinusoid meta-iterations (the paper: {PAPER_ITERATIONS})")
    p.add_argument("--shots", default="5,10,20", help="sinusoid K values")
    p.add_argument("--test-tasks", type=int, default=600, help="sinusoid test tasks")
    p.add_argument("--curve-every", type=int, default=1000, help="validation MSE every N iterations")
    p.add_argument("--curve-tasks", type=int, default=CURVE_TASKS,
                   help="validation tasks of the learning curve and of the baselines' step-size choice")
    p.add_argument("--pretrain-iterations", type=int, default=10_000, help="the pretrained baseline's steps")
    # digits
    p.add_argument("--family", default="digits-rotations", choices=sorted(CLASSIFICATION_FILES),
                   help="the digits part's data set: the 8x8 digits or the procedurally drawn glyphs")
    p.add_argument("--digits-shots", default="1,5")
    p.add_argument("--learners", default=",".join(DIGITS_LEARNERS))
    p.add_argument("--digits-iterations", type=int, default=0, help="override every learner's iterations (0: "
                                                                     "DIGITS_LEARNERS' own)")
    p.add_argument("--test-episodes", type=int, default=600, help="digits test episodes")
    p.add_argument("--skip-baselines", action="store_true", help="digits: the learners only (their baselines "
                   "come from another run's file, joined by --merge-digits)")
    p.add_argument("--merge-digits", default="", help="DIR1,DIR2: join the digits files of these runs (no training)")
    p.add_argument("--finetune-steps", type=int, default=50, help="the fine-tune-from-scratch baseline's steps")
    # speed
    p.add_argument("--speed-repeats", type=int, default=5)
    p.add_argument("--pipeline-calls", type=int, default=10)
    p.add_argument("--ray-workers", type=int, default=2, help="rollout actors (0: skip the pipeline measurement)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    if args.merge_digits:
        return {"digits": merge_digits(args)}
    for part, fn in (("sinusoid", run_sinusoid), ("digits", run_digits), ("speed", run_speed)):
        if args.part in (part, "all"):
            out[part] = fn(args)
    return out


if __name__ == "__main__":
    main()
