"""The anchor stage's result: ``flips.parquet`` (the label under each agonist's ablation, per
evaluation prompt) and ``neuron_rules.json`` (per agonist: the rule that says where it flips)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from mecharule.models.sites import Site
from mecharule.results.artifacts import load_json, load_table, save_json, save_table
from mecharule.results.display import html_table, number
from mecharule.results.rules import metrics_of
from mecharule.rules.language import RuleSet
from mecharule.rules.metrics import RuleMetrics

HQ_KEY = "0.70"


@dataclass(frozen=True)
class AnchoredRule:
    """The rule describing on which prompts ablating a unit flips the behaviour, for one flip target
    (``any``, ``true_to_false``, ``false_to_true``). ``rules`` is None when no rule was extracted."""

    target: str | None
    readable: str
    rules: RuleSet | None
    test_mcc: float
    all_mcc: float
    coverage: float
    test: RuleMetrics | None = None

    def __str__(self) -> str:
        if self.target is None:
            return "no rule"
        return f"{self.readable}  [{self.target}: test MCC {self.test_mcc:.2f}, coverage {self.coverage:.2f}]"


def _parsed(text: str) -> RuleSet | None:
    """The canonical text of a rule set, or of a single rule; None when it does not parse."""
    from mecharule.errors import DataError
    from mecharule.rules.text import parse_rule, parse_ruleset

    for parse in (parse_ruleset, lambda t: RuleSet((parse_rule(t),))):
        try:
            return parse(text)
        except DataError:
            continue
    return None


def _rule_of(best: Mapping[str, Any], targets: Mapping[str, Any]) -> AnchoredRule:
    target = best.get("target")
    entry = targets.get(str(target)) if target is not None else None
    text = entry.get("text") if isinstance(entry, Mapping) else None
    return AnchoredRule(
        target=None if target is None else str(target),
        readable=str(best.get("readable") or ""),
        rules=_parsed(str(text)) if text else None,
        test_mcc=float(best.get("test_mcc") or 0.0),
        all_mcc=float(best.get("all_mcc") or 0.0),
        coverage=float(best.get("coverage") or 0.0),
        test=metrics_of((entry or {}).get("metrics"), "test") if isinstance(entry, Mapping) else None,
    )


@dataclass(frozen=True)
class AnchoredAgonist:
    """One agonist on the evaluation sample: how often its ablation flips the label (``flip_rates``
    by target), its best anchored rule, the same extraction on permuted flips (``control``), and
    whether the rule is high quality (test MCC at least the run's threshold)."""

    site: Site
    n_eval: int
    flip_rates: Mapping[str, float]
    best: AnchoredRule
    control: AnchoredRule
    hq: bool
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> AnchoredAgonist:
        targets = raw.get("targets") or {}
        return cls(
            site=Site.parse(str(raw["site"])),
            n_eval=int(raw.get("n_eval") or 0),
            flip_rates={str(k): float(v) for k, v in (raw.get("flip_rates") or {}).items()},
            best=_rule_of(raw.get("best") or {}, targets),
            control=_rule_of(raw.get("best_control") or {}, targets),
            hq=bool(raw.get("hq")),
            raw=raw,
        )

    def __str__(self) -> str:
        rate = self.flip_rates.get("any")
        return f"{self.site}: flips {number(rate)} of {self.n_eval:,} prompts; {self.best}"


@dataclass(frozen=True, eq=False)
class Anchoring:
    """``flips.parquet`` (``row, split, baseline`` + one column per agonist: the label under its
    ablation) and ``neuron_rules.json``: per agonist its anchored rules; high-quality counts beside
    the same counts for the fake-target and random-unit controls."""

    flips: pd.DataFrame
    agonists: tuple[AnchoredAgonist, ...]
    hq_threshold: float
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    flips_provenance: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: per agonist: flip examples, activation histograms, promoted tokens (empty for older runs)
    cards: Mapping[str, Any] = field(default_factory=dict, repr=False)

    FILES: ClassVar[tuple[str, ...]] = ("flips.parquet", "neuron_rules.json")  # agonist_cards.json: optional

    @property
    def hq_counts(self) -> Mapping[str, int]:
        """HQ agonists by MCC threshold ("0.70" ...), on test rows."""
        return dict((self.raw.get("hq_counts") or {}).get("test") or {})

    @property
    def control_hq_counts(self) -> Mapping[str, Mapping[str, int]]:
        """The same counts for the controls: ``fake_target`` and ``random_neurons``."""
        controls = self.raw.get("controls") or {}
        return {
            name: dict((block.get("hq_counts") or {}).get("test") or {})
            for name, block in controls.items()
            if isinstance(block, Mapping)
        }

    def __iter__(self) -> Iterator[AnchoredAgonist]:
        return iter(self.agonists)

    def __getitem__(self, site: str | Site) -> AnchoredAgonist:
        for agonist in self.agonists:
            if str(agonist.site) == str(site):
                return agonist
        known = ", ".join(str(a.site) for a in self.agonists) or "none"
        raise KeyError(f"no anchored agonist {str(site)!r}; anchored: {known}")

    def flipped(self, site: str | Site) -> pd.Series:
        """Per evaluation prompt: did ablating ``site`` change the label?"""
        name = str(self[site].site)
        return self.flips[name] != self.flips["baseline"]

    @classmethod
    def load(cls, run_dir: str | Path) -> Anchoring:
        run_dir = Path(run_dir)
        flips, provenance = load_table(run_dir, "flips.parquet")
        raw = load_json(run_dir, "neuron_rules.json")
        agonists = tuple(AnchoredAgonist.from_raw(a) for a in raw.get("agonists") or [])
        cards = load_json(run_dir, "agonist_cards.json") if (run_dir / "agonist_cards.json").exists() else {}
        threshold = float(raw.get("hq_threshold") or 0.0)
        return cls(flips, agonists, threshold, raw, provenance, dict(cards.get("agonists") or {}))

    def save(self, run_dir: str | Path) -> None:
        save_table(Path(run_dir), "flips.parquet", self.flips, dict(self.flips_provenance))
        save_json(Path(run_dir), "neuron_rules.json", dict(self.raw))
        if self.cards:
            save_json(Path(run_dir), "agonist_cards.json", {"agonists": dict(self.cards)})

    def _hq_line(self) -> str:
        key = f"{self.hq_threshold:.2f}" if f"{self.hq_threshold:.2f}" in self.hq_counts else HQ_KEY
        controls = ", ".join(f"{name} {counts.get(key)}" for name, counts in self.control_hq_counts.items())
        return (
            f"{len(self.agonists)} agonists anchored; high quality (test MCC >= {key}): "
            f"{self.hq_counts.get(key)} (controls: {controls or 'none'})"
        )

    def __str__(self) -> str:
        return "\n".join([self._hq_line(), *(f"  {a}" for a in self.agonists)])

    def _repr_html_(self) -> str:
        rows = [
            (str(a.site), a.flip_rates.get("any"), a.best.target, a.best.readable, a.best.test_mcc, a.hq)
            for a in self.agonists
        ]
        header = ("unit", "flip rate", "target", "best rule", "test MCC", "HQ")
        return html_table(header, rows, caption=self._hq_line())
