"""Defaults that follow the model and the device (``"auto"`` in the config).

* ``measure.max_prompts: auto`` — every prompt for a model organism (under 50 M parameters) or on
  a GPU (models under 3 B parameters; 10,000 above); on a CPU a count that keeps the measure stage to
  minutes: ``4e11 / parameters`` clamped to [500, 5000] (SmolLM2-135M: 2,962; 1.5 B: 500).
* ``measure.batch_size: auto`` — prompts per generation batch: the engine memory budget divided by
  an estimate of one prompt's activations + KV cache at 64 tokens, clamped to [8, 512] (64 on CPU
  for real models: bigger CPU batches are not faster).
* ``localize.memory_budget_mb: auto`` — how many (group, prompt) rows one engine forward may hold:
  on a GPU half of the free memory after the model is loaded (a fixed 512 MB made the engine 1.17×
  the slow path on a 0.5B model on an H200, 15× with 16 GB); on a CPU a quarter of the available
  RAM, at most 4 GiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mecharule.models.loading import ModelHandle

ORGANISM_PARAMS = 50_000_000
CPU_WORK = 4e11  # parameters x prompts a CPU measure stage is sized for
SIZING_TOKENS = 64


@dataclass(frozen=True)
class Sizing:
    n_params: int
    device: str
    free_bytes: int
    max_prompts: int | None
    batch_size: int
    memory_budget_mb: int

    def describe(self) -> str:
        prompts = "all" if self.max_prompts is None else f"at most {self.max_prompts:,}"
        return (
            f"{self.n_params / 1e6:,.1f} M parameters on {self.device}; prompts: {prompts}; "
            f"batch {self.batch_size}; engine memory budget {self.memory_budget_mb:,} MB"
        )


def n_parameters(handle: ModelHandle) -> int:
    return sum(p.numel() for p in handle.model.parameters())


def free_memory_bytes(device: torch.device) -> int:
    """Free accelerator memory, or available RAM for the CPU (``/proc/meminfo``; 8 GiB if unknown)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 8 * 2**30


def auto_memory_budget_mb(device: torch.device, free_bytes: int) -> int:
    share = free_bytes // 2 if device.type == "cuda" else min(free_bytes // 4, 4 * 2**30)
    return max(256, int(share // 2**20))


def budget_mb(handle: ModelHandle, memory_budget_mb: int | str, free_bytes: int | None = None) -> int:
    """A memory budget in MB, ``"auto"`` resolved for the handle's device (``free_bytes`` when known)."""
    if memory_budget_mb != "auto":
        return int(memory_budget_mb)
    free = free_memory_bytes(handle.device) if free_bytes is None else free_bytes
    return auto_memory_budget_mb(handle.device, free)


def auto_max_prompts(n_params: int, device: torch.device) -> int | None:
    if n_params < ORGANISM_PARAMS:
        return None
    if device.type == "cuda":
        return None if n_params < 3e9 else 10_000
    return int(min(5000, max(500, CPU_WORK / n_params)))


def bytes_per_prompt(handle: ModelHandle, tokens: int = SIZING_TOKENS) -> int:
    arch = handle.arch
    itemsize = handle.model.dtype.itemsize if hasattr(handle.model, "dtype") else 4
    activations = tokens * (12 * arch.d_model + 4 * arch.d_mlp)
    kv_cache = 2 * arch.n_layers * tokens * arch.d_model
    logits = int(handle.model.config.vocab_size)
    return itemsize * (activations + kv_cache + logits)


def auto_batch_size(handle: ModelHandle, budget_mb: int, n_params: int) -> int:
    if handle.device.type == "cpu" and n_params >= ORGANISM_PARAMS:
        return 64
    return int(min(512, max(8, budget_mb * 2**20 // bytes_per_prompt(handle))))


def resolve_sizing(
    handle: ModelHandle,
    max_prompts: int | str | None,
    batch_size: int | str,
    memory_budget_mb: int | str,
) -> Sizing:
    """Turn every ``"auto"`` into a number for this model on this device."""
    n_params = n_parameters(handle)
    free = free_memory_bytes(handle.device)
    budget = budget_mb(handle, memory_budget_mb, free)
    return Sizing(
        n_params=n_params,
        device=str(handle.device),
        free_bytes=free,
        max_prompts=auto_max_prompts(n_params, handle.device) if max_prompts == "auto" else max_prompts,  # type: ignore[arg-type]
        batch_size=auto_batch_size(handle, budget, n_params) if batch_size == "auto" else int(batch_size),
        memory_budget_mb=budget,
    )
