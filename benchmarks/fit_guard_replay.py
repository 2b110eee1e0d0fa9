"""Replay the fit guard (``TrainConfig.fit_guard``) on the probes of saved stability runs.

    python benchmarks/fit_guard_replay.py benchmarks/results/tuning/session10/stability_*.json --every 50

Each stability JSON (``benchmarks/stability.py``) holds, every 25 steps, the Dice of the EMA prediction of the
whole volume and the labeled voxels it misclassifies. The replay pretends the run ended at each probe ``S``
from ``--from-step`` on: among the probes from ``S / 2`` to ``S`` (every ``--every`` steps, as the trainer
probes) it finds the best-fitting one, and keeps it instead of ``S`` when ``S`` misclassifies more than
``--factor`` times as many labeled voxels, as the trainer does at the end of a budget. It prints, per run, how
often that swap happens and what it does to the Dice. (The trainer counts its errors on one probe patch
around the labeled voxels; this replay counts them over the whole volume.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def replay(probes: list[dict], factor: float, every: int, from_step: int) -> list[tuple[int, int, float]]:
    """``(end step, kept step, Dice gain)`` for every pretended end ``S >= from_step``."""
    probes = [p for p in probes if p["step"] % every == 0]
    out = []
    for end in probes:
        if end["step"] < from_step:
            continue
        window = [p for p in probes if end["step"] / 2 <= p["step"] <= end["step"]]
        best = min(window, key=lambda p: p["labeled_errors"])
        kept = best if end["labeled_errors"] > factor * best["labeled_errors"] else end
        out.append((end["step"], kept["step"], kept["dice_fg"] - end["dice_fg"]))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="stability.py JSON files with labeled_errors")
    ap.add_argument("--factor", type=float, default=1.25)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--from-step", type=int, default=300)
    ap.add_argument("--json", help="write the per-run summary here")
    args = ap.parse_args(argv)
    summary = {}
    for path in args.runs:
        result = json.loads(Path(path).read_text())
        rows = replay(result["probes"], args.factor, args.every, args.from_step)
        gains = np.array([g for _, _, g in rows])
        swaps = [(end, kept, round(g, 4)) for end, kept, g in rows if kept != end]
        summary[Path(path).name] = {"ends": len(rows), "swaps": swaps, "mean_gain": float(gains.mean()),
                                    "worst_gain": float(gains.min()), "best_gain": float(gains.max())}
        print(f"{Path(path).name:34s} ends {len(rows):3d}  swapped {len(swaps):2d}  Dice gain mean {gains.mean():+.4f} "
              f"worst {gains.min():+.4f} best {gains.max():+.4f}  {swaps}")
    if args.json:
        Path(args.json).write_text(json.dumps({"factor": args.factor, "every": args.every, "runs": summary}, indent=2))
    return summary


if __name__ == "__main__":
    main()
