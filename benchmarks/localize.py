"""CHA versus brute force on the arithmetic organism: recall, cost and wall time per (rule, regime).

For each unit kind (``mlp``, ``mlp_out``) and predicate (``ucb``, ``contrastive``), on the problems the
run's ``localize`` stage builds from ``--run-dir`` (made with ``mecharule run --out /tmp/bench_run`` if
missing): the same prepared problems (slices, mean-ablation tables, engines) are searched by CHA and
swept by brute force (every candidate ablated alone) in one process, the order of the two alternating
from one configuration to the next. Candidates: for ``mlp``, the run's attribution top-M (scores
order the halves); for ``mlp_out`` (no attribution in the run) every unit of the kind, unscored.

Reported per problem: k (brute-force agonists), N (candidates), CHA's recall per effect bin
[0.2,0.3) [0.3,0.5) [0.5,1.0] (effect = the agonist's observed flip rate, max over slices) and
overall, the cost ratio (CHA group evaluations / N), whether CHA's evaluations are within
3·k·log2(N/k)+2k (the bound for ONE root; CHA starts from one root per layer, so the sum of the bound
over the layer roots, Σ_l bound(k_l, N_l), is printed too; k = 0 gives 1 per root), and per
configuration the wall-time ratio (CHA / brute force). For the negative
regime (covered prompts answered wrongly; a flip = wrong → right) it also reports, per layer, the
flips of the whole-layer ablation against the flips of its best single unit: CHA assumes that a
group flips at least what its members flip (monotonicity); where the layer flips less than a member
the top-down search can prune that member.

Finally it runs the synthetic scaling benchmark (``group_testing_synthetic.py``), which writes
``docs/group_testing_scaling.png``.

    python benchmarks/localize.py [--run-dir /tmp/bench_run] [--skip-synthetic]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mecharule.config import LocalizeConfig, RunConfig
from mecharule.io.rundir import read_json
from mecharule.models import load_model
from mecharule.models.sites import UnitKind
from mecharule.search.group_testing import (
    DEFAULT_BINS,
    Agonist,
    BruteForceResult,
    Query,
    SearchResult,
    bound,
    brute_force,
    recall_by_effect_bin,
)
from mecharule.search.localize import LocalizationSetup, prepare, run_search, search_config
from mecharule.tasks import make_task

HERE = Path(__file__).resolve().parent
RUN_INPUTS = ("behaviour.parquet", "features.parquet", "rules.json")


def effect(agonist: Agonist) -> float:
    """The statistic the bins use: observed flip rate, max over the two slices."""
    return max(agonist.covered.rate, agonist.unrelated.rate)


@dataclass(frozen=True)
class ProblemRow:
    kind: str
    predicate: str
    key: str
    n: int
    k: int
    bins: tuple[tuple[int, int], ...]  # (found, reference) per effect bin
    found: int
    cha_evaluations: int
    bound: float
    root_bound: float  # the bound summed over CHA's roots (one per layer): sum_l bound(k_l, N_l)

    @property
    def within(self) -> bool:
        return self.cha_evaluations <= self.bound


def problem_rows(
    kind: str, predicate: str, setup: LocalizationSetup, bf: BruteForceResult, cha: SearchResult
) -> list[ProblemRow]:
    rows = []
    candidates = {p.key: p.candidates for p in setup.search_problems}
    found = {(a.problem, a.unit) for a in cha.agonists}
    cha_evals = {p.problem: p.group_evaluations for p in cha.problems}
    for stats in bf.problems:
        reference = [a for a in bf.agonists if a.problem == stats.problem]
        bins = []
        for low, high in DEFAULT_BINS:
            members = [a for a in reference if low <= effect(a) < high]
            bins.append((sum((a.problem, a.unit) in found for a in members), len(members)))
        k = len(reference)
        layers = {u.layer: 0 for u in candidates[stats.problem]}
        per_layer_k = {layer: sum(a.unit.layer == layer for a in reference) for layer in layers}
        per_layer_n = {layer: sum(u.layer == layer for u in candidates[stats.problem]) for layer in layers}
        rows.append(
            ProblemRow(
                kind,
                predicate,
                str(stats.problem),
                stats.n_candidates,
                k,
                tuple(bins),
                sum((a.problem, a.unit) in found for a in reference),
                cha_evals.get(stats.problem, 0),
                bound(k, stats.n_candidates),
                sum(bound(per_layer_k[layer], per_layer_n[layer]) for layer in layers),
            )
        )
    return rows


def negative_regime_report(setup: LocalizationSetup, bf: BruteForceResult) -> list[str]:
    """Per negative problem and layer: whole-layer flips versus the best single unit's flips."""
    lines = []
    singles = {(r.problem, r.units[0]): r.counts for r in bf.records}
    for problem in setup.search_problems:
        if not str(problem.key).endswith("negative"):
            continue
        layers = sorted({u.layer for u in problem.candidates})
        queries = [
            Query(problem.key, tuple(u for u in problem.candidates if u.layer == layer)) for layer in layers
        ]
        for layer, query, counts in zip(layers, queries, setup.oracle(queries), strict=True):
            members = [(singles[(problem.key, u)].covered_flips, u) for u in query.units]
            best_flips, best_unit = max(members, key=lambda m: m[0])
            n_flipping = sum(f > 0 for f, _ in members)
            lines.append(
                f"  {problem.key} L{layer}: whole layer ({len(query.units)} units) flips "
                f"{counts.covered_flips}/{counts.covered_n} covered; {n_flipping} single units flip some, "
                f"best {best_unit} flips {best_flips}/{counts.covered_n}"
                + ("   <- monotonicity fails" if best_flips > counts.covered_flips else "")
            )
    return lines


def shadow_run_dir(run_dir: Path, tmp: Path) -> Path:
    """The run's inputs without attribution (candidates = every unit of the kind, unscored)."""
    for name in RUN_INPUTS:
        (tmp / name).symlink_to(run_dir / name)
    return tmp


def run_configuration(
    run_dir: Path, kind: UnitKind, predicate: str, cha_first: bool, base: LocalizeConfig, seed: int, **common
) -> tuple[list[ProblemRow], dict[str, float], list[str]]:
    cfg = base.model_copy(update={"predicate": predicate})
    setup = prepare(run_dir=run_dir, cfg=cfg, kind=kind, seed=seed, **common)
    timings: dict[str, float] = {}
    for which in ("cha", "bf") if cha_first else ("bf", "cha"):
        started = time.perf_counter()
        if which == "cha":
            cha, _ = run_search(setup, cfg, seed, None)
        else:
            bf = brute_force(setup.search_problems, setup.oracle, search_config(cfg, seed))
        timings[which] = time.perf_counter() - started
    report = recall_by_effect_bin(bf, cha)
    summary = {
        "recall": report.recall if report.recall is not None else math.nan,
        "cost_ratio": report.cost_ratio or math.nan,
        "wall_ratio": timings["cha"] / timings["bf"],
        "cha_s": timings["cha"],
        "bf_s": timings["bf"],
    }
    negative = negative_regime_report(setup, bf) if predicate == "ucb" else []
    return problem_rows(kind, predicate, setup, bf, cha), summary, negative


def fmt_bin(found: int, reference: int) -> str:
    return f"{found}/{reference}" if reference else "-"


def print_table(rows: Sequence[ProblemRow]) -> None:
    names = [f"[{lo:.1f},{min(hi, 1.0):.1f}{')' if hi < 1 else ']'}" for lo, hi in DEFAULT_BINS]
    header = (
        f"{'kind':<8} {'pred':<11} {'problem':<13} {'N':>4} {'k':>3} "
        + " ".join(f"{n:>10}" for n in names)
        + f" {'recall':>7} {'CHA ev':>6} {'cost':>6} {'bound':>6} {'within':>6} {'Σroots':>6} {'within':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        recall = f"{r.found / r.k:.2f}" if r.k else "-"
        print(
            f"{r.kind:<8} {r.predicate:<11} {r.key:<13} {r.n:>4} {r.k:>3} "
            + " ".join(f"{fmt_bin(*b):>10}" for b in r.bins)
            + f" {recall:>7} {r.cha_evaluations:>6} {r.cha_evaluations / r.n:>6.2f} {r.bound:>6.1f} "
            f"{'yes' if r.within else 'NO':>6} {r.root_bound:>6.1f} "
            f"{'yes' if r.cha_evaluations <= r.root_bound else 'NO':>6}"
        )


def ensure_run_dir(run_dir: Path) -> None:
    if all((run_dir / name).exists() for name in RUN_INPUTS):
        return
    print(f"no run in {run_dir}; running `mecharule run --out {run_dir}` (about a minute)")
    subprocess.run(["mecharule", "run", "--out", str(run_dir)], check=True)


def run_synthetic(out: Path) -> None:
    path = HERE / "group_testing_synthetic.py"
    spec = importlib.util.spec_from_file_location("group_testing_synthetic", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    module.main(["--out", str(out)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/bench_run"))
    parser.add_argument("--kinds", nargs="+", default=["mlp", "mlp_out"])
    parser.add_argument("--predicates", nargs="+", default=["ucb", "contrastive"])
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--png", type=Path, default=HERE.parent / "docs" / "group_testing_scaling.png")
    args = parser.parse_args()

    ensure_run_dir(args.run_dir)
    config = RunConfig.model_validate(read_json(args.run_dir / "run.json")["config"])
    handle = load_model(config.model.name)
    task = make_task(config.measure.task)
    common = {
        "handle": handle,
        "task": task,
        "top_m": config.attribution.top_m,
        "method": config.attribution.methods[0],
        "max_rules": config.rules.max_rules,
        "min_coverage": config.rules.min_coverage,
    }
    rows: list[ProblemRow] = []
    summaries: dict[tuple[str, str], dict[str, float]] = {}
    negative: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        unscored = shadow_run_dir(args.run_dir, Path(tmp))
        i = 0
        for kind in args.kinds:
            for predicate in args.predicates:
                # the run's attribution scores are for its attribution unit kind only
                run_dir = args.run_dir if kind == config.attribution.unit_kind else unscored
                got, summary, neg = run_configuration(
                    run_dir, kind, predicate, i % 2 == 0, config.localize, config.seed, **common
                )
                rows.extend(got)
                summaries[(kind, predicate)] = summary
                negative.extend(f"[{kind}] {line.strip()}" for line in neg)
                i += 1
    print_table(rows)
    print(
        f"\n{'kind':<8} {'predicate':<11} {'recall':>7} {'cost ratio':>10} {'CHA s':>7} {'BF s':>7} "
        f"{'wall ratio':>10}"
    )
    for (kind, predicate), s in summaries.items():
        print(
            f"{kind:<8} {predicate:<11} {s['recall']:>7.3f} {s['cost_ratio']:>10.3f} {s['cha_s']:>7.2f} "
            f"{s['bf_s']:>7.2f} {s['wall_ratio']:>10.3f}"
        )
    print("\nnegative regime (ucb; covered = wrong answers, a flip = wrong → right):")
    for line in negative:
        print("  " + line)
    if not args.skip_synthetic:
        print(f"\nsynthetic scaling benchmark → {args.png}")
        run_synthetic(args.png)


if __name__ == "__main__":
    main()
