"""Localization: find the agonist units of a rule with Contrastive Hierarchical Ablation (CHA).

``group_testing`` (the search), ``brute_force`` (brute force and recall by effect bin), ``density``
(when halving pays), ``population`` (recall over every unit) and ``stats`` (exact binomial bounds)
import no torch; the engine-backed oracle lives in ``search.oracle`` and is imported explicitly.
"""

from __future__ import annotations

from mecharule.search.brute_force import (
    DEFAULT_BINS,
    BinRecall,
    BruteForceResult,
    RecallReport,
    brute_force,
    recall_by_effect_bin,
)
from mecharule.search.group_testing import (
    Agonist,
    CatastrophicUnit,
    Evaluation,
    Oracle,
    ProblemStats,
    Query,
    SearchConfig,
    SearchProblem,
    SearchResult,
    SliceCounts,
    SliceEffect,
    TraceRecord,
    Unit,
    bound,
    evaluate_counts,
    search,
)
from mecharule.search.stats import adjusted_epsilon, contrast_lower_bound, cp_lower, cp_upper

__all__ = [
    "DEFAULT_BINS",
    "Agonist",
    "BinRecall",
    "BruteForceResult",
    "CatastrophicUnit",
    "Evaluation",
    "Oracle",
    "ProblemStats",
    "Query",
    "RecallReport",
    "SearchConfig",
    "SearchProblem",
    "SearchResult",
    "SliceCounts",
    "SliceEffect",
    "TraceRecord",
    "Unit",
    "adjusted_epsilon",
    "bound",
    "brute_force",
    "contrast_lower_bound",
    "cp_lower",
    "cp_upper",
    "evaluate_counts",
    "recall_by_effect_bin",
    "search",
]
