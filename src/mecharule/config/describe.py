"""Messages for a config that does not validate: where, what, the closest accepted key or value."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from mecharule.config.sections import RunConfig, is_section


def config_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every field of ``model`` as a dotted key, sections walked recursively (``search.tau``)."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        if is_section(info.annotation):
            keys += config_keys(info.annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def unknown_key_hint(section: str, key: str) -> str:
    """`` (did you mean 'search.tau'?); keys of search: ...`` for an unknown ``key`` of ``section``."""
    fields = list(_section(tuple(section.split(".")) if section else ()).model_fields)
    prefix = f"{section}." if section else ""
    close = [prefix + c for c in difflib.get_close_matches(key, fields, n=1)]
    if not close:  # a key of another section (tau → search.tau), or a near miss of one
        everywhere = config_keys()
        close = [k for k in everywhere if k.rsplit(".", 1)[-1] == key][:1]
        close = close or difflib.get_close_matches(prefix + key, everywhere, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{guess}; keys of {section or 'the config'}: {', '.join(fields)}"


def describe_validation_error(exc: ValidationError) -> str:
    """The first error on one line: where, what, what was given (short); for a misspelt key the keys
    that section accepts, for a misspelt choice (``Literal``) the closest accepted value."""
    errors = exc.errors()
    first = errors[0]
    field = _field_loc(first["loc"])
    where = ".".join(str(p) for p in field)
    given = repr(first.get("input"))
    given = given if len(given) <= 80 else given[:77] + "..."
    if first["type"] == "extra_forbidden":
        section, key = ".".join(str(p) for p in field[:-1]), str(field[-1])
        return f"invalid config at {where}: unknown key (got {given}){unknown_key_hint(section, key)}"
    if first["type"] == "value_error":  # our own validators name the value they reject
        return f"invalid config at {where}: {first['msg'].removeprefix('Value error, ')}"
    message = first["msg"]
    same = [e for e in errors if _field_loc(e["loc"]) == field]
    if field != first["loc"] and all(e["msg"].startswith("Input should be ") for e in same):
        # a union (``int | Literal['auto']``) fails once per member, each under the same field
        wanted = dict.fromkeys(e["msg"].split(",")[0].removeprefix("Input should be ") for e in same)
        message = "Input should be " + " or ".join(wanted)
    choices = [c for e in same if e["type"] == "literal_error" for c in _quoted(e.get("ctx") or {})]
    close = difflib.get_close_matches(str(first.get("input")), choices, n=1)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    return f"invalid config at {where}: {message} (got {given}){guess}"


def _quoted(ctx: Mapping[str, Any]) -> list[str]:
    """The accepted values of a literal error: ``"'ucb', 'contrastive' or 'observed'"`` → a list."""
    return re.findall(r"'([^']*)'", str(ctx.get("expected", "")))


def _field_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """An error's location without pydantic's union-member tags (``('executor', 'batch_size',
    'constrained-int')`` → ``('executor', 'batch_size')``); list indices (``methods.1``) are kept."""
    model: Any = RunConfig
    for i, part in enumerate(loc):
        if not is_section(model):  # inside a field: keep the indices, drop the tags after them
            rest = loc[i:]
            return loc[: i + next((j for j, p in enumerate(rest) if isinstance(p, str)), len(rest))]
        if str(part) not in model.model_fields:
            return loc
        model = model.model_fields[str(part)].annotation
    return loc


def _section(loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The config model at a location (``("search",)`` → SearchSettings)."""
    model: type[BaseModel] = RunConfig
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not is_section(annotation):
            break
        model = annotation
    return model
