"""The validate stage's result: ``validation.json`` (CHA beside brute force: recall and cost)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mecharule.results.artifacts import load_json, save_json
from mecharule.results.display import html_table, number

Recall = Mapping[str, Mapping[str, float | None]]  # regime → effect bin ("0.5", "0.3", "0.2") → recall


@dataclass(frozen=True)
class Validation:
    """How many of the units that brute force finds CHA finds too, and at what cost.

    ``recall_all_units``: over every unit of the searched layers (sampled outside the shortlist when
    large), by regime and observed-effect bin; ``shortlist_recall``: the candidates' share of those
    units; ``recall_in_shortlist``: over the candidates only; ``cost_ratio``: CHA group evaluations
    per brute-force singleton evaluation (below 1 = CHA is cheaper).
    """

    recall_all_units: Recall
    shortlist_recall: Recall
    recall_in_shortlist: float | None
    cost_ratio: float | None
    cost_ratio_max: float | None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    FILE: ClassVar[str] = "validation.json"

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> Validation:
        def optional(value: Any) -> float | None:
            return None if value is None else float(value)

        return cls(
            recall_all_units=dict(raw.get("recall_all_units") or {}),
            shortlist_recall=dict(raw.get("shortlist_recall") or {}),
            recall_in_shortlist=optional((raw.get("recall_in_shortlist") or {}).get("recall")),
            cost_ratio=optional((raw.get("cost") or {}).get("cost_ratio")),
            cost_ratio_max=optional(raw.get("cost_ratio_max")),
            raw=raw,
        )

    @classmethod
    def load(cls, run_dir: str | Path) -> Validation:
        return cls.from_raw(load_json(Path(run_dir), cls.FILE))

    def save(self, run_dir: str | Path) -> None:
        save_json(Path(run_dir), self.FILE, dict(self.raw))

    def _rows(self) -> list[tuple[object, ...]]:
        return [
            (regime, _bin_label(key, bins), recall, self.shortlist_recall.get(regime, {}).get(key))
            for regime, bins in self.recall_all_units.items()
            for key, recall in bins.items()
        ]

    def __str__(self) -> str:
        lines = [
            f"recall within the shortlist {number(self.recall_in_shortlist)}, "
            f"cost ratio {number(self.cost_ratio)} (CHA group evaluations / brute-force singletons)"
        ]
        lines += [
            f"  {regime}, effect in {effect_bin}: recall over all units {number(recall)}, "
            f"the shortlist holds {number(shortlist)} of them"
            for regime, effect_bin, recall, shortlist in self._rows()
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        header = ("regime", "effect", "recall (all units)", "shortlist recall")
        return html_table(header, self._rows(), caption=str(self).splitlines()[0])


def _bin_label(key: str, bins: Mapping[str, Any]) -> str:
    """A bin keyed by its lower edge reaches up to the next edge (the top one to 1): ``[0.3, 0.5)``."""
    try:
        edges = sorted(float(k) for k in bins)
        low = float(key)
    except ValueError:
        return key
    higher = [e for e in edges if e > low]
    return f"[{key}, {higher[0]:g})" if higher else f"[{key}, 1]"
