"""Candidate literals and their OR-combination.

A *literal* is a leaf-path rule signed by its target rate on the training rows: if the target is
at least as frequent where the path fires as where it does not, the literal is the rule itself,
otherwise it is ``NOT (rule)`` (``Rule.negated``). Literals that fire on no row or on every row are
dropped; literals with the same rule, or the same firing mask, are deduplicated (the shortest is
kept).

The greedy OR-combination adds, one at a time, the literal that maximises the MCC of the union on
the training rows, and stops when the best addition improves MCC by no more than ``min_gain``.
Firing masks are bit-packed (``uint64`` words) and counted with ``np.bitwise_count``, so one step
over thousands of literals and 10k rows takes milliseconds.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mecharule.rules.language import Condition, Rule
from mecharule.rules.metrics import mcc_from_counts, rule_metrics
from mecharule.rules.text import rule_text
from mecharule.rules.trees import LeafPath


@dataclass(frozen=True)
class LiteralPool:
    """Signed, deduplicated literals with their firing masks on the training rows."""

    rules: tuple[Rule, ...]
    masks: np.ndarray  # [n_literals, n_rows] bool
    paths: tuple[LeafPath, ...]  # the leaf path each literal came from

    def table(self, y: np.ndarray) -> pd.DataFrame:
        """One row per literal: canonical text, provenance and train metrics."""
        rows = []
        for rule, mask, path in zip(self.rules, self.masks, self.paths, strict=True):
            m = rule_metrics(mask, y)
            rows.append(
                {
                    "rule": rule_text(rule),
                    "negated": rule.negated,
                    "n_conditions": rule.n_conditions,
                    "tree": path.tree,
                    "leaf": path.leaf,
                    "gain_sum": path.gain_sum,
                    "coverage": m.coverage,
                    "precision": m.precision,
                    "recall": m.recall,
                    "mcc": m.mcc,
                }
            )
        columns = ["rule", "negated", "n_conditions", "tree", "leaf", "gain_sum", "coverage", "precision"]
        return pd.DataFrame(rows, columns=[*columns, "recall", "mcc"])


def path_masks(paths: Sequence[LeafPath], columns: dict[str, np.ndarray], n_rows: int) -> np.ndarray:
    """[n_paths, n_rows] firing masks, evaluating each distinct condition once."""
    cache: dict[Condition, np.ndarray] = {}
    masks = np.ones((len(paths), n_rows), dtype=bool)
    for i, path in enumerate(paths):
        for cond in path.rule.conditions:
            if cond not in cache:
                cache[cond] = cond.evaluate_values(columns[cond.feature])
            masks[i] &= cache[cond]
    return masks


def build_literals(paths: Sequence[LeafPath], masks: np.ndarray, y: np.ndarray) -> LiteralPool:
    """Sign, filter and deduplicate leaf paths into literals (see module docstring)."""
    y = y.astype(bool)
    n_fire = masks.sum(axis=1)
    n_rows = masks.shape[1]
    pos_in = (masks & y).sum(axis=1)
    rate_in = np.divide(pos_in, n_fire, out=np.zeros(len(paths)), where=n_fire > 0)
    rate_out = np.divide(y.sum() - pos_in, n_rows - n_fire, out=np.zeros(len(paths)), where=n_fire < n_rows)
    order = sorted(range(len(paths)), key=lambda i: (paths[i].rule.n_conditions, i))
    seen_rules: set[Rule] = set()
    seen_masks: set[bytes] = set()
    keep_rules: list[Rule] = []
    keep_masks: list[np.ndarray] = []
    keep_paths: list[LeafPath] = []
    for i in order:
        if n_fire[i] == 0 or n_fire[i] == n_rows:
            continue
        negated = bool(rate_in[i] < rate_out[i])
        rule = paths[i].rule.negate() if negated else paths[i].rule
        mask = ~masks[i] if negated else masks[i]
        key = np.packbits(mask).tobytes()
        if rule in seen_rules or key in seen_masks:
            continue
        seen_rules.add(rule)
        seen_masks.add(key)
        keep_rules.append(rule)
        keep_masks.append(mask)
        keep_paths.append(paths[i])
    stacked = np.array(keep_masks, dtype=bool).reshape(len(keep_masks), n_rows)
    return LiteralPool(tuple(keep_rules), stacked, tuple(keep_paths))


def pack_rows(masks: np.ndarray) -> np.ndarray:
    """Bit-pack boolean rows [k, n] into uint64 words [k, ceil(n / 64)] (padding bits are 0)."""
    masks = np.atleast_2d(masks)
    packed = np.packbits(masks, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def _popcount(words: np.ndarray) -> np.ndarray:
    return np.bitwise_count(words).sum(axis=-1, dtype=np.int64)


def greedy_or(
    masks: np.ndarray,
    y: np.ndarray,
    n_conditions: Sequence[int],
    *,
    min_gain: float,
    max_rules: int | None,
) -> list[tuple[int, float]]:
    """Greedy OR-combination maximising MCC; returns [(literal index, MCC after adding it)].

    Ties (MCC equal to 12 decimals) go to the literal with fewer conditions, then the lower index,
    so the result is deterministic.
    """
    y = y.astype(bool)
    if masks.shape[0] == 0:
        return []
    bits = pack_rows(masks)
    pos, neg = pack_rows(y)[0], pack_rows(~y)[0]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    covered = np.zeros_like(pos)
    tp = fp = 0
    current = 0.0
    used = np.zeros(masks.shape[0], dtype=bool)
    lengths = np.asarray(n_conditions)
    chosen: list[tuple[int, float]] = []
    while max_rules is None or len(chosen) < max_rules:
        new_tp = tp + _popcount(bits & (pos & ~covered))
        new_fp = fp + _popcount(bits & (neg & ~covered))
        mcc = np.round(mcc_from_counts(new_tp, new_fp, n_pos - new_tp, n_neg - new_fp), 12)
        mcc[used] = -np.inf
        best = int(np.lexsort((np.arange(len(mcc)), lengths, -mcc))[0])
        if not mcc[best] > current + min_gain:
            break
        used[best] = True
        covered |= bits[best]
        tp, fp, current = int(new_tp[best]), int(new_fp[best]), float(mcc[best])
        chosen.append((best, current))
    return chosen


def l1_screen(masks: np.ndarray, y: np.ndarray, *, C: float, seed: int) -> np.ndarray:
    """RuleFit-style screen: indices of literals with a nonzero L1-logistic coefficient."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    if masks.shape[0] == 0:
        return np.zeros(0, dtype=int)
    design = sparse.csr_matrix(masks.T.astype(np.float32))
    # scikit-learn >= 1.8 spells the L1 penalty l1_ratio=1.0 and deprecates `penalty`.
    deprecated = inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated"
    penalty: dict[str, Any] = {"l1_ratio": 1.0} if deprecated else {"penalty": "l1"}
    model = LogisticRegression(**penalty, solver="liblinear", C=C, random_state=seed, max_iter=500)
    model.fit(design, y.astype(int))
    return np.flatnonzero(model.coef_[0] > 0)
