"""Warnings for a reader of the localization section, read off the run's artifacts: each says what
was seen, what it means for the results and what to try (``Finding``; shown by
``html.warning_box``).

- not sparse: a problem accepts more than a quarter of its candidates;
- non-monotone regime: weak groups held accepted units (``nonmonotone_splits``, the audit's rescues);
- shortlist recall unknown: a shortlist (``attribution.top_m`` below 100 %) and no ``validation.json``;
- joint suppression not selective: ablating every agonist moves unrelated prompts nearly as much;
- nothing found: a searched problem without agonists, and why (pruned roots, weak single units).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mecharule.report.load import RunArtifacts, problem_folder
from mecharule.report.tables import is_missing

DENSE_SHARE = 0.25  # agonists / candidates above which group testing saves little
UNSELECTIVE = 0.5  # unrelated change / covered change from which joint suppression is not selective
MIN_CHANGE = 0.05  # ... when the unrelated change is at least this large


@dataclass(frozen=True)
class Finding:
    """One warning: ``title`` (what was seen), ``problem`` (its key, "" for the run), ``meaning``
    and ``action`` (what to try)."""

    title: str
    problem: str
    meaning: str
    action: str

    @property
    def anchor(self) -> str:
        return f"problem-{problem_folder(self.problem)}" if self.problem else ""


def _rate(value: float) -> str:
    return f"{value:.2f}"


def not_sparse(problem: Mapping[str, Any], tau: float) -> Finding | None:
    k, n = len(problem.get("agonists") or []), problem.get("n_candidates") or 0
    if not n or k / n <= DENSE_SHARE:
        return None
    return Finding(
        f"Agonists are not sparse: {k} of {n} candidates ({100 * k / n:.0f} %) accepted",
        str(problem.get("key", "")),
        "Group testing saves evaluations only when few units matter: with this many agonists CHA "
        "tests most units one by one and costs about as much as brute force. So many units flipping the "
        "behaviour also suggests broad damage rather than units specific to the rule.",
        f"Raise search.tau (now {tau:g}) so that only strong units pass, use search.predicate=contrastive "
        "(a unit must flip covered prompts more than unrelated ones), or search fewer candidates "
        "(attribution.top_m).",
    )


def _rescues(problem: Mapping[str, Any], trace: Sequence[Mapping[str, Any]]) -> int:
    """Weak groups split anyway because they held a unit accepted alone (by the audit)."""
    recorded = problem.get("nonmonotone_splits")
    from_trace = sum(r.get("split_strategy") == "nonmonotone" for r in trace)
    return max(int(recorded) if isinstance(recorded, int) else 0, from_trace)


def non_monotone(
    problem: Mapping[str, Any], trace: Sequence[Mapping[str, Any]], prune_on: Any
) -> Finding | None:
    rescues = _rescues(problem, trace)
    if not rescues:
        return None
    already = " (already set here)" if prune_on == "changes" else ""
    return Finding(
        f"Non-monotone effects: {rescues} weak group(s) held accepted units",
        str(problem.get("key", "")),
        "A group ablated as a whole stayed below τ although one of its units, tested alone by the audit, "
        "flips enough prompts: effects cancel when units are ablated together. Other pruned groups may "
        "hide agonists the audit did not draw, so this list may miss agonists.",
        f"Prune on answer changes (search.prune_on=changes{already}), audit more units per layer "
        "(search.audit), and measure recall against brute force with mecharule validate.",
    )


def _shortlisted(run: RunArtifacts) -> str | None:
    """The ``attribution.top_m`` setting when it cut the candidates (None when every unit was searched)."""
    attributed = "attribute" in (run.manifest.get("stages") or {}) or any(
        not is_missing(a.get("score")) for p in run.problems for a in p.get("agonists") or []
    )
    top_m = run.config_value("attribution.top_m", "100%")
    if not attributed or isinstance(top_m, bool):
        return None
    if isinstance(top_m, str):
        try:
            share = float(top_m.strip().rstrip("%"))
        except ValueError:
            return None
        return top_m if share < 100 else None
    if isinstance(top_m, int | float):  # a count: it cut when a problem got that many candidates
        counts = [p.get("n_candidates") or 0 for p in run.problems]
        return str(top_m) if any(c >= top_m for c in counts) else None
    return None


def shortlist_unknown(run: RunArtifacts) -> Finding | None:
    top_m = _shortlisted(run)
    if top_m is None or run.validation is not None or run.localization is None:
        return None
    return Finding(
        "Shortlist recall unknown",
        "",
        f"CHA searched only the attribution shortlist (attribution.top_m = {top_m}). Agonists outside it "
        "were never tested, and without validation.json this report cannot say how many there are.",
        "Run with --validate (mecharule run --validate, or mecharule validate on this directory): brute "
        "force over the shortlist and a sample of the other units measures recall over every unit.",
    )


def _change(entry: Mapping[str, Any]) -> float | None:
    before, after = entry.get("positive_rate_before"), entry.get("positive_rate_after")
    if before is None or after is None or is_missing(before) or is_missing(after):
        return None
    return abs(float(before) - float(after))


def unselective_suppression(problem: Mapping[str, Any]) -> Finding | None:
    suppression = problem.get("suppression") or {}
    covered = _change(suppression.get("covered") or {})
    unrelated = _change(suppression.get("unrelated") or {})
    if covered is None or unrelated is None or unrelated < MIN_CHANGE or unrelated < UNSELECTIVE * covered:
        return None
    n = len(suppression.get("agonists") or problem.get("agonists") or [])
    return Finding(
        "Joint suppression is not selective",
        str(problem.get("key", "")),
        f"Ablating all {n} agonists together moves the positive rate of unrelated prompts by "
        f"{_rate(unrelated)}, against {_rate(covered)} on covered prompts (the rule's own). Together they "
        "disturb the model broadly: the agonists are not specific to the rule.",
        "Keep the agonists far below the diagonal of the selectivity plot (covered ≫ unrelated flips), "
        "use search.predicate=contrastive, or raise search.tau.",
    )


def _tau_text(trace: Sequence[Mapping[str, Any]], tau: float) -> str:
    raised = any(not is_missing(r.get("tau")) and float(r["tau"]) > tau + 1e-9 for r in trace)
    return f"τ = {tau:g}" + (" (raised for slices under 64 prompts)" if raised else "")


def _why_nothing(trace: Sequence[Mapping[str, Any]], tau: float) -> str:
    """Why a search accepted no unit, from its trace."""
    evaluated = [r for r in trace if not r.get("memo_hit")]
    if not evaluated:
        return "No trace of the search was found (localization/<problem>/trace.jsonl)."
    tau_text = _tau_text(evaluated, tau)
    roots = [r for r in evaluated if r.get("depth") == 0 and (r.get("size") or 0) > 1 and not r.get("audit")]
    singles = [r for r in evaluated if r.get("size") == 1]
    audited = sum(bool(r.get("audit")) for r in singles)
    if roots and all(r.get("decision") == "prune" for r in roots) and len(singles) == audited:
        changed = max((_share(r, "covered_changed", "covered_n") for r in roots), default=0.0)
        return (
            f"All {len(roots)} root group(s) (one per layer) were pruned at level 0: no group reached "
            f"{tau_text} (ablating a whole layer changed at most {_rate(changed)} of the covered answers), "
            f"and none of the {audited} units the audit tested alone reached it either."
        )
    best_cov = max((float(r.get("covered_rate") or 0.0) for r in singles), default=0.0)
    best_unr = max((float(r.get("unrelated_rate") or 0.0) for r in singles), default=0.0)
    pruned = sum(r.get("decision") == "prune" for r in evaluated)
    pruned_text = f", {pruned} group(s) were pruned" if pruned else ""
    return (
        f"{len(singles)} units were tested alone ({audited} by the audit){pruned_text}, and none reached "
        f"{tau_text}: the strongest flipped {_rate(best_cov)} of the covered and {_rate(best_unr)} of the "
        "unrelated prompts."
    )


def _share(record: Mapping[str, Any], part: str, whole: str) -> float:
    n = record.get(whole) or 0
    return float(record.get(part) or 0) / n if n else 0.0


def nothing_found(
    problem: Mapping[str, Any], trace: Sequence[Mapping[str, Any]], tau: float
) -> Finding | None:
    if problem.get("skipped") or problem.get("agonists") or not problem.get("n_candidates"):
        return None
    evaluations = problem.get("group_evaluations")
    few = isinstance(evaluations, int) and evaluations < problem["n_candidates"]
    spent = f" after only {evaluations} evaluations" if few else f" ({evaluations} evaluations)"
    return Finding(
        f"No agonist found{spent}",
        str(problem.get("key", "")),
        _why_nothing(trace, tau),
        "If the behaviour should depend on a few units, lower search.tau or give the slices more "
        "prompts (search.n_covered, search.n_unrelated) so smaller effects clear the bound; prune on "
        "answer changes (search.prune_on=changes) if layers were pruned whole. A regime with few "
        "prompts to flip may simply have no agonist.",
    )


def localization_warnings(run: RunArtifacts) -> list[Finding]:
    """Every warning of the run's localization, run-level first, then problem by problem."""
    if run.localization is None:
        return []
    tau, prune_on = run.tau, run.config_value("search.prune_on")
    found: list[Finding | None] = [shortlist_unknown(run)]
    for problem in run.problems:
        if problem.get("skipped"):
            continue
        trace = run.traces.get(str(problem.get("key", ""))) or []
        found += [
            not_sparse(problem, tau),
            non_monotone(problem, trace, prune_on),
            unselective_suppression(problem),
            nothing_found(problem, trace, tau),
        ]
    return [f for f in found if f is not None]
