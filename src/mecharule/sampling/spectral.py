"""Spectral coverage: which prompts to attribute and ablate on, spread over the model's representation.

1. ``last_token_states``: the final-norm hidden state of every prompt's last token.
2. ``spectral_embedding``: PCA to ``dim`` components, then each row L2-normalised (``Z``).
3. ``kcenter``: farthest-first traversal (a 2-approximation of the k-center cover radius) from a
   seeded first centre; every row is assigned to its nearest centre.
4. ``stratified_sample``: among candidate rows, one medoid per cluster (the candidate nearest its
   cluster's centre), clusters in decreasing order of candidate count, then round-robin across
   clusters (each cluster's remaining candidates in seeded random order). Allocation is therefore
   EQUAL across clusters until small ones run out — coverage, not proportional sampling, and never a
   uniform random fill after the medoids (the reference's fill diluted coverage, §5.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.decomposition import PCA

from mecharule.decoding.generation import encode_prompts
from mecharule.decoding.prefill import prefill
from mecharule.errors import ConfigError, DataError
from mecharule.models.loading import ModelHandle


@torch.no_grad()
def last_token_states(handle: ModelHandle, prompts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """``# [n, d_model]`` float32: the last prompt token's hidden state after the final norm.

    It is the base model's ``last_hidden_state`` (HF's ``hidden_states[-1]``: after the final norm
    for the decoder architectures in the table), computed without the LM head and with a shared
    prompt prefix run once (:func:`mecharule.decoding.prefill.prefill`). The last column is every
    row's last token; position ids follow the attention mask.
    """
    if not prompts:
        raise DataError("no prompts to embed; the prompt list is empty")
    chunks = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = encode_prompts(handle, prompts[start : start + batch_size])
        _, states = prefill(handle, ids, mask, (mask.cumsum(1) - 1).clamp(min=0), final_hidden=True)
        chunks.append(states.float().cpu().numpy())
    return np.concatenate(chunks, 0)


def spectral_embedding(states: np.ndarray, dim: int = 32, seed: int = 0) -> np.ndarray:
    """``Z``: PCA to ``min(dim, n, d)`` components (full SVD), rows L2-normalised (zero rows stay 0)."""
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2 or len(states) < 2:
        raise DataError(f"states must be [n >= 2, d]; got shape {states.shape}")
    if dim < 1:
        raise ConfigError(f"dim={dim}: the embedding needs at least one component")
    n_comp = min(dim, states.shape[0], states.shape[1])
    projected = PCA(n_components=n_comp, svd_solver="full", random_state=seed).fit_transform(states)
    norms = np.linalg.norm(projected, axis=1, keepdims=True)
    return np.where(norms > 0, projected / np.where(norms > 0, norms, 1.0), 0.0)


def kcenter(Z: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Farthest-first k-center: ``centers`` (row indices, in selection order) and ``assignment``
    (index into ``centers`` of every row's nearest centre; ties → the earlier centre).

    The first centre is drawn with ``seed``; each next centre is the row farthest (euclidean) from
    all centres so far (ties → lowest row). Stops early, with fewer than ``k`` distinct centres, once
    every row coincides with a centre.
    """
    Z = np.asarray(Z, dtype=np.float64)
    if k < 1 or len(Z) == 0:
        raise ConfigError(f"k={k} centres over {len(Z)} rows: need k >= 1 and at least one row")
    first = int(np.random.default_rng(seed).integers(len(Z)))
    centers = [first]
    dist = np.linalg.norm(Z - Z[first], axis=1)
    assignment = np.zeros(len(Z), dtype=np.int64)
    while len(centers) < min(k, len(Z)):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 0:
            break
        d_new = np.linalg.norm(Z - Z[nxt], axis=1)
        closer = d_new < dist
        assignment[closer] = len(centers)
        dist = np.where(closer, d_new, dist)
        centers.append(nxt)
    return np.asarray(centers, dtype=np.int64), assignment


def cover_radius(Z: np.ndarray, centers: np.ndarray) -> float:
    """Largest distance from any row to its nearest centre."""
    Z = np.asarray(Z, dtype=np.float64)
    d = np.linalg.norm(Z[:, None, :] - Z[np.asarray(centers)][None, :, :], axis=2)
    return float(d.min(1).max())


def stratified_sample(
    Z: np.ndarray,
    centers: np.ndarray,
    assignment: np.ndarray,
    candidate_idx: np.ndarray,
    n: int,
    seed: int | list[int],
) -> np.ndarray:
    """``n`` candidate rows (or all, if fewer): medoids first, then round-robin across clusters.

    See the module docstring. Returned in selection order (medoids of the largest clusters first).
    """
    candidates = np.unique(np.asarray(candidate_idx, dtype=np.int64))
    if n <= 0 or len(candidates) == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    Z = np.asarray(Z, dtype=np.float64)
    queues = []
    for cluster in np.unique(assignment[candidates]):
        members = candidates[assignment[candidates] == cluster]
        d = np.linalg.norm(Z[members] - Z[centers[cluster]], axis=1)
        medoid = members[int(np.argmin(d))]
        rest = rng.permutation(members[members != medoid])
        queues.append(np.concatenate([[medoid], rest]))
    queues.sort(key=len, reverse=True)  # stable: equal sizes keep cluster order
    picked: list[int] = []
    for round_ in range(len(queues[0])):
        picked.extend(int(q[round_]) for q in queues if round_ < len(q))
        if len(picked) >= n:
            break
    return np.asarray(picked[:n], dtype=np.int64)
