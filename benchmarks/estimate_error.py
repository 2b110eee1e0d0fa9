"""How far the widget's "estimated Dice" is from the true Dice of the mask shown.

    python benchmarks/estimate_error.py benchmarks/results/first_minute_cpu_300s [--at 60 300]

Reads the result JSONs that ``benchmarks/suite.py`` wrote (each has the curve of the mask shown with its
``estimated_dice``, the held-back score, beside ``dice_fg``, the true foreground Dice against ground truth) and
prints, for each instant, one row per run and then the mean absolute error of the estimate and the share of
runs whose true Dice lies inside the stated 90 % interval (where the curve carries the interval; older runs
only have it at the end of the budget).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def points_at(result: dict, seconds: float) -> dict | None:
    """The curve point at ``seconds`` (with the end-of-run interval when the point lacks one), or None."""
    for point in result.get("curve", []):
        if abs(point["seconds"] - seconds) < 1e-6 and point.get("estimated_dice") is not None:
            point = dict(point)
            if point.get("estimated_dice_interval") is None and abs(seconds - result["budget_seconds"]) < 1e-6:
                point["estimated_dice_interval"] = result.get("estimated_dice_interval")
            return point
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a suite output folder (searched recursively for *.json)")
    ap.add_argument("--at", type=float, nargs="+", default=[60.0, 300.0])
    ap.add_argument("--calibration-share", type=float, default=None,
                    help="widen each stored interval to at least estimate -/+ SHARE * (1 - estimate), as "
                    "core/estimate.py now does (for results written before it did)")
    args = ap.parse_args()
    results = []
    for path in sorted(args.results.rglob("*.json")):
        data = json.loads(path.read_text())
        for result in data if isinstance(data, list) else [data]:
            if isinstance(result, dict) and "curve" in result:
                results.append((path.stem, result))
    for seconds in args.at:
        errors, covered, with_interval = [], 0, 0
        print(f"\n{seconds:g} s: run | learner | estimated (interval) | true | error")
        for name, result in results:
            point = points_at(result, seconds)
            if point is None:
                continue
            est, true = point["estimated_dice"], point["dice_fg"]
            interval = point.get("estimated_dice_interval")
            errors.append(abs(est - true))
            text = "-"
            if interval is not None and args.calibration_share is not None:
                spread = args.calibration_share * (1 - est)
                interval = (max(0.0, min(interval[0], est - spread)), min(1.0, max(interval[1], est + spread)))
            if interval is not None:
                with_interval += 1
                covered += interval[0] <= true <= interval[1]
                text = f"{interval[0]:.3f}-{interval[1]:.3f}"
            print(f"{name} | {point['learner']} | {est:.3f} ({text}) | {true:.3f} | {est - true:+.3f}")
        if errors:
            print(f"{seconds:g} s: {len(errors)} runs, mean absolute error {sum(errors) / len(errors):.3f}, "
                  f"true Dice inside the interval in {covered}/{with_interval} runs with one")


if __name__ == "__main__":
    main()
