"""The config layout before configuration by concept (mecharule <= 0.4): where each key lives now.

Legacy files, saved run configs and ``--set`` keys are read as their current keys, so a run
directory made by an earlier version keeps its config (its stage keys are new, so stages re-run).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from mecharule.config.sections import RunConfig, is_section

# Keys of the layout before configuration by concept (mecharule <= 0.4), and where they live now.
LEGACY_KEYS = {
    "measure.task": "task.name",
    "measure.task_options": "task.options",
    "measure.test_fraction": "task.test_fraction",
    "measure.max_prompts": "task.max_prompts",
    "measure.propose_features": "task.propose_features",
    "measure.batch_size": "executor.batch_size",
    "attribution.unit_kind": "units.kind",
    "localize.ablation": "ablation.value",
    "localize.positions": "ablation.positions",
    "localize.n_reference": "ablation.n_reference",
    "localize.memory_budget_mb": "executor.memory_budget_mb",
    "localize.validate_exhaustive_max": "validation.exhaustive_max",
    "localize.validate_outside_sample": "validation.outside_sample",
    "validate_brute_force": "validation.brute_force",
}
LEGACY_SECTIONS = {"localize": "search"}  # its other keys, under their own names


def current_key(dotted: str) -> str:
    """The key a legacy dotted key names now (``localize.tau`` → ``search.tau``); others unchanged."""
    for old, new in LEGACY_KEYS.items():
        if dotted == old or dotted.startswith(old + "."):
            return new + dotted[len(old) :]
    section, _, rest = dotted.partition(".")
    return f"{LEGACY_SECTIONS[section]}.{rest}" if section in LEGACY_SECTIONS and rest else dotted


def migrate_legacy(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A config mapping in the legacy layout rewritten to the current one, and the keys moved
    (``["localize.tau -> search.tau", ...]``). A mapping in the current layout comes back as is."""
    flat: dict[str, Any] = {}
    _flatten(data, "", flat)
    moved: list[str] = []
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        new = current_key(dotted)
        if new != dotted:
            moved.append(f"{dotted} -> {new}")
        node = out
        *parents, leaf = new.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return (out if moved else copy.deepcopy(dict(data))), moved


def _flatten(data: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    """Leaves of the config's sections as dotted keys; mapping-valued fields (task options) kept whole."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        model = _model_at(dotted)
        if isinstance(value, Mapping) and model is not None:
            _flatten(value, dotted + ".", out)
        else:
            out[dotted] = copy.deepcopy(value)


def _model_at(dotted: str) -> type[BaseModel] | None:
    """The config section a (current or legacy) dotted key names, or None for a value or unknown key."""
    if dotted in LEGACY_SECTIONS or dotted == "measure":
        return RunConfig  # any section: its keys are rewritten one by one
    target = current_key(dotted)
    model: Any = RunConfig
    for part in target.split("."):
        fields = model.model_fields if is_section(model) else {}
        if part not in fields:
            return None
        model = fields[part].annotation
    return model if is_section(model) else None


def saved_section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Section ``name`` of a saved config (``run.json``), a legacy one read in the current layout."""
    section = migrate_legacy(config)[0].get(name)
    return section if isinstance(section, dict) else {}
