"""Recall over every unit of the searched layers, not only over the shortlist. Imports no torch.

CHA can only find agonists among its candidates (the attribution shortlist), so a recall measured
against brute force over the candidates says nothing about the strong units attribution dropped.
Here the reference is the whole *population* of the searched layers: every unit when it is small,
otherwise the candidates (all brute-forced) plus a seeded uniform sample of the non-candidates, whose
agonist count is scaled up to all non-candidates with a Clopper–Pearson interval.

Effect measure: the **observed** flip rate of a unit ablated alone, the larger of its covered and
unrelated slices (``effect``). Bins are half-open ``[low, high)`` on that rate, keyed by their lower
edge (``"0.5"`` = effect ≥ 0.5); the CP bounds are reported beside each unit, never used to bin it.
A *reference agonist* is a unit the search's own predicate accepts alone (and that is not
catastrophic); its bin is its observed effect.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mecharule.search.brute_force import BruteForceResult, recall_by_effect_bin
from mecharule.search.cha import bound
from mecharule.search.results import SearchResult, TraceRecord
from mecharule.search.stats import cp_lower, cp_upper
from mecharule.search.types import SearchConfig, Unit

#: Lower edges of the observed-effect bins, highest first; each bin runs up to the next edge above.
EDGES: tuple[float, ...] = (0.5, 0.3, 0.2)
CI_ALPHA = 0.025  # each side: a 95 % two-sided interval
#: Above this CHA/brute-force evaluation ratio a problem is reported as one where CHA cannot save.
NO_SAVING = 0.9


def effect(record: TraceRecord) -> float:
    """Observed flip rate of a singleton: the larger of its two slices."""
    return max(record.evaluation.covered.rate, record.evaluation.unrelated.rate)


def bin_of(value: float, edges: Sequence[float] = EDGES) -> str | None:
    """The key of the bin holding ``value`` (``None`` below the lowest edge)."""
    for low in sorted(edges, reverse=True):
        if value >= low:
            return f"{low:g}"
    return None


def is_reference(record: TraceRecord) -> bool:
    """Accepted alone by the search's predicate and not catastrophic."""
    return record.decision == "agonist"


@dataclass
class BinCount:
    """One bin of one problem (or of a sum of problems).

    ``in_shortlist``/``found``: reference agonists among the candidates, and those CHA found.
    ``sampled``/``sample_size``/``n_outside``: agonists in the sample of non-candidates, the sample
    size and the number of non-candidates it stands for (``sample_size == n_outside``: exhaustive).
    """

    in_shortlist: int = 0
    found: int = 0
    sampled: int = 0
    sample_size: int = 0
    n_outside: int = 0
    missed: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def outside_estimate(self) -> tuple[float, float, float]:
        """Agonists among ALL non-candidates: point estimate and 95 % CP interval."""
        if self.n_outside == 0 or self.sample_size == 0:
            return 0.0, 0.0, 0.0
        if self.sample_size >= self.n_outside:
            return float(self.sampled), float(self.sampled), float(self.sampled)
        scale = self.n_outside / self.sample_size
        low = float(cp_lower(self.sampled, self.sample_size, CI_ALPHA)) * self.n_outside
        high = float(cp_upper(self.sampled, self.sample_size, CI_ALPHA)) * self.n_outside
        return self.sampled * scale, max(low, float(self.sampled)), high

    def add(self, other: BinCount) -> None:
        """Sum another problem's counts into this one (samples of different problems are independent)."""
        self.in_shortlist += other.in_shortlist
        self.found += other.found
        self.sampled += other.sampled
        self.sample_size += other.sample_size
        self.n_outside += other.n_outside
        self.missed += other.missed
        self.outside += other.outside

    def to_dict(self) -> dict[str, Any]:
        estimate, low, high = self.outside_estimate()
        total, total_low, total_high = (
            self.in_shortlist + estimate,
            self.in_shortlist + low,
            self.in_shortlist + high,
        )
        return {
            "recall": _ratio(self.found, total),
            "recall_ci": [_ratio(self.found, total_high), _ratio(self.found, total_low)],
            "shortlist_recall": _ratio(self.in_shortlist, total),
            "shortlist_recall_ci": [
                _ratio(self.in_shortlist, total_high),
                _ratio(self.in_shortlist, total_low),
            ],
            "found": self.found,
            "in_shortlist": self.in_shortlist,
            "outside_shortlist_estimate": round(estimate, 2),
            "outside_shortlist_ci": [round(low, 2), round(high, 2)],
            "outside_sampled": self.sampled,
            "outside_sample_size": self.sample_size,
            "n_outside_shortlist": self.n_outside,
            "missed_in_shortlist": self.missed,
            "agonists_outside_shortlist": self.outside,
        }


def _ratio(part: float, whole: float) -> float | None:
    return round(min(1.0, part / whole), 4) if whole > 0 else None


@dataclass(frozen=True)
class PopulationProblem:
    """What one problem's all-unit validation saw."""

    key: Hashable
    regime: str
    n_population: int
    candidates: Sequence[TraceRecord]  # brute force over the candidates (one record per candidate)
    outside: Sequence[TraceRecord]  # brute force over the sampled non-candidates
    found: frozenset[Unit]  # CHA's agonists

    def bins(self, edges: Sequence[float] = EDGES) -> dict[str, BinCount]:
        counts = {f"{e:g}": BinCount() for e in sorted(edges, reverse=True)}
        n_outside = self.n_population - len(self.candidates)
        for count in counts.values():
            count.sample_size, count.n_outside = len(self.outside), n_outside
        for record in self.candidates:
            key = bin_of(effect(record), edges)
            if key is None or not is_reference(record):
                continue
            counts[key].in_shortlist += 1
            if record.units[0] in self.found:
                counts[key].found += 1
            else:
                counts[key].missed.append(str(record.units[0]))
        for record in self.outside:
            key = bin_of(effect(record), edges)
            if key is not None and is_reference(record):
                counts[key].sampled += 1
                counts[key].outside.append(str(record.units[0]))
        return counts

    def to_dict(self, edges: Sequence[float] = EDGES) -> dict[str, Any]:
        outside_rows = [_unit_row(r) for r in self.outside if is_reference(r)]
        return {
            "key": str(self.key),
            "regime": self.regime,
            "n_population": self.n_population,
            "n_candidates": len(self.candidates),
            "n_outside_sampled": len(self.outside),
            "exhaustive": len(self.candidates) + len(self.outside) >= self.n_population,
            "bins": {k: v.to_dict() for k, v in self.bins(edges).items()},
            "agonists_outside_shortlist": sorted(outside_rows, key=lambda r: -r["effect"]),
        }


def _unit_row(record: TraceRecord) -> dict[str, Any]:
    ev = record.evaluation
    return {
        "unit": str(record.units[0]),
        "effect": round(effect(record), 4),
        "covered_rate": round(ev.covered.rate, 4),
        "covered_ci": [round(ev.covered.lower, 4), round(ev.covered.upper, 4)],
        "unrelated_rate": round(ev.unrelated.rate, 4),
        "unrelated_ci": [round(ev.unrelated.lower, 4), round(ev.unrelated.upper, 4)],
    }


def validation_payload(
    cha: SearchResult,
    bf: BruteForceResult,
    bf_outside: BruteForceResult,
    *,
    regimes: Mapping[Hashable, str],
    populations: Mapping[Hashable, int],
    config: SearchConfig,
    wall_seconds: Mapping[str, float],
    forwards: Mapping[str, int],
) -> dict[str, Any]:
    """``validation.json`` from CHA, brute force over the candidates and brute force outside them.

    ``regimes``/``populations``: per problem key, its regime and the number of units in its
    searched layers; ``wall_seconds`` holds ``cha``, ``brute_force`` (and optionally
    ``brute_force_outside_shortlist``).
    """
    population = [
        PopulationProblem(
            key=p.problem,
            regime=regimes[p.problem],
            n_population=populations[p.problem],
            candidates=[r for r in bf.records if r.problem == p.problem],
            outside=[r for r in bf_outside.records if r.problem == p.problem],
            found=frozenset(a.unit for a in cha.agonists_for(p.problem)),
        )
        for p in cha.problems
    ]
    totals = by_regime(population)
    problems = [_problem_entry(cha, p, config.tau, config.audit) for p in population]
    ratios = [p["cost_ratio"] for p in problems if p["cost_ratio"] is not None]
    cha_wall, bf_wall = wall_seconds["cha"], wall_seconds["brute_force"]
    return {
        "effect_measure": "observed flip rate of the unit ablated alone, the larger of its covered and "
        "unrelated slices; bins [edge, next edge) keyed by their lower edge",
        "recall_all_units": headline(totals, "recall"),
        "shortlist_recall": headline(totals, "shortlist_recall"),
        "all_units": {regime: {k: c.to_dict() for k, c in bins.items()} for regime, bins in totals.items()},
        "cost_ratio_max": max(ratios, default=None),
        "problems": problems,
        "recall_in_shortlist": recall_by_effect_bin(bf, cha).to_dict(),
        "cost": {
            "cha_group_evaluations": cha.group_evaluations,
            "bf_singleton_evaluations": bf.n_singletons,
            "cost_ratio": round(cha.group_evaluations / max(1, bf.n_singletons), 4),
            "note": "CHA group evaluations (audits included) / singleton evaluations over the same "
            "candidates (not the reference's 2N-1)",
        },
        "wall_seconds": {
            **{k: round(v, 3) for k, v in wall_seconds.items()},
            "ratio": round(cha_wall / bf_wall, 4) if bf_wall else None,
        },
        "forwards": dict(forwards),
    }


def _problem_entry(
    cha: SearchResult,
    population: PopulationProblem,
    tau: float,
    audit: int,
) -> dict[str, Any]:
    key = population.key
    stats = next(p for p in cha.problems if p.problem == key)
    n = stats.n_candidates
    records = population.candidates
    bf_units = sorted(str(r.units[0]) for r in records if r.decision == "agonist")
    cha_agonists = cha.agonists_for(key)
    strong = sum(r.evaluation.strong for r in records)  # singletons strong by the pruning statistic
    above_tau = sum(max(a.covered.rate, a.unrelated.rate) >= tau for a in cha_agonists)
    cost_ratio = round(stats.group_evaluations / n, 4) if n else None
    entry = population.to_dict()
    entry.update(
        {
            "n_candidates": n,
            "bf_agonists": bf_units,
            "cha_agonists": sorted(str(a.unit) for a in cha_agonists),
            "recall": round(len(set(bf_units) & {str(a.unit) for a in cha_agonists}) / len(bf_units), 4)
            if bf_units
            else None,
            "density": round(len(bf_units) / n, 4) if n else None,
            "strong_singletons": strong,
            "cha_group_evaluations": stats.group_evaluations,
            "audit_evaluations": stats.audit_evaluations,
            "expanded_groups": stats.expanded_groups,
            "nonmonotone_splits": stats.nonmonotone_splits,
            "cost_ratio": cost_ratio,
            "cha_cannot_save": cost_ratio is not None and cost_ratio >= NO_SAVING,
            "bound": round(bound(strong, n, audit), 1) if n else None,
            "within_bound": stats.group_evaluations <= bound(strong, n, audit) if n else None,
            "precision_observed": round(above_tau / len(cha_agonists), 4) if cha_agonists else None,
            "agonists_below_tau_observed": len(cha_agonists) - above_tau,
        }
    )
    return entry


def by_regime(
    problems: Iterable[PopulationProblem], edges: Sequence[float] = EDGES
) -> dict[str, dict[str, BinCount]]:
    """Bins summed over the problems of each regime."""
    out: dict[str, dict[str, BinCount]] = {}
    for problem in problems:
        totals = out.setdefault(problem.regime, {f"{e:g}": BinCount() for e in sorted(edges, reverse=True)})
        for key, count in problem.bins(edges).items():
            totals[key].add(count)
    return out


def headline(totals: Mapping[str, Mapping[str, BinCount]], field_name: str) -> dict[str, dict[str, Any]]:
    """``{regime: {edge: value}}`` of one figure (``recall`` or ``shortlist_recall``)."""
    return {regime: {k: c.to_dict()[field_name] for k, c in bins.items()} for regime, bins in totals.items()}


__all__ = [
    "EDGES",
    "BinCount",
    "PopulationProblem",
    "bin_of",
    "by_regime",
    "effect",
    "headline",
    "is_reference",
    "validation_payload",
]
