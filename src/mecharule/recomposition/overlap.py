"""Agonists shared across problems: which units serve several rules, and how much problems overlap."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any


def shared_agonists(problems: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Units that are agonists of at least two problems, most shared first, then by unit."""
    owners: dict[str, set[str]] = {}
    for key, units in problems.items():
        for unit in units:
            owners.setdefault(str(unit), set()).add(key)
    shared: list[dict[str, Any]] = [
        {"unit": unit, "problems": sorted(keys), "n_problems": len(keys)}
        for unit, keys in owners.items()
        if len(keys) >= 2
    ]
    return sorted(shared, key=lambda row: (-row["n_problems"], row["unit"]))


def overlap_matrix(problems: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Shared agonists and Jaccard index for every pair of problems that share at least one."""
    sets = {key: {str(u) for u in units} for key, units in problems.items()}
    pairs: list[dict[str, Any]] = []
    for a, b in itertools.combinations(sorted(sets), 2):
        shared = len(sets[a] & sets[b])
        if shared:
            pairs.append(
                {"a": a, "b": b, "shared": shared, "jaccard": round(shared / len(sets[a] | sets[b]), 4)}
            )
    pairs.sort(key=lambda row: (-row["shared"], row["a"], row["b"]))
    return {"problems": len(sets), "pairs": pairs}


__all__ = ["overlap_matrix", "shared_agonists"]
