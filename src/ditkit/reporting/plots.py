"""The run report's plots (matplotlib, PNG bytes), and the two helpers every plot uses."""

from __future__ import annotations

import io
import math
from typing import Any

from .results import RunResults

_ROLE_COLOURS = {"reader": "#c0392b", "baseline": "#5d7fa3", "oracle": "#b8b8b8"}


def png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(results: RunResults) -> bytes | None:
    """Mean and 95% interval of DIT, the baselines and the oracles (grey, hatched) on the main
    metric and, when present, retrieval@5: horizontal bars, labels readable."""
    metrics = [m for m in (results.primary_metric(), "retrieval_at_5") if m in results.metrics]
    metrics = list(dict.fromkeys(metrics))
    if not metrics:
        return None
    plt = pyplot()
    methods = results.compared()
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(5.2 * len(metrics), 0.45 * len(methods) + 1.2), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics):
        shown = [m for m in methods if isinstance(results.scores.get(m, {}).get(metric), dict)]
        stats = [results.scores[m][metric] for m in shown]
        means = [float(s["mean"]) for s in stats]
        lo = [max(mu - float((s.get("ci95") or (mu, mu))[0]), 0.0) for mu, s in zip(means, stats)]
        hi = [max(float((s.get("ci95") or (mu, mu))[1]) - mu, 0.0) for mu, s in zip(means, stats)]
        ys = list(range(len(shown)))[::-1]
        roles = [results.role(m) for m in shown]
        ax.barh(
            ys,
            means,
            xerr=[lo, hi],
            capsize=3,
            color=[_ROLE_COLOURS.get(r, "#5d7fa3") for r in roles],
        )
        for y, r, mu in zip(ys, roles, means):
            if r == "oracle":
                ax.barh([y], [mu], color="none", edgecolor="#777", hatch="//")
        ax.set_yticks(ys, [results.label(m) for m in shown], fontsize=9)
        ax.set_xlabel(f"{metric} (mean, 95% interval)")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return png(fig)


def hit_matrix(results: RunResults) -> bytes | None:
    """Diffs x methods on the main metric: per-diff hits and misses (0/1 scores) or a colour
    scale (continuous scores), diff checks included, so wins and losses can be read off."""
    metric = results.primary_metric()
    if metric is None:
        return None
    methods = [m for m in results.methods if results.per_diff(m, metric)]
    per = {m: results.per_diff(m, metric) for m in methods}
    diffs = list(dict.fromkeys(d for m in methods for d in per[m]))
    if not diffs:
        return None
    plt = pyplot()
    grid = [[per[m].get(d, math.nan) for m in methods] for d in diffs]
    fig, ax = plt.subplots(figsize=(0.75 * len(methods) + 3.0, min(0.22 * len(diffs) + 1.8, 24)))
    image = ax.imshow(grid, aspect="auto", cmap="Greens", vmin=0, interpolation="nearest")
    ax.set_xticks(range(len(methods)), [results.label(m) for m in methods], rotation=35, ha="right")
    labels = {
        p["diff_id"]: str(p.get("label") or p.get("topic") or "") for p in results.predictions
    }
    ax.set_yticks(range(len(diffs)), [labels.get(d) or str(d) for d in diffs], fontsize=7)
    ax.set_title(f"{metric} per diff (dark: named)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    return png(fig)
