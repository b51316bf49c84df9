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


_VARIANT_COLORS = {"maml": "tab:blue", "multitask-pg": "tab:orange", "rl2": "tab:red"}


def learning_png(result: dict[str, Any]) -> bytes:
    """Pre vs post adaptation per iteration (success for success suites), mean over seeds, band;
    a suite comparing algorithms: each variant's declared headline metrics against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if result.get("variants"):
        return _variants_learning_png(result)
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

    if result.get("variants"):
        return _variants_evaluation_png(result)
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


def _variants_learning_png(result: dict[str, Any]) -> bytes:
    """One panel per kind of metric (return; success): each trained variant's declared headline
    metrics (and its success before adaptation) against the env steps it has sampled, so that
    variants with different iterations on the same budget line up; labelled with the metric's."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    kinds = ["return", "success"] if result["evaluation"]["metric"] == "success" else ["return"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(7 * len(kinds), 4.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for variant, info in result["variants"].items():
            by_seed = list(result["learning_curves"].get(variant, {}).values())
            # before adaptation first (dotted), after it solid, any other declared metric dashed
            labels = {info["before_key"]: "success, first episode of a trial" if info["adaptation"] == "trial"
                      else "success before adaptation"}
            labels.update({m["key"]: m["label"] for m in info["metrics"]})
            shown = [k for k in labels if kind in k and by_seed and all(c.get(k) for c in by_seed)]
            for key in shown:
                mean, low, high = _band([c[key] for c in by_seed])
                x = _band([c["perf/env_steps_total"] for c in by_seed])[0]
                n = min(len(x), len(mean))
                color = _VARIANT_COLORS.get(variant, "tab:gray")
                style = ":" if key == info["before_key"].replace("success", kind) else \
                    "-" if key == info["after_key"].replace("success", kind) else "--"
                ax.plot(x[:n], mean[:n], style, color=color, marker="o" if n < 3 else None,
                        label=f"{info['label']}: {labels[key]}")
                ax.fill_between(x[:n], low[:n], high[:n], color=color, alpha=0.15, linewidth=0)
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.set_xlabel("env steps sampled")
        ax.set_ylabel(f"{'success rate' if kind == 'success' else 'average return'} (training tasks)")
        if kind == "success":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{len(result['seeds'])} seed(s): mean over seeds and 95% interval", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{result['title']}: meta-training{_partial_suffix(result)}", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _variants_evaluation_png(result: dict[str, Any]) -> bytes:
    """A row per split, a panel per trained variant (shared y): RL²'s metric per episode index of
    the adaptation trial and then its evaluation episodes, next to MAML's before/after each
    gradient step; the papers' numbers marked at the step they report."""
    import matplotlib.pyplot as plt

    metric = result["evaluation"]["metric"]
    splits = result["evaluation"]["splits"]
    variants = result["variants"]
    fig, axes = plt.subplots(len(splits), len(variants), figsize=(6 * len(variants), 4.2 * len(splits)),
                             squeeze=False, sharey="row")
    for row, split in zip(axes, splits, strict=True):
        for ax, (variant, info) in zip(row, variants.items(), strict=True):
            points = result["summary"].get(variant, {}).get(split, {}).get(metric, [])
            x = list(range(len(points)))
            y = [p["mean"] for p in points]
            err = [[p["mean"] - (p["low"] if p["low"] is not None else p["mean"]) for p in points],
                   [(p["high"] if p["high"] is not None else p["mean"]) - p["mean"] for p in points]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=4, color=_VARIANT_COLORS.get(variant, "tab:gray"),
                        label=f"ours: {info['label']}")
            published = [p for p in result["published"]
                         if p["variant"] == variant and p["split"] == split and p["comparable"] and points]
            for p, marker in zip(published, "sD^v*", strict=False):
                ax.plot([x[p["step"]]], [p["value"]], marker=marker, markersize=9, color="black", alpha=0.6,
                        linestyle="none", label=f"published ({p['setting']})")
            if info["adaptation"] == "trial":
                ax.set_xticks(x, [*(str(k + 1) for k in x[:-1]), "eval"] if x else [])
                ax.set_xlabel("episode of the adaptation trial, then the evaluation episodes")
            else:
                ax.set_xticks(x, ["before", *(f"after {k}" for k in x[1:])] if x else [])
                ax.set_xlabel("gradient steps at meta-test")
            if metric == "success":
                ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("success rate" if metric == "success" else "average return")
            ax.set_title(f"{info['label']}, {split} tasks, {len(result['seeds'])} seed(s): mean over seeds and "
                         "95% interval", fontsize=9)
            ax.legend(fontsize=8)
    fig.suptitle(f"{result['title']}: meta-test{_partial_suffix(result)}", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _partial_suffix(result: dict[str, Any]) -> str:
    partial = result.get("partial")
    if partial and partial.get("iterations_done_by_variant"):
        labels = {v: info["label"] for v, info in result.get("variants", {}).items()}
        done = ", ".join(f"{labels.get(v, v)} iteration {it} of {result['iterations'][v]}"
                         for v, it in partial["iterations_done_by_variant"].items())
        return f" (partial run: {done})"
    return f" (partial run: iteration {partial['iterations_done']} of {result['iterations']})" if partial else ""


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
