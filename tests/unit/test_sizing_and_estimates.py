"""Defaults that follow the model and device, and the time estimates printed before long stages."""

from __future__ import annotations

import torch

from mecharule.estimates import calibrating_tick, duration, group_testing_estimate
from mecharule.sizing import ORGANISM_PARAMS, auto_max_prompts, auto_memory_budget_mb

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_prompt_count_follows_parameters_and_device():
    assert auto_max_prompts(20_000, CPU) is None  # organisms: every prompt
    assert auto_max_prompts(ORGANISM_PARAMS - 1, CUDA) is None
    smollm2 = auto_max_prompts(134_515_008, CPU)
    assert smollm2 is not None and 2_900 <= smollm2 <= 3_000
    assert auto_max_prompts(1_500_000_000, CPU) == 500  # clamped from below
    assert auto_max_prompts(60_000_000, CPU) == 5_000  # clamped from above
    assert auto_max_prompts(1_500_000_000, CUDA) is None
    assert auto_max_prompts(7_000_000_000, CUDA) == 10_000


def test_memory_budget_is_half_the_free_gpu_memory_or_a_capped_quarter_of_ram():
    gib = 2**30
    assert auto_memory_budget_mb(CUDA, 100 * gib) == 50 * 1024
    assert auto_memory_budget_mb(CPU, 8 * gib) == 2 * 1024
    assert auto_memory_budget_mb(CPU, 64 * gib) == 4 * 1024
    assert auto_memory_budget_mb(CPU, 100 * 2**20) == 256  # never below 256 MB


def test_calibrating_tick_reports_once_from_the_second_batch():
    seen: list[int] = []
    lines: list[str] = []
    tick = calibrating_tick(seen.append, total=640, what="measure", notify=lines.append)
    for _ in range(10):
        tick(64)
    assert sum(seen) == 640
    assert len(lines) == 1
    assert lines[0].startswith("measure: 64 items in") and "remaining 512" in lines[0]


def test_group_testing_estimate_scales_brute_force_and_cha():
    line = group_testing_estimate([[128], [128]], seconds_per_group=2.0, n_agonists_guess=8)
    assert "256 candidate units" in line and "brute force 256 evaluations ≈ 9 min" in line
    # CHA: root + 2k log2(N/k) + k = 1 + 2*8*4 + 8 = 73 per problem
    assert "≈ 146 evaluations" in line
    assert group_testing_estimate([[4]], 1.0, 8).count("brute force 4 evaluations") == 1
    # 30 roots of 2 units each: no larger than their audit + 1, so every unit is tested alone
    assert "≈ 60 evaluations" in group_testing_estimate([[2] * 30], 1.0, 8, audit=16)
    # one root of 128 with an audit of 16: 1 + 16 + 72
    assert "≈ 89 evaluations" in group_testing_estimate([[128]], 1.0, 8, audit=16)
    assert duration(30) == "30 s" and duration(600) == "10 min" and duration(7200) == "2.0 h"
