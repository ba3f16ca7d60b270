"""mecharule: explain when a language model succeeds or fails, and which neurons carry it.

The public API is deliberately small; importing the package has no side effects (no model loads,
no network, no logging configuration) and imports neither torch nor transformers: each name below is
imported on first use (PEP 562). See docs/python-api.md.

* ``run(config, out, *, model=None, progress=False) -> Run`` and ``load_run(path) -> Run``;
* the stages on a run directory, each returning its typed result: ``measure``, ``extract_rules``,
  ``attribute``, ``localize``, ``validate``, ``recompose``, ``anchor``, ``render_report``;
* ``RunConfig``, ``load_config``; ``load_model``, ``make_task``; ``Site``, ``Rule``; ``Run``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mecharule._version import __version__

if TYPE_CHECKING:
    from mecharule.api import (
        anchor,
        attribute,
        extract_rules,
        load_run,
        localize,
        measure,
        recompose,
        render_report,
        run,
        validate,
    )
    from mecharule.config import RunConfig, load_config
    from mecharule.models import Site, load_model
    from mecharule.results import Run
    from mecharule.rules.language import Rule
    from mecharule.tasks import make_task

_HOME = {
    "run": "mecharule.api",
    "load_run": "mecharule.api",
    "measure": "mecharule.api",
    "extract_rules": "mecharule.api",
    "attribute": "mecharule.api",
    "localize": "mecharule.api",
    "validate": "mecharule.api",
    "recompose": "mecharule.api",
    "anchor": "mecharule.api",
    "render_report": "mecharule.api",
    "Run": "mecharule.results",
    "RunConfig": "mecharule.config",
    "load_config": "mecharule.config",
    "load_model": "mecharule.models",
    "make_task": "mecharule.tasks",
    "Site": "mecharule.models",
    "Rule": "mecharule.rules.language",
}

__all__ = [
    "Rule",
    "Run",
    "RunConfig",
    "Site",
    "__version__",
    "anchor",
    "attribute",
    "extract_rules",
    "load_config",
    "load_model",
    "load_run",
    "localize",
    "make_task",
    "measure",
    "recompose",
    "render_report",
    "run",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'mecharule' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
