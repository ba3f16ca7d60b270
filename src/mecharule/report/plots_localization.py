"""Per-problem plots of the localization section: which units CHA accepted and why (selectivity),
whether attribution ranked them well (score vs effect), where they sit in the model (layer × unit
map) and how the search spent its evaluations (the tree, level by level).

Like ``report.plots``, every function returns a matplotlib ``Figure`` built without pyplot. The
``*_frame``/``*_counts`` helpers turn the run's records (``localization/summary.json`` problems and
the compact ``trace.jsonl`` records of ``report.load``) into the tables the plots draw.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from mecharule.report.plots import BLUE, GREEN, GREY, ORANGE, RED
from mecharule.report.tables import agonist_layer, effect, is_missing

DECISIONS = (  # trace decision, legend label, colour (the search tree's stacked bars)
    ("split", "split (strong group)", BLUE),
    ("prune", "pruned (weak group)", GREY),
    ("agonist", "accepted (agonist)", GREEN),
    ("leaf_weak", "single unit, rejected", ORANGE),
    ("catastrophic", "catastrophic unit", RED),
)
SINGLE_DECISIONS = ("agonist", "leaf_weak", "catastrophic")
UNIT_INDEX = re.compile(r"\[(\d+)\]$")
MAX_COLUMNS = 96  # the heatmap bins a wider layer so each column stays visible
UNBINNED_WIDTH = 128  # ... but shows up to this many units one per column


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=100)


def unit_index(unit: str) -> int | None:
    match = UNIT_INDEX.search(unit)
    return int(match.group(1)) if match else None


def layer_colors(layers: Sequence[int]) -> dict[int, Any]:
    """A colour per layer: tab10 for up to 10 layers, else viridis along the depth."""
    ordered = sorted(set(layers))
    if len(ordered) <= 10:
        return {layer: colormaps["tab10"](i) for i, layer in enumerate(ordered)}
    cmap = colormaps["viridis"]
    return {layer: cmap(i / max(1, len(ordered) - 1)) for i, layer in enumerate(ordered)}


def _layer_handles(ax: Any, colors: Mapping[int, Any], prefix: str = "", marker: str = "o") -> None:
    """Legend entries of the layer colours (every layer up to 10, else first, middle and last)."""
    layers = sorted(colors)
    shown = layers if len(layers) <= 10 else [layers[0], layers[len(layers) // 2], layers[-1]]
    for layer in shown:
        ax.scatter([], [], color=colors[layer], s=28, marker=marker, edgecolor="black", linewidth=0.4,
                   label=f"{prefix}L{layer}")  # fmt: skip


# -- selectivity ------------------------------------------------------------------------------------
def singletons_frame(problem: Mapping[str, Any], trace: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Every unit tested alone in one problem (from the trace; the summary's agonists when it has
    none): ``unit, layer, covered, unrelated, agonist``."""
    rows: dict[str, dict[str, Any]] = {}
    for record in trace:
        unit = record.get("unit")
        if unit and record.get("decision") in SINGLE_DECISIONS and not record.get("memo_hit"):
            rows[str(unit)] = {
                "unit": str(unit),
                "layer": agonist_layer({"unit": unit}),
                "covered": record.get("covered_rate"),
                "unrelated": record.get("unrelated_rate"),
                "agonist": record.get("decision") == "agonist",
            }
    for agonist in problem.get("agonists") or []:
        unit = str(agonist.get("unit", ""))
        rows[unit] = {
            "unit": unit,
            "layer": agonist_layer(agonist),
            "covered": effect(agonist, "covered").get("rate"),
            "unrelated": effect(agonist, "unrelated").get("rate"),
            "agonist": True,
        }
    frame = pd.DataFrame(list(rows.values()), columns=["unit", "layer", "covered", "unrelated", "agonist"])
    return frame.dropna(subset=["covered", "unrelated"]).reset_index(drop=True)


def plot_selectivity(frame: pd.DataFrame, tau: float, title: str) -> Figure:
    """Covered (x) vs unrelated (y) flip rate of each unit tested alone: agonists coloured by layer,
    rejected units as small grey dots; the τ lines and the diagonal (no selectivity)."""
    fig = _figure(5.6, 4.6)
    ax = fig.add_subplot()
    rejected, accepted = frame[~frame["agonist"].astype(bool)], frame[frame["agonist"].astype(bool)]
    if len(rejected):
        ax.scatter(rejected["covered"], rejected["unrelated"], s=9, color="#c0c0c0", label="tested, rejected")
    layers = [int(v) for v in accepted["layer"].dropna()]
    colors = layer_colors(layers)
    for layer, part in accepted.groupby(accepted["layer"].fillna(-1).astype(int)):
        color = colors.get(int(layer), GREY)
        ax.scatter(part["covered"], part["unrelated"], s=28, color=color, edgecolor="black", linewidth=0.4)
    ax.plot([0, 1], [0, 1], color="#666666", linewidth=0.8, linestyle=":", label="diagonal (not selective)")
    ax.axvline(tau, color=RED, linewidth=0.9, linestyle="--", label=f"τ = {tau:g}")
    ax.axhline(tau, color=RED, linewidth=0.9, linestyle="--")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("covered prompts: flip rate (unit ablated alone)")
    ax.set_ylabel("unrelated prompts: flip rate")
    ax.set_title(f"{title}: selectivity ({len(accepted)} agonists of {len(frame)} units tested)", fontsize=9)
    _layer_handles(ax, colors, "agonist, ")
    ax.legend(fontsize=7, loc="best", framealpha=0.85)
    fig.tight_layout()
    return fig


# -- attribution score vs effect ---------------------------------------------------------------------
def scored_agonists(problem: Mapping[str, Any]) -> pd.DataFrame:
    """The agonists that carry an attribution score: ``unit, layer, score, covered``."""
    rows = [
        {
            "unit": str(a.get("unit", "")),
            "layer": agonist_layer(a),
            "score": float(a["score"]),
            "covered": effect(a, "covered").get("rate"),
        }
        for a in problem.get("agonists") or []
        if not is_missing(a.get("score"))
    ]
    frame = pd.DataFrame(rows, columns=["unit", "layer", "score", "covered"])
    return frame.dropna(subset=["covered"]).reset_index(drop=True)


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ (Pearson on average ranks); None below 3 points or without spread."""
    if len(x) < 3:
        return None
    rx, ry = pd.Series(list(x)).rank().to_numpy(), pd.Series(list(y)).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def plot_score_vs_effect(frame: pd.DataFrame, tau: float, title: str) -> Figure:
    """|attribution score| (x) vs covered flip rate (y) of the agonists: ● positive score, ▼ negative."""
    fig = _figure(5.6, 4.2)
    ax = fig.add_subplot()
    colors = layer_colors([int(v) for v in frame["layer"].dropna()])
    for sign, marker in ((True, "o"), (False, "v")):
        part = frame[(frame["score"] >= 0) == sign]
        if len(part):
            ax.scatter(
                part["score"].abs(),
                part["covered"],
                s=30,
                marker=marker,
                c=[colors.get(int(v), GREY) if not is_missing(v) else GREY for v in part["layer"]],
                edgecolor="black",
                linewidth=0.4,
            )
    ax.axhline(tau, color=RED, linewidth=0.9, linestyle="--", label=f"τ = {tau:g}")
    ax.scatter([], [], marker="o", color="white", edgecolor="black", label="score ≥ 0")
    ax.scatter([], [], marker="v", color="white", edgecolor="black", label="score < 0")
    rho = rank_correlation(frame["score"].abs().tolist(), frame["covered"].tolist())
    extra = f"; Spearman ρ = {rho:.2f}" if rho is not None else ""
    ax.set_xlabel("|attribution score|")
    ax.set_ylabel("covered prompts: flip rate (ablated alone)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{title}: attribution vs ablation ({len(frame)} agonists{extra})", fontsize=9)
    _layer_handles(ax, colors)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# -- layer × unit map -------------------------------------------------------------------------------
def layer_widths(problem: Mapping[str, Any], trace: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Per layer seen in the search: how many units it has at least (largest index seen + 1)."""
    widths: dict[int, int] = {}
    seen = [(r.get("root"), r.get("max_index")) for r in trace]
    seen += [
        (f"L{agonist_layer(a)}", unit_index(str(a.get("unit", "")))) for a in problem.get("agonists") or []
    ]
    for root, index in seen:
        match = re.match(r"L(\d+)", str(root or ""))
        if match and index is not None:
            layer = int(match.group(1))
            widths[layer] = max(widths.get(layer, 0), int(index) + 1)
    return widths


def effect_grid(problem: Mapping[str, Any], widths: Mapping[int, int]) -> tuple[np.ndarray, list[int], int]:
    """Rows = layers, columns = units (bins of ``bin_size`` units when wide): the largest covered flip
    rate of an agonist in the cell, 0 elsewhere. Returns the grid, its layers and the bin size."""
    layers = list(range(min(widths), max(widths) + 1)) if widths else []
    width = max(widths.values(), default=1)
    bin_size = 1 if width <= UNBINNED_WIDTH else math.ceil(width / MAX_COLUMNS)
    grid = np.zeros((len(layers), math.ceil(width / bin_size)))
    for agonist in problem.get("agonists") or []:
        layer, index = agonist_layer(agonist), unit_index(str(agonist.get("unit", "")))
        rate = effect(agonist, "covered").get("rate")
        if layer in layers and index is not None and rate is not None and not is_missing(rate):
            row, column = layers.index(layer), index // bin_size
            grid[row, column] = max(grid[row, column], float(rate))
    return grid, layers, bin_size


def plot_effect_heatmap(grid: np.ndarray, layers: Sequence[int], bin_size: int, title: str) -> Figure:
    """The layer × unit map of ``effect_grid``: white = no agonist, yellow → red = covered flip rate."""
    fig = _figure(6.5, 1.6 + 0.32 * len(layers))
    ax = fig.add_subplot()
    cmap = colormaps["YlOrRd"].with_extremes(bad="white")
    shown = ax.imshow(
        np.ma.masked_equal(grid, 0.0), aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest"
    )
    ax.set_yticks(range(len(layers)), [f"L{layer}" for layer in layers], fontsize=7)
    ax.set_xlabel("unit index" if bin_size == 1 else f"unit index ÷ {bin_size} (bins of {bin_size} units)")
    ax.set_title(f"{title}: where the agonists are ({int((grid > 0).sum())} cells)", fontsize=9)
    for spine in ax.spines.values():
        spine.set_color("#bbbbbb")
    fig.colorbar(shown, ax=ax, label="covered flip rate", fraction=0.04, pad=0.02)
    fig.tight_layout()
    return fig


# -- the search tree --------------------------------------------------------------------------------
def decision_table(trace: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per level: evaluations per decision (memo hits excluded) and the largest group evaluated."""
    frame = pd.DataFrame([r for r in trace if not r.get("memo_hit")], columns=["level", "decision", "size"])
    if not len(frame):
        return pd.DataFrame()
    counts = pd.crosstab(frame["level"], frame["decision"])
    for decision, _, _ in DECISIONS:
        if decision not in counts.columns:
            counts[decision] = 0
    counts["largest"] = frame.groupby("level")["size"].max()
    return counts.sort_index()


def plot_search_tree(counts: pd.DataFrame, title: str) -> Figure:
    """Stacked bars per level of the evaluations CHA spent, by decision; each bar's total and largest
    group above it."""
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(counts))
    bottom = np.zeros(len(counts))
    for decision, label, color in DECISIONS:
        values = counts[decision].to_numpy(dtype=float)
        if values.any():
            ax.bar(x, values, 0.7, bottom=bottom, color=color, label=label)
            bottom += values
    for xi, total, largest in zip(x, bottom, counts["largest"], strict=True):
        ax.annotate(f"{int(total)}\n≤{int(largest)}", (xi, total), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7, color="#444444")  # fmt: skip
    ax.set_xticks(x, [f"{level}" + (" (roots)" if level == 0 else "") for level in counts.index])
    ax.set_ylim(0, max(1.0, float(bottom.max())) * 1.3)
    ax.set_xlabel("level of the search (one batched oracle call each)")
    ax.set_ylabel("group evaluations")
    ax.set_title(f"{title}: search tree ({int(bottom.sum())} evaluations)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
