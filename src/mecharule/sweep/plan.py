"""What a sweep runs: factors (``--vary KEY=V1,V2``), the settings they make (one factor at a time,
or their grid), and which stages of each setting the base run already answers.

A setting is the base run's saved config with one or more keys changed. A stage is reused when its
key (the config fields it reads and its upstream keys, see :mod:`mecharule.stage_inputs`) is the one
the base run recorded; every other stage runs, so a sweep over ``search.tau`` re-runs localization
and what reads it, never measure, rules or attribution.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mecharule.config import RunConfig, load_config, parse_assignments
from mecharule.errors import ConfigError, RunDirError
from mecharule.io.rundir import RunDir

MAX_SETTINGS = 24  # a larger grid must be asked for (--max-settings)


@dataclass(frozen=True)
class Factor:
    key: str  # dotted config key, current layout (``search.tau``)
    values: tuple[Any, ...]  # YAML values, in the order given


@dataclass(frozen=True)
class Setting:
    changes: Mapping[str, Any]  # {dotted key: value} on top of the base run's config
    config: RunConfig = field(compare=False)

    @property
    def name(self) -> str:
        """``search.tau=0.2`` (factors joined by ``+`` on a grid)."""
        return "+".join(f"{key}={_text(value)}" for key, value in self.changes.items())

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=+,-]", "_", self.name)


def parse_vary(text: str) -> Factor:
    """``search.tau=0.2,0.3`` → Factor; the key is checked (a legacy key is read as the current
    one) and each value is YAML (``attribution.methods=[atp],[atp,eap_ig]``)."""
    key, sep, values_text = text.partition("=")
    parts = split_values(values_text)
    if not sep or not key.strip() or not parts:
        raise ConfigError(f"--vary expects KEY=V1,V2,... (e.g. --vary search.tau=0.2,0.3), got {text!r}")
    values = [parse_assignments([f"{key.strip()}={part}"]) for part in parts]
    current = next(iter(values[0]))
    unique = list(dict.fromkeys(_text(next(iter(v.values()))) for v in values))
    if len(unique) != len(values):
        raise ConfigError(f"--vary {current}: a value is given twice ({values_text!r})")
    return Factor(current, tuple(next(iter(v.values())) for v in values))


def split_values(text: str) -> list[str]:
    """Split at commas outside brackets, braces and quotes: ``[a,b],c`` → ``["[a,b]", "c"]``."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def plan_settings(
    base: RunConfig, factors: Sequence[Factor], grid: bool, max_settings: int = MAX_SETTINGS
) -> list[Setting]:
    """The settings to run: each factor's values with the others at the base run's (default), or
    every combination (``grid``). Fails on a repeated key or more than ``max_settings``."""
    keys = [f.key for f in factors]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--vary names a key twice: {', '.join(keys)}")
    if grid:
        combos = [
            dict(zip(keys, values, strict=True)) for values in itertools.product(*(f.values for f in factors))
        ]
    else:
        combos = [{f.key: value} for f in factors for value in f.values]
    if len(combos) > max_settings:
        raise ConfigError(
            f"the sweep has {len(combos)} settings, more than --max-settings {max_settings}; "
            "vary fewer values or raise --max-settings"
        )
    base_data = base.model_dump(mode="json")
    return [Setting(changes, load_config(None, base=base_data, assignments=changes)) for changes in combos]


def base_config(path: Path) -> RunConfig:
    """The finished base run's config; fails when the run has not finished."""
    rundir = RunDir(path)
    saved = rundir.manifest().get("config")
    if saved is None or not rundir.file("summary.json").exists():
        raise RunDirError(
            f"{path} is not a finished run (no run.json config or summary.json): "
            f"finish it first (`mecharule run --out {path}`)"
        )
    return load_config(None, base=saved)


def base_values(base: RunConfig, factors: Sequence[Factor]) -> dict[str, Any]:
    """The base run's value of each varied key."""
    dumped = base.model_dump(mode="json")
    values = {}
    for factor in factors:
        node: Any = dumped
        for part in factor.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values[factor.key] = node
    return values


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


__all__ = [
    "MAX_SETTINGS",
    "Factor",
    "Setting",
    "base_config",
    "base_values",
    "parse_vary",
    "plan_settings",
    "split_values",
]
