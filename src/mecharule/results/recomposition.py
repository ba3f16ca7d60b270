"""The recompose stage's result: ``recomposition.json`` (per rule: its agonists alone, together,
in pairs and in greedy sets; the agonists shared across rules)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mecharule.results.artifacts import load_json, save_json
from mecharule.results.display import html_table, number


@dataclass(frozen=True)
class Recomposition:
    """``problems``: per problem key (``R1/positive``), its entry as written (``composition.kind``:
    single, additive, redundant, cancelling or synergistic; ``pairs``; ``greedy``; ``smallest_set``);
    ``shared_agonists``: units that are agonists of two or more problems."""

    problems: Mapping[str, Mapping[str, Any]]
    shared_agonists: tuple[Mapping[str, Any], ...]
    evaluations: int
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    FILE: ClassVar[str] = "recomposition.json"

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> Recomposition:
        return cls(
            problems=dict(raw.get("problems") or {}),
            shared_agonists=tuple(raw.get("shared_agonists") or ()),
            evaluations=int(raw.get("evaluations") or 0),
            raw=raw,
        )

    @classmethod
    def load(cls, run_dir: str | Path) -> Recomposition:
        return cls.from_raw(load_json(Path(run_dir), cls.FILE))

    def save(self, run_dir: str | Path) -> None:
        save_json(Path(run_dir), self.FILE, dict(self.raw))

    def kind(self, key: str) -> str | None:
        """The composition of a problem's agonists (None when it was skipped)."""
        return (self.problems.get(key, {}).get("composition") or {}).get("kind")

    def _rows(self) -> list[tuple[object, ...]]:
        rows: list[tuple[object, ...]] = []
        for key, entry in self.problems.items():
            if entry.get("skipped"):
                continue
            smallest = entry.get("smallest_set") or {}
            top = max(smallest, key=float, default=None)
            rows.append(
                (
                    key,
                    len(entry.get("agonists") or []),
                    number((entry.get("joint") or {}).get("covered")),
                    number(entry.get("sum_alone")),
                    self.kind(key),
                    None if top is None else f"{smallest[top]} for {float(top):.0%}",
                )
            )
        return rows

    def __str__(self) -> str:
        from mecharule.recomposition.text import problem_line, shared_line

        lines = [f"{self.evaluations:,} group evaluations"]
        lines += [f"  {problem_line(key, entry)}" for key, entry in self.problems.items()]
        return "\n".join([*lines, shared_line(self.raw)])

    def _repr_html_(self) -> str:
        header = ("problem", "agonists", "joint", "sum alone", "composition", "greedy set")
        return html_table(header, self._rows(), caption=str(self).splitlines()[0])


__all__ = ["Recomposition"]
