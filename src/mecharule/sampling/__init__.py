"""Sampling: spectral coverage of the prompt set, covered/unrelated slices, length-matched pairs."""

from mecharule.sampling.pairing import Pairing, length_matched_pairs
from mecharule.sampling.slices import REGIME_LABEL, Clustering, SliceSelection, covered_unrelated
from mecharule.sampling.spectral import (
    cover_radius,
    kcenter,
    last_token_states,
    spectral_embedding,
    stratified_sample,
)

__all__ = [
    "REGIME_LABEL",
    "Clustering",
    "Pairing",
    "SliceSelection",
    "cover_radius",
    "covered_unrelated",
    "kcenter",
    "last_token_states",
    "length_matched_pairs",
    "spectral_embedding",
    "stratified_sample",
]
