"""What each stage reads: the config fields and the upstream stages behind its cache key.

A stage's key hashes exactly the config fields it reads (speed-only settings such as batch sizes and
memory budgets excluded: they change how fast, not what), the keys of the stages whose outputs it
reads, and, for ``measure``, the fingerprint of the model's weights. Everything downstream inherits
the fingerprint through the upstream keys, so new weights invalidate every result made with the old.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mecharule.config import ExecutorConfig, RunConfig

# how fast, never what: the executor section (batch sizes, memory budgets) is in no stage's key
SPEED_ONLY = frozenset(f"executor.{name}" for name in ExecutorConfig.model_fields)
RULE_SELECTION = ("rules.max_rules", "rules.min_coverage")  # the rules carried to localization
# what builds the searched problems (rules, candidates, ablation, slices): read by every stage that
# rebuilds them (localize, validate, recompose)
SEARCHED = (
    "seed",
    *RULE_SELECTION,
    "attribution.methods",
    "attribution.top_m",
    "units",
    "ablation",
    "search",
)


@dataclass(frozen=True)
class StageInputs:
    fields: tuple[str, ...]  # dotted config fields, or whole sections ("search")
    upstream: tuple[str, ...]  # stages whose outputs it reads
    excluded: tuple[str, ...] = ()  # fields of a listed section it does not read


STAGE_INPUTS: dict[str, StageInputs] = {
    "measure": StageInputs(("seed", "model", "task"), ()),
    "rules": StageInputs(("seed", "rules.extractor", "rules.target", "rules.options"), ("measure",)),
    "attribute": StageInputs(
        ("seed", *RULE_SELECTION, "attribution", "units", "ablation"),
        ("measure", "rules"),
        excluded=("attribution.top_m",),
    ),
    "localize": StageInputs(SEARCHED, ("measure", "rules", "attribute")),
    "validate": StageInputs(
        (*SEARCHED, "validation"),
        ("measure", "rules", "attribute"),
        excluded=("validation.brute_force",),  # whether validate runs, not what it computes
    ),
    "recompose": StageInputs(
        (*SEARCHED, "recompose"),
        ("measure", "rules", "attribute", "localize"),
        excluded=("recompose.enabled",),  # whether it runs, not what it computes
    ),
    "anchor": StageInputs(
        ("seed", "anchor", "rules.extractor", "rules.options", "units", "ablation"),
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
    "recompose": "mecharule recompose {dir}",
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
