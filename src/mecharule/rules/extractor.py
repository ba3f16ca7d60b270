"""``RuleShapExtractor``: SHAP-weighted XGBoost leaves → signed literals → greedy OR by MCC.

Steps of ``fit`` (all on the rows it is given — the caller passes TRAIN rows only):

1. **SHAP weights.** A quick XGBoost model (``shap_n_estimators`` trees of depth
   ``shap_max_depth``) is fitted; XGBoost's own TreeSHAP (``predict(pred_contribs=True)``) gives
   per-row contributions; a feature's importance is ``mean|c| + std|c|`` (the reference's "upper
   importance bound"). Normalised, these become XGBoost ``feature_weights``.
2. **Rule trees.** The main model samples ``colsample_bylevel`` of the features at every tree
   level with probability ∝ weight (default: one feature per level), so the trees split on the
   features that matter. ``tree_method="hist"`` (default, fast; thresholds are histogram cut
   points) or ``"exact"`` (the reference's; thresholds are mid-points between observed values).
3. **Literals.** Every root-to-leaf path becomes a conjunction with XGBoost's exact split and
   missing-value semantics (``mecharule.rules.trees``), signed by its target rate
   (``mecharule.rules.selection``).
4. **Selection.** ``selection="greedy"`` (default, the reference's): greedy OR-combination
   maximising train MCC. ``selection="l1"``: first keep only literals with a positive coefficient
   in an L1-penalised logistic regression on the literal matrix (RuleFit-style screen, ``l1_C``),
   then the same greedy OR.
5. **Simplification** (``simplify=True``): drop conditions, or whole disjuncts, while the train MCC
   of the set stays within ``min_gain`` of the selected set's.

Defaults are chosen to run in seconds on 2 CPUs (100 trees of depth 4, about 0.5 s on 3,000 rows
× 25 features). ``n_jobs=1`` by default: XGBoost's OpenMP threads spin-wait, and on a busy 2-CPU
machine two threads measured 15× slower than one; raise it on a dedicated many-core machine. Reference parity:
``n_estimators=500, max_depth=10, tree_method="exact", tree_model="regressor",
colsample_bytree=0.5, min_child_weight=2, reg_alpha=0.1, simplify=False, min_gain=0``.
The reference computed SHAP with a 1-NN permutation explainer; we use TreeSHAP on a quick model.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from mecharule.errors import DataError
from mecharule.registry import Registry
from mecharule.rules.language import Rule, RuleSet
from mecharule.rules.metrics import mcc_from_counts
from mecharule.rules.selection import build_literals, greedy_or, l1_screen, path_masks
from mecharule.rules.text import rule_text
from mecharule.rules.trees import booster_paths
from mecharule.rules.validation import (
    ParamCheck,
    binary_target,
    check_params,
    feature_matrix,
    informative_columns,
    is_int,
    is_real,
)

logger = logging.getLogger(__name__)

EXTRACTORS: Registry[Any] = Registry("extractor")

_CHECKS: dict[str, ParamCheck] = {
    "n_estimators": (lambda v: is_int(v, 1), "an integer >= 1"),
    "max_depth": (lambda v: is_int(v, 1) and v <= 16, "an integer in [1, 16]"),
    "learning_rate": (lambda v: is_real(v, 0.0, 1.0, low_open=True), "a number in (0, 1]"),
    "tree_method": (lambda v: v in ("hist", "exact"), "'hist' or 'exact'"),
    "tree_model": (lambda v: v in ("classifier", "regressor"), "'classifier' or 'regressor'"),
    "colsample_bytree": (lambda v: is_real(v, 0.0, 1.0, low_open=True), "a number in (0, 1]"),
    "colsample_bylevel": (
        lambda v: v is None or is_real(v, 0.0, 1.0, low_open=True),
        "None (one feature per level) or a number in (0, 1]",
    ),
    "min_child_weight": (lambda v: is_real(v, 0.0, np.inf), "a number >= 0"),
    "reg_alpha": (lambda v: is_real(v, 0.0, np.inf), "a number >= 0"),
    "shap_weights": (lambda v: isinstance(v, bool), "True or False"),
    "shap_n_estimators": (lambda v: is_int(v, 1), "an integer >= 1"),
    "shap_max_depth": (lambda v: is_int(v, 1) and v <= 16, "an integer in [1, 16]"),
    "selection": (lambda v: v in ("greedy", "l1"), "'greedy' or 'l1'"),
    "l1_C": (lambda v: is_real(v, 0.0, np.inf, low_open=True), "a number > 0"),
    "min_gain": (lambda v: is_real(v, 0.0, 1.0), "a number in [0, 1]"),
    "max_rules": (lambda v: v is None or is_int(v, 1), "None or an integer >= 1"),
    "simplify": (lambda v: isinstance(v, bool), "True or False"),
    "min_rows": (lambda v: is_int(v, 2), "an integer >= 2"),
    "seed": (lambda v: is_int(v, 0), "an integer >= 0"),
    "n_jobs": (lambda v: is_int(v, 1), "an integer >= 1"),
}


@EXTRACTORS.register("ruleshap")
class RuleShapExtractor(BaseEstimator):  # type: ignore[misc]
    """Rule extractor with the scikit-learn estimator contract (see module docstring).

    Learned attributes: ``rules_`` (the selected ``RuleSet``), ``literals_`` (candidate literal
    table), ``feature_names_in_``, ``n_features_in_``, ``shap_importance_`` (DataFrame indexed by
    feature), ``selection_trace_`` (literal and train MCC after each greedy step), ``reason_``
    (why ``rules_`` is empty, else ""), ``booster_`` (the rule-generating XGBoost model).
    """

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        max_depth: int = 4,
        learning_rate: float = 0.3,
        tree_method: str = "hist",
        tree_model: str = "classifier",
        colsample_bytree: float = 1.0,
        colsample_bylevel: float | None = None,
        min_child_weight: float = 2.0,
        reg_alpha: float = 0.1,
        shap_weights: bool = True,
        shap_n_estimators: int = 50,
        shap_max_depth: int = 4,
        selection: str = "greedy",
        l1_C: float = 0.1,
        min_gain: float = 0.01,
        max_rules: int | None = None,
        simplify: bool = True,
        min_rows: int = 20,
        seed: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.tree_method = tree_method
        self.tree_model = tree_model
        self.colsample_bytree = colsample_bytree
        self.colsample_bylevel = colsample_bylevel
        self.min_child_weight = min_child_weight
        self.reg_alpha = reg_alpha
        self.shap_weights = shap_weights
        self.shap_n_estimators = shap_n_estimators
        self.shap_max_depth = shap_max_depth
        self.selection = selection
        self.l1_C = l1_C
        self.min_gain = min_gain
        self.max_rules = max_rules
        self.simplify = simplify
        self.min_rows = min_rows
        self.seed = seed
        self.n_jobs = n_jobs

    # -- fit --------------------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame | np.ndarray, y: Any) -> RuleShapExtractor:
        """Learn ``rules_`` predicting ``y`` (bool / 0-1) from the feature table ``X``."""
        check_params(type(self).__name__, self.get_params(), _CHECKS)
        matrix, names = feature_matrix(X)
        target = binary_target(y, matrix.shape[0])
        if matrix.shape[0] < self.min_rows:
            raise DataError(
                f"{matrix.shape[0]} rows given; rule extraction needs at least min_rows={self.min_rows}"
            )
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(names)
        self._reset()
        usable = informative_columns(matrix)
        if target.all() or not target.any():
            return self._empty(f"no rule: the target is constant ({bool(target[0])}) on the fitting rows")
        if not usable.any():
            return self._empty("no rule: every feature is constant or missing on the fitting rows")
        weights = self._shap_weights(matrix, target, usable)
        self.booster_ = self._train(matrix, target, weights, self.n_estimators, self.max_depth, level=True)
        self._select(matrix, target, names)
        return self

    def _reset(self) -> None:
        self.rules_ = RuleSet()
        self.reason_ = ""
        self.selection_trace_: list[dict[str, Any]] = []
        self.literals_ = pd.DataFrame(columns=["rule", "negated", "n_conditions", "coverage", "mcc"])
        self.shap_importance_ = pd.DataFrame(
            0.0,
            index=pd.Index(self.feature_names_in_, name="feature"),
            columns=["mean_abs", "std_abs", "upper_bound", "weight"],
        )
        self.booster_ = None

    def _empty(self, reason: str) -> RuleShapExtractor:
        logger.info("%s", reason)
        self.reason_ = reason
        return self

    def _xgb_params(self, target: np.ndarray, depth: int, n_features: int, level: bool) -> dict[str, Any]:
        classify = self.tree_model == "classifier"
        bylevel = self.colsample_bylevel
        if bylevel is None:
            bylevel = 1.0 / n_features if self.shap_weights else 1.0
        return {
            "objective": "binary:logistic" if classify else "reg:squarederror",
            "base_score": float(np.clip(target.mean(), 1e-6, 1 - 1e-6)),
            "tree_method": self.tree_method,
            "max_depth": depth,
            "eta": self.learning_rate,
            "min_child_weight": self.min_child_weight,
            "alpha": self.reg_alpha,
            "colsample_bytree": self.colsample_bytree if level else 1.0,
            "colsample_bylevel": bylevel if level else 1.0,
            "seed": self.seed,
            "nthread": self.n_jobs,
            "verbosity": 0,
        }

    def _train(
        self,
        matrix: np.ndarray,
        target: np.ndarray,
        weights: np.ndarray | None,
        rounds: int,
        depth: int,
        *,
        level: bool,
    ) -> Any:
        import xgboost as xgb

        dtrain = xgb.DMatrix(matrix, label=target.astype(np.float32), missing=np.nan, nthread=self.n_jobs)
        if weights is not None:
            dtrain.set_info(feature_weights=weights)
        params = self._xgb_params(target, depth, matrix.shape[1], level)
        return xgb.train(params, dtrain, num_boost_round=rounds)

    def _shap_weights(self, matrix: np.ndarray, target: np.ndarray, usable: np.ndarray) -> np.ndarray | None:
        """TreeSHAP importance (mean|c| + std|c|) from a quick model → normalised feature weights."""
        import xgboost as xgb

        quick = self._train(matrix, target, None, self.shap_n_estimators, self.shap_max_depth, level=False)
        contribs = quick.predict(xgb.DMatrix(matrix, missing=np.nan, nthread=self.n_jobs), pred_contribs=True)
        magnitude = np.abs(contribs[:, :-1])  # last column is the bias
        upper = magnitude.mean(axis=0) + magnitude.std(axis=0)
        upper = np.where(usable, upper, 0.0)
        weights = np.where(usable, np.maximum(upper, 1e-8), 0.0)
        weights = weights / weights.sum()
        imp = self.shap_importance_
        imp["mean_abs"], imp["std_abs"] = magnitude.mean(axis=0), magnitude.std(axis=0)
        imp["upper_bound"], imp["weight"] = upper, weights
        return weights if self.shap_weights else None

    def _select(self, matrix: np.ndarray, target: np.ndarray, names: list[str]) -> None:
        columns = {name: matrix[:, j] for j, name in enumerate(names)}
        paths = booster_paths(self.booster_, names)
        pool = build_literals(paths, path_masks(paths, columns, len(target)), target)
        self.literals_ = pool.table(target)
        candidates = np.arange(len(pool.rules))
        if self.selection == "l1":
            candidates = l1_screen(pool.masks, target, C=self.l1_C, seed=self.seed)
        lengths = [pool.rules[i].n_conditions for i in candidates]
        steps = greedy_or(
            pool.masks[candidates], target, lengths, min_gain=self.min_gain, max_rules=self.max_rules
        )
        chosen = [pool.rules[candidates[i]] for i, _ in steps]
        self.selection_trace_ = [
            {"rule": rule_text(r), "train_mcc": mcc} for r, (_, mcc) in zip(chosen, steps, strict=True)
        ]
        if self.simplify and chosen:
            chosen = simplify_rules(chosen, columns, target, tolerance=self.min_gain)
        self.rules_ = RuleSet(tuple(chosen))
        if not chosen:
            self.reason_ = "no rule: no literal improves MCC above 0 on the fitting rows"

    # -- predict ----------------------------------------------------------------------------------
    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Bool per row: does the selected rule set fire?"""
        if not hasattr(self, "rules_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")
        if isinstance(X, pd.DataFrame):
            return self.rules_.evaluate(X)
        matrix = np.asarray(X, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features_in_:
            raise DataError(f"X has shape {matrix.shape}; expected (n_rows, {self.n_features_in_})")
        return self.rules_.evaluate(matrix, list(self.feature_names_in_))


def _set_mcc(masks: list[np.ndarray], target: np.ndarray) -> float:
    fire = np.logical_or.reduce(masks) if masks else np.zeros(len(target), dtype=bool)
    tp = int(np.count_nonzero(fire & target))
    fp = int(np.count_nonzero(fire & ~target))
    return float(mcc_from_counts(tp, fp, int(target.sum()) - tp, int((~target).sum()) - fp))


def _variants(rules: list[Rule]) -> list[list[Rule]]:
    """Every rule list with one condition, or one whole rule, removed."""
    out: list[list[Rule]] = []
    for i, rule in enumerate(rules):
        out.append(rules[:i] + rules[i + 1 :])
        for cond in rule.conditions:
            smaller = Rule(tuple(c for c in rule.conditions if c != cond), rule.negated)
            if smaller.conditions:
                out.append([*rules[:i], smaller, *rules[i + 1 :]])
    return out


def simplify_rules(
    rules: list[Rule], columns: dict[str, np.ndarray], target: np.ndarray, *, tolerance: float
) -> list[Rule]:
    """Repeatedly apply the best single removal (a condition or a whole rule) while the set's MCC
    stays >= (MCC of the given set) − tolerance. Deterministic: ties keep the earlier variant."""
    n_rows = len(target)
    cache: dict[Rule, np.ndarray] = {}

    def mask(rule: Rule) -> np.ndarray:
        if rule not in cache:
            cache[rule] = rule.evaluate_source(columns.__getitem__, n_rows)
        return cache[rule]

    floor = _set_mcc([mask(r) for r in rules], target) - tolerance
    while len(rules) > 0:
        scored = [(_set_mcc([mask(r) for r in v], target), k, v) for k, v in enumerate(_variants(rules))]
        scored = [s for s in scored if s[2]]
        if not scored:
            break
        best = max(scored, key=lambda s: (round(s[0], 12), -s[1]))
        if best[0] < floor:
            break
        rules = best[2]
    return rules
