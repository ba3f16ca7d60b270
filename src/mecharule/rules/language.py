"""The rule language: ``Condition`` (an atom), ``Rule`` (a conjunction, optionally negated) and
``RuleSet`` (a disjunction of rules). Rules are structured values, never strings; strings are only
for display (``mecharule.rules.text``).

Semantics, on a table of float64 features where NaN means *not applicable*:

* ``Condition(f, op, t, missing)`` holds on a row iff ``x op t`` when ``x = row[f]`` is a number,
  and iff ``missing`` when ``x`` is NaN. This is how XGBoost's default direction is represented
  exactly: a split whose missing values go down the "yes" branch becomes a condition with
  ``missing=True``.
* ``Rule(conditions, negated=False)`` holds iff every condition holds (an empty conjunction always
  holds); ``negated=True`` flips the result (``NOT (c1 AND c2)``).
* ``RuleSet(rules)`` holds iff any rule holds (an empty set never holds).

All three are frozen, hashable and canonically ordered, so equal logic compares equal.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError, DataError

OPS: tuple[str, ...] = ("<", "<=", ">", ">=", "==", "!=")
_OP_FUNCS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_OP_RANK = {op: i for i, op in enumerate(OPS)}

ColumnSource = Callable[[str], np.ndarray]


def column_source(X: pd.DataFrame | np.ndarray, feature_names: Sequence[str] | None = None) -> ColumnSource:
    """Return ``name -> float64 column`` for a DataFrame, or a matrix with ``feature_names``.

    Unknown names raise a ``DataError`` naming the feature and listing the available ones.
    """
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        matrix = None
        frame: pd.DataFrame | None = X
    else:
        matrix = np.asarray(X)
        if matrix.ndim != 2:
            raise DataError(f"expected a 2-D feature matrix, got shape {matrix.shape}")
        if feature_names is None or len(feature_names) != matrix.shape[1]:
            raise DataError(
                f"a feature matrix with {matrix.shape[1]} columns needs {matrix.shape[1]} feature_names, "
                f"got {None if feature_names is None else len(feature_names)}"
            )
        names = [str(n) for n in feature_names]
        frame = None
    index = {name: i for i, name in enumerate(names)}

    def get(name: str) -> np.ndarray:
        if name not in index:
            shown = ", ".join(names[:50]) + (" ..." if len(names) > 50 else "")
            raise DataError(f"rule uses feature {name!r}, which is not in the table; available: {shown}")
        if frame is not None:
            values = frame.iloc[:, index[name]].to_numpy()
        else:
            assert matrix is not None  # narrowing for the type checker, not input validation
            values = matrix[:, index[name]]
        try:
            return np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"feature {name!r} is not numeric (dtype {values.dtype})") from None

    return get


@dataclass(frozen=True)
class Condition:
    """``feature op threshold``; NaN values satisfy it iff ``missing``."""

    feature: str
    op: str
    threshold: float
    missing: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.feature, str) or not self.feature:
            raise ConfigError(f"Condition.feature must be a non-empty string, got {self.feature!r}")
        if self.op not in _OP_FUNCS:
            raise ConfigError(f"Condition.op {self.op!r} is not supported; allowed: {', '.join(OPS)}")
        threshold = float(self.threshold)
        if math.isnan(threshold):
            raise ConfigError(f"Condition on {self.feature!r} has a NaN threshold; use a number")
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "missing", bool(self.missing))

    def sort_key(self) -> tuple[str, int, float, bool]:
        return (self.feature, _OP_RANK[self.op], self.threshold, self.missing)

    def evaluate_values(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask of this condition on one float64 column."""
        with np.errstate(invalid="ignore"):
            result = np.asarray(_OP_FUNCS[self.op](values, self.threshold), dtype=bool)
        nan = np.isnan(values)
        if nan.any():
            result = result.copy()
            result[nan] = self.missing
        return result

    def evaluate(
        self, X: pd.DataFrame | np.ndarray, feature_names: Sequence[str] | None = None
    ) -> np.ndarray:
        return self.evaluate_values(column_source(X, feature_names)(self.feature))

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "op": self.op, "threshold": self.threshold, "missing": self.missing}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        return cls(str(data["feature"]), str(data["op"]), float(data["threshold"]), bool(data.get("missing")))


@dataclass(frozen=True)
class Rule:
    """A conjunction of conditions; ``negated`` turns it into ``NOT (conjunction)``."""

    conditions: tuple[Condition, ...] = ()
    negated: bool = False

    def __post_init__(self) -> None:
        conds = tuple(self.conditions)
        for cond in conds:
            if not isinstance(cond, Condition):
                raise ConfigError(f"Rule.conditions must hold Condition objects, got {type(cond).__name__}")
        object.__setattr__(self, "conditions", tuple(sorted(set(conds), key=Condition.sort_key)))
        object.__setattr__(self, "negated", bool(self.negated))

    @property
    def features(self) -> tuple[str, ...]:
        """Distinct feature names used, in canonical order."""
        return tuple(dict.fromkeys(c.feature for c in self.conditions))

    @property
    def n_conditions(self) -> int:
        return len(self.conditions)

    def negate(self) -> Rule:
        return Rule(self.conditions, not self.negated)

    def sort_key(self) -> tuple[Any, ...]:
        return (len(self.conditions), tuple(c.sort_key() for c in self.conditions), self.negated)

    def evaluate_source(self, source: ColumnSource, n_rows: int) -> np.ndarray:
        mask = np.ones(n_rows, dtype=bool)
        for cond in self.conditions:
            mask &= cond.evaluate_values(source(cond.feature))
        return ~mask if self.negated else mask

    def evaluate(
        self, X: pd.DataFrame | np.ndarray, feature_names: Sequence[str] | None = None
    ) -> np.ndarray:
        """Boolean mask (one entry per row) of where the rule holds."""
        return self.evaluate_source(column_source(X, feature_names), len(X))

    def to_dict(self) -> dict[str, Any]:
        return {"negated": self.negated, "conditions": [c.to_dict() for c in self.conditions]}

    def __str__(self) -> str:
        """Readable text without feature descriptions (``a >= 50 AND op_is_mul >= 0.5``)."""
        from mecharule.rules.text import describe_rule

        return describe_rule(self)

    def _repr_html_(self) -> str:
        rows = [
            (c.feature, c.op, format(c.threshold, ".6g"), "yes" if c.missing else "no")
            for c in self.conditions
        ]
        caption = "NOT (every condition holds)" if self.negated else "every condition holds"
        return _html_table(("feature", "op", "threshold", "holds when n/a"), rows, caption)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        return cls(tuple(Condition.from_dict(c) for c in data["conditions"]), bool(data.get("negated")))


@dataclass(frozen=True)
class RuleSet:
    """A disjunction (OR) of rules; empty means "never"."""

    rules: tuple[Rule, ...] = field(default=())

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        for rule in rules:
            if not isinstance(rule, Rule):
                raise ConfigError(f"RuleSet.rules must hold Rule objects, got {type(rule).__name__}")
        object.__setattr__(self, "rules", tuple(sorted(set(rules), key=Rule.sort_key)))

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(sorted({f for rule in self.rules for f in rule.features}))

    @property
    def n_conditions(self) -> int:
        return sum(rule.n_conditions for rule in self.rules)

    def evaluate(
        self, X: pd.DataFrame | np.ndarray, feature_names: Sequence[str] | None = None
    ) -> np.ndarray:
        source = column_source(X, feature_names)
        mask = np.zeros(len(X), dtype=bool)
        for rule in self.rules:
            mask |= rule.evaluate_source(source, len(X))
        return mask

    def to_dict(self) -> dict[str, Any]:
        from mecharule.io.rundir import SCHEMA_VERSION

        return {"schema_version": SCHEMA_VERSION, "rules": [r.to_dict() for r in self.rules]}

    def __str__(self) -> str:
        """Readable text of the disjunction (``never`` when empty)."""
        from mecharule.rules.text import describe_ruleset

        return describe_ruleset(self)

    def _repr_html_(self) -> str:
        rows = [(str(i), str(rule)) for i, rule in enumerate(self.rules, start=1)]
        return _html_table(("#", "rule"), rows, "any rule holds" if rows else "never")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleSet:
        from mecharule.io.rundir import SCHEMA_VERSION

        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise DataError(f"RuleSet schema_version {version!r} is not supported; expected {SCHEMA_VERSION}")
        return cls(tuple(Rule.from_dict(r) for r in data["rules"]))


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str) -> str:
    """A small escaped HTML table (notebook display)."""
    from html import escape

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><caption>{escape(caption)}</caption><tr>{head}</tr>{body}</table>"
