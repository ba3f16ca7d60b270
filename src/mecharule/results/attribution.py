"""The attribute stage's result: per behaviour rule, ``attribution/rule_<id>.safetensors`` (signed
``[n_layers, width]`` unit scores per method) and ``attribution/rule_<id>.json`` (sampling, pairing,
top units)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mecharule.models.sites import Site
from mecharule.results.artifacts import load_json, save_json
from mecharule.results.display import html_table

if TYPE_CHECKING:
    import torch

FOLDER = "attribution"
_RECORD = re.compile(r"^rule_(?P<id>.+)\.json$")


@dataclass(frozen=True, eq=False)
class AttributedRule:
    """The attribution scores of one rule: ``scores[method]`` is a ``[n_layers, width]`` tensor
    (signed; larger = ablating the unit moves the behaviour more towards the rule's target), and
    ``top_units[method]`` the strongest units by |score| as (site, score)."""

    rule_id: str
    rule: str
    status: str
    scores: Mapping[str, torch.Tensor]
    top_units: Mapping[str, tuple[tuple[Site, float], ...]]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    tensor_metadata: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.raw.get("methods") or self.scores)

    @classmethod
    def load(cls, run_dir: Path, rule_id: str) -> AttributedRule:
        raw = load_json(run_dir, f"{FOLDER}/rule_{rule_id}.json")
        scores, metadata = _load_tensors(Path(run_dir) / FOLDER / f"rule_{rule_id}.safetensors")
        methods = raw.get("methods") or {}
        top = {
            str(name): tuple((Site.parse(u["site"]), float(u["score"])) for u in block.get("top_units") or [])
            for name, block in methods.items()
            if isinstance(block, Mapping)
        }
        return cls(
            rule_id, str(raw.get("rule") or ""), str(raw.get("status") or ""), scores, top, raw, metadata
        )

    def save(self, run_dir: Path) -> None:
        if self.scores:
            from safetensors.torch import save_file

            from mecharule.io.rundir import atomic_path

            path = Path(run_dir) / FOLDER / f"rule_{self.rule_id}.safetensors"
            with atomic_path(path) as tmp:
                save_file(dict(self.scores), str(tmp), metadata=dict(self.tensor_metadata))
        save_json(Path(run_dir), f"{FOLDER}/rule_{self.rule_id}.json", dict(self.raw))

    def __str__(self) -> str:
        if not self.top_units:
            return f"{self.rule_id}: {self.status or 'no scores'} ({self.raw.get('reason', '')})"
        method, units = next(iter(self.top_units.items()))
        shown = ", ".join(f"{site} {score:+.2f}" for site, score in units[:5])
        return f"{self.rule_id} ({method}): {shown}"


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        return {}, {}
    from safetensors import SafetensorError, safe_open

    from mecharule.errors import RunDirError

    try:
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())  # a safetensors handle is not iterable
            return {k: handle.get_tensor(k) for k in names}, dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise RunDirError(
            f"{path} is damaged ({type(exc).__name__}: {exc}); "
            "re-run `mecharule attribute` on the run directory"
        ) from exc


def _rule_order(rule_id: str) -> tuple[int, str]:
    digits = "".join(ch for ch in rule_id if ch.isdigit())
    return (int(digits) if digits else 0, rule_id)


@dataclass(frozen=True, eq=False)
class Attribution:
    """Every rule's attribution scores (``attribution/``), in rule order (R1, R2, ...)."""

    rules: tuple[AttributedRule, ...]

    FOLDER: ClassVar[str] = FOLDER

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[AttributedRule]:
        return iter(self.rules)

    def __getitem__(self, rule_id: str) -> AttributedRule:
        for rule in self.rules:
            if rule.rule_id == rule_id:
                return rule
        known = ", ".join(r.rule_id for r in self.rules) or "none"
        raise KeyError(f"no attribution for rule {rule_id!r}; attributed rules: {known}")

    @staticmethod
    def rule_ids(run_dir: str | Path) -> list[str]:
        folder = Path(run_dir) / FOLDER
        found = [m["id"] for p in folder.glob("rule_*.json") if (m := _RECORD.match(p.name))]
        return sorted(found, key=_rule_order)

    @classmethod
    def load(cls, run_dir: str | Path) -> Attribution:
        return cls(tuple(AttributedRule.load(Path(run_dir), rid) for rid in cls.rule_ids(run_dir)))

    def save(self, run_dir: str | Path) -> None:
        for rule in self.rules:
            rule.save(Path(run_dir))

    def __str__(self) -> str:
        return "\n".join(str(rule) for rule in self.rules) or "no rule attributed"

    def _repr_html_(self) -> str:
        rows = [
            (rule.rule_id, method, str(site), score)
            for rule in self.rules
            for method, units in rule.top_units.items()
            for site, score in units[:5]
        ]
        return html_table(("rule", "method", "unit", "score"), rows, "strongest units by |score|")
