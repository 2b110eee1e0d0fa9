"""The mask shown at the end of ``suite.py`` runs made with several seeds, beside the forest of the same run.

    python benchmarks/seeds_summary.py benchmarks/results/first_minute_cpu_300s \
        benchmarks/results/first_minute_cpu_300s_seed1 benchmarks/results/first_minute_cpu_300s_seed2

Each folder holds one seed's runs (``suite.py --seed S --out DIR``). For every file and protocol found in more than
one of them: each seed's Dice of the mask shown at the end and the 100-tree forest's (trained on the same labels in
the same run), the net's own, and the mean over the seeds of the mask shown minus the forest.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from suite import load_results


def main(argv: list[str] | None = None) -> int:
    folders = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    by_run: dict[tuple[str, str], list[dict]] = {}
    for folder in folders:
        for r in load_results(folder):
            if "rf" in r.get("baselines", {}):
                by_run.setdefault((r["data"], r["protocol"]), []).append(r)
    print("file protocol | seeds | shown at end, each seed | forest, each seed | net at end, mean | shown - forest, "
          "mean (range)")
    for (name, protocol), runs in sorted(by_run.items()):
        if len(runs) < 2:
            continue
        runs.sort(key=lambda r: r.get("seed", 0))
        shown = np.array([r["dice_fg"] for r in runs])
        forest = np.array([r["baselines"]["rf"]["dice_fg"] for r in runs])
        net = np.array([r.get("dice_fg_net", np.nan) for r in runs], float)
        gap = shown - forest
        print(f"{name} {protocol} | {' '.join(str(r.get('seed')) for r in runs)} | "
              f"{' '.join(f'{v:.3f}' for v in shown)} | {' '.join(f'{v:.3f}' for v in forest)} | "
              f"{np.nanmean(net):.3f} | {gap.mean():+.3f} ({gap.min():+.3f} to {gap.max():+.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
