"""The attribution-method registry: what a method is given and what it declares it needs.

A method is one file in :mod:`mecharule.attribution.methods` that computes signed per-unit scores
and registers an :class:`AttributionMethod` under its name in :data:`ATTRIBUTORS`; every module of
that package is imported on the first lookup, so adding a method touches no other file. Other
packages add methods through the ``mecharule.attribution_methods`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mecharule.errors import ConfigError
from mecharule.interventions.values import PositionMode, ValueTable
from mecharule.models.sites import UnitKind
from mecharule.registry import Registry

if TYPE_CHECKING:
    import torch

    from mecharule.interventions.hooks import SiteKey
    from mecharule.models.loading import ModelHandle


@dataclass(frozen=True)
class AttributionRequest:
    """What any method may need. ``corrupted_prompts`` (EAP-IG) pair 1:1 with ``prompts``;
    ``tables`` (AtP) hold the ablation values of every layer of ``kind``."""

    prompts: Sequence[str]
    answers: Sequence[str]
    kind: UnitKind
    positions: PositionMode = "decode"
    tables: Mapping[SiteKey, ValueTable] | None = None
    corrupted_prompts: Sequence[str] | None = None
    ig_steps: int = 8
    batch_size: int = 64


@dataclass(frozen=True)
class AttributionMethod:
    """``score(handle, request) -> Tensor[n_layers, width]``. ``inputs``: ``"tables"`` (the stage
    passes the covered prompts and the ablation value tables) or ``"pairs"`` (clean prompts paired
    with length-matched corrupted ones; a rule without a matched pair is skipped for this method)."""

    score: Callable[[ModelHandle, AttributionRequest], torch.Tensor]
    inputs: Literal["tables", "pairs"]

    def __call__(self, handle: ModelHandle, request: AttributionRequest) -> torch.Tensor:
        return self.score(handle, request)


def tables_method(name: str, scores: Callable[..., torch.Tensor]) -> AttributionMethod:
    """A method over the ablation value tables (AtP and its variants):
    ``scores(handle, prompts, answers, tables, kind, positions, batch_size)``."""

    def score(handle: ModelHandle, request: AttributionRequest) -> torch.Tensor:
        if request.tables is None:
            raise ConfigError(f"attribution method {name!r} needs ablation value tables (request.tables)")
        return scores(
            handle, request.prompts, request.answers, request.tables, request.kind, request.positions,
            request.batch_size,
        )  # fmt: skip

    return AttributionMethod(score, inputs="tables")


ATTRIBUTORS: Registry[AttributionMethod] = Registry(
    "attribution method",
    builtin="mecharule.attribution.methods",
    entry_points="mecharule.attribution_methods",
)

__all__ = ["ATTRIBUTORS", "AttributionMethod", "AttributionRequest", "tables_method"]
