"""Honest scoring: fit and select on TRAIN rows, report held-out TEST metrics as primary.

``extract_and_score`` works for any binary target (behaviour failures now, neuron flips later):

* the extractor is fitted on the TRAIN rows only (selection included);
* the selected rule set, and each of its disjuncts, is scored on TEST rows (``test``, primary,
  held out), TRAIN rows (``train``, in-sample) and all rows (``all``, descriptive: it contains the
  training rows, so it is not a held-out score);
* a fake-target control runs the very same pipeline on the labels permuted with the same seed
  (same prevalence, no relation to the features); its test MCC should be near 0 and is reported
  beside the real one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from mecharule.errors import ConfigError, DataError
from mecharule.rules.extractor import EXTRACTORS
from mecharule.rules.language import Rule, RuleSet
from mecharule.rules.metrics import RuleMetrics, rule_metrics
from mecharule.rules.text import GlossaryLike, describe_rule, describe_ruleset, rule_text, ruleset_text
from mecharule.rules.validation import binary_target

SCOPE_NOTES = {
    "test": "held out: selected on train rows, scored on test rows (primary)",
    "train": "in-sample: the rows the rules were fitted and selected on",
    "all": "descriptive: train + test rows, not held out",
}


@dataclass(frozen=True)
class ScopedMetrics:
    """Metrics of one firing mask on the test, train and all rows (test is None without test rows)."""

    test: RuleMetrics | None
    train: RuleMetrics
    all: RuleMetrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "primary": "test",
            "test": self.test.to_dict() if self.test else None,
            "train": self.train.to_dict(),
            "all": self.all.to_dict(),
            "notes": SCOPE_NOTES,
        }


def scoped_metrics(fire: np.ndarray, y: np.ndarray, is_test: np.ndarray) -> ScopedMetrics:
    test = rule_metrics(fire[is_test], y[is_test]) if is_test.any() else None
    return ScopedMetrics(test, rule_metrics(fire[~is_test], y[~is_test]), rule_metrics(fire, y))


@dataclass(frozen=True)
class DisjunctReport:
    """One conjunction of the selected set, scored on its own (one "behaviour rule")."""

    rule: Rule
    metrics: ScopedMetrics

    def to_dict(self, glossary: GlossaryLike = None) -> dict[str, Any]:
        return {
            "rule": self.rule.to_dict(),
            "text": rule_text(self.rule),
            "readable": describe_rule(self.rule, glossary),
            "features": list(self.rule.features),
            "n_conditions": self.rule.n_conditions,
            "metrics": self.metrics.to_dict(),
        }


@dataclass(frozen=True)
class Extraction:
    """A rule set fitted on train rows and its scores (used for the real and the control target)."""

    rules: RuleSet
    metrics: ScopedMetrics
    disjuncts: tuple[DisjunctReport, ...]
    reason: str

    def to_dict(self, glossary: GlossaryLike = None) -> dict[str, Any]:
        return {
            "rules": {
                "structured": self.rules.to_dict(),
                "text": ruleset_text(self.rules),
                "readable": describe_ruleset(self.rules, glossary),
                "n_rules": len(self.rules),
                "n_conditions": self.rules.n_conditions,
            },
            "metrics": self.metrics.to_dict(),
            "disjuncts": [d.to_dict(glossary) for d in self.disjuncts],
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RuleReport:
    """Result of ``extract_and_score``: the real extraction, the fake-target control, provenance."""

    result: Extraction
    control: Extraction | None
    extractor: str
    params: dict[str, Any]
    seed: int
    n_train: int
    n_test: int
    shap_importance: pd.DataFrame | None = field(default=None, compare=False)

    @property
    def rules(self) -> RuleSet:
        return self.result.rules

    def to_dict(self, glossary: GlossaryLike = None) -> dict[str, Any]:
        control = None
        if self.control is not None:
            control = {"method": "labels permuted with the run seed, same pipeline", "seed": self.seed}
            control.update(self.control.to_dict(glossary))
        return {
            "extractor": self.extractor,
            "params": self.params,
            "seed": self.seed,
            "n_train": self.n_train,
            "n_test": self.n_test,
            **self.result.to_dict(glossary),
            "control": control,
        }


def make_extractor(extractor: str | Any, seed: int, options: Mapping[str, Any] | None) -> Any:
    """An unfitted extractor: a registered name built with ``seed`` and ``options``, or a clone
    of the given estimator."""
    if isinstance(extractor, str):
        factory = EXTRACTORS.get(extractor)
        check_options(extractor, factory, options or {})
        return factory(seed=seed, **dict(options or {}))
    return clone(extractor)


def check_options(name: str, factory: Any, options: Mapping[str, Any]) -> None:
    """ConfigError naming an option the extractor does not take, with the ones it does."""
    import difflib
    import inspect

    accepted = [p for p in inspect.signature(factory).parameters if p not in ("self", "seed")]
    for option in options:
        if option not in accepted:
            close = difflib.get_close_matches(str(option), accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"extractor {name!r} takes no option {option!r}{hint} (rules.options, "
                f"anchor.rule_options); its options are: {', '.join(accepted)}"
            )


def _fit_and_score(
    estimator: Any, X: pd.DataFrame, y: np.ndarray, is_test: np.ndarray
) -> tuple[Any, Extraction]:
    train = ~is_test
    fitted = estimator.fit(X.loc[train], y[train])
    rules: RuleSet = fitted.rules_
    fire = rules.evaluate(X)
    per_rule = [DisjunctReport(r, scoped_metrics(r.evaluate(X), y, is_test)) for r in rules.rules]
    per_rule.sort(key=lambda d: (-d.metrics.train.mcc, d.rule.sort_key()))
    extraction = Extraction(
        rules, scoped_metrics(fire, y, is_test), tuple(per_rule), getattr(fitted, "reason_", "")
    )
    return fitted, extraction


def extract_and_score(
    X: pd.DataFrame,
    y: Any,
    is_test: Any,
    *,
    extractor: str | Any = "ruleshap",
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    control: bool = True,
) -> RuleReport:
    """Fit rules for the binary target ``y`` on rows where ``is_test`` is False; score everywhere.

    ``extractor`` is a registered name (built with ``seed`` and ``options``) or an unfitted
    estimator (cloned). With ``control`` the same pipeline also runs on ``y`` permuted by
    ``numpy.random.default_rng(seed)``.
    """
    if not isinstance(X, pd.DataFrame):
        raise DataError(f"X must be a pandas DataFrame of features, got {type(X).__name__}")
    X = X.reset_index(drop=True)
    target = binary_target(y, len(X))
    test = np.asarray(is_test)
    if test.shape != (len(X),) or test.dtype != bool:
        raise DataError(f"is_test must be a bool array of length {len(X)}, got {test.dtype} {test.shape}")
    if test.all():
        raise DataError("every row is a test row; rules need training rows (is_test False)")
    estimator = make_extractor(extractor, seed, options)
    fitted, result = _fit_and_score(estimator, X, target, test)
    fake = None
    if control:
        permuted = np.random.default_rng(seed).permutation(target)
        fake = _fit_and_score(clone(estimator), X, permuted, test)[1]
    name = extractor if isinstance(extractor, str) else type(extractor).__name__
    return RuleReport(
        result=result,
        control=fake,
        extractor=name,
        params=_jsonable(fitted.get_params()),
        seed=seed,
        n_train=int((~test).sum()),
        n_test=int(test.sum()),
        shap_importance=getattr(fitted, "shap_importance_", None),
    )


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
    return out
