"""Task options (``measure.task_options``) checked against the task factory's signature.

An unknown option or a value of the wrong type is a :class:`ConfigError` on one line that names the
option and lists every option the task takes, with its type; values are validated (and coerced the
way pydantic's lax mode does: ``"5"`` → 5 for an ``int``) from the factory's annotations.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from mecharule.errors import ConfigError

_NO_DEFAULT = inspect.Parameter.empty


def check_task_options(task: str, factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` validated for ``factory``; a factory taking ``**kwargs`` gets them unchecked."""
    params = task_parameters(factory)
    if params is None:
        return dict(options)
    unknown = [key for key in options if key not in params]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(params), n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"task {task!r} takes no option {unknown[0]!r}{guess}; its options (measure.task_options) "
            f"are: {describe_parameters(params)}"
        )
    return {key: _checked(task, key, value, params) for key, value in options.items()}


def task_parameters(factory: Callable[..., Any]) -> dict[str, tuple[Any, Any]] | None:
    """``{option: (type or None, default)}`` of a factory, or None when it takes ``**kwargs``."""
    signature = inspect.signature(factory)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except (NameError, TypeError, AttributeError):  # unresolvable annotations: check names only
        hints = {}
    return {
        name: (hints.get(name), p.default)
        for name, p in signature.parameters.items()
        if p.kind is not inspect.Parameter.VAR_POSITIONAL
    }


def describe_parameters(params: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{name} ({type_name(hint)})" if hint else name for name, (hint, _) in params.items())


def type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("collections.abc.", "").replace("typing.", "")


def _checked(task: str, key: str, value: Any, params: dict[str, tuple[Any, Any]]) -> Any:
    hint, default = params[key]
    if hint is None or (value is None and default is None):
        return value
    try:
        return TypeAdapter(hint).validate_python(value)
    except ValidationError as exc:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ConfigError(
            f"task {task!r}: option {key}={shown} is not a valid {type_name(hint)} "
            f"({exc.errors()[0]['msg']}); its options are: {describe_parameters(params)}"
        ) from exc
    except (TypeError, ValueError, NameError):  # a hint pydantic cannot build a validator for
        return value
