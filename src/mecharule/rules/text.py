"""Text forms of rules: a canonical form that parses back exactly, and a readable form for people.

Canonical grammar (feature NAMES, thresholds printed with ``repr`` so float64 values round-trip)::

    ruleset   := "FALSE" | "(" rule ")" { "OR" "(" rule ")" }
    rule      := "NOT" "(" conj ")" | conj
    conj      := "TRUE" | condition { "AND" condition }
    condition := name op number [ "[" "or" "missing" "]" ]
    name      := [A-Za-z_][A-Za-z0-9_.]*  (not a keyword)  |  `any text, with `` for a backtick`
    op        := "<" | "<=" | ">" | ">=" | "==" | "!="

Example: ``(a >= 49.5 AND op_is_mul >= 0.5) OR (NOT (b >= 0.5 [or missing]))``.

The readable form uses feature descriptions: binary features read as statements (``operator is *``
/ ``NOT operator is *``), counts get integer thresholds (``carries in a + b >= 2``), other numbers
are shown with 6 significant digits. It is for display only and is never parsed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mecharule.errors import DataError
from mecharule.rules.language import Condition, Rule, RuleSet

_KEYWORDS = frozenset({"AND", "OR", "NOT", "TRUE", "FALSE", "inf", "nan", "or", "missing"})
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_TOKEN = re.compile(
    r"\s*(?:(?P<num>[-+]?(?:inf|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?))(?![A-Za-z0-9_.])"
    r"|(?P<op><=|>=|==|!=|<|>)"
    r"|(?P<punct>[()\[\]])"
    r"|`(?P<quoted>(?:[^`]|``)*)`"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)


# -- canonical text -----------------------------------------------------------------------------
def format_name(name: str) -> str:
    if _BARE_NAME.match(name) and name not in _KEYWORDS:
        return name
    return "`" + name.replace("`", "``") + "`"


def condition_text(cond: Condition) -> str:
    text = f"{format_name(cond.feature)} {cond.op} {cond.threshold!r}"
    return text + " [or missing]" if cond.missing else text


def rule_text(rule: Rule) -> str:
    body = " AND ".join(condition_text(c) for c in rule.conditions) or "TRUE"
    return f"NOT ({body})" if rule.negated else body


def ruleset_text(ruleset: RuleSet) -> str:
    if not ruleset.rules:
        return "FALSE"
    return " OR ".join(f"({rule_text(r)})" for r in ruleset.rules)


class _Parser:
    """Recursive-descent parser over the canonical grammar."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = self._tokenize(text)
        self.pos = 0

    def _tokenize(self, text: str) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise DataError(f"cannot parse rule text at character {pos}: {text[pos : pos + 30]!r}")
            kind = match.lastgroup or ""
            value = match.group(kind)
            tokens.append((kind, value.replace("``", "`") if kind == "quoted" else value))
            pos = match.end()
        return tokens

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            want = value or kind
            raise DataError(f"rule text {self.text!r}: expected {want!r} at token {self.pos}, got {token}")
        self.pos += 1
        return token[1]

    def at(self, kind: str, value: str) -> bool:
        return self.peek() == (kind, value)

    def done(self) -> None:
        if self.peek() is not None:
            raise DataError(f"rule text {self.text!r}: unexpected trailing token {self.peek()}")

    def ruleset(self) -> RuleSet:
        if self.at("word", "FALSE"):
            self.pos += 1
            return RuleSet()
        rules = [self._paren_rule()]
        while self.at("word", "OR"):
            self.pos += 1
            rules.append(self._paren_rule())
        return RuleSet(tuple(rules))

    def _paren_rule(self) -> Rule:
        self.take("punct", "(")
        rule = self.rule()
        self.take("punct", ")")
        return rule

    def rule(self) -> Rule:
        if self.at("word", "NOT"):
            self.pos += 1
            self.take("punct", "(")
            conditions = self._conjunction()
            self.take("punct", ")")
            return Rule(conditions, negated=True)
        return Rule(self._conjunction())

    def _conjunction(self) -> tuple[Condition, ...]:
        if self.at("word", "TRUE"):
            self.pos += 1
            return ()
        conditions = [self.condition()]
        while self.at("word", "AND"):
            self.pos += 1
            conditions.append(self.condition())
        return tuple(conditions)

    def condition(self) -> Condition:
        token = self.peek()
        bare_keyword = token is not None and token[0] == "word" and token[1] in _KEYWORDS
        if token is None or token[0] not in ("word", "quoted") or bare_keyword:
            raise DataError(
                f"rule text {self.text!r}: expected a feature name at token {self.pos}, got {token}"
            )
        self.pos += 1
        op = self.take("op")
        threshold = float(self.take("num"))
        missing = False
        if self.at("punct", "["):
            self.pos += 1
            self.take("word", "or")
            self.take("word", "missing")
            self.take("punct", "]")
            missing = True
        return Condition(token[1], op, threshold, missing)


def parse_condition(text: str) -> Condition:
    parser = _Parser(text)
    cond = parser.condition()
    parser.done()
    return cond


def parse_rule(text: str) -> Rule:
    parser = _Parser(text)
    rule = parser.rule()
    parser.done()
    return rule


def parse_ruleset(text: str) -> RuleSet:
    parser = _Parser(text)
    ruleset = parser.ruleset()
    parser.done()
    return ruleset


# -- readable text ------------------------------------------------------------------------------
def _short(value: float) -> str:
    if abs(value) < 1e-9:  # float32 split boundaries around 0 (e.g. -7e-46) read as 0
        value = 0.0
    return format(value, ".6g")


def _binary_trivial(cond: Condition) -> bool | None:
    """For a 0/1 feature: True if the condition holds for both values, False if for neither."""
    holds = [cond.evaluate_values(np.array([v]))[0] for v in (0.0, 1.0)]
    if all(holds):
        return True
    if not any(holds):
        return False
    return None


def _binary_statement(cond: Condition) -> bool | None:
    """True if the condition means "feature is 1", False if "feature is 0", None if neither."""
    t, op = cond.threshold, cond.op
    if (op == ">=" and 0 < t <= 1) or (op == ">" and 0 <= t < 1) or (op == "==" and t == 1):
        return True
    if op == "!=" and t in (0.0, 1.0):
        return t == 0.0
    if (op == "<" and 0 < t <= 1) or (op == "<=" and 0 <= t < 1) or (op == "==" and t == 0):
        return False
    return None


def _count_form(cond: Condition) -> tuple[str, str]:
    """Integer-valued features: rewrite ``a > 49.5`` as ``a >= 50`` (same rows for integers)."""
    t = cond.threshold
    if math.isinf(t):
        return cond.op, _short(t)
    if cond.op == ">=":
        return ">=", str(math.ceil(t))
    if cond.op == ">":
        return ">=", str(math.floor(t) + 1)
    if cond.op == "<":
        return "<=", str(math.ceil(t) - 1)
    if cond.op == "<=":
        return "<=", str(math.floor(t))
    return cond.op, _short(t)


@dataclass(frozen=True)
class Glossary:
    """What the readable form knows about features: descriptions, kinds ("binary" | "count" |
    "numeric") and which features can be NaN (None: assume any can). "(or n/a)" is shown only for
    features that can be missing; for the others the flag is inert and would only add noise."""

    descriptions: Mapping[str, str] = field(default_factory=dict)
    kinds: Mapping[str, str] = field(default_factory=dict)
    missing_features: frozenset[str] | None = None

    @classmethod
    def coerce(cls, value: Glossary | Mapping[str, str] | None) -> Glossary:
        """A Glossary from itself, from a plain name → description dict, or from None."""
        if isinstance(value, Glossary):
            return value
        return cls(descriptions=dict(value or {}))

    def describe(self, name: str) -> str:
        return self.descriptions.get(name) or name

    def kind(self, name: str) -> str:
        return self.kinds.get(name, "numeric")

    def can_be_missing(self, name: str) -> bool:
        return self.missing_features is None or name in self.missing_features


GlossaryLike = Glossary | Mapping[str, str] | None


def describe_condition(cond: Condition, glossary: GlossaryLike = None) -> str:
    """Readable text of one condition, e.g. ``NOT operator is *`` or ``carries in a + b >= 2``."""
    gloss = Glossary.coerce(glossary)
    desc, kind = gloss.describe(cond.feature), gloss.kind(cond.feature)
    suffix = " (or n/a)" if cond.missing and gloss.can_be_missing(cond.feature) else ""
    if kind == "binary":
        trivial = _binary_trivial(cond)
        if trivial is True:  # only the missingness part of the condition matters
            return "always" if cond.missing else f"{desc} applies"
        if trivial is False:
            return f"{desc} is n/a" if cond.missing else "never"
        statement = _binary_statement(cond)
        if statement is not None:
            return (desc if statement else f"NOT {desc}") + suffix
    if kind in ("count", "binary"):
        op, shown = _count_form(cond)
        return f"{desc} {op} {shown}{suffix}"
    return f"{desc} {cond.op} {_short(cond.threshold)}{suffix}"


def describe_rule(rule: Rule, glossary: GlossaryLike = None) -> str:
    """Readable text of a rule (``always`` for the empty conjunction)."""
    gloss = Glossary.coerce(glossary)
    parts = [describe_condition(c, gloss) for c in rule.conditions]
    if len(parts) > 1:
        parts = [p for p in parts if p != "always"] or ["always"]
    body = " AND ".join(parts) or "always"
    if rule.negated and len(parts) == 1 and body.startswith("NOT ") and " AND " not in body:
        return body[len("NOT ") :]  # NOT (NOT x) reads as x
    return f"NOT ({body})" if rule.negated else body


def describe_ruleset(ruleset: RuleSet, glossary: GlossaryLike = None) -> str:
    """Readable text of a rule set (``never`` when empty)."""
    gloss = Glossary.coerce(glossary)
    if not ruleset.rules:
        return "never"
    if len(ruleset.rules) == 1:
        return describe_rule(ruleset.rules[0], gloss)
    return " OR ".join(f"({describe_rule(r, gloss)})" for r in ruleset.rules)
