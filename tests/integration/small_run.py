"""The small organism config the run-directory tests share: every stage in seconds."""

from __future__ import annotations

SMALL_RUN = {
    "task.max_prompts": 1500,
    "search.n_covered": 16,
    "search.n_unrelated": 16,
    "ablation.n_reference": 32,
    "search.audit": 4,
    "rules.max_rules": 1,
    "attribution.n_pairs": 8,
    "attribution.top_m": 16,
    "anchor.max_eval_prompts": 300,
    "anchor.max_agonists": 3,
}
