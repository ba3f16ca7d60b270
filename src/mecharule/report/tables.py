"""The report's tables as pandas DataFrames (pure functions of the run's artifacts), and writers for
their Markdown and CSV forms.

Paper-style tables (REFERENCE-METHOD §11): ``hq_counts`` (Table 2: neurons whose best anchored rule
reaches MCC ≥ t, t = 0.70 … 0.90, with controls), ``cha_vs_bruteforce`` (Table 3: recall of
brute-force agonists per effect bin, budget and wall-time ratio), plus ``behaviour_rules`` and
``agonists``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mecharule.io.rundir import atomic_path

THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.90)
SCOPE_LABELS = {"test": "test (held out)", "all": "all rows (descriptive, not held out)"}
FLIP_TARGETS = {"any": "any flip", "true_to_false": "1→0", "false_to_true": "0→1"}
MISSING = "—"


# -- formatting -------------------------------------------------------------------------------------
def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, digits: int = 3) -> str:
    """Display form of a cell: 3 decimals for floats, "—" for missing values, yes/no for bools."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return f"{number:.{1 if abs(number) >= 100 else digits}f}"
    return str(value)


def pct(found: int, total: int) -> str:
    """Paper style "found/total (pct)"; "—" when there is nothing to find."""
    return f"{found}/{total} ({100.0 * found / total:.1f}%)" if total else MISSING


def bin_label(low: float, high: float) -> str:
    """ "[0.2, 0.3)"; a last bin that reaches 1 is closed: "[0.5, 1.0]"."""
    return f"[{low:.1f}, 1.0]" if high >= 1.0 else f"[{low:.1f}, {high:.1f})"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def numeric_columns(frame: pd.DataFrame) -> list[bool]:
    """Per column: every present value is a number (such columns are right-aligned)."""
    out = []
    for column in frame.columns:
        values = [v for v in frame[column].tolist() if not is_missing(v)]
        out.append(bool(values) and all(_is_number(v) for v in values))
    return out


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned, pipes escaped)."""

    def cell(value: Any) -> str:
        return fmt(value).replace("|", "\\|").replace("\n", " ")

    numeric = numeric_columns(frame)
    lines = [
        "| " + " | ".join(cell(c) for c in frame.columns) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Write ``<name>.md`` and ``<name>.csv`` for every table, atomically; return the paths."""
    written = []
    for name, frame in tables.items():
        with atomic_path(out_dir / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
            tmp.chmod(0o644)  # readable like any report file (the temporary file is private)
        with atomic_path(out_dir / f"{name}.md") as tmp:
            tmp.write_text(to_markdown(frame))
            tmp.chmod(0o644)
        written += [out_dir / f"{name}.csv", out_dir / f"{name}.md"]
    return written


# -- behaviour --------------------------------------------------------------------------------------
def accuracy_by_group(behaviour: pd.DataFrame, column: str) -> pd.DataFrame:
    """Positive rate (accuracy) and prompt count per value of a metadata column, train and test."""
    frame = behaviour[[column, "label", "split"]].copy()
    frame[column] = frame[column].astype(str)
    grouped = frame.groupby(column, sort=True)
    out = pd.DataFrame({"n": grouped.size(), "accuracy": grouped["label"].mean()})
    for split in ("train", "test"):
        part = frame[frame["split"] == split].groupby(column)["label"].mean()
        out[f"accuracy_{split}"] = part.reindex(out.index)
    return out.reset_index().rename(columns={column: "group"})


def binned_accuracy(values: pd.Series, label: pd.Series, max_bins: int = 8) -> pd.DataFrame:
    """Accuracy per value (≤ ``max_bins`` distinct values) or per quantile bin; NaN = "n/a" bin."""
    values = pd.to_numeric(values, errors="coerce")
    present = values.notna()
    distinct = np.sort(values[present].unique())
    if len(distinct) <= max_bins:
        keys = values.map(lambda v: MISSING if pd.isna(v) else fmt(float(v), 2).rstrip("0").rstrip("."))
        order = [fmt(float(v), 2).rstrip("0").rstrip(".") for v in distinct]
    else:
        codes = pd.qcut(values[present], q=max_bins, duplicates="drop", labels=False)
        spans = values[present].groupby(codes).agg(["min", "max"])
        names = {code: f"{row['min']:.4g} to {row['max']:.4g}" for code, row in spans.iterrows()}
        keys = pd.Series(MISSING, index=values.index, dtype=object)
        keys[present] = codes.map(names)
        order = [names[code] for code in sorted(names)]
    if not present.all():
        order.append(MISSING)
    grouped = pd.DataFrame({"bin": keys, "label": label.to_numpy()}).groupby("bin")["label"]
    out = pd.DataFrame({"n": grouped.size(), "accuracy": grouped.mean()}).reindex(order).dropna(subset=["n"])
    return out.reset_index().rename(columns={"index": "bin"})


# -- behaviour rules --------------------------------------------------------------------------------
def _metric(metrics: Mapping[str, Any] | None, scope: str, key: str) -> Any:
    scoped = (metrics or {}).get(scope) or {}
    return scoped.get(key)


def _rule_row(
    rule_id: str, text: str, n_conditions: Any, metrics: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": rule_id,
        "rule": text,
        "conditions": n_conditions,
        "test coverage": _metric(metrics, "test", "coverage"),
        "test precision": _metric(metrics, "test", "precision"),
        "test recall": _metric(metrics, "test", "recall"),
        "test F1": _metric(metrics, "test", "f1"),
        "test MCC (held out)": _metric(metrics, "test", "mcc"),
        "train MCC (in-sample)": _metric(metrics, "train", "mcc"),
        "all-rows MCC (descriptive, not held out)": _metric(metrics, "all", "mcc"),
    }


def behaviour_rules_table(rules: Mapping[str, Any]) -> pd.DataFrame:
    """One row per behaviour rule, then the OR of all of them and the fake-target control."""
    rows = [
        _rule_row(
            str(d.get("id", "")),
            str(d.get("readable") or d.get("text") or ""),
            d.get("n_conditions"),
            d.get("metrics"),
        )
        for d in rules.get("disjuncts") or []
    ]
    rule_set = rules.get("rules") or {}
    rows.append(
        _rule_row("OR", "rule set (any rule fires)", rule_set.get("n_conditions"), rules.get("metrics"))
    )
    control = rules.get("control")
    if control:
        text = "fake-target control: " + str((control.get("rules") or {}).get("readable") or "no rule")
        rows.append(
            _rule_row(
                "control", text, (control.get("rules") or {}).get("n_conditions"), control.get("metrics")
            )
        )
    return pd.DataFrame(rows)


# -- localization -----------------------------------------------------------------------------------
def effect(agonist: Mapping[str, Any], side: str) -> dict[str, Any]:
    """One slice's effect of an agonist record, nested (``covered: {...}``) or flat (``covered_rate``)."""
    nested = agonist.get(side)
    if isinstance(nested, Mapping):
        return dict(nested)
    return {k: agonist.get(f"{side}_{k}") for k in ("flips", "n", "rate", "lower", "upper")}


def agonist_layer(agonist: Mapping[str, Any]) -> int | None:
    layer = agonist.get("layer")
    if isinstance(layer, int | np.integer):
        return int(layer)
    unit = str(agonist.get("unit", ""))
    if unit.startswith("L") and "." in unit:
        head = unit[1 : unit.index(".")]
        return int(head) if head.isdigit() else None
    return None


def best_anchored(neuron_rules: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """site → its neuron_rules.json entry."""
    return {str(a.get("site")): a for a in (neuron_rules or {}).get("agonists") or []}


def agonists_table(
    problems: Sequence[Mapping[str, Any]], neuron_rules: Mapping[str, Any] | None
) -> pd.DataFrame:
    """Every agonist of every (rule, regime), with its effects and, when anchored, its best rule."""
    anchored = best_anchored(neuron_rules)
    rows = []
    for problem in problems:
        for agonist in problem.get("agonists") or []:
            cov, unr = effect(agonist, "covered"), effect(agonist, "unrelated")
            unit = str(agonist.get("unit", ""))
            best = (anchored.get(unit) or {}).get("best") or {}
            row = {
                "problem": str(problem.get("key", "")),
                "unit": unit,
                "layer": agonist_layer(agonist),
                "covered flips": cov.get("flips"),
                "covered n": cov.get("n"),
                "covered rate": cov.get("rate"),
                "covered lower": cov.get("lower"),
                "covered upper": cov.get("upper"),
                "unrelated flips": unr.get("flips"),
                "unrelated n": unr.get("n"),
                "unrelated rate": unr.get("rate"),
                "unrelated lower": unr.get("lower"),
                "unrelated upper": unr.get("upper"),
                "max upper": agonist.get("max_upper"),
                "selectivity": agonist.get("selectivity"),
                "contrast lower": agonist.get("contrast_lower"),
                "score rank": agonist.get("score_rank"),
            }
            if neuron_rules is not None:
                row |= {
                    "anchored target": best.get("target"),
                    "anchored test MCC": best.get("test_mcc"),
                    "anchored rule": best.get("readable"),
                }
            rows.append(row)
    return pd.DataFrame(rows)


def compact_agonists(frame: pd.DataFrame) -> pd.DataFrame:
    """The agonists table for display: each slice's effect in one cell "flips/n = rate [lower, upper]"."""
    if not len(frame):
        return frame
    out = frame[["problem", "unit", "layer"]].copy()
    for side in ("covered", "unrelated"):
        out[f"{side} flips/n = rate [CP lower, upper]"] = [
            f"{fmt(f)}/{fmt(n)} = {fmt(r)} [{fmt(lo)}, {fmt(hi)}]"
            for f, n, r, lo, hi in zip(
                *(frame[f"{side} {k}"] for k in ("flips", "n", "rate", "lower", "upper")), strict=True
            )
        ]
    keep = [c for c in frame.columns if c in ("max upper", "selectivity") or c.startswith("anchored")]
    return out.join(frame[keep])


def decision_counts(trace: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per CHA level: groups evaluated (memo hits excluded), largest group, and each decision's count."""
    if not trace:
        return pd.DataFrame()
    frame = pd.DataFrame(list(trace))
    frame["memo_hit"] = frame["memo_hit"].fillna(False).astype(bool)
    counts = pd.crosstab(frame["level"], frame["decision"])
    out = pd.DataFrame(
        {
            "evaluated": (~frame["memo_hit"]).groupby(frame["level"]).sum(),
            "memo hits": frame["memo_hit"].groupby(frame["level"]).sum(),
            "largest group": frame.groupby("level")["size"].max(),
        }
    ).join(counts)
    return out.reset_index()


# -- CHA versus brute force (Table 3) ---------------------------------------------------------------
def _problem_recall(problem: Mapping[str, Any]) -> tuple[int, int]:
    recall = problem.get("recall")
    if isinstance(recall, Mapping):
        return int(recall.get("n_found") or 0), int(recall.get("n_reference") or 0)
    bf, cha = set(problem.get("bf_agonists") or []), set(problem.get("cha_agonists") or [])
    return len(bf & cha), len(bf)


def cha_vs_bruteforce_table(validation: Mapping[str, Any]) -> pd.DataFrame:
    """Per problem: density k/N, CHA's cost against brute force over the candidates, recall within
    the shortlist and over ALL units of the searched layers (effect ≥ 0.5, observed), shortlist recall."""
    rows = []
    for problem in validation.get("problems") or []:
        found, total = _problem_recall(problem)
        n = problem.get("n_candidates")
        top = ((problem.get("bins") or {}).get("0.5")) or {}
        rows.append(
            {
                "problem": str(problem.get("key", "")),
                "candidates / units": f"{n} / {problem.get('n_population', MISSING)}",
                "density k/N": problem.get("density"),
                "CHA evaluations": problem.get("cha_group_evaluations"),
                "cost (CHA/BF)": problem.get("cost_ratio"),
                "CHA saves?": "no" if problem.get("cha_cannot_save") else "yes",
                "recall in shortlist": pct(found, total),
                "recall, all units, effect ≥ 0.5": top.get("recall"),
                "shortlist recall, effect ≥ 0.5": top.get("shortlist_recall"),
                "non-monotone splits": problem.get("nonmonotone_splits"),
            }
        )
    return pd.DataFrame(rows)


def all_units_recall_table(validation: Mapping[str, Any]) -> pd.DataFrame:
    """Per regime and observed-effect bin: recall over every unit of the searched layers, with the
    agonists the shortlist dropped (estimated from a sample when the layers are large) and 95 % CIs."""
    rows = []
    for regime, bins in (validation.get("all_units") or {}).items():
        for edge, b in bins.items():
            ci = b.get("recall_ci") or [None, None]
            rows.append(
                {
                    "regime": regime,
                    "observed effect": f"≥ {edge}",
                    "CHA found": b.get("found"),
                    "in shortlist": b.get("in_shortlist"),
                    "outside shortlist (est.)": b.get("outside_shortlist_estimate"),
                    "recall, all units": b.get("recall"),
                    "recall 95 % CI": f"[{_fmt(ci[0])}, {_fmt(ci[1])}]",
                    "shortlist recall": b.get("shortlist_recall"),
                    "missed (named)": ", ".join(
                        (b.get("missed_in_shortlist") or []) + (b.get("agonists_outside_shortlist") or [])[:8]
                    ),
                }
            )
    return pd.DataFrame(rows)


def _fmt(value: Any) -> str:
    return MISSING if value is None else f"{value:.3f}"


# -- neuron-anchored rules (Table 2) ----------------------------------------------------------------
def count_at(counts: Mapping[str, Any] | None, threshold: float) -> Any:
    for key, value in (counts or {}).items():
        try:
            if abs(float(key) - threshold) < 1e-9:
                return value
        except ValueError:
            continue
    return None


def hq_counts_from_agonists(neuron_rules: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """HQ counts recomputed from each agonist's best rule (when neuron_rules.json lacks hq_counts)."""
    bests = [a.get("best") or {} for a in neuron_rules.get("agonists") or []]
    out: dict[str, dict[str, int]] = {}
    for scope, key in (("test", "test_mcc"), ("all", "all_mcc")):
        scores = [float(b[key]) for b in bests if not is_missing(b.get(key))]
        out[scope] = {f"{t:.2f}": sum(s >= t for s in scores) for t in THRESHOLDS}
    return out


def hq_counts_table(neuron_rules: Mapping[str, Any]) -> pd.DataFrame:
    """Number of agonists whose best anchored rule has MCC ≥ t, per scope, beside the controls."""
    n_agonists = neuron_rules.get("n_agonists", len(neuron_rules.get("agonists") or []))
    controls = neuron_rules.get("controls") or {}
    random = controls.get("random_neurons") or {}
    if random.get("n_sets"):
        random_name, n_random = f"random neurons control (mean of {random['n_sets']} sets)", n_agonists
    else:
        n_random = len(random.get("units") or []) or n_agonists
        random_name = "random neurons control (non-agonists, flip target any)"
    methods = [
        (
            "CHA agonists (rule-anchored)",
            n_agonists,
            neuron_rules.get("hq_counts") or hq_counts_from_agonists(neuron_rules),
        ),
        ("fake-target control", n_agonists, (controls.get("fake_target") or {}).get("hq_counts")),
        (random_name, n_random, random.get("hq_counts")),
    ]
    rows = []
    for method, n, counts in methods:
        if not counts:
            continue
        for scope in ("test", "all"):
            if scope in counts:
                rows.append(
                    {
                        "method": method,
                        "scope": SCOPE_LABELS[scope],
                        "neurons": n,
                        **{f"t = {t:.2f}": count_at(counts[scope], t) for t in THRESHOLDS},
                    }
                )
    return pd.DataFrame(rows, dtype=object)  # object: counts stay ints, control means stay floats


def flip_rates_table(neuron_rules: Mapping[str, Any] | None, flips: pd.DataFrame | None) -> pd.DataFrame:
    """Per agonist: evaluated prompts and flip rates (any, 1→0, 0→1) over all evaluated prompts."""
    rows = []
    for agonist in (neuron_rules or {}).get("agonists") or []:
        rates = agonist.get("flip_rates") or {}
        rows.append(
            {
                "site": str(agonist.get("site")),
                "n_eval": agonist.get("n_eval"),
                **{k: rates.get(k) for k in FLIP_TARGETS},
            }
        )
    if not rows and flips is not None and "baseline" in flips.columns:
        base = flips["baseline"].to_numpy(dtype=bool)
        for site in flip_sites(flips):
            after = flips[site].to_numpy(dtype=bool)
            rows.append(
                {
                    "site": site,
                    "n_eval": len(base),
                    "any": float((after != base).mean()),
                    "true_to_false": float((base & ~after).mean()),
                    "false_to_true": float((~base & after).mean()),
                }
            )
    return pd.DataFrame(rows, columns=["site", "n_eval", *FLIP_TARGETS])


def flip_sites(flips: pd.DataFrame) -> list[str]:
    """The per-agonist columns of a flip table: bool columns other than ``baseline``."""
    return [str(c) for c in flips.columns if c != "baseline" and pd.api.types.is_bool_dtype(flips[c].dtype)]


def union_flip_coverage(flips: pd.DataFrame) -> dict[str, Any]:
    """Paper Table 1 ∪(1→0) / ∪(0→1): share of baseline-positive (-negative) evaluated prompts that
    flip under at least one agonist ablated alone."""
    sites = flip_sites(flips)
    base = flips["baseline"].to_numpy(dtype=bool)
    after = flips[sites].to_numpy(dtype=bool) if sites else np.zeros((len(base), 0), dtype=bool)
    t2f = (base[:, None] & ~after).any(axis=1)
    f2t = (~base[:, None] & after).any(axis=1)
    return {
        "n_agonists": len(sites),
        "n_eval": len(base),
        "true_to_false": (int(t2f.sum()), int(base.sum())),
        "false_to_true": (int(f2t.sum()), int((~base).sum())),
    }
