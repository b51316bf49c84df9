"""Learning to learn by gradient descent by gradient descent (Andrychowicz et al. 2016): the
coordinatewise LSTM optimizer of ``algorithms.learned_opt`` against hand-designed optimizers.

Four parts (``--part quadratics|mlp|cost|all``); prints one JSON object per measurement, writes
``learned_optimizer.json`` (every part run) and the PNGs to ``--results-dir``
(``benchmarks/results``).

**quadratics** (``learned_optimizer_quadratics.png``).  The paper's sec. 3.1 / Fig. 4: random
``f(θ) = ‖Wθ − y‖²``, W (10 × 10) and y i.i.d. N(0, 1), θ0 ~ N(0, I) (not stated in the paper).
The LSTM optimizer (2 layers × 20, the paper's) is meta-trained on training problems: episodes of
``--quad-batch`` fresh problems, T = 100 steps, truncated BPTT over 20 steps, Adam on φ
(``--quad-meta-lr``), for ``--quad-episodes`` episodes; it keeps the φ with the lowest mean final
loss on ``--val-problems`` validation problems, measured every ``--val-every`` episodes (the
paper's early stopping).  Settings differ from the paper's sec. 3.1 in one respect, said here:
the paper used neither the gradient preprocessing nor the 0.1 output multiplier on quadratics;
here both are used (the LSTM's defaults, as on the MLP: in our trials it reached lower losses in
the same budget).  The baselines -- SGD, momentum 0.9, Nesterov (NAG, momentum 0.9), RMSprop and
Adam (``torch.optim``, their defaults otherwise) -- each get the learning rate of a grid (10^-4 ..
10^1, six per decade) with the lowest mean **final** loss ``f(θ_T)`` on ``--tune-problems``
training problems (none of them the test problems).  Everything is then run on
``--test-problems`` held-out test problems: mean loss per step with a 95% band (mean ± 1.96
s.e.), the median, and per baseline the paired difference of final losses (learned − baseline)
with its 95% interval.  Goal: a lower mean final loss than every baseline.  Generalisation (the
paper's Fig. 4 right and sec. 3.1's discussion): the same trained optimizer for 200 steps (the
baselines with their lr re-tuned for 200 steps), and on wider quadratics (``--wide-dims``, 20 and
50; the baselines re-tuned on training problems of that width), no retraining.

**mlp** (``learned_optimizer_mlp.png``).  The paper's sec. 3.2 setting -- an MLP with one hidden
layer of 20 sigmoid units, minibatches of 128, cross-entropy, T = 100, unroll 20, preprocessing
and output × 0.1 -- on scikit-learn's 8×8 digits (1,797 images, not MNIST: no download), the LSTM
meta-trained on it (``--mlp-episodes`` episodes of ``--mlp-batch`` problems), a problem being a
fresh initialisation and minibatch stream from its seed.  Curves: the minibatch training loss
``f(θ_t)`` per step on ``--mlp-test-problems`` held-out problems, against the same baselines
(lr grid 10^-3 .. 10^1, three per decade, tuned on ``--mlp-tune-problems`` training problems by
the mean final loss), and the full-data loss at the end.

**cost**.  One meta-training step (one truncation of BPTT: ``unroll`` optimizee steps forward,
the backward pass into φ, one Adam step) for unroll lengths ``--cost-unrolls`` (5 .. 100), on a
quadratics episode (``--quad-batch`` problems of 10 coordinates) and an MLP episode (one problem,
1,510 coordinates): the median time of ``--cost-repeats`` runs, the bytes the autograd graph
saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``: exact), and the peak
growth of the resident memory during one step (a fresh subprocess per figure, glibc returning
freed blocks of 64 KiB or more to the OS, the resident size sampled every 0.2 ms: an
allocator-level figure, noisier, and blind to small blocks).  Both should grow linearly in the
unroll length (BPTT keeps every step's activations); the fitted slopes are reported.

One torch thread (the machine is shared; ``--threads``).  Fixed seeds throughout: a rerun gives
the same numbers on the same machine.  With the defaults the whole script took 9 minutes (534 s:
quadratics 4.7 min, of it 4 min meta-training; MLP 3.2 min; cost 1 min) on one core of a busy
2-core machine (load average 6-7), within the 20 minutes it was sized for.

    python benchmarks/learned_optimizer.py                  # all parts
    python benchmarks/learned_optimizer.py --part quadratics --quad-episodes 400
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
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from algorithms.learned_opt.lstm_optimizer import LSTMOptimizer  # noqa: E402
from algorithms.learned_opt.meta_train import (  # noqa: E402
    BaselineResult,
    compare_baselines,
    meta_train,
    run_optimizer,
    unroll_meta_loss,
)
from algorithms.learned_opt.optimizees import DigitsMLPFamily, MLPProblems, Problems, QuadraticFamily  # noqa: E402
from algorithms.learned_opt.specs import LSTMOptimizerSpec, MetaTrainSpec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BASELINE_NAMES = ("sgd", "momentum", "nag", "rmsprop", "adam")
QUAD_LRS = tuple(float(v) for v in np.logspace(-4, 1, 31))
MLP_LRS = tuple(float(v) for v in np.logspace(-3, 1, 13))
Z95 = 1.96


# ---- shared ---------------------------------------------------------------------------------------
def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def machine() -> dict[str, Any]:
    return {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__,
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def r(x: float, digits: int = 5) -> float | None:
    return None if not math.isfinite(x) else float(f"{x:.{digits}g}")


def band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over problems (axis 0) and its 95% band, mean ± 1.96 s.e. (normal approximation; at
    least 50 problems everywhere here)."""
    mean = values.mean(0)
    half = Z95 * values.std(0, ddof=1) / math.sqrt(values.shape[0]) if values.shape[0] > 1 else 0 * mean
    return mean, mean - half, mean + half


def summary(curves: np.ndarray, *, lr: float | None = None) -> dict[str, Any]:
    """Final-loss statistics of ``[B, steps + 1]`` curves, and the mean curve."""
    final = curves[:, -1]
    mean, low, high = band(final[:, None])
    out: dict[str, Any] = {}
    if lr is not None:
        out["lr"] = r(lr)
    out.update({"final_mean": r(float(mean[0])), "final_ci95": [r(float(low[0])), r(float(high[0]))],
                "final_median": r(float(np.median(final))), "trajectory_mean": r(float(curves.mean())),
                "mean_curve": [r(float(v), 4) for v in curves.mean(0)]})
    return out


def paired(learned: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    """Final losses, learned − baseline, per problem: mean difference with a 95% interval and the
    fraction of problems where the learned optimizer ends lower."""
    d = learned[:, -1] - other[:, -1]
    mean, low, high = band(d[:, None])
    return {"diff_mean": r(float(mean[0])), "diff_ci95": [r(float(low[0])), r(float(high[0]))],
            "learned_lower_fraction": r(float((d < 0).mean()), 3)}


def compare(name: str, learned: np.ndarray, baselines: dict[str, BaselineResult]) -> dict[str, Any]:
    """The comparison table of one setting: learned and every baseline; goal: learned lowest."""
    out: dict[str, Any] = {"learned": summary(learned)}
    for key, b in baselines.items():
        out[key] = {**summary(b.curves, lr=b.lr), "vs_learned": paired(learned, b.curves)}
    best = min(baselines.values(), key=lambda b: float(b.curves[:, -1].mean()))
    out["best_baseline"] = best.name
    out["learned_beats_every_baseline"] = bool(learned[:, -1].mean() < best.curves[:, -1].mean())
    emit({"setting": name, **{k: (v["final_mean"] if isinstance(v, dict) else v) for k, v in out.items()}})
    return out


def train_history(result: Any, every: int) -> dict[str, Any]:
    return {"episodes": len(result.episode_losses), "seconds": round(result.seconds, 1),
            "best_episode": result.best_episode,
            "val_final_losses": [[e, r(v)] for e, v in result.val_losses],
            "episode_losses_every": every,
            "episode_losses": [r(float(np.mean(result.episode_losses[i:i + every])), 4)
                               for i in range(0, len(result.episode_losses), every)]}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COLORS = {"learned": "black", "sgd": "tab:blue", "momentum": "tab:orange", "nag": "tab:purple",
          "rmsprop": "tab:green", "adam": "tab:red"}


def plot_curves(ax: Any, title: str, learned: np.ndarray, baselines: dict[str, BaselineResult], *,
                log: bool = True) -> None:
    """Mean loss per step with its 95% band; on a log axis the y range is that of the mean curves
    (a band reaching 0, or a diverging run, leaves the frame)."""
    series = {"learned": (learned, None)} | {k: (b.curves, b.lr) for k, b in baselines.items()}
    means = {key: band(curves)[0] for key, (curves, _) in series.items()}
    finite = np.concatenate([m[np.isfinite(m)] for m in means.values()])
    bottom, top = 0.5 * float(finite.min()), 3.0 * max(float(m[0]) for m in means.values())
    for key, (curves, lr) in series.items():
        mean, low, high = band(curves)
        steps = np.arange(curves.shape[1])
        label = "LSTM (learned)" if key == "learned" else f"{key} (lr {lr:.3g})"
        ax.plot(steps, mean, color=COLORS[key], lw=2 if key == "learned" else 1.2, label=label)
        ax.fill_between(steps, np.clip(low, bottom, None) if log else low, np.minimum(high, 10 * top),
                        color=COLORS[key], alpha=0.15, lw=0)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom, top)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean, 95% band)")
    ax.legend(fontsize=7)


def plot_training(ax: Any, result: Any, title: str) -> None:
    episodes = np.arange(1, len(result.episode_losses) + 1)
    ax.plot(episodes, result.episode_losses, color="0.7", lw=0.5, label="episode meta-loss Σ_t f(θ_t)")
    k = max(1, len(episodes) // 50)
    smooth = np.convolve(result.episode_losses, np.ones(k) / k, mode="valid")
    ax.plot(episodes[k - 1:], smooth, color="black", lw=1.5, label=f"running mean ({k} episodes)")
    ax.set_yscale("log")
    ax.set_xlabel("episode")
    ax.set_ylabel("meta-loss (mean over the episode's problems)")
    ax.set_title(title, fontsize=10)
    lines, labels = ax.get_legend_handles_labels()
    if result.val_losses:
        ax2 = ax.twinx()
        ax2.plot([e + 1 for e, _ in result.val_losses], [v for _, v in result.val_losses], "o-", color="tab:red",
                 ms=3, lw=1, label="validation: mean final loss")
        ax2.axvline(result.best_episode + 1, color="tab:red", ls=":", lw=1)
        ax2.set_yscale("log")
        ax2.tick_params(axis="y", colors="tab:red")
        more, more_labels = ax2.get_legend_handles_labels()
        lines, labels = lines + more, labels + more_labels
    ax.legend(lines, labels, fontsize=7, loc="upper right")


def plot_finals(ax: Any, learned: np.ndarray, baselines: dict[str, BaselineResult], title: str) -> None:
    """Box plot of the final losses per problem (log scale), means marked."""
    series = {"learned": learned} | {k: b.curves for k, b in baselines.items()}
    data = [np.maximum(c[:, -1], 1e-12) for c in series.values()]
    ax.boxplot(data, showfliers=False, showmeans=True, meanprops={"marker": "D", "markerfacecolor": "white",
                                                                  "markeredgecolor": "black", "markersize": 5})
    ax.set_xticks(range(1, len(series) + 1), list(series), fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("final loss (box: quartiles, whiskers 1.5 IQR; ◇ mean)")
    ax.set_title(title, fontsize=10)


# ---- quadratics -----------------------------------------------------------------------------------
def run_quadratics(args: argparse.Namespace) -> dict[str, Any]:
    family = QuadraticFamily(dim=10)
    net = LSTMOptimizer(LSTMOptimizerSpec(), seed=args.seed)
    test = family.sample("test", 0, args.test_problems)
    untrained = run_optimizer(net, test, 100)
    spec = MetaTrainSpec(episodes=args.quad_episodes, problems_per_episode=args.quad_batch, steps=100, unroll=20,
                         meta_lr=args.quad_meta_lr)
    result = meta_train(net, family, spec, validation=family.sample("val", 0, args.val_problems),
                        val_every=args.val_every)
    emit({"part": "quadratics", "meta_training_s": round(result.seconds, 1), "best_episode": result.best_episode})
    tune = family.sample("train", 10_000_000, args.tune_problems)  # away from the meta-training problems
    out: dict[str, Any] = {"meta_train_spec": spec.model_dump(), "lstm_spec": net.spec.model_dump(),
                           "training": train_history(result, max(1, args.quad_episodes // 100)),
                           "untrained_final_mean": r(float(untrained[:, -1].mean()))}
    curves: dict[str, tuple[np.ndarray, dict[str, BaselineResult]]] = {}
    for name, fam, steps in (("dim10_steps100", family, 100), ("dim10_steps200", family, 200),
                             *((f"dim{d}_steps100", QuadraticFamily(dim=d), 100) for d in args.wide_dims)):
        held_out = test if fam is family else fam.sample("test", 0, args.test_problems)
        train = tune if fam is family else fam.sample("train", 10_000_000, args.tune_problems)
        t0 = time.perf_counter()
        baselines = compare_baselines(train, held_out, steps, names=BASELINE_NAMES, lrs=QUAD_LRS, criterion="final")
        learned = run_optimizer(net, held_out, steps)
        out[name] = compare(f"quadratics/{name}", learned, baselines)
        out[name]["seconds"] = round(time.perf_counter() - t0, 1)
        curves[name] = (learned, baselines)
    out["goal_lower_final_loss_than_every_baseline"] = out["dim10_steps100"]["learned_beats_every_baseline"]

    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    panels: list[str | None] = ["dim10_steps100", "dim10_steps200", None,
                                *(f"dim{d}_steps100" for d in args.wide_dims[:2]), "finals"]
    panels[-1:-1] = [None] * (6 - len(panels))  # fewer than two widths: empty slots before "finals"
    for ax, panel in zip(axes.flat, panels, strict=True):
        if panel == "finals":
            learned, baselines = curves["dim10_steps100"]
            plot_finals(ax, learned, baselines, "dim 10, 100 steps: final loss per problem")
        elif panel is not None:
            learned, baselines = curves[panel]
            plot_curves(ax, f"{panel.replace('_', ', ')}: {args.test_problems} held-out problems", learned, baselines)
        elif ax is axes.flat[2]:
            plot_training(ax, result, f"meta-training ({spec.problems_per_episode} problems / episode)")
        else:
            ax.set_visible(False)
    fig.suptitle("Quadratics ‖Wθ − y‖²: LSTM optimizer (meta-trained on dim 10, 100 steps) vs baselines tuned on "
                 "training problems", fontsize=11)
    fig.tight_layout()
    fig.savefig(Path(args.results_dir) / "learned_optimizer_quadratics.png", dpi=100)
    plt.close(fig)
    return out


# ---- the MLP on digits ----------------------------------------------------------------------------
def run_mlp(args: argparse.Namespace) -> dict[str, Any]:
    family = DigitsMLPFamily()
    net = LSTMOptimizer(LSTMOptimizerSpec(), seed=args.seed)
    spec = MetaTrainSpec(episodes=args.mlp_episodes, problems_per_episode=args.mlp_batch, steps=100, unroll=20,
                         meta_lr=args.mlp_meta_lr)
    result = meta_train(net, family, spec, validation=family.sample("val", 0, args.mlp_val_problems),
                        val_every=args.mlp_val_every)
    emit({"part": "mlp", "meta_training_s": round(result.seconds, 1), "best_episode": result.best_episode})
    test = family.sample("test", 0, args.mlp_test_problems)
    tune = family.sample("train", 10_000_000, args.mlp_tune_problems)
    t0 = time.perf_counter()
    baselines = compare_baselines(tune, test, 100, names=BASELINE_NAMES, lrs=MLP_LRS, criterion="final")
    learned = run_optimizer(net, test, 100)
    out: dict[str, Any] = {"data": "scikit-learn 8x8 digits (1,797 images), not MNIST",
                           "meta_train_spec": spec.model_dump(), "lstm_spec": net.spec.model_dump(),
                           "training": train_history(result, max(1, args.mlp_episodes // 100))}
    out["steps100"] = compare("mlp/steps100", learned, baselines)
    out["steps100"]["seconds"] = round(time.perf_counter() - t0, 1)
    out["full_data_final_loss"] = {"learned": r(full_data_final(net, test, None, 0.0))}
    for key, b in baselines.items():
        out["full_data_final_loss"][key] = r(full_data_final(None, test, key, b.lr))
    out["goal_lower_final_loss_than_every_baseline"] = out["steps100"]["learned_beats_every_baseline"]
    emit({"setting": "mlp/full_data_final_loss", **out["full_data_final_loss"]})

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    plot_curves(axes[0], f"MLP 64-20-10 (sigmoid), 8x8 digits: {args.mlp_test_problems} held-out problems",
                learned, baselines)
    axes[0].set_ylabel("minibatch training loss (mean, 95% band)")
    plot_finals(axes[1], learned, baselines, "final minibatch loss per problem (step 100)")
    plot_training(axes[2], result, f"meta-training ({spec.problems_per_episode} problem / episode)")
    fig.tight_layout()
    fig.savefig(Path(args.results_dir) / "learned_optimizer_mlp.png", dpi=100)
    plt.close(fig)
    return out


def full_data_final(net: LSTMOptimizer | None, problems: MLPProblems, baseline: str | None, lr: float) -> float:
    """Mean over problems of the full-data loss after 100 steps (learned: ``net``; else the
    baseline ``baseline`` at ``lr``)."""
    from algorithms.learned_opt.meta_train import BASELINES

    theta = problems.init_params()
    if net is not None:
        state = net.init_state(theta.numel())
        for t in range(100):
            leaf = theta.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(problems.loss(leaf, t).sum(), leaf)
            with torch.no_grad():
                update, state = net(grad.reshape(-1), state)
            theta = theta + update.view_as(theta)
    else:
        assert baseline is not None
        cls, kwargs = BASELINES[baseline]
        theta = theta.requires_grad_(True)
        opt = cls([theta], lr=lr, **kwargs)
        for t in range(100):
            opt.zero_grad()
            problems.loss(theta, t).sum().backward()
            opt.step()
    with torch.no_grad():
        return float(problems.full_loss(theta.detach()).mean())


# ---- cost -----------------------------------------------------------------------------------------
def cost_setup(kind: str, batch: int) -> tuple[LSTMOptimizer, Problems]:
    net = LSTMOptimizer(seed=0)
    if kind == "quadratics":
        return net, QuadraticFamily().sample("train", 0, batch)
    return net, DigitsMLPFamily().sample("train", 0, 1)


def one_meta_step(net: LSTMOptimizer, problems: Problems, opt: torch.optim.Optimizer, unroll: int) -> None:
    theta = problems.init_params()
    state = net.init_state(theta.numel())
    meta, _, _ = unroll_meta_loss(net, problems, theta, state, start=0, unroll=unroll)
    opt.zero_grad()
    meta.backward()
    opt.step()


def saved_bytes(net: LSTMOptimizer, problems: Problems, unroll: int) -> int:
    """Bytes of the tensors autograd saves for the backward pass of one truncation (distinct
    storages counted once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    theta = problems.init_params()
    state = net.init_state(theta.numel())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unroll_meta_loss(net, problems, theta, state, start=0, unroll=unroll)
    return sum(seen.values())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_probe(kind: str, batch: int, unroll: int) -> dict[str, Any]:
    """Run in a fresh subprocess (glibc told to return every block of 64 KiB or more to the OS
    when freed, ``MALLOC_MMAP_THRESHOLD_``, so the resident size follows the live tensors): the
    peak growth of the resident memory during one meta-training step over the resident size just
    before it, sampled every 0.2 ms by a thread."""
    import threading

    torch.set_num_threads(1)
    net, problems = cost_setup(kind, batch)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    one_meta_step(net, problems, opt, 1)  # warm up: Adam's state, lazy initialisations
    before = _rss_bytes()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    one_meta_step(net, problems, opt, unroll)
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    return {"peak_rss_growth_mb": round((peak[0] - before) / 2**20, 2)}


def slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares line ``y = a + b x``: ``(b, a)``."""
    b, a = np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)
    return float(b), float(a)


def run_cost(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("quadratics", "mlp"):
        net, problems = cost_setup(kind, args.quad_batch)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        rows = []
        for unroll in args.cost_unrolls:
            times = []
            for _ in range(args.cost_repeats):
                t0 = time.perf_counter()
                one_meta_step(net, problems, opt, unroll)
                times.append(time.perf_counter() - t0)
            probe = subprocess.run(
                [sys.executable, __file__, "--memory-probe", kind, str(args.quad_batch), str(unroll)],
                capture_output=True, text=True, check=True, cwd=ROOT,
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
            row = {"unroll": unroll, "seconds": r(float(np.median(times)), 4),
                   "seconds_per_step_ms": r(1000 * float(np.median(times)) / unroll, 4),
                   "graph_saved_mb": round(saved_bytes(net, problems, unroll) / 2**20, 3),
                   **json.loads(probe.stdout.strip().splitlines()[-1])}
            emit({"part": "cost", "optimizee": kind, **row})
            rows.append(row)
        unrolls = [row["unroll"] for row in rows]
        t_slope, t_icpt = slope(unrolls, [row["seconds"] for row in rows])
        m_slope, m_icpt = slope(unrolls, [row["graph_saved_mb"] for row in rows])
        coords = problems.n_problems * problems.n_params
        out[kind] = {"coordinates": coords, "rows": rows,
                     "time_fit": {"seconds_per_unroll_step": r(t_slope, 4), "intercept_s": r(t_icpt, 4)},
                     "graph_memory_fit": {"mb_per_unroll_step": r(m_slope, 4), "intercept_mb": r(m_icpt, 4),
                                          "bytes_per_coordinate_step": r(m_slope * 2**20 / coords, 4)}}
    return out


# ---- main -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=("quadratics", "mlp", "cost", "all"), default="all")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--seed", type=int, default=0, help="seed of φ's initialisation")
    p.add_argument("--threads", type=int, default=1)
    # quadratics
    p.add_argument("--quad-episodes", type=int, default=1500)
    p.add_argument("--quad-batch", type=int, default=32, help="problems per episode")
    p.add_argument("--quad-meta-lr", type=float, default=1e-3)
    p.add_argument("--val-problems", type=int, default=200)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--tune-problems", type=int, default=200)
    p.add_argument("--test-problems", type=int, default=500)
    p.add_argument("--wide-dims", type=int, nargs="*", default=[20, 50])
    # mlp
    p.add_argument("--mlp-episodes", type=int, default=250)
    p.add_argument("--mlp-batch", type=int, default=1)
    p.add_argument("--mlp-meta-lr", type=float, default=3e-3)
    p.add_argument("--mlp-val-problems", type=int, default=10)
    p.add_argument("--mlp-val-every", type=int, default=25)
    p.add_argument("--mlp-tune-problems", type=int, default=32)
    p.add_argument("--mlp-test-problems", type=int, default=64)
    # cost
    p.add_argument("--cost-unrolls", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    p.add_argument("--cost-repeats", type=int, default=3)
    p.add_argument("--memory-probe", nargs=3, metavar=("KIND", "BATCH", "UNROLL"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        kind, batch, unroll = args.memory_probe
        result = memory_probe(kind, int(batch), int(unroll))
        print(json.dumps(result), flush=True)
        return result
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    out: dict[str, Any] = {"paper": "Andrychowicz et al. 2016, Learning to learn by gradient descent by gradient "
                                    "descent (NeurIPS), sec. 3.1 (quadratics, Fig. 4) and 3.2 (MNIST MLP, Fig. 5)",
                           "machine": machine(), "command": " ".join(sys.argv)}
    for part, fn in (("quadratics", run_quadratics), ("mlp", run_mlp), ("cost", run_cost)):
        if args.part in (part, "all"):
            t0 = time.perf_counter()
            out[part] = fn(args)
            out[part]["part_seconds"] = round(time.perf_counter() - t0, 1)
    out["total_seconds"] = round(time.perf_counter() - began, 1)
    out["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    path = Path(args.results_dir) / "learned_optimizer.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    emit({"total_seconds": out["total_seconds"], "written": str(path)})
    return out


if __name__ == "__main__":
    main()
