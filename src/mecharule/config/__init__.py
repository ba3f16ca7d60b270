"""Frozen pydantic configs (extra fields forbidden), loadable from YAML or JSON.

One :class:`RunConfig` holds every option of every stage, in sections by concept (:mod:`.sections`);
each stage hashes only the fields it reads (``stage_inputs``), so changing a late stage's option
never re-runs an early one. Legacy keys (``localize.tau``) are read as the current ones
(:mod:`.legacy`), with a warning.
"""

from __future__ import annotations

import copy
import json
import logging
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mecharule.config.describe import config_keys, describe_validation_error, unknown_key_hint
from mecharule.config.legacy import LEGACY_KEYS, current_key, migrate_legacy, saved_section
from mecharule.config.sections import (
    AblationConfig,
    AnchorConfig,
    AttributionConfig,
    ExecutorConfig,
    FeatureProposalConfig,
    ModelConfig,
    RecomposeConfig,
    RulesConfig,
    RunConfig,
    SearchSettings,
    TaskConfig,
    UnitsConfig,
    ValidationConfig,
    is_section,
)
from mecharule.errors import ConfigError

log = logging.getLogger(__name__)


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    assignments: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Build a config: a YAML/JSON file, or else ``base`` (a run directory's saved config), or else
    the defaults; then the dotted-key ``overrides`` whose value is not None (``{"task.name": None}``
    means "not given"); then ``assignments`` (``--set``), applied as given, so None sets null.

    Setting a section to a mapping (``search={tau: 0.3}``) sets those keys of it and keeps the rest.
    An unknown key fails at once, naming the keys of its section and the closest one.
    """
    data = _read_config_file(path) if path is not None else copy.deepcopy(dict(base or {}))
    data, moved = migrate_legacy(data)
    if moved and path is not None:
        log.warning(
            "%s uses the legacy config layout; read as: %s (`mecharule config show --config %s` "
            "prints it in the current layout)",
            path,
            ", ".join(moved),
            path,
        )
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    for dotted, value in {**given, **(assignments or {})}.items():
        _assign(data, _current(dotted), value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["search.tau=0.3", "attribution.methods=[atp,eap_ig]"]`` → ``{dotted key: YAML value}``;
    every key is checked against the config's fields."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. --set search.tau=0.3), got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError(f"--set {key}: {text!r} is not a YAML value ({detail})") from exc
        key = _current(key)
        check_key(key)
        parsed[key] = value
    return parsed


def _current(dotted: str) -> str:
    """``dotted``, or the key a legacy key names now (with a warning that says so)."""
    new = current_key(dotted)
    if new != dotted:
        log.warning("config key %s is now %s", dotted, new)
    return new


def check_key(dotted: str) -> None:
    """ConfigError unless ``dotted`` names a config field or section (keys inside a mapping field such
    as ``task.options.n_shots`` are the task's or extractor's to check)."""
    model: type[BaseModel] = RunConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            section = ".".join(parts[:i])
            raise ConfigError(f"unknown config key {dotted!r}{unknown_key_hint(section, part)}")
        annotation = model.model_fields[part].annotation
        if is_section(annotation):
            model = annotation
        elif typing.get_origin(annotation) is dict:
            return
        elif i < len(parts) - 1:
            raise ConfigError(
                f"cannot set {dotted}: {'.'.join(parts[: i + 1])} is a value, not a section; "
                f"set it as {'.'.join(parts[: i + 1])}=VALUE"
            )


def _assign(data: dict[str, Any], dotted: str, value: Any) -> None:
    check_key(dotted)
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(
                f"cannot set {dotted}: the config's {part!r} is {node!r}, not a mapping; "
                f"write it as a mapping ({part}: {{...}})"
            )
    if isinstance(value, dict) and is_section(_field_annotation(dotted)):
        for key, inner in value.items():
            _assign(data, f"{dotted}.{key}", inner)
        return
    node[leaf] = value


def _field_annotation(dotted: str) -> Any:
    model: Any = RunConfig
    for part in dotted.split("."):
        model = model.model_fields[part].annotation
    return model


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))[:3]
        hint = f" such as {path / inside[0]}" if inside else ""
        raise ConfigError(f"config path {path} is a directory, not a file; pass a YAML or JSON file{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "pass a YAML or JSON config file"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:] or 'YAML'}: {detail}") from exc
    if not isinstance(loaded or {}, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping at the top level, not a {type(loaded).__name__}"
        )
    return dict(loaded or {})


__all__ = [
    "LEGACY_KEYS",
    "AblationConfig",
    "AnchorConfig",
    "AttributionConfig",
    "ExecutorConfig",
    "FeatureProposalConfig",
    "ModelConfig",
    "RecomposeConfig",
    "RulesConfig",
    "RunConfig",
    "SearchSettings",
    "TaskConfig",
    "UnitsConfig",
    "ValidationConfig",
    "check_key",
    "config_keys",
    "current_key",
    "load_config",
    "migrate_legacy",
    "parse_assignments",
    "saved_section",
]
