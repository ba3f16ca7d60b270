"""Behaviour rules: a structured rule language, metrics, extractors and honest (held-out) scoring.

Imports no torch. The public surface:

* ``Condition``, ``Rule``, ``RuleSet`` — the language (``rules.language``);
* ``ruleset_text`` / ``parse_ruleset`` (exact canonical text), ``describe_ruleset`` (readable);
* ``RuleMetrics``, ``rule_metrics``;
* ``EXTRACTORS`` (registry), ``RuleShapExtractor``;
* ``extract_and_score`` → ``RuleReport``;
* ``extract_behaviour_rules`` (the stage), ``format_rules_table`` (CLI table).
"""

from __future__ import annotations

from mecharule.rules.extractor import EXTRACTORS, RuleShapExtractor
from mecharule.rules.language import Condition, Rule, RuleSet
from mecharule.rules.metrics import RuleMetrics, rule_metrics
from mecharule.rules.scoring import RuleReport, extract_and_score
from mecharule.rules.stage import extract_behaviour_rules, format_rules_table
from mecharule.rules.text import (
    describe_rule,
    describe_ruleset,
    parse_rule,
    parse_ruleset,
    rule_text,
    ruleset_text,
)

__all__ = [
    "EXTRACTORS",
    "Condition",
    "Rule",
    "RuleMetrics",
    "RuleReport",
    "RuleSet",
    "RuleShapExtractor",
    "describe_rule",
    "describe_ruleset",
    "extract_and_score",
    "extract_behaviour_rules",
    "format_rules_table",
    "parse_rule",
    "parse_ruleset",
    "rule_metrics",
    "rule_text",
    "ruleset_text",
]
