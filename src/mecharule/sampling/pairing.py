"""Clean/corrupted pairs for EAP-IG: each covered prompt with its nearest uncovered prompt of the same
token length (euclidean distance between last-token hidden states).

If no uncovered prompt has the same token length, the nearest one overall is used and the pair is
flagged ``length_matched = False`` (EAP-IG cannot use it; the caller drops it and reports the count).
A corrupted prompt may serve several clean prompts; :meth:`Pairing.stats` reports how often.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mecharule.errors import DataError


@dataclass(frozen=True)
class Pairing:
    """``pairs[i] = (clean_row, corrupted_row)``, with per-pair length match and distance."""

    pairs: list[tuple[int, int]]
    length_matched: np.ndarray
    distances: np.ndarray

    def matched_pairs(self) -> list[tuple[int, int]]:
        return [p for p, ok in zip(self.pairs, self.length_matched, strict=True) if ok]

    def stats(self) -> dict[str, Any]:
        corrupted = [c for _, c in self.pairs]
        d = self.distances
        return {
            "n_pairs": len(self.pairs),
            "n_length_matched": int(self.length_matched.sum()),
            "n_unique_corrupted": len(set(corrupted)),
            "distance": {
                "min": float(d.min()) if len(d) else None,
                "mean": float(d.mean()) if len(d) else None,
                "p50": float(np.median(d)) if len(d) else None,
                "max": float(d.max()) if len(d) else None,
            },
        }


def length_matched_pairs(
    covered_idx: np.ndarray,
    uncovered_idx: np.ndarray,
    token_lengths: np.ndarray,
    states: np.ndarray,
) -> Pairing:
    """Pair every covered row with its nearest same-length uncovered row (see the module docstring).

    ``token_lengths`` and ``states`` (``# [n_rows, d]``) are indexed by row; ties → lowest row.
    """
    covered = np.asarray(covered_idx, dtype=np.int64)
    uncovered = np.asarray(uncovered_idx, dtype=np.int64)
    if len(uncovered) == 0:
        raise DataError("no uncovered prompts to pair with; the corrupted side is empty")
    if np.intersect1d(covered, uncovered).size:
        raise DataError("a row is both covered and uncovered; the two sides must be disjoint")
    lengths = np.asarray(token_lengths)
    states = np.asarray(states, dtype=np.float64)
    uncovered = np.sort(uncovered)
    pairs, matched, dists = [], [], []
    for row in covered:
        d = np.linalg.norm(states[uncovered] - states[row], axis=1)  # [n_uncovered]
        same = lengths[uncovered] == lengths[row]
        pool = np.flatnonzero(same) if same.any() else np.arange(len(uncovered))
        best = pool[int(np.argmin(d[pool]))]
        pairs.append((int(row), int(uncovered[best])))
        matched.append(bool(same.any()))
        dists.append(float(d[best]))
    return Pairing(pairs, np.asarray(matched, dtype=bool), np.asarray(dists))
