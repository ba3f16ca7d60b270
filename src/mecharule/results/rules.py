"""The rules stage's result: ``rules.json`` (and the two plots it names) as structured rules with
their held-out metrics."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from mecharule.results.artifacts import load_bytes, load_json, save_bytes, save_json
from mecharule.results.display import html_table, number
from mecharule.rules.language import Rule, RuleSet
from mecharule.rules.metrics import RuleMetrics


def metrics_of(raw: Mapping[str, Any] | None, scope: str) -> RuleMetrics | None:
    """The ``scope`` (test / train / all) metrics of a ``metrics`` block; None when absent or partial."""
    block = (raw or {}).get(scope)
    if not isinstance(block, Mapping):
        return None
    try:
        return RuleMetrics.from_dict(dict(block))
    except (KeyError, TypeError):
        return None


def scores_text(metrics: RuleMetrics | None) -> str:
    if metrics is None:
        return "no test metrics"
    return f"test precision {metrics.precision:.2f}, recall {metrics.recall:.2f}, MCC {metrics.mcc:.2f}"


@dataclass(frozen=True)
class ScoredRule:
    """One disjunct of the behaviour rule set: the structured ``rule``, its readable and canonical
    text, and its metrics on the held-out test rows and on the train rows it was fitted on."""

    id: str
    rule: Rule
    readable: str
    text: str
    test: RuleMetrics | None
    train: RuleMetrics | None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], default_id: str) -> ScoredRule:
        metrics = raw.get("metrics") or {}
        return cls(
            id=str(raw.get("id") or default_id),
            rule=Rule.from_dict(raw["rule"]),
            readable=str(raw.get("readable") or ""),
            text=str(raw.get("text") or ""),
            test=metrics_of(metrics, "test"),
            train=metrics_of(metrics, "train"),
            raw=raw,
        )

    def evaluate(self, features: pd.DataFrame) -> np.ndarray:
        """Where the rule holds, one boolean per row of a feature table."""
        return self.rule.evaluate(features)

    def __str__(self) -> str:
        return f"{self.id}: {self.readable or self.rule}  [{scores_text(self.test)}]"

    def _repr_html_(self) -> str:
        return html_table(*_rule_rows([self]))


def _rule_rows(rules: list[ScoredRule]) -> tuple[tuple[str, ...], list[tuple[object, ...]]]:
    header = ("id", "rule", "test precision", "test recall", "test MCC", "test coverage")
    rows: list[tuple[object, ...]] = []
    for r in rules:
        t = r.test
        rows.append(
            (r.id, r.readable or str(r.rule))
            + ((t.precision, t.recall, t.mcc, t.coverage) if t else (None, None, None, None))
        )
    return header, rows


@dataclass(frozen=True)
class RuleSetControl:
    """The same extraction on permuted labels (the fake-target control); its MCC should be near 0."""

    method: str
    rules: RuleSet
    readable: str
    test: RuleMetrics | None
    train: RuleMetrics | None

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> RuleSetControl:
        rules, readable = _ruleset(raw.get("rules") or {})
        metrics = raw.get("metrics") or {}
        return cls(
            str(raw.get("method") or ""),
            rules,
            readable,
            metrics_of(metrics, "test"),
            metrics_of(metrics, "train"),
        )


def _ruleset(block: Mapping[str, Any]) -> tuple[RuleSet, str]:
    structured = block.get("structured")
    rules = RuleSet.from_dict(structured) if isinstance(structured, Mapping) else RuleSet()
    return rules, str(block.get("readable") or "")


@dataclass(frozen=True)
class RuleSetResult:
    """``rules.json``: the behaviour rule set (a disjunction) that predicts the ``target`` (``fail``:
    the model is wrong; ``success``), selected on train rows and scored on test rows.

    ``disjuncts`` are its rules one by one (``R1``, ``R2`` ...), each with its own metrics; ``test``
    and ``train`` score the whole set; ``control`` is the fake-target control. ``raw`` holds every
    field as read (extractor parameters, SHAP importance ...); ``plots`` the PNG files it names.
    """

    target: str
    rules: RuleSet
    readable: str
    disjuncts: tuple[ScoredRule, ...]
    test: RuleMetrics | None
    train: RuleMetrics | None
    control: RuleSetControl | None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    plots: Mapping[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    FILE: ClassVar[str] = "rules.json"

    @property
    def prevalence(self) -> float | None:
        value = (self.raw.get("target") or {}).get("prevalence")
        return None if value is None else float(value)

    def __len__(self) -> int:
        return len(self.disjuncts)

    def __iter__(self) -> Iterator[ScoredRule]:
        return iter(self.disjuncts)

    def __getitem__(self, rule_id: str) -> ScoredRule:
        for rule in self.disjuncts:
            if rule.id == rule_id:
                return rule
        known = ", ".join(r.id for r in self.disjuncts) or "none"
        raise KeyError(f"no rule {rule_id!r} in rules.json; its rules are: {known}")

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], plots: Mapping[str, bytes] | None = None) -> RuleSetResult:
        rules, readable = _ruleset(raw.get("rules") or {})
        metrics = raw.get("metrics") or {}
        control = raw.get("control")
        return cls(
            target=str((raw.get("target") or {}).get("name") or ""),
            rules=rules,
            readable=readable,
            disjuncts=tuple(
                ScoredRule.from_raw(d, f"R{i}") for i, d in enumerate(raw.get("disjuncts") or [], start=1)
            ),
            test=metrics_of(metrics, "test"),
            train=metrics_of(metrics, "train"),
            control=RuleSetControl.from_raw(control) if isinstance(control, Mapping) else None,
            raw=raw,
            plots=dict(plots or {}),
        )

    @classmethod
    def load(cls, run_dir: str | Path) -> RuleSetResult:
        run_dir = Path(run_dir)
        raw = load_json(run_dir, cls.FILE)
        names = [str(p) for p in raw.get("plots") or [] if (run_dir / str(p)).is_file()]
        return cls.from_raw(raw, {name: load_bytes(run_dir, name) for name in names})

    def save(self, run_dir: str | Path) -> None:
        for name, data in self.plots.items():
            save_bytes(Path(run_dir), name, data)
        save_json(Path(run_dir), self.FILE, dict(self.raw))

    def _headline(self) -> str:
        count = f"{len(self.disjuncts)} rule{'s' if len(self.disjuncts) != 1 else ''}"
        prevalence = f", prevalence {self.prevalence:.2f}" if self.prevalence is not None else ""
        return f"{count} for {self.target or '?'}{prevalence}; the set: {scores_text(self.test)}"

    def __str__(self) -> str:
        lines = [self._headline(), *(f"  {rule}" for rule in self.disjuncts)]
        if self.control is not None:
            mcc = None if self.control.test is None else self.control.test.mcc
            lines.append(f"control ({self.control.method or 'permuted labels'}): test MCC {number(mcc)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return html_table(*_rule_rows(list(self.disjuncts)), caption=self._headline())
