"""CHA, the search for the agonist units of a rule: pure algorithms that import no torch.

``types`` (units, queries, counts, problems, the config), ``predicates`` (strong and accepted),
``tree`` (roots, orders, splits), ``cha`` (the search loop and its cost bound), ``results`` (trace,
agonists), ``brute_force`` (every candidate alone; recall by effect bin), ``density`` (when halving
pays), ``population`` (recall over every unit) and ``stats`` (exact binomial bounds). They test on
synthetic oracles. The model-backed side (the engine oracle, problems from a run, the stage) is
:mod:`mecharule.localization`.
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
from mecharule.search.cha import bound, search
from mecharule.search.predicates import Evaluation, SliceEffect, evaluate_counts
from mecharule.search.results import Agonist, CatastrophicUnit, ProblemStats, SearchResult, TraceRecord
from mecharule.search.stats import adjusted_epsilon, contrast_lower_bound, cp_lower, cp_upper
from mecharule.search.types import Oracle, Query, SearchConfig, SearchProblem, SliceCounts, Unit

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
