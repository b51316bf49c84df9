"""The two PNGs beside a result file: meta-training curves (and checkpoint selection), and the
meta-test against inner steps with the papers' numbers."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any


def _band(series: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """Mean over seeds per iteration with its 95% t interval (the mean itself with one seed)."""
    from workers.evaluate import Interval

    n = min(len(s) for s in series)
    mean, low, high = [], [], []
    for i in range(n):
        iv = Interval.of([s[i] for s in series])
        mean.append(iv.mean)
        low.append(iv.mean if iv.low is None else iv.low)
        high.append(iv.mean if iv.high is None else iv.high)
    return mean, low, high


def learning_png(result: dict[str, Any]) -> bytes:
    """Pre vs post adaptation per iteration (success for success suites), mean over seeds, band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = result["evaluation"]["metric"]
    chosen = (result.get("selection") or {}).get("per_seed") or {}
    fig, axes = plt.subplots(1, 2 if chosen else 1, figsize=(13 if chosen else 7, 4.2), squeeze=False)
    ax = axes[0][0]
    colors = {"maml": "tab:blue", "multitask-pg": "tab:orange"}
    for variant, by_seed in result["learning_curves"].items():
        for phase, style in (("pre", ":"), ("post", "-")):
            series = [c[f"meta/{metric}_{phase}"] for c in by_seed.values()]
            mean, low, high = _band(series)
            x = list(range(len(mean)))
            ax.plot(x, mean, style, color=colors.get(variant, "tab:gray"), marker="o" if len(x) < 3 else None,
                    label=f"{variant} {'before' if phase == 'pre' else 'after'} adaptation")
            ax.fill_between(x, low, high, color=colors.get(variant, "tab:gray"), alpha=0.2, linewidth=0)
    ax.set_xlabel("meta-iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_ylabel("success rate (training tasks)" if metric == "success" else "average return (training tasks)")
    if metric == "success":
        ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{len(result['seeds'])} seed(s): mean over seeds and 95% interval", fontsize=9)
    ax.legend(fontsize=8)
    if chosen:
        _selection_panel(axes[0][1], result["selection"], steps=result["evaluation"]["steps"])
    fig.suptitle(f"{result['title']}: meta-training{_partial_suffix(result)}", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _selection_panel(ax: Any, selection: dict[str, Any], *, steps: int) -> None:
    """Validation return after k inner steps against the checkpoint's iteration (mean over
    seeds, on the iterations every seed has), the chosen checkpoints marked."""
    per_seed = list(selection["per_seed"].values())
    common = sorted(set.intersection(*({c["iteration"] for c in s["candidates"]} for s in per_seed)))
    for k in range(steps + 1):
        series = [[next(c["return"][k] for c in s["candidates"] if c["iteration"] == it) for it in common]
                  for s in per_seed]
        mean, low, high = _band(series)
        line, = ax.plot(common, mean, marker="." if k else None, label=f"after {k} step{'s' if k != 1 else ''}")
        ax.fill_between(common, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    for i, s in enumerate(per_seed):
        ax.axvline(s["iteration"], color="black", linestyle="--", alpha=0.5,
                   label="chosen checkpoints" if i == 0 else None)
    ax.set_xlabel("meta-iteration of the checkpoint")
    ax.set_ylabel(f"average return ({selection['tasks']} validation tasks)")
    ax.set_title("checkpoint selection: validation tasks, mean over seeds and 95% interval", fontsize=9)
    ax.legend(fontsize=8)


def evaluation_png(result: dict[str, Any]) -> bytes:
    """Meta-test result against gradient steps with 95% intervals over seeds; the papers' numbers
    as separate marked lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = result["evaluation"]["metric"]
    splits = result["evaluation"]["splits"]
    fig, axes = plt.subplots(1, len(splits), figsize=(6.5 * len(splits), 4.2), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for i, (variant, by_split) in enumerate(result["summary"].items()):
            points = by_split.get(split, {}).get(metric, [])
            x = [p["step"] + 0.04 * i for p in points]
            y = [p["mean"] for p in points]
            err = [[p["mean"] - (p["low"] if p["low"] is not None else p["mean"]) for p in points],
                   [(p["high"] if p["high"] is not None else p["mean"]) - p["mean"] for p in points]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=4, label=f"ours: {variant}")
        settings = sorted({p["setting"] for p in result["published"] if p["split"] == split and p["comparable"]})
        for setting, marker in zip(settings, "sD^v*", strict=False):
            pts = sorted((p["step"], p["value"]) for p in result["published"]
                         if p["split"] == split and p["comparable"] and p["setting"] == setting)
            ax.plot([s for s, _ in pts], [v for _, v in pts], "--", marker=marker, markersize=8, color="black",
                    alpha=0.6, label=f"published ({setting})")
        steps = result["evaluation"]["steps"]
        ax.set_xticks(range(steps + 1))
        if metric == "success":
            after = [f"after {k} step{'s' if k > 1 else ''}" for k in range(1, steps + 1)]
            ax.set_xticklabels(["before adaptation", *after])
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("gradient steps at meta-test")
        ax.set_ylabel("success rate" if metric == "success" else "average return")
        ax.set_title(f"{split} tasks, {len(result['seeds'])} seed(s): mean over seeds and 95% interval", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['title']}: meta-test{_partial_suffix(result)}", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _partial_suffix(result: dict[str, Any]) -> str:
    partial = result.get("partial")
    return f" (partial run: iteration {partial['iterations_done']} of {result['iterations']})" if partial else ""


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
