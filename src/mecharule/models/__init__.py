"""Models: loading, sites, the architecture table, GGUF files and known real models.

The names below are imported on first use (PEP 562), so that ``mecharule.models.known`` and the
``mecharule models`` / ``mecharule list models`` commands do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mecharule.models.architectures import ARCHITECTURES, ArchitectureInfo, ArchitectureRow
    from mecharule.models.loading import ModelHandle, handle_from_model, load_model
    from mecharule.models.sites import Site, UnitKind

_HOME = {
    "ARCHITECTURES": "architectures",
    "ArchitectureInfo": "architectures",
    "ArchitectureRow": "architectures",
    "ModelHandle": "loading",
    "handle_from_model": "loading",
    "load_model": "loading",
    "Site": "sites",
    "UnitKind": "sites",
}

__all__ = [
    "ARCHITECTURES",
    "ArchitectureInfo",
    "ArchitectureRow",
    "ModelHandle",
    "Site",
    "UnitKind",
    "handle_from_model",
    "load_model",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'mecharule.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mecharule.models.{_HOME[name]}"), name)
