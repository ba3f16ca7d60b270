"""How a sweep's headline figures move, and paired tests of each setting against the base run.

Pairs are the same things measured under two settings:

* **per rule** (a rule and regime, matched by the rule's text, so runs whose rules were re-extracted
  pair only the rules they share): agonists found, CHA group evaluations, the joint suppression's
  drop in the covered positive rate, the union flip coverage, and the recomposed joint effect;
* **per unit** (every unit that is an agonist under either setting): found (1) or not (0), so the
  sign test is the exact McNemar test on the units found by one setting only;
* **per anchored unit** (units anchored under both): the best held-out MCC of its rule.

Every test of the sweep is one family for Holm's correction; see :mod:`mecharule.paired_stats`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mecharule.compare import run_row, trusted_json
from mecharule.io.rundir import RunDir
from mecharule.paired_stats import PairedTest, paired_tests
from mecharule.sweep.runner import SweepRun

HEADLINE = (
    "accuracy",
    "rules test MCC",
    "control test MCC",
    "agonists",
    "agonists / candidates",
    "group evaluations",
    "recall (all units)",
    "cost vs brute force",
    "HQ rules",
    "HQ, permuted control",
)
PER_RULE: dict[str, Callable[[Mapping[str, Any]], float | None]] = {
    "agonists per rule": lambda p: float(len(p.get("agonists") or [])),
    "group evaluations per rule": lambda p: _number(p.get("group_evaluations")),
    "joint suppression drop (covered) per rule": lambda p: _drop(p.get("suppression") or {}),
    "union flip coverage (covered) per rule": lambda p: _number(
        ((p.get("suppression") or {}).get("union_flip_coverage") or {}).get("covered")
    ),
}


def settings_table(runs: Sequence[SweepRun]) -> pd.DataFrame:
    """One row per setting (the base run first): the stages computed for it, their seconds (from
    its run.json, so a sweep run again still shows them), and the headline figures."""
    base = runs[0].path
    rows = []
    for run in runs:
        row: dict[str, Any] = {"setting": "base run" if run.setting is None else run.setting.name}
        if run.setting is None:
            row |= {"stages run": "—", "seconds": None}
        elif run.path == base:
            row |= {"stages run": "none (the base run's own setting)", "seconds": None}
        else:
            computed = computed_stages(run.path, base)
            row |= {"stages run": ", ".join(computed), "seconds": round(sum(computed.values()), 1)}
        figures = run_row(run.path)
        row |= {name: figures.get(name) for name in HEADLINE}
        rows.append(row)
    return pd.DataFrame(rows)


def computed_stages(path: Path, base: Path) -> dict[str, float]:
    """{stage: wall seconds} of the stages recorded in ``path`` under a key other than the one the
    base run recorded: those computed for the setting rather than copied from the base."""
    recorded = RunDir(path).manifest().get("stages", {})
    base_stages = RunDir(base).manifest().get("stages", {})
    return {
        stage: float(record.get("wall_seconds") or 0.0)
        for stage, record in recorded.items()
        if record.get("config_hash") != (base_stages.get(stage) or {}).get("config_hash")
    }


def sweep_tests(runs: Sequence[SweepRun], family: str, seed: int = 0) -> list[PairedTest]:
    """Every setting against the base run (``runs[0]``), per rule, per unit and per anchored unit."""
    base = runs[0]
    base_measured = Measured.of(base.path)  # read once, paired with every setting
    comparisons: list[tuple[str, list[float | None], list[float | None]]] = []
    for run in runs[1:]:
        if run.setting is None or run.path == base.path:
            continue
        comparisons += pair_measurements(Measured.of(run.path), base_measured, f"{run.setting.name} vs base")
    return paired_tests(family, comparisons, seed=seed)


Key = tuple[str, str]  # (rule text, regime): how problems of two runs pair up


@dataclass(frozen=True)
class Measured:
    """What one run's standing files say, per problem and per unit, for pairing with another run."""

    problems: dict[Key, Mapping[str, Any]]  # searched problems (localization/summary.json)
    joint: dict[Key, float]  # recomposed joint effect on covered prompts (recomposition.json)
    anchored_mcc: dict[str, float]  # best anchored rule's test MCC per unit (neuron_rules.json)

    @classmethod
    def of(cls, path: Path) -> Measured:
        rundir = RunDir(path)  # one, so each file's digest is computed once
        localization = trusted_json(rundir, "localization/summary.json") or {}
        recomposed = trusted_json(rundir, "recomposition.json") or {}
        anchored = trusted_json(rundir, "neuron_rules.json") or {}
        return cls(
            problems={
                (str(p.get("rule")), str(p.get("regime"))): p
                for p in localization.get("problems", [])
                if not p.get("skipped")
            },
            joint={
                (str(p.get("rule")), str(p.get("regime"))): float(p["joint"]["covered"])
                for p in recomposed.get("problems", {}).values()
                if isinstance(p.get("joint"), dict)
            },
            anchored_mcc={
                str(e["site"]): float((e.get("best") or {}).get("test_mcc") or 0.0)
                for e in anchored.get("agonists", [])
            },
        )

    @property
    def agonists(self) -> set[str]:
        return {str(a["unit"]) for p in self.problems.values() for a in p.get("agonists") or []}


def pair_measurements(
    run: Measured, base: Measured, label: str
) -> list[tuple[str, list[float | None], list[float | None]]]:
    """The paired measurements of one run against the base: ``(name, x (run), y (base))``."""
    out = []
    shared = sorted(set(run.problems) & set(base.problems))
    for metric, measure in PER_RULE.items():
        x = [measure(run.problems[k]) for k in shared]
        y = [measure(base.problems[k]) for k in shared]
        out.append((f"{metric}: {label}", x, y))
    together = sorted(set(run.joint) & set(base.joint))
    out.append(
        (
            f"joint effect of the agonists (covered) per rule: {label}",
            [run.joint[k] for k in together],
            [base.joint[k] for k in together],
        )
    )
    units_x, units_y = run.agonists, base.agonists
    union = sorted(units_x | units_y)
    out.append(
        (
            f"agonist found per unit: {label}",
            [float(u in units_x) for u in union],
            [float(u in units_y) for u in union],
        )
    )
    both = sorted(set(run.anchored_mcc) & set(base.anchored_mcc))
    out.append(
        (
            f"anchored rule best test MCC per unit: {label}",
            [run.anchored_mcc[u] for u in both],
            [base.anchored_mcc[u] for u in both],
        )
    )
    return out


def tests_table(tests: Sequence[PairedTest]) -> pd.DataFrame:
    """One row per test, each p-value under the name of its test (``TEST_NAMES`` says more)."""
    rows = []
    for t in tests:
        ci = None if t.ci_low is None else f"[{t.ci_low:.3g}, {t.ci_high:.3g}]"
        rows.append(
            {
                "compared": t.name,
                "pairs": t.n,
                "setting > base": t.n_greater,
                "setting < base": t.n_less,
                "mean (setting)": t.mean_x,
                "mean (base)": t.mean_y,
                "mean difference": t.mean_difference,
                "95% CI (bootstrap BCa)": ci,
                "p, exact sign test": _p(t.sign_p),
                "p, sign-flip test": _p(t.signflip_p) + ("" if t.signflip_exact else " (Monte-Carlo)"),
                "Holm p, sign test": _p(t.sign_p_holm),
                "Holm p, sign-flip test": _p(t.signflip_p_holm),
            }
        )
    return pd.DataFrame(rows)


def _p(value: float) -> str:
    return f"{value:.3g}"


def _drop(suppression: Mapping[str, Any]) -> float | None:
    covered = suppression.get("covered") or {}
    before, after = covered.get("positive_rate_before"), covered.get("positive_rate_after")
    return None if before is None or after is None else float(before) - float(after)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


__all__ = [
    "HEADLINE",
    "PER_RULE",
    "computed_stages",
    "pair_measurements",
    "settings_table",
    "sweep_tests",
    "tests_table",
]
