"""The localize stage on the local executor and on Ray with 1 and 2 workers: throughput, identical results.

One run directory gets measure, rules and attribute (``--model``, default the bundled organism);
then the localize stage runs on copies of it with each executor, one after the other in this process:

  * ``local`` — the default: every group evaluation on the driver's engines;
  * ``ray xN`` — a Ray cluster started on this machine (``ray.init(num_cpus=N)``), N model replicas
    (actors with one CPU and one torch thread each) evaluating the batches of every CHA level.

Printed per executor: the stage's wall time (Ray start and replica loading included), the search
time (``localization/summary.json``'s ``wall_seconds``: CHA + joint suppression), group evaluations
per second of search, and whether agonists, evaluations, forwards and generated rows equal the local
executor's. On a 2-core machine two replicas compete with each other and the driver for the same
cores: the figures say what the seam costs, not what a cluster gains.

    python benchmarks/scaling.py --out /tmp/scaling [--model zoo:arithmetic] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from mecharule.config import load_config
from mecharule.pipeline import Pipeline

SETTINGS = {"rules.max_rules": 2, "search.n_suppression": 128}


def localized(upstream: Path, out: Path, settings: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(upstream, out)
    pipe = Pipeline(load_config(None, settings), out)
    started = time.perf_counter()
    assert pipe.localize() is True
    wall = time.perf_counter() - started
    return wall, json.loads((out / "localization" / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="zoo:arithmetic")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts, comma-separated")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    base = {**SETTINGS, "model.name": args.model}
    upstream = args.out / "upstream"
    pipe = Pipeline(load_config(None, base), upstream)
    for stage in ("measure", "rules", "attribute"):
        getattr(pipe, stage)()
    runs = {"local": base}
    for n in (int(w) for w in args.workers.split(",")):
        runs[f"ray x{n}"] = {**base, "executor.kind": "ray", "executor.workers": n}
    rows = []
    reference: dict[str, Any] | None = None
    for name, settings in runs.items():
        wall, summary = localized(upstream, args.out / name.replace(" ", "_"), settings)
        search = summary.pop("wall_seconds")
        reference = reference or summary
        rows.append(
            {
                "executor": name,
                "stage_s": round(wall, 2),
                "search_s": round(search, 2),
                "evaluations_per_s": round(summary["group_evaluations"] / search, 1),
                "identical": summary == reference,
                "agonists": summary["n_agonists"],
                "evaluations": summary["group_evaluations"],
                "forwards": summary["forwards"],
            }
        )
    print(f"{'executor':<10} {'stage s':>8} {'search s':>9} {'eval/s':>8} {'vs local':>9}  identical")
    local_search = rows[0]["search_s"]
    for row in rows:
        ratio = local_search / row["search_s"] if row["search_s"] else float("nan")
        print(
            f"{row['executor']:<10} {row['stage_s']:>8.2f} {row['search_s']:>9.2f} "
            f"{row['evaluations_per_s']:>8.1f} {ratio:>8.2f}x  {row['identical']}"
        )
    print(
        f"agonists {rows[0]['agonists']}, group evaluations {rows[0]['evaluations']}, "
        f"forwards {rows[0]['forwards']} (local)"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
