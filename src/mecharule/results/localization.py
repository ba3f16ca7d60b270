"""The localize stage's result: ``localization/summary.json`` (every problem = rule x regime, its
agonists and the joint suppression of them) and each problem's ``trace.jsonl`` and ``agonists.csv``."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mecharule.models.sites import Site
from mecharule.results.artifacts import load_bytes, load_json, save_bytes, save_json
from mecharule.results.display import html_table, number

FOLDER = "localization"
PROBLEM_FILES = ("trace.jsonl", "agonists.csv")


@dataclass(frozen=True)
class Agonist:
    """A unit whose ablation alone flips the behaviour on the prompts of one problem: flips, prompts,
    rate and exact (Clopper-Pearson) bounds on the slice the rule covers and on the unrelated slice,
    selectivity (covered rate - unrelated rate) and its attribution score and rank."""

    problem: str
    unit: Site
    covered_flips: int
    covered_n: int
    covered_rate: float
    covered_lower: float
    covered_upper: float
    unrelated_flips: int
    unrelated_n: int
    unrelated_rate: float
    unrelated_lower: float
    unrelated_upper: float
    max_upper: float
    contrast_lower: float
    selectivity: float
    score: float | None
    score_rank: int | None

    @property
    def layer(self) -> int:
        return self.unit.layer

    @property
    def rule_id(self) -> str:
        return self.problem.split("/")[0]

    @property
    def regime(self) -> str:
        return self.problem.split("/")[-1]

    @property
    def effect(self) -> float:
        """The larger flip rate of the two slices."""
        return max(self.covered_rate, self.unrelated_rate)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> Agonist:
        def side(name: str) -> tuple[int, int, float, float, float]:
            return (
                int(raw[f"{name}_flips"]),
                int(raw[f"{name}_n"]),
                float(raw[f"{name}_rate"]),
                float(raw[f"{name}_lower"]),
                float(raw[f"{name}_upper"]),
            )

        score, rank = raw.get("score"), raw.get("score_rank")
        return cls(
            str(raw["problem"]),
            Site.parse(str(raw["unit"])),
            *side("covered"),
            *side("unrelated"),
            float(raw["max_upper"]),
            float(raw["contrast_lower"]),
            float(raw["selectivity"]),
            None if score is None else float(score),
            None if rank is None else int(rank),
        )

    def __str__(self) -> str:
        return (
            f"{self.unit}: covered {self.covered_rate:.2f} ({self.covered_flips}/{self.covered_n}), "
            f"unrelated {self.unrelated_rate:.2f} ({self.unrelated_flips}/{self.unrelated_n}), "
            f"selectivity {self.selectivity:.2f}"
        )

    def _repr_html_(self) -> str:
        return html_table(AGONIST_HEADER, [_agonist_row(self)], caption=self.problem)


AGONIST_HEADER = ("problem", "unit", "covered", "unrelated", "selectivity", "score", "rank")


def _agonist_row(a: Agonist) -> tuple[object, ...]:
    return (
        a.problem,
        str(a.unit),
        f"{a.covered_rate:.2f} ({a.covered_flips}/{a.covered_n})",
        f"{a.unrelated_rate:.2f} ({a.unrelated_flips}/{a.unrelated_n})",
        a.selectivity,
        a.score,
        a.score_rank,
    )


@dataclass(frozen=True)
class Problem:
    """One rule in one regime (``positive``: the label is True and ablation makes it False;
    ``negative``: the reverse): its search budget, its agonists, and what ablating all of them at once
    did (``suppression``). ``skipped`` says why it was not searched (empty when it was)."""

    key: str
    rule_id: str
    regime: str
    rule: str
    skipped: str
    n_candidates: int | None
    group_evaluations: int | None
    density: float | None
    agonists: tuple[Agonist, ...]
    suppression: Mapping[str, Any] = field(default_factory=dict, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> Problem:
        def optional(name: str, kind: type) -> Any:
            value = raw.get(name)
            return None if value is None else kind(value)

        return cls(
            key=str(raw["key"]),
            rule_id=str(raw.get("rule_id") or ""),
            regime=str(raw.get("regime") or ""),
            rule=str(raw.get("rule") or ""),
            skipped=str(raw.get("skipped") or ""),
            n_candidates=optional("n_candidates", int),
            group_evaluations=optional("group_evaluations", int),
            density=optional("density", float),
            agonists=tuple(Agonist.from_raw(a) for a in raw.get("agonists") or []),
            suppression=dict(raw.get("suppression") or {}),
            raw=raw,
        )

    @property
    def folder(self) -> str:
        return f"{FOLDER}/{self.key.replace('/', '_')}"

    def _suppression_text(self) -> str:
        parts = []
        for side in ("covered", "unrelated"):
            block = self.suppression.get(side) or {}
            if "positive_rate_before" in block:
                before, after = block["positive_rate_before"], block.get("positive_rate_after")
                parts.append(f"{side} {number(before)} -> {number(after)}")
        return f"; all ablated together: {', '.join(parts)}" if parts else ""

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.key} ({self.rule}): skipped, {self.skipped}"
        return (
            f"{self.key} ({self.rule}): {len(self.agonists)} agonists among {number(self.n_candidates)} "
            f"candidates, {number(self.group_evaluations)} group evaluations{self._suppression_text()}"
        )


@dataclass(frozen=True)
class Localization:
    """``localization/``: the problems with their agonists, CHA's cost (group evaluations, oracle
    calls), and the per-problem files (``trace.jsonl``, ``agonists.csv``) as written."""

    problems: tuple[Problem, ...]
    group_evaluations: int
    n_agonists: int
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    files: Mapping[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    FILE: ClassVar[str] = f"{FOLDER}/summary.json"

    @property
    def agonists(self) -> tuple[Agonist, ...]:
        """Every agonist entry, problem by problem (a unit strong in two problems appears twice)."""
        return tuple(a for p in self.problems for a in p.agonists)

    @property
    def units(self) -> tuple[Site, ...]:
        """The distinct agonist units, in order of first appearance."""
        return tuple(dict.fromkeys(a.unit for a in self.agonists))

    def distinct_agonists(self) -> tuple[Agonist, ...]:
        """One entry per distinct unit: the problem where its effect is largest (ties: the first)."""
        best: dict[Site, Agonist] = {}
        for a in self.agonists:
            if a.unit not in best or a.effect > best[a.unit].effect:
                best[a.unit] = a
        return tuple(best.values())

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def __getitem__(self, key: str) -> Problem:
        for problem in self.problems:
            if problem.key == key:
                return problem
        known = ", ".join(p.key for p in self.problems) or "none"
        raise KeyError(f"no problem {key!r} in {self.FILE}; its problems are: {known}")

    def trace(self, key: str) -> list[dict[str, Any]]:
        """Every group CHA evaluated for the problem ``key``: units, flip counts, bounds, decision."""
        data = self.files.get(f"{self[key].folder}/trace.jsonl", b"")
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], files: Mapping[str, bytes] | None = None) -> Localization:
        problems = tuple(Problem.from_raw(p) for p in raw.get("problems") or [])
        return cls(
            problems=problems,
            group_evaluations=int(raw.get("group_evaluations") or 0),
            n_agonists=int(raw.get("n_agonists") or len({a.unit for p in problems for a in p.agonists})),
            raw=raw,
            files=dict(files or {}),
        )

    @classmethod
    def load(cls, run_dir: str | Path) -> Localization:
        run_dir = Path(run_dir)
        raw = load_json(run_dir, cls.FILE)
        folders = [f"{FOLDER}/{str(p.get('key', '')).replace('/', '_')}" for p in raw.get("problems") or []]
        names = [f"{folder}/{name}" for folder in folders for name in PROBLEM_FILES]
        return cls.from_raw(raw, {n: load_bytes(run_dir, n) for n in names if (run_dir / n).is_file()})

    def save(self, run_dir: str | Path) -> None:
        for name, data in self.files.items():
            save_bytes(Path(run_dir), name, data)
        save_json(Path(run_dir), self.FILE, dict(self.raw))

    def __str__(self) -> str:
        head = (
            f"{self.n_agonists} distinct agonists in {len(self.problems)} problems, "
            f"{self.group_evaluations:,} group evaluations"
        )
        return "\n".join([head, *(f"  {p}" for p in self.problems)])

    def _repr_html_(self) -> str:
        rows = [_agonist_row(a) for a in self.agonists]
        return html_table(AGONIST_HEADER, rows, caption=str(self).splitlines()[0])
