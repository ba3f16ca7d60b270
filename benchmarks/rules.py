"""Benchmark: mecharule's rule extraction vs imodels rule learners, on one split, one run.

Synthetic (default): 10,000 rows × 80 features, label = (op == '*' AND a >= 50) OR b == 0 with 5 %
label noise (op one-hot, a and b integers 0..99, 75 distractors); 25 % held-out test rows.
``--run-dir DIR``: the same comparison on a run directory's feature table (target = failures;
imodels learners get NaN filled with -1, since they do not accept missing values).

Columns: extraction (fit) seconds, held-out MCC (against the noisy labels; on synthetic data also
against the clean planted labels), number of rules and of conditions in the learned model, and
whether the learned rules use exactly the planted features.

    python benchmarks/rules.py [--rows 10000] [--features 80] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import inspect
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mecharule.rules import RuleShapExtractor, rule_metrics

PLANTED = {"op_is_mul", "a", "b"}


def synthetic(
    n_rows: int, n_features: int, seed: int
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    op = rng.choice(np.array(["+", "-", "*"]), size=n_rows)
    a, b = rng.integers(0, 100, n_rows), rng.integers(0, 100, n_rows)
    cols: dict[str, np.ndarray] = {
        f"op_is_{k}": (op == s).astype(float) for k, s in [("add", "+"), ("sub", "-")]
    }
    cols |= {"op_is_mul": (op == "*").astype(float), "a": a.astype(float), "b": b.astype(float)}
    for j in range(n_features - len(cols)):
        cols[f"d{j}"] = rng.normal(size=n_rows) if j % 2 else rng.integers(0, 10, n_rows).astype(float)
    clean = ((op == "*") & (a >= 50)) | (b == 0)
    noisy = np.where(rng.random(n_rows) < 0.05, ~clean, clean)
    return pd.DataFrame(cols), noisy, clean, rng.random(n_rows) < 0.25


def from_run_dir(run_dir: Path) -> tuple[pd.DataFrame, np.ndarray, None, np.ndarray]:
    behaviour = pd.read_parquet(run_dir / "behaviour.parquet")
    features = pd.read_parquet(run_dir / "features.parquet")
    return features, ~behaviour["label"].to_numpy(bool), None, (behaviour["split"] == "test").to_numpy()


def _count(rule: str) -> int:
    return rule.count(" and ") + 1


def fit_ours(
    X: pd.DataFrame, y: np.ndarray, **params: Any
) -> tuple[Callable[[pd.DataFrame], np.ndarray], dict]:
    model = RuleShapExtractor(seed=0, **params).fit(X, y)
    rs = model.rules_
    return model.predict, {"rules": len(rs), "conditions": rs.n_conditions, "features": set(rs.features)}


def _imodels_fit(cls: Any, X: pd.DataFrame, y: np.ndarray) -> Any:
    kwargs = {"random_state": 0} if "random_state" in inspect.signature(cls).parameters else {}
    model = cls(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X.fillna(-1.0).to_numpy(), y.astype(int), feature_names=list(X.columns))
    return model


def _imodels_predict(model: Any, any_rule: bool = False) -> Callable[[pd.DataFrame], np.ndarray]:
    """imodels' predict; with ``any_rule`` the OR of the learned rules (vote score > 0)."""

    def predict(X: pd.DataFrame) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = X.fillna(-1.0).to_numpy()
            if any_rule:
                return np.asarray(model.predict_proba(data))[:, 1] > 0
            return np.asarray(model.predict(data)).astype(bool)

    return predict


def fit_rulefit(X: pd.DataFrame, y: np.ndarray) -> tuple[Callable[[pd.DataFrame], np.ndarray], dict]:
    import imodels

    model = _imodels_fit(imodels.RuleFitClassifier, X, y)
    table = model._get_rules()  # imodels' own rule table (rule text, type, coef)
    used = table[table["coef"] != 0]
    conds = sum(_count(r) if t == "rule" else 1 for r, t in zip(used["rule"], used["type"], strict=True))
    feats = {f for r in used["rule"] for f in X.columns if f in r.replace(" and ", " ").split()}
    return _imodels_predict(model), {"rules": len(used), "conditions": conds, "features": feats}


def fit_skope(X: pd.DataFrame, y: np.ndarray) -> tuple[Callable[[pd.DataFrame], np.ndarray], dict]:
    import imodels

    model = _imodels_fit(imodels.SkopeRulesClassifier, X, y)
    rules = [str(r) for r in model.rules_]
    feats = {f for r in rules for f in X.columns if f in r.replace(" and ", " ").split()}
    return _imodels_predict(model), {
        "rules": len(rules),
        "conditions": sum(map(_count, rules)),
        "features": feats,
    }


def fit_greedy_list(X: pd.DataFrame, y: np.ndarray) -> tuple[Callable[[pd.DataFrame], np.ndarray], dict]:
    import imodels

    model = _imodels_fit(imodels.GreedyRuleListClassifier, X, y)
    feats = {str(r["col"]) for r in model.rules_ if "col" in r}
    return _imodels_predict(model), {
        "rules": len(model.rules_),
        "conditions": len(model.rules_),
        "features": feats,
    }


LEARNERS: dict[
    str, Callable[[pd.DataFrame, np.ndarray], tuple[Callable[[pd.DataFrame], np.ndarray], dict]]
] = {
    "mecharule ruleshap (greedy)": fit_ours,
    "mecharule ruleshap (l1)": lambda X, y: fit_ours(X, y, selection="l1"),
    "imodels RuleFitClassifier": fit_rulefit,
    "imodels SkopeRulesClassifier (OR of rules)": fit_skope,
    "imodels GreedyRuleListClassifier": fit_greedy_list,
}


def run(X: pd.DataFrame, y: np.ndarray, clean: np.ndarray | None, is_test: np.ndarray) -> pd.DataFrame:
    rows = []
    train, test = ~is_test, is_test
    for name, learner in LEARNERS.items():
        start = time.perf_counter()
        predict, info = learner(X[train].reset_index(drop=True), y[train])
        seconds = time.perf_counter() - start
        fire = predict(X[test].reset_index(drop=True))
        row = {
            "learner": name,
            "fit_s": round(seconds, 2),
            "test_mcc": round(rule_metrics(fire, y[test]).mcc, 3),
        }
        if clean is not None:
            row["test_mcc_clean"] = round(rule_metrics(fire, clean[test]).mcc, 3)
            row["exact_features"] = info["features"] == PLANTED
        row |= {"rules": info["rules"], "conditions": info["conditions"]}
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.run_dir is not None:
        X, y, clean, is_test = from_run_dir(args.run_dir)
        print(f"run dir {args.run_dir}: {len(X)} rows × {X.shape[1]} features, target = failures")
    else:
        X, y, clean, is_test = synthetic(args.rows, args.features, args.seed)
        print(
            f"synthetic: {len(X)} rows × {X.shape[1]} features, planted (op=='*' AND a>=50) OR b==0, 5% noise"
        )
    print(f"train {int((~is_test).sum())} rows, test {int(is_test.sum())} rows; MCC on held-out test rows")
    print(run(X, y, clean, is_test).to_string(index=False))


if __name__ == "__main__":
    main()
