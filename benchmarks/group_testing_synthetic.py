"""CHA interventions versus brute force (N) and versus the Θ(k·log(N/k) + k) bound, on planted oracles.

The oracle is monotone and saturating: each of k planted agonists flips a fixed seeded
Bernoulli(e) subset of the 64 covered prompts (e ~ U[0.3, 0.9]; unrelated slice untouched), and a
group flips the union of its members' subsets (flip rate 1 − Π(1 − e_u) in expectation). All N
candidates sit in one layer, without attribution scores, so the halves follow a seeded shuffle
(the uninformed case). Recall is measured against a brute-force sweep of the same oracle.

    python benchmarks/group_testing_synthetic.py [--out docs/group_testing_scaling.png]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mecharule.search import (
    Query,
    SearchConfig,
    SearchProblem,
    SliceCounts,
    bound,
    brute_force,
    recall_by_effect_bin,
    search,
)

N_PROMPTS = 64


@dataclass(frozen=True, order=True)
class Neuron:
    layer: int
    index: int

    def __str__(self) -> str:
        return f"L{self.layer}.mlp[{self.index}]"


class PlantedOracle:
    """Monotone saturating oracle: a group flips the union of its planted members' prompt subsets."""

    def __init__(self, units: Sequence[Neuron], k: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(units), size=k, replace=False)
        effects = rng.uniform(0.3, 0.9, size=k)
        self.masks = {units[i]: rng.random(N_PROMPTS) < e for i, e in zip(chosen, effects, strict=True)}

    def __call__(self, queries: Sequence[Query]) -> list[SliceCounts]:
        out = []
        for query in queries:
            flipped = np.zeros(N_PROMPTS, bool)
            for unit in query.units:
                mask = self.masks.get(unit)
                if mask is not None:
                    flipped |= mask
            out.append(SliceCounts(int(flipped.sum()), N_PROMPTS, 0, N_PROMPTS))
        return out


@dataclass(frozen=True)
class Row:
    n: int
    k: int
    mean_evaluations: float
    max_evaluations: int
    mean_levels: float
    bound: float
    recall: float
    seconds: float

    @property
    def share(self) -> float:
        """Mean CHA evaluations as a share of brute force's N singleton ablations."""
        return self.mean_evaluations / self.n


#: Audited singletons per root at most (the root's audit and up to three more rounds).
MAX_AUDIT = 4 * SearchConfig().audit


def run_case(n: int, k: int, repeats: int, seed: int) -> Row:
    """Mean and worst CHA cost over ``repeats`` planted sets; recall against brute force."""
    units = [Neuron(0, i) for i in range(n)]
    evaluations, levels, found, reference = [], [], 0, 0
    seconds = 0.0
    for rep in range(repeats):
        oracle = PlantedOracle(units, k, seed=seed + 1000 * rep + k)
        problem = SearchProblem("rule", units)
        start = time.perf_counter()
        cha = search([problem], oracle, SearchConfig(seed=seed + rep))
        seconds += time.perf_counter() - start
        report = recall_by_effect_bin(brute_force([problem], oracle), cha)
        evaluations.append(cha.group_evaluations)
        levels.append(cha.oracle_calls)
        found += report.n_found
        reference += report.n_reference
    return Row(
        n,
        k,
        float(np.mean(evaluations)),
        int(max(evaluations)),
        float(np.mean(levels)),
        bound(k, n, audit=MAX_AUDIT),
        found / reference if reference else float("nan"),
        seconds / repeats,
    )


def print_table(rows: Sequence[Row]) -> None:
    """The measured ratios, one row per (N, k)."""
    header = (
        f"{'N':>6} {'k':>2} {'CHA mean':>9} {'CHA max':>8} {'levels':>6} {'bound':>7} "
        f"{'max/bound':>9} {'BF = N':>7} {'CHA/BF':>7} {'recall':>6} {'ms':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.n:>6} {r.k:>2} {r.mean_evaluations:>9.1f} {r.max_evaluations:>8} {r.mean_levels:>6.1f} "
            f"{r.bound:>7.1f} {r.max_evaluations / r.bound:>9.2f} {r.n:>7} {100 * r.share:>6.2f}% "
            f"{r.recall:>6.3f} {1000 * r.seconds:>6.1f}"
        )


def plot(rows: Sequence[Row], out: Path) -> None:
    """Interventions versus N (log-log): CHA per k, the bound curves, and brute force's N."""
    sizes = np.array(sorted({r.n for r in rows}), dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(sizes, sizes, color="black", label="brute force (N)")
    for color, k in zip(plt.get_cmap("tab10").colors, sorted({r.k for r in rows}), strict=False):
        mine = sorted((r for r in rows if r.k == k), key=lambda r: r.n)
        ns = np.array([r.n for r in mine])
        mean = np.array([r.mean_evaluations for r in mine])
        worst = np.array([r.max_evaluations for r in mine])
        ax.errorbar(
            ns,
            mean,
            yerr=[np.zeros_like(mean), worst - mean],
            fmt="o-",
            color=color,
            capsize=3,
            label=f"CHA, k={k} (mean, max)",
        )
        grid = np.geomspace(max(k, sizes.min()), sizes.max(), 100)
        ax.plot(
            grid,
            [bound(k, int(g), audit=MAX_AUDIT) for g in grid],
            "--",
            color=color,
            alpha=0.7,
            label=f"3k·log2(N/k)+2k+1+audit, k={k}",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="candidate units N",
        ylabel="group ablations (interventions)",
        title="CHA cost on a monotone planted oracle",
    )
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/group_testing_scaling.png"))
    args = parser.parse_args(argv)
    rows = [run_case(n, k, args.repeats, args.seed) for n in args.sizes for k in args.ks]
    print_table(rows)
    plot(rows, args.out)
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
