"""The few lines ``mecharule run`` ends with: what the run found, where to look, what to try next.

Read from the run's files (``summary.json`` and the stage outputs whose records stand), so the same
text comes back for a finished run at any time (``mecharule run`` on a done directory reprints it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mecharule.io.rundir import RunDir, read_json

TOP_RULES = 3
TOP_UNITS = 5


def run_summary_lines(rundir: RunDir, summary: dict[str, Any]) -> list[str]:
    lines = [_behaviour_line(summary)]
    lines += _rules_lines(rundir, summary)
    lines += _agonist_lines(rundir, summary)
    lines += _recomposition_lines(summary)
    lines += _anchoring_lines(summary)
    lines += _validation_lines(summary)
    lines += _next_lines(rundir.path)
    return lines


def _behaviour_line(summary: dict[str, Any]) -> str:
    return (
        f"{summary.get('model')} on {summary.get('task')}: accuracy {summary['accuracy']:.3f} "
        f"on {summary['n_prompts']:,} prompts"
    )


def _rules_lines(rundir: RunDir, summary: dict[str, Any]) -> list[str]:
    if "n_rules" not in summary or not rundir.trusted("rules.json"):
        return []
    rules = read_json(rundir.file("rules.json"))
    target_spec = rules.get("target")
    name = target_spec.get("name") if isinstance(target_spec, dict) else target_spec
    target = "fails" if name == "fail" else "succeeds"
    lines = [
        f"behaviour rules ({summary['n_rules']}, when the model {target}): test MCC "
        f"{_num(summary.get('rules_test_mcc'))} vs {_num(summary.get('rules_control_test_mcc'))} "
        "on permuted labels"
    ]
    disjuncts = sorted(rules.get("disjuncts", []), key=lambda d: -(d["metrics"]["test"]["mcc"] or 0.0))
    for d in disjuncts[:TOP_RULES]:
        test = d["metrics"]["test"]
        lines.append(
            f"  {d['id']}: {d['readable']}  (test MCC {_num(test.get('mcc'))}, "
            f"precision {_num(test.get('precision'))}, covers {_pct(d['metrics']['all'].get('coverage'))})"
        )
    return lines


def _agonist_lines(rundir: RunDir, summary: dict[str, Any]) -> list[str]:
    name = "localization/summary.json"
    if "n_agonists" not in summary or not rundir.trusted(name):
        return []
    loc = read_json(rundir.file(name))
    lines = [
        f"agonists: {summary['n_agonists']} distinct units in {summary['interventions']:,} group ablations "
        "(flip rate on covered/unrelated prompts)"
    ]
    for problem in loc.get("problems", []):
        if problem.get("skipped"):
            lines.append(f"  {problem['key']}: not searched ({problem['skipped']})")
            continue
        agonists = sorted(problem.get("agonists", []), key=lambda a: -float(a.get("covered_rate") or 0.0))
        top = ", ".join(
            f"{a['unit']} {_num(a.get('covered_rate'), 2)}/{_num(a.get('unrelated_rate'), 2)}"
            for a in agonists[:TOP_UNITS]
        )
        more = f" + {len(agonists) - TOP_UNITS} more" if len(agonists) > TOP_UNITS else ""
        found = f"{len(agonists)} of {problem.get('n_candidates', '?')} candidates"
        lines.append(f"  {problem['key']}: {found}" + (f": {top}{more}" if agonists else ""))
    return lines


def _recomposition_lines(summary: dict[str, Any]) -> list[str]:
    kinds = summary.get("recomposition")
    if kinds is None:
        return []
    from mecharule.recomposition.text import kinds_text

    shown = kinds_text(kinds) or "no rule with agonists"
    return [
        f"recomposition (each rule's agonists together vs alone): {shown}; "
        f"{summary.get('shared_agonists', 0)} agonists shared by two or more rules"
    ]


def _anchoring_lines(summary: dict[str, Any]) -> list[str]:
    if "n_anchored" not in summary:
        return []
    return [
        f"neuron-anchored rules: {summary['hq_neurons_test_0.70']} of {summary['n_anchored']} agonists with "
        f"test MCC >= 0.70 (controls: {summary['hq_neurons_fake_target_0.70']} on permuted flips, "
        f"{summary['hq_neurons_random_units_0.70']} for random units)"
    ]


def _validation_lines(summary: dict[str, Any]) -> list[str]:
    if "cost_ratio" not in summary:
        return []
    return [
        f"validation: CHA used {_num(summary['cost_ratio'], 2)} of brute force's ablations; recall over "
        f"every unit {_recall(summary.get('recall_all_units'))}"
    ]


def _next_lines(path: Path) -> list[str]:
    return [
        f"report: {path / 'report' / 'index.html'}",
        "next:",
        f"  mecharule run --out {path} --validate            # recall and cost against brute force",
        f"  mecharule run --out {path} --set search.tau=0.3  # another threshold: re-runs localize and after",
        f"  mecharule sweep {path} --vary search.tau=0.3,0.4  # several, tested against this run",
        f"  mecharule config show {path}                     # every setting this run used",
    ]


def _recall(value: Any) -> str:
    if isinstance(value, dict):  # by effect bin: the strongest bin's recall
        bins = [v for v in value.values() if isinstance(v, dict) and "recall" in v]
        return ", ".join(f"{_num(b['recall'], 2)}" for b in bins) or "n/a"
    return _num(value, 2)


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f} %"


__all__ = ["run_summary_lines"]
