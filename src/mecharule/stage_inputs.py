"""What each stage reads: the config fields and the upstream stages behind its cache key.

A stage's key hashes exactly the config fields it reads (speed-only settings such as batch sizes and
memory budgets excluded: they change how fast, not what), the keys of the stages whose outputs it
reads, and, for ``measure``, the fingerprint of the model's weights. Everything downstream inherits
the fingerprint through the upstream keys, so new weights invalidate every result made with the old.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mecharule.config import RunConfig

SPEED_ONLY = frozenset({"measure.batch_size", "localize.memory_budget_mb"})
VALIDATE_ONLY = ("localize.validate_exhaustive_max", "localize.validate_outside_sample")
ABLATION = ("localize.ablation", "localize.positions", "localize.n_reference")
RULE_SELECTION = ("rules.max_rules", "rules.min_coverage")
SHORTLIST = ("attribution.methods", "attribution.unit_kind", "attribution.top_m")


@dataclass(frozen=True)
class StageInputs:
    fields: tuple[str, ...]  # dotted config fields, or whole sections ("anchor")
    upstream: tuple[str, ...]  # stages whose outputs it reads
    excluded: tuple[str, ...] = ()  # fields of a listed section it does not read


STAGE_INPUTS: dict[str, StageInputs] = {
    "measure": StageInputs(("seed", "model", "measure"), ()),
    "rules": StageInputs(("seed", "rules.extractor", "rules.target", "rules.options"), ("measure",)),
    "attribute": StageInputs(
        (
            "seed",
            *RULE_SELECTION,
            "attribution.methods",
            "attribution.unit_kind",
            "attribution.n_pairs",
            "attribution.ig_steps",
            *ABLATION,
        ),
        ("measure", "rules"),
    ),
    "localize": StageInputs(
        ("seed", *RULE_SELECTION, *SHORTLIST, "localize"),
        ("measure", "rules", "attribute"),
        excluded=VALIDATE_ONLY,
    ),
    "validate": StageInputs(
        ("seed", *RULE_SELECTION, *SHORTLIST, "localize"),
        ("measure", "rules", "attribute"),
    ),
    "anchor": StageInputs(
        ("seed", "anchor", "rules.extractor", "rules.options", "attribution.unit_kind", *ABLATION),
        ("measure", "localize"),
    ),
}

# the command that (re)makes a stage's outputs, for messages
COMMANDS = {
    "measure": "mecharule measure --out {dir}",
    "rules": "mecharule rules {dir}",
    "attribute": "mecharule attribute {dir}",
    "localize": "mecharule localize {dir}",
    "validate": "mecharule validate {dir}",
    "anchor": "mecharule anchor {dir}",
}


def read_fields(config: RunConfig, stage: str) -> dict[str, Any]:
    """``{dotted field: value}`` of every config field ``stage`` reads, speed-only ones left out."""
    spec = STAGE_INPUTS[stage]
    dumped = config.model_dump(mode="json")
    skip = SPEED_ONLY | set(spec.excluded)
    values: dict[str, Any] = {}
    for dotted in spec.fields:
        node: Any = dumped
        for part in dotted.split("."):
            node = node[part]
        if isinstance(node, dict) and "." not in dotted:  # a whole section: each of its fields
            values.update({f"{dotted}.{k}": v for k, v in node.items() if f"{dotted}.{k}" not in skip})
        else:
            values[dotted] = node
    return values


def downstream(stage: str) -> list[str]:
    """Every stage that reads ``stage``'s outputs, directly or through another, plus the report."""
    found: list[str] = []
    frontier = [stage]
    while frontier:
        current = frontier.pop()
        for name, spec in STAGE_INPUTS.items():
            if current in spec.upstream and name not in found:
                found.append(name)
                frontier.append(name)
    return [*sorted(found, key=list(STAGE_INPUTS).index), "report"]


__all__ = ["COMMANDS", "SPEED_ONLY", "STAGE_INPUTS", "StageInputs", "downstream", "read_fields"]
