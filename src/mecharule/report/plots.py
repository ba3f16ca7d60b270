"""Report plots. Every function returns a matplotlib ``Figure`` built without pyplot (no global state,
Agg canvas when rendered); none shows anything. Inputs are the report tables (``report.tables``) or
the run's JSON records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mecharule.report.tables import THRESHOLDS, agonist_layer

BLUE, ORANGE, GREEN, GREY, RED = "#4c72b0", "#dd8452", "#55a868", "#8c8c8c", "#c44e52"


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=100)


def _bar_labels(ax: Any, bars: Any, labels: Sequence[str]) -> None:
    for bar, text in zip(bars, labels, strict=True):
        ax.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            color="#444444",
        )


def plot_accuracy_by_group(table: pd.DataFrame, column: str, positive_label: str = "correct") -> Figure:
    """Bars of the positive rate per group (``accuracy_by_group``), train and test rows side by side."""
    fig = _figure(6.5, 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(table))
    width = 0.38
    for offset, split, color in ((-width / 2, "train", BLUE), (width / 2, "test", ORANGE)):
        values = table[f"accuracy_{split}"].fillna(0.0).to_numpy()
        ax.bar(x + offset, values, width, color=color, label=f"{split} rows")
    _bar_labels(ax, ax.bar(x, table["accuracy"], 0.0), [f"n={n}" for n in table["n"]])
    ax.set_xticks(x, [str(g) for g in table["group"]])
    ax.set_ylim(0, 1.12)
    ax.set_xlabel(column)
    ax.set_ylabel(f"share {positive_label}")
    ax.set_title(f"Behaviour by {column}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_binned_accuracy(table: pd.DataFrame, feature: str, positive_label: str = "correct") -> Figure:
    """Bars of the positive rate per value or quantile bin of one feature (``binned_accuracy``)."""
    fig = _figure(6.5, 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(table))
    bars = ax.bar(x, table["accuracy"], 0.7, color=GREEN)
    _bar_labels(ax, bars, [f"n={int(n)}" for n in table["n"]])
    ax.set_xticks(
        x,
        [str(b) for b in table["bin"]],
        rotation=30 if len(table) > 5 else 0,
        ha="right" if len(table) > 5 else "center",
        fontsize=8,
    )
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(f"share {positive_label}")
    ax.set_title(f"Behaviour by {feature}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_agonists_per_layer(problems: Sequence[Mapping[str, Any]]) -> Figure:
    """Grouped bars: number of agonists in each layer, one bar per (rule, regime)."""
    counts: dict[str, dict[int, int]] = {}
    for problem in problems:
        per_layer: dict[int, int] = {}
        for agonist in problem.get("agonists") or []:
            layer = agonist_layer(agonist)
            if layer is not None:
                per_layer[layer] = per_layer.get(layer, 0) + 1
        counts[str(problem.get("key", ""))] = per_layer
    layers = sorted({layer for per in counts.values() for layer in per}) or [0]
    fig = _figure(6.5, 3.4)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(counts))
    x = np.arange(len(layers))
    colors = [BLUE, ORANGE, GREEN, RED, "#8172b3", "#937860", "#da8bc3", GREY]
    for i, (key, per) in enumerate(counts.items()):
        values = [per.get(layer, 0) for layer in layers]
        ax.bar(
            x + (i - (len(counts) - 1) / 2) * width, values, width, label=key, color=colors[i % len(colors)]
        )
    ax.set_xticks(x, [f"L{layer}" for layer in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("agonists")
    ax.set_title("Agonists per layer, per rule × regime")
    if counts:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_search_cost(validation: Mapping[str, Any]) -> Figure:
    """Left: CHA group evaluations vs brute-force singleton ablations (and the k·log2(N/k)+k bound) per
    problem. Right: recall of brute-force agonists per effect bin."""
    fig = _figure(9.5, 3.6)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    problems = list(validation.get("problems") or [])
    x = np.arange(len(problems))
    cha = [p.get("cha_group_evaluations") or 0 for p in problems]
    bf = [p.get("n_candidates") or 0 for p in problems]
    left.bar(x - 0.2, cha, 0.4, color=BLUE, label="CHA group evaluations")
    left.bar(x + 0.2, bf, 0.4, color=GREY, label="brute force (N singletons)")
    bounds = [p.get("bound") for p in problems]
    if any(b is not None for b in bounds):
        left.scatter(
            x,
            [np.nan if b is None else b for b in bounds],
            marker="_",
            s=400,
            color=RED,
            label="bound 3k·log2(N/k)+2k",
            zorder=3,
        )
    left.set_xticks(x, [str(p.get("key", "")) for p in problems], fontsize=8)
    tallest = max([*cha, *bf, *(b for b in bounds if b is not None), 1])
    left.set_ylim(0, tallest * 1.4)  # room for the legend above the bars
    left.set_ylabel("interventions")
    left.set_title("Search cost per rule × regime")
    left.legend(fontsize=7)
    groups = validation.get("all_units") or {}
    regimes = sorted(groups)
    edges = sorted({edge for bins in groups.values() for edge in bins}, key=float, reverse=True)
    width = 0.8 / max(1, len(regimes))
    for i, regime in enumerate(regimes):
        cells = [groups[regime].get(e, {}) for e in edges]
        values = [0.0 if c.get("recall") is None else c["recall"] for c in cells]
        color = GREEN if regime == "positive" else RED
        bars = right.bar(np.arange(len(edges)) + i * width, values, width, color=color, label=regime)
        totals = [c.get("in_shortlist", 0) + c.get("outside_shortlist_estimate", 0) for c in cells]
        _bar_labels(right, bars, [f"{c.get('found', 0)}/{t:g}" for c, t in zip(cells, totals, strict=True)])
    right.set_xticks(np.arange(len(edges)) + width * (len(regimes) - 1) / 2, [f"≥ {e}" for e in edges])
    right.set_ylim(0, 1.15)
    right.set_xlabel("observed flip rate of the unit alone (bin lower edge)")
    right.set_ylabel("recall over all units")
    right.legend(fontsize=7)
    right.set_title("Recall by effect bin")
    fig.tight_layout()
    return fig


def plot_flip_rates(table: pd.DataFrame, top: int = 30) -> Figure:
    """Horizontal stacked bars of each agonist's 1→0 and 0→1 flip rates (top by any-flip rate)."""
    data = table.assign(_any=table["any"].fillna(0.0)).sort_values("_any", ascending=False).head(top)
    data = data.iloc[::-1]
    fig = _figure(6.5, 0.22 * len(data) + 1.3)
    ax = fig.add_subplot()
    y = np.arange(len(data))
    t2f = data["true_to_false"].fillna(0.0).to_numpy()
    ax.barh(y, t2f, color=RED, label="1→0 (positive → negative)")
    ax.barh(
        y,
        data["false_to_true"].fillna(0.0).to_numpy(),
        left=t2f,
        color=BLUE,
        label="0→1 (negative → positive)",
    )
    ax.set_yticks(y, data["site"].tolist(), fontsize=7)
    ax.set_xlabel("share of evaluated prompts whose label flips")
    ax.set_title(f"Flip rate per agonist (ablated alone; top {len(data)})", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_suppression(problems: Sequence[Mapping[str, Any]]) -> Figure:
    """Positive rate before and after ablating all of a problem's agonists together, per slice."""
    rows = []
    for problem in problems:
        suppression = problem.get("suppression") or {}
        for side in ("covered", "unrelated"):
            entry = suppression.get(side)
            if entry:
                rows.append(
                    (
                        f"{problem.get('key')}\n{side}",
                        entry.get("positive_rate_before"),
                        entry.get("positive_rate_after"),
                    )
                )
    fig = _figure(6.5, 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    before = [r[1] or 0.0 for r in rows]
    after = [r[2] or 0.0 for r in rows]
    ax.bar(x - 0.2, before, 0.4, color=GREY, label="before")
    ax.bar(x + 0.2, after, 0.4, color=RED, label="all agonists ablated")
    ax.set_xticks(x, [r[0] for r in rows], fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("positive rate")
    ax.set_title("Joint suppression of the agonists")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_hq_counts(table: pd.DataFrame) -> Figure:
    """HQ count versus MCC threshold (0.70 … 0.90): anchored rules solid, controls dashed."""
    fig = _figure(6.5, 4.4)
    ax = fig.add_subplot()
    columns = [f"t = {t:.2f}" for t in THRESHOLDS]
    for row in table.to_dict(orient="records"):
        values = [np.nan if row.get(c) is None else row[c] for c in columns]
        control = "control" in str(row["method"])
        marker = "o" if str(row["scope"]).startswith("test") else "s"
        ax.plot(
            THRESHOLDS,
            np.asarray(values, dtype=float),
            marker=marker,
            linestyle="--" if control else "-",
            alpha=0.7 if control else 1.0,
            label=f"{row['method']}, {str(row['scope']).split(' (')[0]}",
        )
    ax.set_xticks(THRESHOLDS)
    ax.set_xlabel("MCC threshold t")
    ax.set_ylabel("agonists with best rule MCC ≥ t")
    ax.set_title("High-quality neuron-anchored rules vs threshold")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def plot_mcc_against_controls(
    rows: Sequence[tuple[str, Sequence[float] | None, str]], threshold: float
) -> Figure:
    """The best anchored-rule test MCC per unit, one strip per row (label, values or None, note):
    the agonists against the permuted-flip and random-unit controls, with the HQ threshold."""
    fig = _figure(6.5, 1.0 + 0.75 * len(rows))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # jitter only: the same picture at every render
    colors = [BLUE, GREY, ORANGE]
    present = [v for _, values, _ in rows for v in values or []]
    low = min([-0.2, *(v - 0.05 for v in present)])
    for i, (_, values, note) in enumerate(rows):
        y = len(rows) - 1 - i
        if values:
            data = np.asarray(values, dtype=float)
            ax.boxplot(data, positions=[y], vert=False, widths=0.5, showfliers=False, manage_ticks=False)
            ax.scatter(data, y + rng.uniform(-0.18, 0.18, len(data)), s=16, color=colors[i % 3], zorder=3)
        if note:
            ax.annotate(
                note, (low + 0.02, y + 0.3 if values else y), fontsize=7, color="#444444", va="center"
            )
    ax.axvline(threshold, color=RED, linestyle="--", linewidth=0.9, label=f"HQ threshold {threshold:.2f}")
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows][::-1], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlim(low, 1.0)
    ax.set_xlabel("best anchored-rule test MCC (held out)")
    ax.set_title("Best anchored rule per unit against the controls", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
