"""Markdown tables from ``napari-sparseseg evaluate --json`` results.

    python benchmarks/accuracy_table.py benchmarks/results/*.json
    python benchmarks/accuracy_table.py NEW/*.json --baselines-from OLD/*.json

``--baselines-from`` fills the baseline columns of runs made with ``--baselines ''`` from earlier runs of the
same file and protocol (the forest and the interpolation see the same labeled voxels and are deterministic, so
re-running them only costs time); every path after it is such an earlier run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def bold(text: str, on: bool) -> str:
    """``text`` in bold when ``on`` (the best Dice of a row)."""
    return f"**{text}**" if on else text


def _is(baselines: dict, name: str, best: float) -> bool:
    return "dice_fg" in baselines.get(name, {}) and baselines[name]["dice_fg"] >= best


def _runs(paths: list[str]) -> list[dict]:
    loaded = (json.loads(Path(p).read_text()) for p in paths)
    return sorted((r for r in loaded if "protocol" in r and "data" in r),  # other benchmarks' JSON is skipped
                  key=lambda r: (r["data"], r["protocol"]))


def main(paths: list[str]) -> str:
    baseline_paths: list[str] = []
    if "--baselines-from" in paths:
        cut = paths.index("--baselines-from")
        paths, baseline_paths = paths[:cut], paths[cut + 1:]
    earlier = {(Path(r["data"]).stem, r["protocol"]): r.get("baselines", {}) for r in _runs(baseline_paths)}
    runs = _runs(paths)
    for r in runs:
        r["baselines"] = {**earlier.get((Path(r["data"]).stem, r["protocol"]), {}), **r.get("baselines", {})}
    lines = ["| data | protocol | 3D U-Net (ours) | ours, unannot. | random forest | slice interpolation | steps |",
             "|---|---|---|---|---|---|---|"]
    def cell(baselines: dict, name: str) -> str:
        return f"{baselines[name]['dice_fg']:.3f}" if "dice_fg" in baselines.get(name, {}) else "–"

    for r in runs:
        b = r.get("baselines", {})
        best = max([r["dice_fg"]] + [b[n]["dice_fg"] for n in ("rf", "interp") if "dice_fg" in b.get(n, {})])
        ours = f"{r['dice_fg']:.3f}"
        lines.append(f"| {Path(r['data']).stem} | {r['protocol']} | {bold(ours, r['dice_fg'] >= best)} | "
                     f"{r['unannotated']['dice_fg']:.3f} | {bold(cell(b, 'rf'), _is(b, 'rf', best))} | "
                     f"{bold(cell(b, 'interp'), _is(b, 'interp', best))} | {r['steps']} |")
    fractions = " | ".join(f"{int(100 * f)} % of budget" for f in (0.1, 0.25, 0.5, 0.75, 1.0))
    lines += ["", f"| data | protocol | {fractions} |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {Path(r['data']).stem} | {r['protocol']} | "
                     + " | ".join(f"{p['dice_fg']:.3f} ({p['seconds']:.0f} s)" for p in r["curve"]) + " |")
    out = "\n".join(lines)
    print(out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
