"""Typed results of a run's stages, each read from and written to its run-directory artifacts
exactly as the stage writes them (``Result.load(run_dir)``, ``result.save(run_dir)``), and
:class:`Run`, which reads them lazily.

=====================  ==================================================================
``Behaviour``          ``behaviour.parquet``, ``features.parquet``, ``features.json``
``RuleSetResult``      ``rules.json`` (+ its plots): ``ScoredRule`` disjuncts, set metrics, control
``Attribution``        ``attribution/rule_<id>.{safetensors,json}``: ``AttributedRule`` per rule
``Localization``       ``localization/``: ``Problem`` per rule x regime, each with ``Agonist`` views
``Validation``         ``validation.json``
``Recomposition``      ``recomposition.json``: per rule, its agonists alone, together, in pairs
``Anchoring``          ``flips.parquet``, ``neuron_rules.json``: ``AnchoredAgonist`` per agonist
=====================  ==================================================================

Every result keeps the artifact as read in ``raw`` (fields not modelled stay reachable) and prints
readably (``str``) and as a small HTML table in notebooks (``_repr_html_``).
"""

from __future__ import annotations

from mecharule.results.anchoring import AnchoredAgonist, AnchoredRule, Anchoring
from mecharule.results.attribution import AttributedRule, Attribution
from mecharule.results.behaviour import Behaviour
from mecharule.results.localization import Agonist, Localization, Problem
from mecharule.results.recomposition import Recomposition
from mecharule.results.rules import RuleSetControl, RuleSetResult, ScoredRule
from mecharule.results.run import Run, load_run
from mecharule.results.validation import Validation

__all__ = [
    "Agonist",
    "AnchoredAgonist",
    "AnchoredRule",
    "Anchoring",
    "AttributedRule",
    "Attribution",
    "Behaviour",
    "Localization",
    "Problem",
    "Recomposition",
    "RuleSetControl",
    "RuleSetResult",
    "Run",
    "ScoredRule",
    "Validation",
    "load_run",
]
