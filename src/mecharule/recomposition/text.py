"""One line per problem of ``recomposition.json``, for the terminal and the run summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any


def problem_line(key: str, entry: Mapping[str, Any]) -> str:
    """``R2/positive: 52 agonists; joint 0.94 vs Σ alone 3.12 (redundant, sign test p=1e-05);
    80 % of the joint effect with 3 units; pairs: 20 redundant, 1 synergistic, 7 additive of 28``."""
    if entry.get("skipped"):
        return f"{key}: skipped ({entry['skipped']})"
    agonists = entry.get("agonists") or []
    composition = entry.get("composition") or {}
    kind = composition.get("kind", "?")
    test = "" if composition.get("sign_p") is None else f", sign test p={composition['sign_p']:.2g}"
    joint = float((entry.get("joint") or {}).get("covered") or 0.0)
    summed = float(entry.get("sum_alone") or 0.0)
    parts = [f"{key}: {len(agonists)} agonists; joint {joint:.3g} vs Σ alone {summed:.3g} ({kind}{test})"]
    if not joint:
        return "; ".join([*parts, "ablated together they flip nothing on covered prompts"])
    smallest = entry.get("smallest_set") or {}
    reached = [(float(share), size) for share, size in smallest.items() if size is not None]
    if reached:
        share, size = max(reached)
        parts.append(f"{share:.0%} of the joint effect with {size} unit{'s' if size != 1 else ''} (greedy)")
    elif smallest:
        parts.append(f"no greedy set reaches {min(map(float, smallest)):.0%} of the joint effect")
    pairs = entry.get("pairs") or []
    if pairs:
        kinds = Counter(p.get("kind") for p in pairs)
        shown = ", ".join(
            f"{kinds[k]} {k}" for k in ("redundant", "cancelling", "synergistic", "additive") if kinds[k]
        )
        parts.append(f"pairs: {shown} of {len(pairs)}")
    return "; ".join(parts)


def kind_counts(problems: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """``{kind: problems}`` over the recomposed problems of ``recomposition.json`` (kinds sorted)."""
    kinds = [p["composition"]["kind"] for p in problems.values() if "composition" in p]
    return {kind: kinds.count(kind) for kind in sorted(set(kinds))}


def kinds_text(counts: Mapping[str, int]) -> str:
    """``{"cancelling": 1, "redundant": 2}`` → ``1 cancelling, 2 redundant`` (empty: no kind)."""
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def shared_line(data: Mapping[str, Any]) -> str:
    shared = data.get("shared_agonists") or []
    if not shared:
        return "no agonist is shared by two rules"
    top = ", ".join(f"{s['unit']} ({s['n_problems']})" for s in shared[:6])
    return f"{len(shared)} agonists shared by two or more rules: {top}" + (" ..." if len(shared) > 6 else "")


__all__ = ["kind_counts", "kinds_text", "problem_line", "shared_line"]
