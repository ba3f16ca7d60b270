"""Plots of a rule report. Functions return matplotlib Figures (no pyplot, no global state);
``save_figure`` writes one atomically as PNG with the Agg canvas."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mecharule.io.rundir import atomic_path


def plot_shap_importance(
    importance: pd.DataFrame, descriptions: Mapping[str, str] | None = None, top: int = 20
) -> Figure:
    """Horizontal bars of TreeSHAP mean |contribution| (+ std as error bar), top features."""
    data = importance.sort_values("upper_bound", ascending=False).head(top).iloc[::-1]
    labels = [(descriptions or {}).get(str(name)) or str(name) for name in data.index]
    fig = Figure(figsize=(7, 0.35 * len(data) + 1.2))
    ax = fig.add_subplot()
    ax.barh(labels, data["mean_abs"], xerr=data["std_abs"], color="#4c72b0", ecolor="#999999")
    ax.set_xlabel("mean |SHAP contribution| (error bar: std)")
    ax.set_title("Feature importance (TreeSHAP on the training rows)")
    fig.tight_layout()
    return fig


def plot_coverage_precision(disjuncts: Sequence[Mapping[str, Any]], scope: str = "test") -> Figure:
    """Scatter of each disjunct's coverage vs precision on one scope, labelled by rule id."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for item in disjuncts:
        metrics = item["metrics"].get(scope) or item["metrics"]["all"]
        ax.scatter(metrics["coverage"], metrics["precision"], s=40, color="#dd8452")
        ax.annotate(
            item["id"],
            (metrics["coverage"], metrics["precision"]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
        )
    if disjuncts:
        prevalence = (disjuncts[0]["metrics"].get(scope) or disjuncts[0]["metrics"]["all"])["prevalence"]
        ax.axhline(prevalence, color="#999999", linestyle="--", linewidth=1, label="target prevalence")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"coverage ({scope} rows)")
    ax.set_ylabel(f"precision ({scope} rows)")
    ax.set_title("Behaviour rules: coverage vs precision")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
