"""Models: loading, sites, and the architecture table."""

from mecharule.models.architectures import ARCHITECTURES, ArchitectureInfo, ArchitectureRow
from mecharule.models.loading import ModelHandle, handle_from_model, load_model
from mecharule.models.sites import Site, UnitKind

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
